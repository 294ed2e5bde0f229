//! The writer thread: puts the encoded chunks into the sink in ring order and decides when a
//! batch is committed: after a chunk the reader marked as the end of `max_batch_events`
//! records (so a batch never holds more), when its first chunk is
//! `flush_interval` old, when the sink asks (too many open files), and at the end (SIGTERM,
//! SIGINT, `--once` drained). Also logs the periodic summary (at most every 10 s, only when
//! something happened).
//!
//! Chunks arrive from the encoding workers out of order, tagged with a sequence number; they
//! are applied strictly in sequence order, so a file holds its events in ring order and a
//! commit position always covers exactly the records before it. After a sink error the batch
//! is aborted (see [`Sink::abort`]), the reader is told, and chunks are dropped until the
//! reader restarts from the consumer cursor with a new generation number.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{error, info};
use tracker_core::ring::{Cursor, Ring, RingStats, COUNTER_KINDS};

use crate::drain::Signals;
use crate::encode::{EncodedChunk, WarnLimiter};
use crate::metrics::SinkMetrics;
use crate::sink::{Committed, Sink};

/// How often the summary may be logged.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Messages to the writer thread (chunks are moved once per ~1000 events: boxing them would
/// not save anything).
#[allow(clippy::large_enum_variant)]
pub enum ToWriter {
    /// Chunk `seq` of generation `gen`.
    Chunk {
        gen: u64,
        seq: u64,
        chunk: EncodedChunk,
    },
    /// Every chunk of generation `gen` before `next_seq` has been sent: commit them and return.
    Finish { gen: u64, next_seq: u64 },
    /// The reader restarted from the consumer cursor after an error: generation `gen`, from
    /// sequence 0.
    Reset { gen: u64 },
}

#[derive(Clone, Debug)]
pub struct WriterOptions {
    pub flush_interval: Duration,
    /// Return the error instead of waiting for a reset.
    pub once: bool,
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
    /// Committed ring records that did not decode (also in `dead_letters`).
    pub malformed: u64,
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
}

impl Summary {
    fn new(ring: &Ring, totals: Totals) -> Summary {
        Summary {
            at: Instant::now(),
            totals,
            stats: ring.stats(),
        }
    }

    /// Logs the summary if SUMMARY_EVERY has passed (or `force`) and something happened.
    fn maybe_log(
        &mut self,
        cursor: &Cursor<'_>,
        name: &str,
        now: &Totals,
        warnings: &WarnLimiter,
        force: bool,
    ) {
        let ring = cursor.ring();
        let elapsed = self.at.elapsed();
        if !force && elapsed < SUMMARY_EVERY {
            return;
        }
        let unlogged = warnings.reset();
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
            || now.malformed > t0.malformed
            || d_full + d_large + d_abandoned > 0
            || unlogged > 0;
        if active {
            let lag = s.producer_pos.saturating_sub(cursor.position());
            let secs = elapsed.as_secs_f64().max(0.001);
            info!(
                "{name}: {:.1}s: {events} events ({:.0}/s) in {} files, {} bytes; {} dead letters ({} malformed records), {} skipped records; \
                 lag {lag} bytes ({:.1}% of the ring); ring drops: full +{d_full} (total {}), too large +{d_large} \
                 (total {}), abandoned +{d_abandoned} (total {}){}",
                secs,
                events as f64 / secs,
                now.files - t0.files,
                now.bytes - t0.bytes,
                now.dead_letters - t0.dead_letters,
                now.malformed - t0.malformed,
                now.skipped - t0.skipped,
                lag as f64 * 100.0 / s.data_size.max(1) as f64,
                sum(&s.dropped_full),
                sum(&s.dropped_too_large),
                s.abandoned,
                if unlogged > 0 { format!("; {unlogged} warnings not logged") } else { String::new() },
            );
        }
        *self = Summary {
            at: Instant::now(),
            totals: *now,
            stats: s,
        };
    }
}

/// The batch being gathered.
#[derive(Default)]
struct Batch {
    /// Events per type in the batch.
    by_kind: [u64; COUNTER_KINDS],
    /// Ring position after the last record of the batch (read or skipped).
    end: Option<u64>,
    /// Records of the batch that did not decode.
    malformed: u64,
    started: Option<Instant>,
}

impl Batch {
    fn due(&self, interval: Duration) -> bool {
        self.started.is_some_and(|t| t.elapsed() >= interval)
    }
}

/// Sleeps `d`, waking early on a stop signal.
pub fn sleep_unless_stopped(d: Duration, signals: &Signals) {
    let until = Instant::now() + d;
    while !signals.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= until {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

struct Writer<'a> {
    cursor: &'a Cursor<'a>,
    sink: &'a mut dyn Sink,
    metrics: &'a SinkMetrics,
    batch: Batch,
    totals: &'a mut Totals,
}

impl Writer<'_> {
    fn add(&mut self, chunk: EncodedChunk) -> io::Result<()> {
        let Some(end) = chunk.end else { return Ok(()) };
        self.totals.skipped += chunk.skipped;
        self.totals.skipped_bytes += chunk.skipped_bytes;
        self.metrics
            .skipped
            .fetch_add(chunk.skipped, Ordering::Relaxed);
        SinkMetrics::add(&self.metrics.read, &chunk.by_kind);
        for (b, n) in self.batch.by_kind.iter_mut().zip(chunk.by_kind) {
            *b += n;
        }
        self.batch.started.get_or_insert_with(Instant::now);
        self.batch.malformed += chunk.dead.len() as u64;
        let last = chunk.last_of_batch;
        self.sink.add(chunk)?;
        self.batch.end = Some(end);
        if last || self.sink.wants_commit() {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> io::Result<()> {
        if let Some(end) = self.batch.end {
            let c = self.sink.commit(self.cursor, end)?;
            self.totals.add(&c);
            // Counted once committed (a failed batch is read, and counted, again).
            self.totals.malformed += self.batch.malformed;
            self.metrics
                .malformed
                .fetch_add(self.batch.malformed, Ordering::Relaxed);
            self.metrics.commits.fetch_add(1, Ordering::Relaxed);
            if self.sink.counts_acks_itself() {
                // The sink counted its acknowledgements as they came.
            } else {
                SinkMetrics::add(&self.metrics.written, &self.batch.by_kind);
                SinkMetrics::add(&self.metrics.acked, &self.batch.by_kind);
                self.metrics
                    .dead_letters
                    .fetch_add(c.dead_letters, Ordering::Relaxed);
            }
        }
        self.batch = Batch::default();
        Ok(())
    }
}

/// The writer thread's loop. Returns when told to finish (after committing), when the reader
/// is gone, or (with `once`, or when stopped while the sink cannot recover) on a sink error.
#[allow(clippy::too_many_arguments)]
pub fn run(
    cursor: &Cursor<'_>,
    sink: &mut dyn Sink,
    metrics: &SinkMetrics,
    rx: Receiver<ToWriter>,
    errors: Sender<io::Error>,
    opts: &WriterOptions,
    signals: &Signals,
    warnings: &WarnLimiter,
    totals: &mut Totals,
) -> io::Result<()> {
    let ring = cursor.ring();
    let mut summary = Summary::new(ring, *totals);
    let mut w = Writer {
        cursor,
        sink,
        metrics,
        batch: Batch::default(),
        totals,
    };
    let mut gen = 0u64;
    let mut next_seq = 0u64;
    let mut pending: BTreeMap<u64, EncodedChunk> = BTreeMap::new();
    let mut finish_at: Option<u64> = None;
    // After an error, until the reader resets.
    let mut discarding = false;
    loop {
        let timeout = match w.batch.started {
            Some(t) => (t + opts.flush_interval).saturating_duration_since(Instant::now()),
            None => Duration::from_millis(500),
        }
        .min(Duration::from_millis(500));
        match rx.recv_timeout(timeout) {
            Ok(ToWriter::Chunk { gen: g, seq, chunk }) => {
                if g == gen && !discarding {
                    pending.insert(seq, chunk);
                }
            }
            Ok(ToWriter::Finish {
                gen: g,
                next_seq: n,
            }) => {
                if g == gen {
                    if discarding {
                        // Stopping before the reader saw the error: the batch was aborted,
                        // the ring still holds its records.
                        return Ok(());
                    }
                    finish_at = Some(n);
                }
            }
            Ok(ToWriter::Reset { gen: g }) => {
                gen = g;
                next_seq = 0;
                pending.clear();
                finish_at = None;
                discarding = false;
                w.batch = Batch::default();
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The reader is gone without a Finish: leave the batch uncommitted (it is read
            // again next time).
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if !discarding {
            let mut result = Ok(());
            while let Some(chunk) = pending.remove(&next_seq) {
                next_seq += 1;
                result = w.add(chunk);
                if result.is_err() {
                    break;
                }
            }
            if result.is_ok() && (w.batch.due(opts.flush_interval) || finish_at == Some(next_seq)) {
                result = w.commit();
            }
            if let Err(e) = result {
                if e.kind() == io::ErrorKind::Interrupted && signals.stop.load(Ordering::Relaxed) {
                    // Stopping while the destination is away: nothing to undo.
                    info!("{}: {e}", w.metrics.name);
                    let _ = abort(w.cursor, w.sink, signals);
                    return Ok(());
                }
                error!(
                    "{} sink error: {e}; the batch is dropped and read again from the ring",
                    w.metrics.name
                );
                w.metrics.batch_errors.fetch_add(1, Ordering::Relaxed);
                abort(w.cursor, w.sink, signals)?;
                w.batch = Batch::default();
                pending.clear();
                discarding = true;
                if opts.once || finish_at.is_some() {
                    return Err(e);
                }
                let _ = errors.send(e);
            } else if finish_at == Some(next_seq) {
                summary.maybe_log(w.cursor, w.metrics.name, w.totals, warnings, true);
                return Ok(());
            }
        }
        summary.maybe_log(w.cursor, w.metrics.name, w.totals, warnings, false);
    }
}

/// Brings the sink back to a state consistent with the ring, retrying with a growing pause.
fn abort(cursor: &Cursor<'_>, sink: &mut dyn Sink, signals: &Signals) -> io::Result<()> {
    let mut backoff = BACKOFF_MIN;
    loop {
        match sink.abort(cursor) {
            Ok(()) => return Ok(()),
            Err(e) => {
                error!(
                    "cleaning up after the error failed: {e}; retrying in {}s",
                    backoff.as_secs()
                );
                if signals.stop.load(Ordering::Relaxed) {
                    return Err(e);
                }
                sleep_unless_stopped(backoff, signals);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
