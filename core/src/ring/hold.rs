//! A reader's hold: the first position it has passed (read or skipped) without seeing every
//! record from there on finished. A record the reader skips for delivery (a writer stalled past
//! `stale_after`, or a range never tagged) may still be written by a live writer: its space must
//! not go back to the producers until the writer has committed or its process is gone, or the
//! writer, once it resumes, writes over other writers' records. docs/ring.md, "Holds".
//!
//! The hold is published in the header (`holds[slot]`: `pos | 1`, 0 = none; a ring made before
//! holds existed has zeros, "no hold"), one word per cursor slot and one for a reader without a
//! cursor. [`Ring::commit`] never moves the consumer cursor past a published hold; a sink's own
//! cursor may go past it (the sink has what it needs), and the next reader of that sink resumes
//! the hold from the header, so a shipper restart neither loses the hold nor re-reads records.
//!
//! Checking walks the records from the hold to the reader's position, like a second reader that
//! never skips anything live: a committed record or padding is passed; a reserved record is
//! passed once its writer's pid is gone; a position with no tag is passed once no live writer in
//! flight may own it (writers.rs), up to the next tagged position or writer in flight.

use std::sync::atomic::Ordering::{Acquire, Release, SeqCst};
use std::sync::atomic::{fence, AtomicU64};

use super::{lap_end, pid_alive, record_fits, round16, tag, writers, Ring, REC_HDR};
use super::{STATE_COMMITTED, STATE_PADDING, STATE_RESERVED};

/// While a hold is set, it is checked after a skip, on every `Empty`, and every this many
/// records otherwise.
const CHECK_EVERY: u32 = 1024;

/// What the walk found at a position.
enum Step {
    /// Finished (or its writer is gone): go on at this position (always further).
    Next(u64),
    /// A writer that may be alive has yet to finish here.
    Live,
    /// The tag changed while looking (a writer tagged meanwhile): look again.
    Again,
}

/// The hold of one reader (see the module comment).
#[derive(Debug)]
pub(super) struct Hold {
    /// Index in the header's `holds`.
    slot: usize,
    at: Option<u64>,
    reads: u32,
}

impl Hold {
    /// The hold of a reader starting at `pos`: the one in the header if it is before `pos`
    /// (a restarted sink resumes it), otherwise none (the reader will find again whatever is
    /// still unfinished from `pos` on).
    pub(super) fn resume(ring: &Ring, slot: usize, pos: u64) -> Hold {
        let word = &ring.header().holds[slot];
        let w = word.load(Acquire);
        let at = (w & 1 == 1 && w & !1 < pos).then_some(w & !1);
        if at.is_none() && w != 0 {
            word.store(0, Release);
        }
        // Words left by writers killed while in flight are reclaimed at every start.
        writers::reclaim_dead(&ring.header().writers, pid_alive);
        Hold { slot, at, reads: 0 }
    }

    pub(super) fn position(&self) -> Option<u64> {
        self.at
    }

    /// The reader skipped `[from, to)`: hold from `from` (unless it holds from earlier already)
    /// and check at once (a dead writer's record is released right away).
    pub(super) fn skipped(&mut self, ring: &Ring, from: u64, to: u64) {
        if self.at.is_none() {
            self.set(ring, Some(from));
        }
        self.check(ring, to);
    }

    /// After a read: checks the hold now and then (cheap when there is none).
    pub(super) fn after_read(&mut self, ring: &Ring, reader_pos: u64, empty: bool) {
        if self.at.is_none() {
            return;
        }
        self.reads += 1;
        if empty || self.reads >= CHECK_EVERY {
            self.check(ring, reader_pos);
        }
    }

    /// Walks from the hold towards `reader_pos` over what is finished; releases the hold when
    /// it gets there, moves it when it stops earlier.
    pub(super) fn check(&mut self, ring: &Ring, reader_pos: u64) {
        self.reads = 0;
        let Some(start) = self.at else { return };
        let c = ring.consumer_pos();
        // Space before the consumer cursor is released already; no live reservation reaches
        // past a lap from it (producers stay within `consumer_pos + size`).
        let end = reader_pos.min(c.saturating_add(ring.size));
        let mut x = start.max(c);
        let mut agains = 0;
        while x < end {
            match step(ring, x, end) {
                Step::Next(n) => {
                    x = n;
                    agains = 0;
                }
                Step::Again if agains < 3 => agains += 1,
                Step::Live | Step::Again => break,
            }
        }
        if x >= end {
            self.set(ring, None);
        } else if x != start {
            self.set(ring, Some(x));
        }
    }

    fn set(&mut self, ring: &Ring, at: Option<u64>) {
        self.at = at;
        ring.header().holds[self.slot].store(at.map_or(0, |p| p | 1), Release);
        // SeqCst fence: a sink committing at the same time (store its cursor, fence, load the
        // holds) and this reader (store the hold, fence, load the cursors) cannot both miss the
        // other's store, so a released hold is never left unapplied (see Ring::commit).
        fence(SeqCst);
        ring.commit_to_slowest_cursor();
    }
}

/// What the walk finds at record boundary `x` (below `end`).
fn step(ring: &Ring, x: u64, end: u64) -> Step {
    let size = ring.size;
    let off = x % size;
    let w0 = ring.word(off).load(Acquire);
    if w0 == tag(x, STATE_COMMITTED) || w0 == tag(x, STATE_RESERVED) {
        let w1 = ring.word(off + 8).load(Acquire);
        let (pid, len) = ((w1 >> 32) as u32, w1 & 0xffff_ffff);
        if record_fits(off, len, size) {
            if w0 == tag(x, STATE_RESERVED) && pid_alive(pid) {
                return Step::Live;
            }
            return Step::Next(x + REC_HDR + round16(len));
        }
    } else if w0 == tag(x, STATE_PADDING) && off != 0 {
        return Step::Next(lap_end(x, size));
    }
    // No tag of its own (never written, or its writer died before tagging), or an implausible
    // header: a live writer in flight may still own it.
    if owner_may_be_live(ring, x) {
        return Step::Live;
    }
    // Loaded again after the table (see writers.rs): an owner that left the table has tagged.
    if ring.word(off).load(Acquire) != w0 {
        return Step::Again;
    }
    writers::reclaim_dead(&ring.header().writers, pid_alive);
    Step::Next(next_boundary(ring, x, end))
}

/// Whether a writer in flight whose process may be alive may own the record at `x`. The
/// caller has loaded a producer cursor past `x` (Acquire) before calling.
pub(super) fn owner_may_be_live(ring: &Ring, x: u64) -> bool {
    writers::in_use(&ring.header().writers)
        .any(|e| writers::may_own(e, x, ring.size) && pid_alive(writers::entry_pid(e)))
}

/// The first position after `x` (a position with no record of its own) where something may
/// start: a position that carries its own tag, or where a writer in flight (live or not) is
/// about to write; `end` if there is none before it. Reads at most a lap.
fn next_boundary(ring: &Ring, x: u64, end: u64) -> u64 {
    let limit = end.min(x.saturating_add(ring.size));
    let q = first_tag(ring, x, limit).unwrap_or(limit);
    writer_between(ring, x, q).unwrap_or(q)
}

/// The first position in `(x, limit)` that carries its own tag (any state).
pub(super) fn first_tag(ring: &Ring, x: u64, limit: u64) -> Option<u64> {
    let mut q = x + REC_HDR;
    while q < limit {
        let w = ring.word(q % ring.size).load(Acquire);
        if w >> 2 == q && w & 3 != 0 {
            return Some(q);
        }
        q += REC_HDR;
    }
    None
}

/// The first position in `(x, q)` where a writer in the table (live or not) is about to write
/// or has reserved: a range with no tag is cut there, so that each writer's record is skipped
/// (and counted) on its own, and a live writer's record after a dead one is not skipped with it.
pub(super) fn writer_between(ring: &Ring, x: u64, q: u64) -> Option<u64> {
    writers::in_use(&ring.header().writers)
        .map(|e| writers::ahead_of(e, x))
        .filter(|&d| d > 0 && d < q - x)
        .map(|d| x + d)
        .min()
}

/// The smallest hold published in `holds` (None: none).
pub(super) fn smallest(holds: &[AtomicU64]) -> Option<u64> {
    holds
        .iter()
        .map(|w| w.load(Acquire))
        .filter(|w| w & 1 == 1)
        .map(|w| w & !1)
        .min()
}
