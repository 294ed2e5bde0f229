//! The table of writers in flight (header bytes 2048..4096): before its CAS on the producer
//! cursor, a writer publishes who it is (its pid) and the position it is about to CAS from in
//! one word of the table, and clears the word once its record is tagged "reserved" (word1 then
//! names it). A reader that finds a reserved range with no tag yet learns from the table whether
//! a live writer may still write it. docs/ring.md, "Writers in flight".
//!
//! An entry is one `u64`, so it is claimed, read and cleared atomically:
//!   bit 63: 1 (in use; 0 = a free slot, which is what a ring made before the table has)
//!   bits 41..62: the writer's pid (22 bits: Linux pids are below 2^22; a larger one is stored
//!                as 0, "unknown", which never reads as dead)
//!   bits 0..40: the position >> 4, modulo 2^41 (positions modulo 32 TiB: two positions that
//!               far apart are never both in flight, since every live reservation lies within
//!               one lap of the consumer cursor)
//!
//! Memory ordering (the argument the reader relies on, see `Ring::write_inner` and
//! `hold::owner_may_be_live`):
//! - the writer stores its entry (claim: CAS, AcqRel; later attempts: store, Release) before
//!   each CAS on `producer_pos`, and that CAS is a release. Every later change of
//!   `producer_pos` is a CAS too (a read-modify-write), so it continues the release sequence:
//!   a reader whose Acquire load of `producer_pos` returns a value past position `x` has
//!   synchronized with the CAS that reserved `x`, and sees that writer's entry, or a later value
//!   of the word;
//! - the writer clears its entry (Release) only after its first tag (Release) at the start of its
//!   reservation; a later claim of the word by another writer is a CAS that reads the cleared
//!   value (Acquire), and that writer's own stores are releases: whatever later value the reader
//!   loads (Acquire), the first writer's tag is visible to it.
//!
//! So a reader that loaded `producer_pos` past `x`, then finds no entry that may own `x`, then
//! loads the tag at `x` again, sees the owner's tag if the owner ever published one: an `x`
//! still untagged then has no live owner.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

/// Number of words in the table (2048 bytes).
pub(super) const WRITER_SLOTS: usize = 256;
/// The table is probed from a place derived from the pid, in steps of one cache line, so that
/// nginx workers (one thread each) usually claim words on different cache lines.
const LINE_WORDS: usize = 8;

const IN_USE: u64 = 1 << 63;
const PID_SHIFT: u32 = 41;
const PID_MASK: u64 = (1 << 22) - 1;
const POS_MASK: u64 = (1 << PID_SHIFT) - 1;

/// The entry of writer `pid` about to CAS the producer cursor from `p`.
#[inline(always)]
pub(super) fn entry(pid: u32, p: u64) -> u64 {
    let pid = if u64::from(pid) <= PID_MASK {
        u64::from(pid)
    } else {
        0
    };
    IN_USE | pid << PID_SHIFT | ((p >> 4) & POS_MASK)
}

/// The pid of an entry (0: unknown).
#[inline]
pub(super) fn entry_pid(e: u64) -> u32 {
    ((e >> PID_SHIFT) & PID_MASK) as u32
}

/// How far ahead of `x` the entry's position is, in bytes, modulo 2^45 (0: at `x`).
#[inline]
pub(super) fn ahead_of(e: u64, x: u64) -> u64 {
    ((e & POS_MASK).wrapping_sub(x >> 4) & POS_MASK) << 4
}

/// Whether the writer of entry `e` may own the record that starts at `x` (a record boundary):
/// it is about to CAS (or did CAS) from `x`, or from padding that ends at `x`, a lap boundary
/// (padding is shorter than a record, at most a quarter of the ring).
#[inline]
pub(super) fn may_own(e: u64, x: u64, size: u64) -> bool {
    let behind = ahead_of(e, x).wrapping_neg() & (POS_MASK << 4);
    behind == 0 || (x.is_multiple_of(size) && behind < size / 4)
}

/// Where a writer of `pid` starts probing (a cache-line boundary of the table).
#[inline(always)]
fn first_slot(pid: u32) -> usize {
    let h = pid.wrapping_mul(0x9E37_79B9) >> 16;
    (h as usize % (WRITER_SLOTS / LINE_WORDS)) * LINE_WORDS
}

/// Claims a free word of `table` for `e` (the writer's first entry). None when every word is
/// taken: more writers in flight than words, or words left by killed writers that no reader has
/// reclaimed yet.
#[inline(always)]
pub(super) fn claim(table: &[AtomicU64; WRITER_SLOTS], pid: u32, e: u64) -> Option<&AtomicU64> {
    let start = first_slot(pid);
    for i in 0..WRITER_SLOTS {
        let w = &table[(start + i) % WRITER_SLOTS];
        // AcqRel: Acquire pairs with the Release clear of the word's previous writer (see the
        // module comment); Release publishes the entry.
        if w.load(Relaxed) == 0 && w.compare_exchange(0, e, AcqRel, Relaxed).is_ok() {
            return Some(w);
        }
    }
    None
}

/// Republishes the position of a claimed word (before a retried CAS).
#[inline(always)]
pub(super) fn update(w: &AtomicU64, e: u64) {
    w.store(e, Release);
}

/// Frees a claimed word (after the first tag).
#[inline(always)]
pub(super) fn clear(w: &AtomicU64) {
    w.store(0, Release);
}

/// The entries in use, as loaded now (Acquire).
pub(super) fn in_use(table: &[AtomicU64; WRITER_SLOTS]) -> impl Iterator<Item = u64> + '_ {
    table.iter().map(|w| w.load(Acquire)).filter(|&e| e != 0)
}

/// Frees the words of writers whose process no longer exists (killed between claiming a word
/// and clearing it). A CAS, so a word claimed again meanwhile is left alone. Returns how many.
pub(super) fn reclaim_dead(
    table: &[AtomicU64; WRITER_SLOTS],
    alive: impl Fn(u32) -> bool,
) -> usize {
    let mut n = 0;
    for w in table {
        let e = w.load(Acquire);
        if e != 0 && !alive(entry_pid(e)) && w.compare_exchange(e, 0, AcqRel, Relaxed).is_ok() {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_encode_pid_and_position() {
        let e = entry(4_194_303, 1 << 40);
        assert_ne!(e, 0);
        assert_eq!(entry_pid(e), 4_194_303);
        assert_eq!(ahead_of(e, 1 << 40), 0);
        // A pid that does not fit is "unknown".
        assert_eq!(entry_pid(entry(1 << 22, 16)), 0);
        // Position 0 of pid 0 is still in use.
        assert_ne!(entry(0, 0), 0);
        // Positions are kept modulo 2^45.
        assert_eq!(ahead_of(entry(7, (1 << 45) + 32), 32), 0);
    }

    #[test]
    fn ahead_of_wraps() {
        let e = entry(1, 1000 * 16);
        assert_eq!(ahead_of(e, 990 * 16), 160);
        assert_eq!(ahead_of(e, 1000 * 16), 0);
        assert_eq!(ahead_of(e, 1001 * 16), (1 << 45) - 16);
    }

    #[test]
    fn owner_of_a_record_or_of_the_padding_before_it() {
        let size = 1 << 16;
        // About to CAS from x itself.
        assert!(may_own(entry(1, 5 * size + 64), 5 * size + 64, size));
        // A writer at another position does not own x.
        assert!(!may_own(entry(1, 5 * size + 48), 5 * size + 64, size));
        assert!(!may_own(entry(1, 5 * size + 80), 5 * size + 64, size));
        // Padding from 6 * size - 32 to the lap boundary, the record at 6 * size.
        assert!(may_own(entry(1, 6 * size - 32), 6 * size, size));
        // Not from further back than a record can be long.
        assert!(!may_own(entry(1, 6 * size - size / 4), 6 * size, size));
        // Not from ahead.
        assert!(!may_own(entry(1, 6 * size + 16), 6 * size, size));
    }

    #[test]
    fn claim_update_clear_reclaim() {
        let table: [AtomicU64; WRITER_SLOTS] = std::array::from_fn(|_| AtomicU64::new(0));
        let a = claim(&table, 100, entry(100, 16)).unwrap();
        let b = claim(&table, 100, entry(100, 32)).unwrap();
        assert!(!std::ptr::eq(a, b), "one word per writer in flight");
        update(a, entry(100, 48));
        let mut seen: Vec<u64> = in_use(&table).collect();
        seen.sort();
        assert_eq!(seen, [entry(100, 32), entry(100, 48)]);
        clear(a);
        assert_eq!(in_use(&table).count(), 1);
        // A dead writer's word is reclaimed, a live one's is not.
        claim(&table, 200, entry(200, 64)).unwrap();
        assert_eq!(reclaim_dead(&table, |pid| pid != 200), 1);
        assert_eq!(in_use(&table).collect::<Vec<_>>(), [entry(100, 32)]);
        // The table full: None.
        for i in 0..WRITER_SLOTS - 1 {
            claim(&table, i as u32, entry(i as u32, 0)).unwrap();
        }
        assert!(claim(&table, 1, entry(1, 0)).is_none());
    }
}
