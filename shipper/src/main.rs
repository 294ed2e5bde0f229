//! tracker-shipper: drains the nginx-tracker event ring into hive-partitioned gzip files.
//! Usage and guarantees: `docs/shipper.md`.
//!
//! - [`config`]: command line and TOML;
//! - [`drain`]: the ring reader and the threads (reader, encoders, writer);
//! - [`encode`]: decoding and serializing chunks of records (worker threads);
//! - [`batch`]: the writer thread: ordering, batching, commits, the periodic summary;
//! - [`sink`]: where events go ([`sink::file`]: the file sink);
//! - [`commit`]: the file sink's manifest protocol (crash safety);
//! - [`layout`]: partition directories and file names;
//! - [`lock`]: one shipper per ring and per directory;
//! - [`logging`]: timestamped lines on stderr.

mod batch;
mod commit;
mod config;
mod drain;
mod encode;
mod layout;
mod lock;
mod logging;
mod sink;

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use log::{error, info, warn};
use tracker_core::event::Kind;
use tracker_core::ring::{RingError, RingFile, RingStats, COUNTER_KINDS, HEADER_SIZE};

use batch::Totals;
use config::{Action, Cli, Config, SinkKind};
use drain::{Exit, Options, Signals};
use sink::file::FileSink;
use sink::Sink;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(p) => match config::load_file(p) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("tracker-shipper: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let cfg = match Config::resolve(cli, file, std::env::var("RUST_LOG").ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tracker-shipper: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(cfg.log_level);
    let result = match cfg.action {
        Action::Stats => print_stats(&cfg),
        Action::Run => run(&cfg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The name of counter slot `i` (`impression`, ..., `custom`; `slotN` for unused slots).
fn slot_name(i: usize) -> String {
    Kind::ALL
        .iter()
        .find(|k| k.index() == i)
        .map(|k| k.name().to_string())
        .unwrap_or_else(|| format!("slot{i}"))
}

/// Per-kind counters as a JSON object, with a `total`; unnamed slots only when non-zero.
fn counters_json(a: &[u64; COUNTER_KINDS]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (i, &v) in a.iter().enumerate() {
        if v != 0 || Kind::ALL.iter().any(|k| k.index() == i) {
            m.insert(slot_name(i), v.into());
        }
    }
    m.insert("total".into(), a.iter().sum::<u64>().into());
    serde_json::Value::Object(m)
}

fn stats_json(ring: &Path, s: &RingStats) -> serde_json::Value {
    let lag = s.producer_pos.saturating_sub(s.consumer_pos);
    serde_json::json!({
        "ring": ring.display().to_string(),
        "data_size": s.data_size,
        "producer_pos": s.producer_pos,
        "consumer_pos": s.consumer_pos,
        "lag_bytes": lag,
        "written": counters_json(&s.written),
        "dropped_full": counters_json(&s.dropped_full),
        "dropped_too_large": counters_json(&s.dropped_too_large),
        "rejected": counters_json(&s.rejected),
        "abandoned": s.abandoned,
    })
}

/// `stats` / `--print-stats`: the ring's cursors and counters as JSON on stdout.
fn print_stats(cfg: &Config) -> Result<(), String> {
    let rf = RingFile::open_existing(&cfg.ring)
        .map_err(|e| format!("cannot open the ring {}: {e}", cfg.ring.display()))?;
    let j = stats_json(&cfg.ring, &rf.ring().stats());
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

fn run(cfg: &Config) -> Result<(), String> {
    let mut sink: Box<dyn Sink> = match cfg.sink {
        SinkKind::File => Box::new(
            FileSink::new(&cfg.dir, cfg.format, cfg.gzip_level, cfg.max_open_files)
                .map_err(|e| format!("output directory: {e}"))?,
        ),
    };
    let _ring_lock = lock::acquire(
        &lock::ring_lock_path(&cfg.ring),
        &format!("the ring {}", cfg.ring.display()),
    )?;
    let _dir_lock = lock::acquire(
        &cfg.dir.join(commit::SHIPPER_DIR).join("lock"),
        &format!("the directory {}", cfg.dir.display()),
    )?;
    let signals = install_signals()?;
    let opts = Options {
        flush_interval: cfg.flush_interval,
        max_batch_events: cfg.max_batch_events,
        poll: cfg.poll,
        stale_after: cfg.stale_after,
        once: cfg.once,
        threads: cfg.threads,
        format: cfg.format,
    };
    let mut totals = Totals::default();
    let started = Instant::now();
    loop {
        let Some(rf) = open_ring(cfg, &signals)? else {
            info!("stopped before the ring appeared");
            return Ok(());
        };
        let ring = rf.ring();
        sink.recover(ring)
            .map_err(|e| format!("recovery failed: {e}"))?;
        let s = ring.stats();
        info!(
            "tracker-shipper {} started{}: ring {} ({} bytes of data), producer cursor {}, consumer cursor {}, \
             lag {} bytes; {}; batches of up to {} events or {} ms, {} encoding threads",
            env!("CARGO_PKG_VERSION"),
            if cfg.once { " (--once)" } else { "" },
            cfg.ring.display(),
            s.data_size,
            s.producer_pos,
            s.consumer_pos,
            s.producer_pos.saturating_sub(s.consumer_pos),
            sink.describe(),
            cfg.max_batch_events,
            cfg.flush_interval.as_millis(),
            cfg.threads,
        );
        let replaced = || !rf.is_file_at(&cfg.ring).unwrap_or(true);
        let exit = drain::run(ring, sink.as_mut(), &opts, &signals, &replaced, &mut totals)
            .map_err(|e| format!("stopping: {e}"))?;
        match exit {
            Exit::RingReplaced => {
                info!("switching to the new ring at {}", cfg.ring.display());
                continue;
            }
            Exit::Stopped | Exit::Drained => {
                info!(
                    "{}: {} events, {} dead letters, {} skipped records in {} files ({} bytes, {} commits) in {:.1}s; \
                     consumer cursor {}",
                    if exit == Exit::Stopped { "stopped" } else { "drained" },
                    totals.events,
                    totals.dead_letters,
                    totals.skipped,
                    totals.files,
                    totals.bytes,
                    totals.commits,
                    started.elapsed().as_secs_f64(),
                    ring.consumer_pos(),
                );
                return Ok(());
            }
        }
    }
}
