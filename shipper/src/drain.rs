//! The drain loop: reads the ring from its consumer cursor (reading ahead of it), decodes each
//! record, hands it to the sink, and commits batches: when a batch has `max_batch_events`
//! events, when its first record is `flush_interval` old, when the sink asks (too many open
//! files), and on SIGTERM/SIGINT before exiting. Logs a summary at most every 10 s when
//! something happened; never a line per event.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};
use tracker_core::event::decode;
use tracker_core::ring::{Read, Reader, Ring, RingStats};

use crate::sink::{Committed, Sink};

/// How often the summary may be logged.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
/// Individual warnings (dead letters, skipped records) per summary period; the rest are counted.
const WARNINGS_PER_PERIOD: u32 = 10;
/// How often the loop checks whether the ring file was replaced.
const REPLACED_CHECK_EVERY: Duration = Duration::from_secs(5);
/// An old ring (its path now names another file) is left once idle this long.
const OLD_RING_IDLE: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct Options {
    pub flush_interval: Duration,
    pub max_batch_events: usize,
    pub poll: Duration,
    pub stale_after: Duration,
    /// Drain what the ring holds at the start, then return.
    pub once: bool,
}

/// Flags set by signal handlers.
#[derive(Clone, Default)]
pub struct Signals {
    /// SIGTERM or SIGINT: commit and exit.
    pub stop: Arc<AtomicBool>,
    /// SIGHUP.
    pub hup: Arc<AtomicBool>,
}

/// Why [`run`] returned.
#[derive(Debug, PartialEq)]
pub enum Exit {
    /// SIGTERM/SIGINT, after committing.
    Stopped,
    /// `--once`: everything the ring held at the start is committed.
    Drained,
    /// The ring's path now names another file and the old ring was drained: reopen it.
    RingReplaced,
}

/// Counters since the start.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub events: u64,
    pub dead_letters: u64,
    pub files: u64,
    pub bytes: u64,
    pub commits: u64,
    pub skipped: u64,
    pub skipped_bytes: u64,
}

impl Totals {
    fn add(&mut self, c: &Committed) {
        self.events += c.events;
        self.dead_letters += c.dead_letters;
        self.files += c.files;
        self.bytes += c.bytes;
        self.commits += 1;
    }
}

/// The periodic summary.
struct Summary {
    at: Instant,
    totals: Totals,
    stats: RingStats,
    warnings: u32,
    unlogged: u32,
}

impl Summary {
    fn new(ring: &Ring, totals: Totals) -> Summary {
        Summary { at: Instant::now(), totals, stats: ring.stats(), warnings: 0, unlogged: 0 }
    }

    /// Whether a warning may be logged now (else it is counted for the summary).
    fn may_warn(&mut self) -> bool {
        if self.warnings < WARNINGS_PER_PERIOD {
            self.warnings += 1;
            true
        } else {
            self.unlogged += 1;
            false
        }
    }

    /// Logs the summary if SUMMARY_EVERY has passed (or `force`) and something happened.
    fn maybe_log(&mut self, ring: &Ring, now: &Totals, force: bool) {
        let elapsed = self.at.elapsed();
        if !force && elapsed < SUMMARY_EVERY {
            return;
        }
        let s = ring.stats();
        let sum = |a: &[u64]| a.iter().sum::<u64>();
        let d_full = sum(&s.dropped_full) - sum(&self.stats.dropped_full);
        let d_large = sum(&s.dropped_too_large) - sum(&self.stats.dropped_too_large);
        let d_abandoned = s.abandoned - self.stats.abandoned;
        let t0 = &self.totals;
        let events = now.events - t0.events;
        let active = events > 0
            || now.dead_letters > t0.dead_letters
            || now.skipped > t0.skipped
            || d_full + d_large + d_abandoned > 0
            || self.unlogged > 0;
        if active {
            let lag = s.producer_pos.saturating_sub(s.consumer_pos);
            let secs = elapsed.as_secs_f64().max(0.001);
            info!(
                "{:.1}s: {events} events ({:.0}/s) in {} files, {} bytes; {} dead letters, {} skipped records; \
                 lag {lag} bytes ({:.1}% of the ring); ring drops: full +{d_full} (total {}), too large +{d_large} \
                 (total {}), abandoned +{d_abandoned} (total {}){}",
                secs,
                events as f64 / secs,
                now.files - t0.files,
                now.bytes - t0.bytes,
                now.dead_letters - t0.dead_letters,
                now.skipped - t0.skipped,
                lag as f64 * 100.0 / s.data_size.max(1) as f64,
                sum(&s.dropped_full),
                sum(&s.dropped_too_large),
                s.abandoned,
                if self.unlogged > 0 { format!("; {} warnings not logged", self.unlogged) } else { String::new() },
            );
        }
        *self = Summary { at: Instant::now(), totals: *now, stats: s, warnings: 0, unlogged: 0 };
    }
}

/// The batch being read.
#[derive(Default)]
struct Batch {
    records: usize,
    /// Ring position after the last record read or skipped (what a commit acknowledges).
    end: Option<u64>,
    started: Option<Instant>,
}

impl Batch {
    fn touch(&mut self, end: u64) {
        self.end = Some(end);
        if self.started.is_none() {
            self.started = Some(Instant::now());
        }
    }

    fn due(&self, interval: Duration) -> bool {
        self.started.is_some_and(|t| t.elapsed() >= interval)
    }
}

/// Sleeps `d`, waking early on a stop signal.
fn sleep_unless_stopped(d: Duration, signals: &Signals) {
    let until = Instant::now() + d;
    while !signals.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// Drains `ring` into `sink` until stopped (or, with `once`, until what the ring held at the
/// start is committed). The sink must have recovered already. `replaced` tells whether the
/// ring's path now names another file (checked every few seconds when idle).
// The commit macro resets state that is not read again when a return follows it.
#[allow(unused_assignments)]
pub fn run(
    ring: &Ring,
    sink: &mut dyn Sink,
    opts: &Options,
    signals: &Signals,
    replaced: &dyn Fn() -> bool,
    totals: &mut Totals,
) -> std::io::Result<Exit> {
    let mut reader = Reader::new(ring).with_stale_after(opts.stale_after);
    let once_target = opts.once.then(|| ring.producer_pos());
    let mut batch = Batch::default();
    let mut summary = Summary::new(ring, *totals);
    let mut since_check = 0u32;
    let mut backoff = BACKOFF_MIN;
    let mut last_replaced_check = Instant::now();
    // Set once the ring's path names another file: (since when idle, producer cursor then).
    let mut old_ring_idle: Option<(Instant, u64)> = None;

    // Commits the batch; on error, aborts it and resumes from the consumer cursor after a pause.
    // Returns false when the batch could not be committed.
    macro_rules! commit_batch {
        () => {{
            let ok = match batch.end {
                None => true,
                Some(end) => match sink.commit(ring, end) {
                    Ok(c) => {
                        totals.add(&c);
                        backoff = BACKOFF_MIN;
                        true
                    }
                    Err(e) => {
                        recover_from_error(&e, ring, sink, opts, signals, &mut backoff)?;
                        reader = Reader::new(ring).with_stale_after(opts.stale_after);
                        false
                    }
                },
            };
            batch = Batch::default();
            ok
        }};
    }

    loop {
        match reader.next() {
            Read::Record(rec) => {
                let res = match decode(&rec.payload) {
                    Ok(ev) => sink.add(&ev, &rec.payload),
                    Err(e) => {
                        if summary.may_warn() {
                            warn!(
                                "undecodable record at ring position {} ({} bytes): {}; written to the dead letters",
                                rec.pos,
                                rec.payload.len(),
                                e.0
                            );
                        }
                        sink.dead_letter(rec.pos, &rec.payload, &e.0)
                    }
                };
                if let Err(e) = res {
                    recover_from_error(&e, ring, sink, opts, signals, &mut backoff)?;
                    reader = Reader::new(ring).with_stale_after(opts.stale_after);
                    batch = Batch::default();
                    continue;
                }
                batch.touch(rec.end);
                batch.records += 1;
                if batch.records >= opts.max_batch_events || sink.wants_commit() {
                    commit_batch!();
                }
                since_check += 1;
                if since_check >= 256 {
                    since_check = 0;
                    if signals.stop.load(Ordering::Relaxed) {
                        commit_batch!();
                        summary.maybe_log(ring, totals, true);
                        return Ok(Exit::Stopped);
                    }
                    if batch.due(opts.flush_interval) {
                        commit_batch!();
                    }
                    summary.maybe_log(ring, totals, false);
                }
            }
            Read::Skipped { from, to } => {
                totals.skipped += 1;
                totals.skipped_bytes += to - from;
                if summary.may_warn() {
                    warn!(
                        "skipped {} bytes at ring position {from}: a record whose writer died or stalled \
                         before finishing it (counted as abandoned)",
                        to - from
                    );
                }
                batch.touch(to);
            }
            Read::Empty => {
                if signals.stop.load(Ordering::Relaxed) {
                    commit_batch!();
                    summary.maybe_log(ring, totals, true);
                    return Ok(Exit::Stopped);
                }
                if let Some(target) = once_target {
                    if reader.position() >= target {
                        if commit_batch!() {
                            summary.maybe_log(ring, totals, true);
                            return Ok(Exit::Drained);
                        }
                        continue;
                    }
                }
                if batch.due(opts.flush_interval) {
                    commit_batch!();
                }
                summary.maybe_log(ring, totals, false);
                if signals.hup.swap(false, Ordering::Relaxed) {
                    info!("SIGHUP: nothing to reopen (the log goes to stderr)");
                }
                if !opts.once && last_replaced_check.elapsed() >= REPLACED_CHECK_EVERY {
                    last_replaced_check = Instant::now();
                    let pp = ring.producer_pos();
                    match old_ring_idle {
                        None if replaced() => {
                            warn!(
                                "the ring path now names another file; draining this one until it has been \
                                 idle for {}s, then switching",
                                OLD_RING_IDLE.as_secs()
                            );
                            old_ring_idle = Some((Instant::now(), pp));
                        }
                        Some((since, p)) if p == pp && reader.position() >= pp => {
                            if since.elapsed() >= OLD_RING_IDLE && commit_batch!() {
                                return Ok(Exit::RingReplaced);
                            }
                        }
                        Some(_) => old_ring_idle = Some((Instant::now(), pp)),
                        None => {}
                    }
                }
                std::thread::sleep(opts.poll);
            }
        }
    }
}

/// After a sink error: logs it, brings the sink back to a state consistent with the ring
/// (retrying with a growing pause), and waits before reading again. With `--once`, or when
/// stopped meanwhile, returns the error (the process exits; the ring still has the events).
fn recover_from_error(
    e: &std::io::Error,
    ring: &Ring,
    sink: &mut dyn Sink,
    opts: &Options,
    signals: &Signals,
    backoff: &mut Duration,
) -> std::io::Result<()> {
    error!("sink error: {e}; the batch is dropped and read again from the ring");
    loop {
        match sink.abort(ring) {
            Ok(()) => break,
            Err(e2) => {
                error!("cleaning up after the error failed: {e2}");
                if opts.once || signals.stop.load(Ordering::Relaxed) {
                    return Err(e2);
                }
                sleep_unless_stopped(*backoff, signals);
                *backoff = (*backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    if opts.once {
        return Err(std::io::Error::new(e.kind(), e.to_string()));
    }
    info!("retrying in {}s", backoff.as_secs());
    sleep_unless_stopped(*backoff, signals);
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
    Ok(())
}
