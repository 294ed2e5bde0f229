//! The drain: reads the ring from its consumer cursor (ahead of it: the cursor moves only when
//! the sink commits), cuts the records into chunks and hands them to the encoding workers,
//! whose output the writer thread puts into the sink in ring order:
//!
//! ```text
//! reader (this thread) --chunks--> N encode workers --encoded chunks--> writer (batches, commits)
//! ```
//!
//! The reader polls the ring with a short sleep when it is empty, and watches the signals:
//! SIGTERM/SIGINT end the drain (the writer commits what was read and returns), SIGHUP is
//! logged. With `--once` it stops at the producer cursor seen at the start. Never a log line
//! per event.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use log::{info, warn};
use tracker_core::ring::{Cursor, Read};

use crate::batch::{self, sleep_unless_stopped, ToWriter, Totals, WriterOptions};
use crate::encode::{encode_chunk, Chunk, Encoding, WarnLimiter, CHUNK_RECORDS};
use crate::metrics::SinkMetrics;
use crate::sink::Sink;

/// How often the reader checks whether the ring file was replaced.
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
    /// Encoding worker threads (at least 1).
    pub threads: usize,
    pub encoding: Encoding,
    /// Whether this drain counts the records of dead writers it skips in the ring header
    /// (one sink does, so that they are counted once).
    pub count_skips: bool,
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

/// The reader's error when the writer thread has ended (its channel is closed): `BrokenPipe`,
/// so that [`run`] can tell it from other errors.
fn writer_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the writer thread stopped")
}

/// Drains the ring into `sink` from the sink's `cursor` until stopped (or, with `once`, until
/// what the ring held at the start is committed). The sink must have recovered already.
/// `replaced` tells whether the ring's path now names another file (checked every few seconds
/// when idle).
#[allow(clippy::too_many_arguments)]
pub fn run(
    cursor: &Cursor<'_>,
    sink: &mut dyn Sink,
    metrics: &SinkMetrics,
    opts: &Options,
    signals: &Signals,
    replaced: &dyn Fn() -> bool,
    totals: &mut Totals,
) -> io::Result<Exit> {
    let warnings = WarnLimiter::default();
    let threads = opts.threads.max(1);
    let wopts = WriterOptions {
        flush_interval: opts.flush_interval,
        once: opts.once,
    };
    thread::scope(|s| {
        let (work_tx, work_rx) = bounded::<(u64, u64, Chunk)>(threads * 2);
        let (out_tx, out_rx) = bounded::<ToWriter>(threads * 4 + 4);
        let (err_tx, err_rx) = unbounded::<io::Error>();
        for i in 0..threads {
            let (work_rx, out_tx, warnings, encoding) =
                (work_rx.clone(), out_tx.clone(), &warnings, opts.encoding);
            thread::Builder::new()
                .name(format!("{}-encode-{i}", metrics.name))
                .spawn_scoped(s, move || {
                    for (gen, seq, chunk) in work_rx {
                        let chunk = encode_chunk(chunk, encoding, warnings);
                        if out_tx.send(ToWriter::Chunk { gen, seq, chunk }).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawning an encoding thread");
        }
        drop(work_rx);
        let writer = thread::Builder::new()
            .name(format!("{}-writer", metrics.name))
            .spawn_scoped(s, || {
                batch::run(
                    cursor, sink, metrics, out_rx, err_tx, &wopts, signals, &warnings, totals,
                )
            })
            .expect("spawning the writer thread");
        let read = read_loop(
            cursor, opts, signals, replaced, &work_tx, &out_tx, &err_rx, &warnings, metrics,
        );
        drop(work_tx);
        drop(out_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writer thread panicked")));
        match (read, written) {
            (Ok(exit), Ok(())) => Ok(exit),
            // The writer's error says more than "the writer thread stopped".
            (_, Err(e)) => Err(e),
            // Stopping: the writer may end (having committed, or left a decided batch for the
            // next start) before the reader sees the signal and finds its channel closed.
            (Err(e), Ok(()))
                if e.kind() == io::ErrorKind::BrokenPipe
                    && signals.stop.load(Ordering::Relaxed) =>
            {
                Ok(Exit::Stopped)
            }
            (Err(e), Ok(())) => Err(e),
        }
    })
}

/// Whether a producer cursor cannot be a position (not a multiple of 16, or at least 2^62).
fn unusable(producer: u64) -> bool {
    !producer.is_multiple_of(16) || producer >= 1 << 62
}

/// The warning for [`Read::Corrupt`]: what the cursors are and what the drain does about it
/// (docs/ring.md, "Corrupt cursors").
fn corrupt_message(producer: u64, consumer: u64, size: u64) -> String {
    let what = if unusable(producer) {
        "the producer cursor is unusable: nginx's writes fail as `full` and nothing can be read; \
         stop nginx and remove the ring file (nginx creates a new one)"
    } else if !consumer.is_multiple_of(16) {
        "the consumer cursor is not on a record boundary: reading on from the next record"
    } else if producer < consumer {
        "the producer cursor is behind the consumer cursor: events nginx writes until it passes it \
         are lost, then reading goes on"
    } else {
        "the producer cursor is more than a lap ahead: reading what the ring still holds, then \
         resuming at the producer cursor (nginx's writes fail as `full` until then)"
    };
    format!(
        "the ring header is corrupt (torn or overwritten): producer cursor {producer}, consumer cursor \
         {consumer}, data size {size}; {what}"
    )
}

/// Logs when the reader's hold (space a possibly live writer may still write, which nginx may
/// not reuse: docs/ring.md, "Holds") starts, moves on or is released; once per change, never per
/// event. `last` is what was logged before.
fn note_hold(last: &mut Option<u64>, now: Option<u64>) {
    if *last == now {
        return;
    }
    match (*last, now) {
        (None, Some(at)) => warn!(
            "ring space from position {at} on is held: a record there was skipped, but its writer may \
             be alive (stopped or stalled), so nginx may not reuse the space until it finishes or exits \
             (the ring may fill up meanwhile: drops are counted as full)"
        ),
        (Some(from), None) => info!(
            "ring space held from position {from} is released: its writers finished or exited"
        ),
        (Some(from), Some(to)) => info!(
            "ring space held from position {from} is released up to {to}, still held from there"
        ),
        (None, None) => {}
    }
    *last = now;
}

#[allow(clippy::too_many_arguments)]
fn read_loop(
    cursor: &Cursor<'_>,
    opts: &Options,
    signals: &Signals,
    replaced: &dyn Fn() -> bool,
    work: &Sender<(u64, u64, Chunk)>,
    out: &Sender<ToWriter>,
    errors: &Receiver<io::Error>,
    warnings: &WarnLimiter,
    metrics: &SinkMetrics,
) -> io::Result<Exit> {
    let ring = cursor.ring();
    let new_reader = || {
        cursor
            .reader()
            .with_stale_after(opts.stale_after)
            .counting_skips(opts.count_skips)
    };
    let mut reader = new_reader();
    // The reader's hold as last logged (a hold resumed from the header is logged too).
    let mut held = None;
    let once_target = opts.once.then(|| ring.producer_pos());
    let (mut gen, mut seq) = (0u64, 0u64);
    let mut chunk = Chunk::default();
    // Records since the last chunk marked last_of_batch.
    let mut in_batch = 0usize;
    let mut since_check = 0u32;
    let mut backoff = BACKOFF_MIN;
    let mut last_error: Option<Instant> = None;
    let mut last_replaced_check = Instant::now();
    // Set once the ring's path names another file: (idle since, producer cursor then).
    let mut old_ring_idle: Option<(Instant, u64)> = None;

    // Hands the current chunk to the workers.
    macro_rules! send_chunk {
        () => {{
            if chunk.end.is_some() {
                let c = std::mem::replace(
                    &mut chunk,
                    Chunk {
                        records: Vec::with_capacity(CHUNK_RECORDS),
                        ..Chunk::default()
                    },
                );
                work.send((gen, seq, c)).map_err(|_| writer_gone())?;
                seq += 1;
            }
        }};
    }
    macro_rules! finish {
        ($exit:expr) => {{
            send_chunk!();
            out.send(ToWriter::Finish { gen, next_seq: seq })
                .map_err(|_| writer_gone())?;
            return Ok($exit);
        }};
    }

    loop {
        // A sink error: the writer aborted the batch; start again from the consumer cursor.
        if let Ok(e) = errors.try_recv() {
            if opts.once {
                return Err(e);
            }
            if last_error.is_some_and(|t| t.elapsed() > Duration::from_secs(300)) {
                backoff = BACKOFF_MIN;
            }
            last_error = Some(Instant::now());
            info!("retrying in {}s", backoff.as_secs());
            sleep_unless_stopped(backoff, signals);
            backoff = (backoff * 2).min(BACKOFF_MAX);
            gen += 1;
            seq = 0;
            chunk = Chunk::default();
            in_batch = 0;
            reader = new_reader();
            out.send(ToWriter::Reset { gen })
                .map_err(|_| writer_gone())?;
            continue;
        }
        match reader.next() {
            Read::Record(rec) => {
                chunk.end = Some(rec.end);
                chunk.records.push(rec);
                in_batch += 1;
                if in_batch >= opts.max_batch_events {
                    chunk.last_of_batch = true;
                    in_batch = 0;
                    send_chunk!();
                } else if chunk.records.len() >= CHUNK_RECORDS {
                    send_chunk!();
                }
                since_check += 1;
                if since_check >= 256 {
                    since_check = 0;
                    if signals.stop.load(Ordering::Relaxed) {
                        finish!(Exit::Stopped);
                    }
                }
            }
            Read::Skipped { from, to } => {
                if warnings.may_warn() {
                    warn!(
                        "skipped {} bytes at ring position {from}: a record whose writer died or stalled \
                         before finishing it (counted as abandoned)",
                        to - from
                    );
                }
                note_hold(&mut held, reader.held());
                chunk.end = Some(to);
                chunk.skipped += 1;
                chunk.skipped_bytes += to - from;
            }
            Read::Corrupt { producer, consumer } => {
                // Once per episode (the reader says it once): never rate-limited away.
                metrics.ring_corruptions.fetch_add(1, Ordering::Relaxed);
                warn!("{}", corrupt_message(producer, consumer, ring.data_size()));
            }
            Read::Resynced { from, to } => {
                warn!(
                    "ring resynchronized: nothing readable in the lap from position {from} (the producer cursor \
                     jumped ahead), reading again at {to}; {} bytes of positions given up",
                    to - from
                );
                chunk.end = Some(to);
                send_chunk!();
            }
            Read::Empty => {
                send_chunk!();
                note_hold(&mut held, reader.held());
                if signals.stop.load(Ordering::Relaxed) {
                    finish!(Exit::Stopped);
                }
                if let Some(target) = once_target {
                    // An unusable producer cursor (reported) would never be reached.
                    if reader.position() >= target || unusable(ring.producer_pos()) {
                        finish!(Exit::Drained);
                    }
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
                        Some((since, p))
                            if p == pp
                                && reader.position() >= pp
                                && since.elapsed() >= OLD_RING_IDLE =>
                        {
                            finish!(Exit::RingReplaced);
                        }
                        Some((_, p)) if p == pp && reader.position() >= pp => {}
                        Some(_) => old_ring_idle = Some((Instant::now(), pp)),
                        None => {}
                    }
                }
                std::thread::sleep(opts.poll);
            }
        }
    }
}
