//! The campaign store's concurrency, as plain Rust: campaigns (records of [`crate::record`])
//! and their accounts ([`crate::banker::Account`]) in one shared memory region, read by every
//! worker without a lock and changed by one writer at a time (the module holds the slab
//! pool's mutex; tests hold their own lock). The module provides the memory: the region's base
//! and size and an allocator of chunks inside it ([`Chunks`]). The protocol is described in
//! `docs/campaign-store.md`; in short:
//!
//! - The index (a power-of-two array of `AtomicU32` slots, each a record's offset >> 3, or
//!   EMPTY / DELETED) is published as ONE atomic word, `(offset >> 3) << 32 | log2(slots)`: a
//!   reader can never pair one index's offset with another's length, and there is no sequence
//!   number a dead writer could leave odd. An index's shape never changes; its slots change by
//!   single atomic stores; growing it publishes a new index.
//! - Records are immutable once published; a change stores a new record's offset in the slot.
//!   Accounts are kept when a campaign is replaced, retired when it is deleted.
//! - Reclamation is epoch-based across processes ([`pins`]): a reader pins (its slot in the
//!   header: pid and epoch) for as long as it uses what it found, a writer frees an unlinked
//!   chunk only when no live reader pinned before the unlink. A stalled reader delays
//!   reclamation (memory stays allocated: the zone may fill up, 507), never a use after free;
//!   a dead one does not count. No clock is involved.
//! - Nothing in a lookup waits for anything: it reads one index word, probes at most every
//!   slot once, reads exactly one record. A writer stopped or killed at any step leaves the
//!   store readable (with the old or the new version of each campaign it was changing) and the
//!   next writer (nginx force-unlocks a dead process's mutex) goes on; what it had allocated
//!   or unlinked and not yet retired stays allocated.
//!
//! Every access to the shared bytes is here, bounds-checked against the region: records are
//! read as slices of exactly their length.
//!
//! Memory orderings: the index word, the slots, the epoch and the reader slots are accessed
//! with SeqCst where the pin argument needs a single order (a reader's pin store before its
//! index loads; a writer's unlink before its epoch bump before its pin scan); on x86 a SeqCst
//! load is a plain load, and the pin's store is the one fenced instruction of a lookup.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use crate::banker::Account;
use crate::record::{self, RecordView, DELETED, EMPTY};
use crate::state::Table;

mod pins;
mod writer;
pub use pins::{pid_alive, Pin, Reader, READER_SLOTS};
pub use writer::{Step, Writer};

/// Why a change was refused.
#[derive(Debug, PartialEq)]
pub enum StoreError {
    /// The zone has no room: nothing was changed.
    Full,
    /// The zone is not initialized (should not happen in a worker).
    NotReady,
}

/// The memory a writer allocates from: chunks inside the region, addressed by their offset
/// from its base. Called only by the writer (which holds the writers' lock).
pub trait Chunks {
    /// A zeroed chunk of `size` bytes, 8-aligned, inside the region; None when full.
    fn alloc(&mut self, size: usize) -> Option<usize>;
    /// Gives back a chunk that `alloc` returned.
    fn free(&mut self, off: usize);
}

/// Lives in the region, shared by every process. All zeroes is its initial state (an empty
/// store).
#[repr(C)]
pub struct Header {
    /// The index: `(offset >> 3) << 32 | log2(slots)`; 0: none yet.
    index: AtomicU64,
    count: AtomicU64,
    /// Slots of the current index that are not EMPTY (records and tombstones). Writers only.
    used: AtomicU64,
    /// Bumped by every change (a stats page can tell that something changed).
    generation: AtomicU64,
    /// Seconds added to the clock (the admin API's test clock; 0 in production).
    clock_offset: AtomicI64,
    /// Offset of the first retired node (0: none). Writers only.
    retired: AtomicU64,
    /// Where the records' account fields point: 0, chunks of the region (offset >> 3); else
    /// the id of the state file whose accounts table they index (entry + 1).
    accounts_file: AtomicU64,
    /// Keeps the reader slots on cache lines of their own (the header is 64-aligned).
    _pad: [u64; 7],
    pins: pins::Pins,
}

/// Where a reader calls its hook (tests: a writer runs in between).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadStep {
    /// The index word is read, no slot yet.
    IndexLocated,
}

/// The region as every process maps it.
#[derive(Clone, Copy)]
pub struct Zone<'z> {
    base: *mut u8,
    size: usize,
    h: &'z Header,
    /// The state file's accounts table and its file id, when accounts live there.
    accounts: Option<(Table<'z>, u64)>,
    _region: PhantomData<&'z [u8]>,
}

// SAFETY: a Zone reads and writes the region only through atomics, or reads bytes that no one
// writes while a pinned reader can reach them (published records); the region outlives 'z.
unsafe impl Send for Zone<'_> {}
// SAFETY: as for Send.
unsafe impl Sync for Zone<'_> {}

/// An account found by a lookup, valid while its pin is held (this value lives).
pub struct PinnedAccount<'z> {
    _pin: Pin<'z>,
    account: &'z Account,
}

impl core::ops::Deref for PinnedAccount<'_> {
    type Target = Account;
    fn deref(&self) -> &Account {
        self.account
    }
}

/// The index word of `slots` slots at `off`.
fn index_word(off: usize, slots: usize) -> u64 {
    debug_assert!(slots.is_power_of_two() && off.is_multiple_of(8));
    ((off as u64 >> 3) << 32) | u64::from(slots.trailing_zeros())
}

impl<'z> Zone<'z> {
    /// The region `[base, base + size)`, with its header at `header_off`.
    ///
    /// # Safety
    /// The region is mapped, readable and writable for 'z, and changed by others only through
    /// this module; `base` and `header_off` are 8-aligned, with room for a [`Header`] at
    /// `header_off` inside the region.
    pub unsafe fn new(base: *mut u8, size: usize, header_off: usize) -> Zone<'z> {
        debug_assert!(
            (base as usize).is_multiple_of(8)
                && header_off.is_multiple_of(8)
                && header_off + Self::header_size() <= size
        );
        // SAFETY: the caller's promise; Header is only atomics (and padding), valid for any bits.
        let h = unsafe { &*base.add(header_off).cast::<Header>() };
        Zone {
            base,
            size,
            h,
            accounts: None,
            _region: PhantomData,
        }
    }

    /// The same zone with its accounts in `table`, the accounts table of the state file
    /// `file_id` (records then hold entry + 1; every process passes its own mapping).
    pub fn with_accounts(mut self, table: Table<'z>, file_id: u64) -> Zone<'z> {
        self.accounts = Some((table, file_id));
        self
    }

    /// Makes the records' account fields this zone's kind (region chunks, or the state file
    /// given by [`Zone::with_accounts`]): Ok when they are, or when the store has no campaign
    /// (then records to come are of this kind); else Err(the file id they are of, 0: chunks).
    /// A reload that adds, removes or changes `tracker_state` meets Err: it needs a restart.
    pub fn bind_accounts(&self) -> Result<(), u64> {
        let want = self.accounts.map_or(0, |(_, id)| id);
        let have = self.h.accounts_file.load(Ordering::Relaxed);
        if have == want {
            return Ok(());
        }
        if self.count() == 0 {
            self.h.accounts_file.store(want, Ordering::Relaxed);
            return Ok(());
        }
        Err(have)
    }

    pub(crate) fn accounts_table(&self) -> Option<Table<'z>> {
        self.accounts.map(|(t, _)| t)
    }

    /// The bytes the header needs (zeroed, 8-aligned; 64-aligned keeps reader slots apart).
    pub fn header_size() -> usize {
        core::mem::size_of::<Header>()
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The number of campaigns.
    pub fn count(&self) -> u64 {
        self.h.count.load(Ordering::Relaxed)
    }

    /// The change generation.
    pub fn generation(&self) -> u64 {
        self.h.generation.load(Ordering::Relaxed)
    }

    pub fn clock_offset(&self) -> i64 {
        self.h.clock_offset.load(Ordering::Relaxed)
    }

    pub fn set_clock_offset(&self, secs: i64) {
        self.h.clock_offset.store(secs, Ordering::Relaxed);
    }

    /// Looks `id` up: `f` reads the record (called once, while pinned); the account stays
    /// valid (not freed nor reused) as long as the returned [`PinnedAccount`] lives. Bounded:
    /// no retry, no wait.
    pub fn lookup<T>(
        &self,
        reader: Reader,
        id: &[u8],
        f: impl FnOnce(&RecordView<'_>) -> T,
    ) -> Option<(T, PinnedAccount<'z>)> {
        self.lookup_hooked(reader, id, f, |_| {})
    }

    #[doc(hidden)]
    pub fn lookup_hooked<T>(
        &self,
        reader: Reader,
        id: &[u8],
        f: impl FnOnce(&RecordView<'_>) -> T,
        mut hook: impl FnMut(ReadStep),
    ) -> Option<(T, PinnedAccount<'z>)> {
        let pin = self.pin(reader);
        let index = self.index();
        hook(ReadStep::IndexLocated);
        let (_, v) = record::find(index, id, |v| self.record_at(v).map(|r| r.id()))?;
        let r = self.record_at(v)?;
        let account = self.account_at(r.account())?;
        Some((f(&r), PinnedAccount { _pin: pin, account }))
    }

    /// The current index (empty before the first change). Readers: pinned.
    pub(crate) fn index(&self) -> &'z [AtomicU32] {
        self.index_at(self.h.index.load(Ordering::SeqCst))
            .unwrap_or(&[])
    }

    fn index_at(&self, word: u64) -> Option<&'z [AtomicU32]> {
        let off = ((word >> 32) as usize) << 3;
        let slots = 1usize.checked_shl((word & 0x3f) as u32)?;
        if off == 0 || off.checked_add(slots.checked_mul(4)?)? > self.size {
            return None;
        }
        // SAFETY: [off, off + 4 slots) lies in the region (checked), 8-aligned; an index is
        // only ever accessed through atomics, and stays allocated while a pinned reader may
        // hold it.
        Some(unsafe { core::slice::from_raw_parts(self.base.add(off).cast::<AtomicU32>(), slots) })
    }

    /// The record a slot value points to: exactly its bytes, if they lie inside the region
    /// and parse. Readers: pinned (a published record does not change until it is freed, and
    /// it is not freed while they are pinned).
    pub(crate) fn record_at(&self, v: u32) -> Option<RecordView<'z>> {
        if v == EMPTY || v == DELETED {
            return None;
        }
        let off = (v as usize) << 3;
        if off.checked_add(4)? > self.size {
            return None;
        }
        // SAFETY: 4 bytes inside the region, 8-aligned (offsets are >> 3).
        let total =
            unsafe { &*self.base.add(off).cast::<AtomicU32>() }.load(Ordering::Relaxed) as usize;
        if off.checked_add(total)? > self.size {
            return None;
        }
        // SAFETY: [off, off + total) lies in the region and is one published record, written
        // before its slot was stored (the slot load acquired it) and not written again until
        // freed, which waits for this reader's pin (or, for a writer, its lock).
        let bytes = unsafe { core::slice::from_raw_parts(self.base.add(off).cast_const(), total) };
        RecordView::new(bytes)
    }

    /// The account at `a` (a record's account field): in the state file's table (entry + 1), or
    /// a chunk of the region (offset >> 3) if it lies inside it.
    pub(crate) fn account_at(&self, a: u32) -> Option<&'z Account> {
        if let Some((t, _)) = self.accounts {
            return t.account((a as usize).checked_sub(1)?);
        }
        let off = (a as usize) << 3;
        if off == 0 || off.checked_add(core::mem::size_of::<Account>())? > self.size {
            return None;
        }
        // SAFETY: inside the region (checked), 8-aligned (offsets are >> 3), only atomics; kept
        // allocated while a pinned reader may hold it.
        Some(unsafe { &*self.base.add(off).cast::<Account>() })
    }

    pub(crate) fn header(&self) -> &'z Header {
        self.h
    }

    pub(crate) fn pins(&self) -> &'z pins::Pins {
        &self.h.pins
    }

    /// The offset of `p`, an address inside the region.
    pub(crate) fn offset_of(&self, p: *const u8) -> usize {
        p as usize - self.base as usize
    }

    /// A chunk's address. Callers pass offsets of chunks inside the region.
    pub(crate) fn ptr(&self, off: usize) -> *mut u8 {
        debug_assert!(off < self.size);
        self.base.wrapping_add(off)
    }
}

impl Header {
    pub(crate) fn index_word(&self) -> &AtomicU64 {
        &self.index
    }
    pub(crate) fn count(&self) -> &AtomicU64 {
        &self.count
    }
    pub(crate) fn used(&self) -> &AtomicU64 {
        &self.used
    }
    pub(crate) fn generation(&self) -> &AtomicU64 {
        &self.generation
    }
    pub(crate) fn retired(&self) -> &AtomicU64 {
        &self.retired
    }
}
