//! Metrics: counters kept by the sinks and the writer threads, and a tiny HTTP server that
//! serves them with the ring's own counters in the Prometheus text format (`GET /metrics`).
//!
//! The server is one thread on a blocking listener (meant for loopback: a scrape every few
//! seconds); each scrape maps the ring afresh to read its header, so it always shows the ring
//! at the configured path, even after nginx created a new one.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{info, warn};
use tracker_core::event::Kind;
use tracker_core::ring::{RingFile, COUNTER_KINDS};

/// Counters of one sink. Everything is cumulative since the shipper started.
pub struct SinkMetrics {
    /// `file` or `kafka` (the `sink` label, and the name of its cursor in the ring).
    pub name: &'static str,
    /// Events read from the ring and decoded, per type (`Kind::index()`).
    pub read: [AtomicU64; COUNTER_KINDS],
    /// Events handed to the destination (written to a temporary file, produced to Kafka).
    pub written: [AtomicU64; COUNTER_KINDS],
    /// Events the destination acknowledged (committed files, broker acks).
    pub acked: [AtomicU64; COUNTER_KINDS],
    /// Records that did not decode, or messages the destination refused for good, written to
    /// the dead letters.
    pub dead_letters: AtomicU64,
    /// Records of dead writers skipped in the ring.
    pub skipped: AtomicU64,
    /// Committed ring records that are not a valid event (a bug or a torn write): skipped,
    /// kept in the dead letters, counted once their batch is committed.
    pub malformed: AtomicU64,
    /// Times this sink's reader found the ring header's cursors corrupt (`Read::Corrupt`).
    pub ring_corruptions: AtomicU64,
    /// Batches that failed and were read again from the ring.
    pub batch_errors: AtomicU64,
    /// Delivery errors by reason (Kafka error names).
    pub delivery_errors: Mutex<BTreeMap<String, u64>>,
    /// 1: the destination is reachable, 0: it is not, -1: not known yet.
    pub up: AtomicI64,
    /// Seconds of the current outage (0 when up).
    pub down_since: Mutex<Option<Instant>>,
    /// Ring commits made.
    pub commits: AtomicU64,
}

impl SinkMetrics {
    pub fn new(name: &'static str) -> Arc<SinkMetrics> {
        Arc::new(SinkMetrics {
            name,
            read: Default::default(),
            written: Default::default(),
            acked: Default::default(),
            dead_letters: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            ring_corruptions: AtomicU64::new(0),
            batch_errors: AtomicU64::new(0),
            delivery_errors: Mutex::new(BTreeMap::new()),
            up: AtomicI64::new(-1),
            down_since: Mutex::new(None),
            commits: AtomicU64::new(0),
        })
    }

    pub fn add(counters: &[AtomicU64; COUNTER_KINDS], by_kind: &[u64; COUNTER_KINDS]) {
        for (c, &n) in counters.iter().zip(by_kind) {
            if n != 0 {
                c.fetch_add(n, Relaxed);
            }
        }
    }

    pub fn delivery_error(&self, reason: &str) {
        let mut m = self
            .delivery_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *m.entry(reason.to_string()).or_insert(0) += 1;
    }

    /// Marks the destination reachable or not; returns the previous state (1, 0 or -1).
    pub fn set_up(&self, up: bool) -> i64 {
        let prev = self.up.swap(up as i64, Relaxed);
        let mut since = self.down_since.lock().unwrap_or_else(|p| p.into_inner());
        if up {
            *since = None;
        } else if since.is_none() {
            *since = Some(Instant::now());
        }
        prev
    }
}

/// Everything the `/metrics` page shows.
pub struct Metrics {
    pub ring: PathBuf,
    pub sinks: Vec<Arc<SinkMetrics>>,
    pub started: Instant,
}

/// The name of counter slot `i` (`impression`, ..., `custom`; `slotN` for unused slots).
pub fn type_name(i: usize) -> String {
    Kind::ALL
        .iter()
        .find(|k| k.index() == i)
        .map(|k| k.name().to_string())
        .unwrap_or_else(|| format!("slot{i}"))
}

/// Whether counter slot `i` is shown (the named kinds always, others when non-zero).
fn shown(i: usize, v: u64) -> bool {
    v != 0 || Kind::ALL.iter().any(|k| k.index() == i)
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(8192);
        let per_sink_kind =
            |o: &mut String,
             name: &str,
             text: &str,
             pick: &dyn Fn(&SinkMetrics) -> &[AtomicU64; COUNTER_KINDS]| {
                help(o, name, "counter", text);
                for s in &self.sinks {
                    for (i, c) in pick(s).iter().enumerate() {
                        let v = c.load(Relaxed);
                        if shown(i, v) {
                            let _ = writeln!(
                                o,
                                "{name}{{sink=\"{}\",type=\"{}\"}} {v}",
                                s.name,
                                type_name(i)
                            );
                        }
                    }
                }
            };
        per_sink_kind(
            &mut o,
            "tracker_shipper_events_read_total",
            "Events read from the ring and decoded, by sink and event type.",
            &|s| &s.read,
        );
        per_sink_kind(
            &mut o,
            "tracker_shipper_events_written_total",
            "Events handed to the destination (temporary files written, messages produced).",
            &|s| &s.written,
        );
        per_sink_kind(&mut o, "tracker_shipper_events_acked_total", "Events the destination acknowledged (files committed, broker acks); the ring is acknowledged after them.", &|s| &s.acked);
        let simple = |o: &mut String,
                      name: &str,
                      kind: &str,
                      text: &str,
                      f: &dyn Fn(&SinkMetrics) -> i64| {
            help(o, name, kind, text);
            for s in &self.sinks {
                let _ = writeln!(o, "{name}{{sink=\"{}\"}} {}", s.name, f(s));
            }
        };
        simple(&mut o, "tracker_shipper_dead_letters_total", "counter", "Records that did not decode and messages the destination refused for good, written to the dead letters.", &|s| s.dead_letters.load(Relaxed) as i64);
        simple(
            &mut o,
            "tracker_shipper_skipped_records_total",
            "counter",
            "Records of nginx workers that died mid-write, skipped in the ring.",
            &|s| s.skipped.load(Relaxed) as i64,
        );
        simple(&mut o, "tracker_shipper_malformed_records_total", "counter", "Committed ring records that are not a valid event (a bug or a torn write): skipped, kept in the dead letters.", &|s| s.malformed.load(Relaxed) as i64);
        simple(&mut o, "tracker_shipper_ring_corruptions_total", "counter", "Times the reader found the ring header's cursors corrupt (torn or overwritten) and resynchronized.", &|s| s.ring_corruptions.load(Relaxed) as i64);
        simple(
            &mut o,
            "tracker_shipper_batch_errors_total",
            "counter",
            "Batches that failed and were read again from the ring.",
            &|s| s.batch_errors.load(Relaxed) as i64,
        );
        simple(
            &mut o,
            "tracker_shipper_commits_total",
            "counter",
            "Acknowledgements of the sink's cursor in the ring.",
            &|s| s.commits.load(Relaxed) as i64,
        );
        simple(
            &mut o,
            "tracker_shipper_destination_up",
            "gauge",
            "1 when the destination is reachable, 0 when not, -1 before the first attempt.",
            &|s| s.up.load(Relaxed),
        );
        simple(
            &mut o,
            "tracker_shipper_destination_down_seconds",
            "gauge",
            "Seconds since the destination became unreachable (0 when reachable).",
            &|s| {
                s.down_since
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .map(|t| t.elapsed().as_secs() as i64)
                    .unwrap_or(0)
            },
        );
        help(
            &mut o,
            "tracker_shipper_delivery_errors_total",
            "counter",
            "Delivery errors reported by the destination, by reason.",
        );
        for s in &self.sinks {
            let m = s.delivery_errors.lock().unwrap_or_else(|p| p.into_inner());
            for (reason, n) in m.iter() {
                let _ = writeln!(
                    o,
                    "tracker_shipper_delivery_errors_total{{sink=\"{}\",reason=\"{}\"}} {n}",
                    s.name,
                    label(reason)
                );
            }
        }
        help(
            &mut o,
            "tracker_shipper_uptime_seconds",
            "gauge",
            "Seconds since the shipper started.",
        );
        let _ = writeln!(
            o,
            "tracker_shipper_uptime_seconds {}",
            self.started.elapsed().as_secs()
        );
        self.render_ring(&mut o);
        o
    }

    fn render_ring(&self, o: &mut String) {
        help(
            o,
            "tracker_ring_up",
            "gauge",
            "1 when the ring file could be read.",
        );
        let rf = match RingFile::open_existing(&self.ring) {
            Ok(rf) => rf,
            Err(_) => {
                let _ = writeln!(o, "tracker_ring_up 0");
                return;
            }
        };
        let _ = writeln!(o, "tracker_ring_up 1");
        let ring = rf.ring();
        let s = ring.stats();
        let lag = s.producer_pos.saturating_sub(s.consumer_pos);
        help(
            o,
            "tracker_ring_size_bytes",
            "gauge",
            "Size of the ring's data area.",
        );
        let _ = writeln!(o, "tracker_ring_size_bytes {}", s.data_size);
        help(o, "tracker_ring_fill_ratio", "gauge", "Share of the ring holding events not yet acknowledged by every sink (nginx drops events at 1).");
        let _ = writeln!(
            o,
            "tracker_ring_fill_ratio {:.6}",
            lag as f64 / s.data_size.max(1) as f64
        );
        help(
            o,
            "tracker_ring_lag_bytes",
            "gauge",
            "Bytes written by nginx that a sink has not acknowledged yet.",
        );
        for (name, pos) in ring.cursors() {
            let _ = writeln!(
                o,
                "tracker_ring_lag_bytes{{sink=\"{}\"}} {}",
                label(&name),
                s.producer_pos.saturating_sub(pos)
            );
        }
        help(
            o,
            "tracker_ring_producer_position_bytes",
            "counter",
            "The ring's producer cursor (bytes ever reserved).",
        );
        let _ = writeln!(o, "tracker_ring_producer_position_bytes {}", s.producer_pos);
        let kinds =
            |o: &mut String, name: &str, text: &str, a: &[u64; COUNTER_KINDS], extra: &str| {
                help(o, name, "counter", text);
                for (i, &v) in a.iter().enumerate() {
                    if shown(i, v) {
                        let _ = writeln!(o, "{name}{{{extra}type=\"{}\"}} {v}", type_name(i));
                    }
                }
            };
        kinds(
            o,
            "tracker_ring_events_written_total",
            "Events nginx wrote to the ring, by type.",
            &s.written,
            "",
        );
        help(
            o,
            "tracker_ring_events_dropped_total",
            "counter",
            "Events nginx could not store, by reason (ring full, too large) and type.",
        );
        for (reason, a) in [
            ("full", &s.dropped_full),
            ("too_large", &s.dropped_too_large),
        ] {
            for (i, &v) in a.iter().enumerate() {
                if shown(i, v) {
                    let _ = writeln!(
                        o,
                        "tracker_ring_events_dropped_total{{reason=\"{reason}\",type=\"{}\"}} {v}",
                        type_name(i)
                    );
                }
            }
        }
        kinds(
            o,
            "tracker_ring_events_rejected_total",
            "Events nginx did not store on purpose (tracker_unknown_campaign count), by type.",
            &s.rejected,
            "",
        );
        kinds(o, "tracker_ring_events_duplicate_total", "Duplicates nginx saw within the window (tracker_duplicates), stored flagged or only counted, by type.", &s.duplicates, "");
        help(o, "tracker_duplicate_evictions_total", "counter", "Entries of nginx's duplicate set pushed out while still in their window (tracker_duplicates_zone too small).");
        let _ = writeln!(
            o,
            "tracker_duplicate_evictions_total {}",
            s.duplicate_evictions
        );
        help(o, "tracker_invalid_requests_total", "counter", "Requests nginx refused as invalid (tracker_limits, tracker_invalid reject), never stored, by reason.");
        for re in tracker_core::limits::Reason::ALL {
            let _ = writeln!(
                o,
                "tracker_invalid_requests_total{{reason=\"{}\"}} {}",
                re.name(),
                s.invalid[re.index()]
            );
        }
        help(
            o,
            "tracker_ring_records_abandoned_total",
            "counter",
            "Records whose nginx worker died mid-write.",
        );
        let _ = writeln!(o, "tracker_ring_records_abandoned_total {}", s.abandoned);
    }
}

/// Binds `addr` and serves `/metrics` on a background thread for the life of the process.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        warn!("metrics on {local}: not a loopback address; protect it with a firewall");
    }
    info!("metrics on http://{local}/metrics");
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        if let Err(e) = answer(c, &metrics) {
                            log::debug!("metrics connection: {e}");
                        }
                    }
                    Err(e) => {
                        log::debug!("metrics accept: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })?;
    Ok(local)
}

/// One request, one answer, then close (`Connection: close`).
fn answer(mut c: TcpStream, metrics: &Metrics) -> io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < buf.len() {
        let r = c.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
            || buf[..n].windows(2).any(|w| w == b"\n\n")
        {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        resp.extend_from_slice(body.as_bytes());
    }
    c.write_all(&resp)
}
