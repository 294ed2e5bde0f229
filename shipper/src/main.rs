//! tracker-shipper: drains the nginx-tracker event ring into Kafka and/or hive-partitioned
//! gzip files. Usage and guarantees: `docs/shipper.md`.
//!
//! - [`config`]: command line and TOML;
//! - [`drain`]: one sink's pipeline: the ring reader and the threads (reader, encoders, writer);
//! - [`encode`]: decoding and serializing chunks of records (worker threads);
//! - [`batch`]: the writer thread: ordering, batching, commits, the periodic summary;
//! - [`sink`]: where events go ([`sink::file`], [`sink::kafka`], [`sink::aggregate`]), each
//!   with its own cursor;
//! - [`aggregate`]: hourly rows by campaign, publisher and type (the aggregate sink's sums);
//! - [`commit`]: the file sink's manifest protocol (crash safety);
//! - [`layout`]: partition directories and file names;
//! - [`metrics`]: counters and the Prometheus endpoint;
//! - [`lock`]: one shipper per ring and per directory;
//! - [`logging`], [`notify`]: log lines, systemd readiness.

mod accounts;
mod aggregate;
mod batch;
mod commit;
mod config;
mod drain;
mod encode;
mod layout;
mod lock;
mod logging;
mod metrics;
mod notify;
mod outdir;
mod sink;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use log::{error, info, warn};
use tracker_core::event::Kind;
use tracker_core::ring::{RingError, RingFile, RingStats, COUNTER_KINDS, HEADER_SIZE};

use batch::Totals;
use config::{Action, Cli, Config, SinkKind};
use drain::{Exit, Options, Signals};
use encode::Encoding;
use metrics::{Metrics, SinkMetrics};
use sink::aggregate::AggregateSink;
use sink::file::FileSink;
use sink::kafka::KafkaSink;
use sink::Sink;

/// Parses the command line and the config file it names into a [`Config`].
fn load_config(args: &[OsString]) -> Result<Config, String> {
    let cli = Cli::parse_from(args);
    let file = match &cli.config {
        Some(p) => Some(config::load_file(p)?),
        None => None,
    };
    Config::resolve(cli, file, std::env::var("RUST_LOG").ok())
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(config::Command::SignUrl(a)) = Cli::parse_from(&args).command {
        return match sign_url(&a) {
            Ok(url) => {
                println!("{url}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tracker-shipper sign-url: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(config::Command::Accounts(config::AccountsCommand::Rebuild(a))) =
        Cli::parse_from(&args).command
    {
        return match accounts::rebuild(&a) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tracker-shipper accounts rebuild: {e}");
                ExitCode::from(2)
            }
        };
    }
    let cfg = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tracker-shipper: {e}");
            return ExitCode::from(2);
        }
    };
    let log_file = if cfg.action == Action::Run {
        cfg.log_file.as_deref()
    } else {
        None
    };
    if let Err(e) = logging::init(cfg.log_level, log_file) {
        eprintln!("tracker-shipper: {e}");
        return ExitCode::from(2);
    }
    let result = match cfg.action {
        Action::Stats => print_stats(&cfg),
        Action::Run => run(&cfg, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `sign-url`: the base URL with exp, kid and sig appended (tracker_core::sign).
fn sign_url(a: &config::SignUrlArgs) -> Result<String, String> {
    use tracker_core::sign;
    let keys = sign::Keys::load(&a.secret)?;
    let key = match &a.kid {
        Some(k) => keys
            .get(k.as_bytes())
            .ok_or_else(|| format!("no key \"{k}\" in {}", a.secret.display()))?,
        None => keys.newest(),
    };
    if !tracker_core::input::valid_campaign_id(a.campaign.as_bytes()) {
        return Err(format!(
            "invalid campaign id {:?}: 1-64 characters of [A-Za-z0-9_.:-]",
            a.campaign
        ));
    }
    let mut dims = Vec::new();
    for d in &a.dims {
        let (name, value) = d
            .split_once('=')
            .ok_or_else(|| format!("--dim {d:?}: expected NAME=VALUE"))?;
        if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return Err(format!("--dim {d:?}: invalid dimension name"));
        }
        dims.push((name.as_bytes(), value.as_bytes()));
    }
    let exp = match (a.expires_at, a.expires_in) {
        (Some(at), _) => at,
        (None, Some(secs)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|e| format!("clock before 1970: {e}"))?
                .as_secs();
            now.checked_add(secs).ok_or("--expires-in is too large")?
        }
        (None, None) => return Err("give --expires-in SECONDS or --expires-at UNIX_SECONDS".into()),
    };
    sign::sign_url(&a.base, key, a.campaign.as_bytes(), exp, &dims)
        .ok_or_else(|| "a signed value holds a line feed, which cannot be signed".into())
}

/// Per-kind counters as a JSON object, with a `total`; unnamed slots only when non-zero.
fn counters_json(a: &[u64; COUNTER_KINDS]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (i, &v) in a.iter().enumerate() {
        if v != 0 || Kind::ALL.iter().any(|k| k.index() == i) {
            m.insert(metrics::type_name(i), v.into());
        }
    }
    m.insert("total".into(), a.iter().sum::<u64>().into());
    serde_json::Value::Object(m)
}

fn stats_json(ring: &Path, s: &RingStats, cursors: &[(String, u64)]) -> serde_json::Value {
    let lag = s.producer_pos.saturating_sub(s.consumer_pos);
    let sinks: serde_json::Map<String, serde_json::Value> = cursors
        .iter()
        .map(|(n, p)| {
            (
                n.clone(),
                serde_json::json!({ "position": p, "lag_bytes": s.producer_pos.saturating_sub(*p) }),
            )
        })
        .collect();
    serde_json::json!({
        "ring": ring.display().to_string(),
        "data_size": s.data_size,
        "producer_pos": s.producer_pos,
        "consumer_pos": s.consumer_pos,
        "lag_bytes": lag,
        "sinks": sinks,
        "written": counters_json(&s.written),
        "dropped_full": counters_json(&s.dropped_full),
        "dropped_too_large": counters_json(&s.dropped_too_large),
        "rejected": counters_json(&s.rejected),
        "duplicates": counters_json(&s.duplicates),
        "duplicate_evictions": s.duplicate_evictions,
        "invalid": tracker_core::limits::Reason::ALL
            .iter()
            .map(|r| (r.name().to_string(), serde_json::json!(s.invalid[r.index()])))
            .collect::<serde_json::Map<_, _>>(),
        "abandoned": s.abandoned,
    })
}

/// `stats` / `--print-stats`: the ring's cursors and counters as JSON on stdout.
fn print_stats(cfg: &Config) -> Result<(), String> {
    let rf = RingFile::open_existing(&cfg.ring)
        .map_err(|e| format!("cannot open the ring {}: {e}", cfg.ring.display()))?;
    let j = stats_json(&cfg.ring, &rf.ring().stats(), &rf.ring().cursors());
    println!(
        "{}",
        serde_json::to_string_pretty(&j).expect("JSON of plain values")
    );
    Ok(())
}

/// Whether an open error means "not there yet" (absent, or being created by nginx).
fn ring_not_ready(path: &Path, e: &RingError) -> bool {
    match e {
        RingError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => true,
        RingError::Format(_) => std::fs::metadata(path)
            .map(|m| m.len() < HEADER_SIZE as u64)
            .unwrap_or(true),
        _ => false,
    }
}

/// Opens the ring; without `--once`, waits for nginx to create it.
fn open_ring(cfg: &Config, signals: &Signals) -> Result<Option<RingFile>, String> {
    let mut logged: Option<Instant> = None;
    loop {
        match RingFile::open_existing(&cfg.ring) {
            Ok(rf) => return Ok(Some(rf)),
            Err(e) if !cfg.once && ring_not_ready(&cfg.ring, &e) => {
                if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    warn!("waiting for the ring {} ({e})", cfg.ring.display());
                    logged = Some(Instant::now());
                }
                if signals.stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(format!("cannot open the ring {}: {e}", cfg.ring.display())),
        }
    }
}

fn install_signals() -> Result<Signals, String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::flag;
    let s = Signals::default();
    for sig in [SIGTERM, SIGINT] {
        // A second SIGTERM/SIGINT while shutting down exits at once (still crash-safe).
        flag::register_conditional_shutdown(sig, 1, s.stop.clone())
            .map_err(|e| format!("signal setup: {e}"))?;
        flag::register(sig, s.stop.clone()).map_err(|e| format!("signal setup: {e}"))?;
    }
    flag::register(SIGHUP, s.hup.clone()).map_err(|e| format!("signal setup: {e}"))?;
    Ok(s)
}

/// One configured sink and what its pipeline needs.
struct SinkRun {
    kind: SinkKind,
    sink: Box<dyn Sink>,
    metrics: Arc<SinkMetrics>,
    encoding: Encoding,
    totals: Totals,
}

fn make_sinks(cfg: &Config, signals: &Signals) -> Result<Vec<SinkRun>, String> {
    let mut out = Vec::new();
    for &kind in &cfg.sinks {
        let metrics = SinkMetrics::new(kind.name());
        let (sink, encoding): (Box<dyn Sink>, Encoding) = match kind {
            SinkKind::File => (
                Box::new(
                    FileSink::new(&cfg.dir, cfg.format, cfg.gzip_level, cfg.max_open_files)
                        .map_err(|e| format!("output directory: {e}"))?,
                ),
                Encoding::Groups(cfg.format),
            ),
            SinkKind::Kafka => {
                let k = cfg.kafka.clone().expect("resolved with the kafka sink");
                let encoding = Encoding::Messages(k.format, k.key);
                (
                    Box::new(KafkaSink::new(
                        k,
                        cfg.dead_letter_dir.clone(),
                        cfg.max_batch_events,
                        metrics.clone(),
                        signals.stop.clone(),
                    )?),
                    encoding,
                )
            }
            SinkKind::Aggregate => {
                let a = cfg
                    .aggregate
                    .as_ref()
                    .expect("resolved with the aggregate sink");
                // The encoding is Copy (handed to every worker): the dimension name lives for
                // the process (one string, leaked once).
                let dim: &'static str = Box::leak(a.publisher_dimension.clone().into_boxed_str());
                (
                    Box::new(
                        AggregateSink::new(
                            &a.dir,
                            dim,
                            a.topic.clone().map(|t| {
                                sink::aggregate_topic::AggregateTopic::new(t, signals.stop.clone())
                            }),
                        )
                        .map_err(|e| format!("aggregate directory: {e}"))?,
                    ),
                    Encoding::Aggregates(dim),
                )
            }
        };
        out.push(SinkRun {
            kind,
            sink,
            metrics,
            encoding,
            totals: Totals::default(),
        });
    }
    Ok(out)
}

/// SIGHUP: reopens the log file and reloads the configuration where that is safe (the log
/// level); other changes are reported as needing a restart.
fn reload(cfg: &Config, args: &[OsString]) {
    match logging::reopen() {
        Ok(true) => info!("SIGHUP: log file reopened"),
        Ok(false) => {}
        Err(e) => error!("SIGHUP: {e}"),
    }
    match load_config(args) {
        Ok(new) => {
            if new.log_level != log::max_level() {
                logging::set_level(new.log_level);
                info!("SIGHUP: log level now {}", new.log_level);
            }
            let same_but_level = Config {
                log_level: cfg.log_level,
                ..new
            };
            if same_but_level != *cfg {
                warn!("SIGHUP: the configuration changed beyond the log level: restart the shipper to apply it");
            } else {
                info!("SIGHUP: configuration reloaded");
            }
        }
        Err(e) => error!("SIGHUP: configuration not reloaded: {e}"),
    }
}

fn run(cfg: &Config, args: &[OsString]) -> Result<(), String> {
    let signals = install_signals()?;
    let mut sinks = make_sinks(cfg, &signals)?;
    let _ring_lock = lock::acquire(
        &lock::ring_lock_path(&cfg.ring),
        &format!("the ring {}", cfg.ring.display()),
    )?;
    let _dir_lock = if cfg.sinks.contains(&SinkKind::File) {
        Some(lock::acquire(
            &cfg.dir.join(commit::SHIPPER_DIR).join("lock"),
            &format!("the directory {}", cfg.dir.display()),
        )?)
    } else {
        None
    };
    let _aggregate_dir_lock = match &cfg.aggregate {
        Some(a) if cfg.sinks.contains(&SinkKind::Aggregate) => Some(lock::acquire(
            &a.dir.join(commit::SHIPPER_DIR).join("lock"),
            &format!("the directory {}", a.dir.display()),
        )?),
        _ => None,
    };
    let all_metrics = Arc::new(Metrics {
        ring: cfg.ring.clone(),
        sinks: sinks.iter().map(|s| s.metrics.clone()).collect(),
        started: Instant::now(),
    });
    if let Some(addr) = cfg.metrics {
        metrics::serve(addr, all_metrics).map_err(|e| format!("metrics on {addr}: {e}"))?;
    }
    let names: Vec<&str> = cfg.sinks.iter().map(|k| k.name()).collect();
    let started = Instant::now();
    let mut ready = false;
    loop {
        let Some(rf) = open_ring(cfg, &signals)? else {
            info!("stopped before the ring appeared");
            return Ok(());
        };
        let ring = rf.ring();
        for name in ring.release_cursors_except(&names) {
            warn!("released the ring cursor of the sink {name:?}, which is no longer configured");
        }
        let mut cursors = Vec::new();
        for s in sinks.iter() {
            cursors.push(ring.cursor(s.kind.name())?);
        }
        // The aggregate sink recovers first: its directory may be inside the file sink's
        // (DIR/_aggregates), whose recovery deletes every temporary file it finds, including
        // those a pending aggregate manifest still has to rename.
        let mut order: Vec<usize> = (0..sinks.len()).collect();
        order.sort_by_key(|&i| sinks[i].kind != SinkKind::Aggregate);
        for i in order {
            let s = &mut sinks[i];
            s.sink
                .recover(&cursors[i])
                .map_err(|e| format!("{} sink recovery failed: {e}", s.kind.name()))?;
        }
        let st = ring.stats();
        info!(
            "tracker-shipper {} started{}: ring {} ({} bytes of data), producer cursor {}, consumer cursor {}, \
             lag {} bytes; batches of up to {} events or {} ms, {} encoding threads per sink",
            env!("CARGO_PKG_VERSION"),
            if cfg.once { " (--once)" } else { "" },
            cfg.ring.display(),
            st.data_size,
            st.producer_pos,
            st.consumer_pos,
            st.producer_pos.saturating_sub(st.consumer_pos),
            cfg.max_batch_events,
            cfg.flush_interval.as_millis(),
            cfg.threads,
        );
        for (s, c) in sinks.iter().zip(&cursors) {
            info!("{} (cursor {})", s.sink.describe(), c.position());
        }
        if !ready {
            notify::notify("READY=1");
            ready = true;
        }
        let replaced = || !rf.is_file_at(&cfg.ring).unwrap_or(true);
        let exits = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for (i, (s, c)) in sinks.iter_mut().zip(&cursors).enumerate() {
                let opts = Options {
                    flush_interval: match (s.kind, &cfg.aggregate) {
                        (SinkKind::Aggregate, Some(a)) => a.flush_interval,
                        _ => cfg.flush_interval,
                    },
                    max_batch_events: cfg.max_batch_events,
                    poll: cfg.poll,
                    stale_after: cfg.stale_after,
                    once: cfg.once,
                    threads: cfg.threads,
                    encoding: s.encoding,
                    count_skips: i == 0,
                };
                let (signals, replaced) = (&signals, &replaced);
                let h = std::thread::Builder::new()
                    .name(format!("{}-reader", s.kind.name()))
                    .spawn_scoped(scope, move || {
                        let r = drain::run(
                            c,
                            s.sink.as_mut(),
                            &s.metrics,
                            &opts,
                            signals,
                            replaced,
                            &mut s.totals,
                        );
                        if r.is_err() {
                            // One sink failed: stop the others (they commit what they have).
                            signals.stop.store(true, Ordering::Relaxed);
                        }
                        r
                    })
                    .expect("spawning a sink thread");
                handles.push(h);
            }
            let mut stopping_said = false;
            while handles.iter().any(|h| !h.is_finished()) {
                if signals.hup.swap(false, Ordering::Relaxed) {
                    reload(cfg, args);
                }
                if !stopping_said && signals.stop.load(Ordering::Relaxed) {
                    notify::notify("STOPPING=1");
                    stopping_said = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !stopping_said && signals.stop.load(Ordering::Relaxed) {
                notify::notify("STOPPING=1");
            }
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("a sink thread panicked")))
                })
                .collect::<Vec<_>>()
        });
        let mut all_replaced = true;
        for (s, e) in sinks.iter().zip(&exits) {
            match e {
                Ok(Exit::RingReplaced) => {}
                Ok(_) => all_replaced = false,
                Err(e) => return Err(format!("{} sink: stopping: {e}", s.kind.name())),
            }
        }
        if all_replaced && !signals.stop.load(Ordering::Relaxed) {
            info!("switching to the new ring at {}", cfg.ring.display());
            continue;
        }
        for s in &sinks {
            let t = &s.totals;
            info!(
                "{} sink {}: {} events, {} dead letters, {} skipped records in {} files ({} bytes, {} commits) in {:.1}s; \
                 its cursor {}",
                s.kind.name(),
                if cfg.once && !signals.stop.load(Ordering::Relaxed) { "drained" } else { "stopped" },
                t.events,
                t.dead_letters,
                t.skipped,
                t.files,
                t.bytes,
                t.commits,
                started.elapsed().as_secs_f64(),
                ring.cursor(s.kind.name()).map(|c| c.position()).unwrap_or(0),
            );
        }
        return Ok(());
    }
}
