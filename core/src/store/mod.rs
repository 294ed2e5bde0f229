//! The campaign store's concurrency, as plain Rust: campaigns (records of [`crate::record`])
//! and their accounts ([`crate::banker::Account`]) in one shared memory region, read by every
//! worker without a lock and changed by one writer at a time (the module holds the slab
//! pool's mutex; tests hold their own lock). The module provides the memory: the region's
//! base and size and an allocator of chunks inside it ([`Chunks`]).
//!
//! (This is the algorithm as it was in `src/campaigns.rs`, moved here unchanged so that tests
//! reach it: a sequence number around the index replacement, a wall-clock grace period.)

use core::marker::PhantomData;
use core::sync::atomic::{fence, AtomicI64, AtomicU32, AtomicU64, Ordering};

use crate::banker::Account;
use crate::record::{self, RecordView, DELETED, EMPTY};

mod writer;
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

/// Lives in the region, shared by every process. Zeroed is its initial state.
#[repr(C)]
#[derive(Default)]
pub struct Header {
    /// Odd while the index is being replaced.
    seq: AtomicU64,
    index_off: AtomicU64,
    index_len: AtomicU64,
    count: AtomicU64,
    /// Bumped by every change (a stats page can tell that something changed).
    generation: AtomicU64,
    /// Seconds added to the clock (the admin API's test clock; 0 in production).
    clock_offset: AtomicI64,
    /// Offset of the first retired node (0: none). Writers only.
    retired: AtomicU64,
}

/// Where a reader calls its hook (tests: a writer runs in between).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadStep {
    /// The index's location is partly read.
    IndexLocated,
}

/// The region as every process maps it.
#[derive(Clone, Copy)]
pub struct Zone<'z> {
    base: *mut u8,
    size: usize,
    h: &'z Header,
    _region: PhantomData<&'z [u8]>,
}

// SAFETY: a Zone only reads and writes the region through atomics, or reads bytes that no one
// writes while they are reachable (published records); the region outlives 'z.
unsafe impl Send for Zone<'_> {}
// SAFETY: as for Send.
unsafe impl Sync for Zone<'_> {}

/// A reader's registration (unused by this algorithm).
#[derive(Clone, Copy, Debug)]
pub struct Reader(pub usize);

/// Held while a reader uses what a lookup returned.
pub struct Pin<'z> {
    _zone: PhantomData<&'z Header>,
}

/// An account, valid while its pin is held.
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

impl<'z> Zone<'z> {
    /// The region `[base, base + size)`, with its header at `header_off`.
    ///
    /// # Safety
    /// The region is mapped, readable and writable for 'z, and changed by others only through
    /// this module; `header_off` is 8-aligned with room for a [`Header`] inside it.
    pub unsafe fn new(base: *mut u8, size: usize, header_off: usize) -> Zone<'z> {
        // SAFETY: the caller's promise; Header is only atomics, valid for any bits.
        let h = unsafe { &*base.add(header_off).cast::<Header>() };
        Zone {
            base,
            size,
            h,
            _region: PhantomData,
        }
    }

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

    /// Registers reader `pid` (unused).
    pub fn claim_reader(&self, _pid: u32, _alive: &dyn Fn(u32) -> bool) -> Option<Reader> {
        Some(Reader(0))
    }

    pub fn pin(&self, _reader: Reader) -> Pin<'z> {
        Pin { _zone: PhantomData }
    }

    /// Looks `id` up; `f` reads the record (it may be called more than once: the last call's
    /// answer is returned) and the account stays valid while the pin is held.
    pub fn lookup<T>(
        &self,
        reader: Reader,
        id: &[u8],
        f: impl FnMut(&RecordView<'_>) -> T,
    ) -> Option<(T, PinnedAccount<'z>)> {
        self.lookup_hooked(reader, id, f, |_| {})
    }

    #[doc(hidden)]
    pub fn lookup_hooked<T>(
        &self,
        reader: Reader,
        id: &[u8],
        mut f: impl FnMut(&RecordView<'_>) -> T,
        mut hook: impl FnMut(ReadStep),
    ) -> Option<(T, PinnedAccount<'z>)> {
        let pin = self.pin(reader);
        loop {
            let s0 = self.h.seq.load(Ordering::Acquire);
            if s0 & 1 == 1 {
                core::hint::spin_loop();
                continue;
            }
            let index = self.index_hooked(&mut hook)?;
            let found = record::find(index, id, |v| self.record_at(v).map(|r| r.id()));
            let mut hit = None;
            let mut slot_v = None;
            if let Some((slot, v)) = found {
                if let Some(r) = self.record_at(v) {
                    if let Some(account) = self.account_at(r.account()) {
                        hit = Some((f(&r), account));
                    }
                }
                slot_v = Some((slot, v));
            }
            fence(Ordering::Acquire);
            let same_slot = slot_v.is_none_or(|(slot, v)| {
                index.get(slot).map(|s| s.load(Ordering::Acquire)) == Some(v)
            });
            if same_slot && self.h.seq.load(Ordering::Relaxed) == s0 {
                return hit.map(|(t, account)| (t, PinnedAccount { _pin: pin, account }));
            }
        }
    }

    fn index_hooked(&self, hook: &mut impl FnMut(ReadStep)) -> Option<&'z [AtomicU32]> {
        let off = self.h.index_off.load(Ordering::Acquire) as usize;
        hook(ReadStep::IndexLocated);
        let len = self.h.index_len.load(Ordering::Acquire) as usize;
        if off == 0 || len == 0 || off.checked_add(len.checked_mul(4)?)? > self.size || off % 4 != 0
        {
            return None;
        }
        // SAFETY: [off, off + 4 len) lies in the region (checked), 4-aligned; the index is
        // only ever accessed through atomics.
        Some(unsafe { core::slice::from_raw_parts(self.base.add(off).cast::<AtomicU32>(), len) })
    }

    pub(crate) fn index(&self) -> &'z [AtomicU32] {
        self.index_hooked(&mut |_| {}).unwrap_or(&[])
    }

    /// The record a slot value points to, if it lies inside the region and parses.
    pub(crate) fn record_at(&self, v: u32) -> Option<RecordView<'z>> {
        if v == EMPTY || v == DELETED {
            return None;
        }
        let off = (v as usize) << 3;
        let avail = self.size.checked_sub(off)?;
        // SAFETY: [off, size) lies in the region. Records are immutable once published; a
        // record retired meanwhile is still allocated for the grace period.
        let bytes = unsafe { core::slice::from_raw_parts(self.base.add(off).cast_const(), avail) };
        RecordView::new(bytes)
    }

    /// The account at `a` (a record's account field), if it lies inside the region.
    pub(crate) fn account_at(&self, a: u32) -> Option<&'z Account> {
        let off = (a as usize) << 3;
        if off == 0 || off + core::mem::size_of::<Account>() > self.size {
            return None;
        }
        // SAFETY: inside the region (checked), 8-aligned (offsets are >> 3), only atomics.
        Some(unsafe { &*self.base.add(off).cast::<Account>() })
    }

    pub(crate) fn header(&self) -> &'z Header {
        self.h
    }

    pub(crate) fn ptr(&self, off: usize) -> *mut u8 {
        // SAFETY: callers pass offsets of chunks inside the region.
        unsafe { self.base.add(off) }
    }
}

impl Header {
    pub(crate) fn seq(&self) -> &AtomicU64 {
        &self.seq
    }
    pub(crate) fn index_off(&self) -> &AtomicU64 {
        &self.index_off
    }
    pub(crate) fn index_len(&self) -> &AtomicU64 {
        &self.index_len
    }
    pub(crate) fn count(&self) -> &AtomicU64 {
        &self.count
    }
    pub(crate) fn generation(&self) -> &AtomicU64 {
        &self.generation
    }
    pub(crate) fn retired(&self) -> &AtomicU64 {
        &self.retired
    }
}
