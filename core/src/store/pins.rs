//! Who may still be reading: one slot per reader process in the header (its pid and the epoch
//! it pinned at), so that a writer frees what it unlinked only once no reader can hold it.
//!
//! A reader pins before it reads the index and unpins when it no longer uses what it found
//! (the module: after the request's charge). Pinning stores `epoch + 1` in its slot; a writer
//! that unlinked a chunk bumps the epoch to `e` and frees the chunk once every slot is 0 or
//! holds more than `e` (pinned after the unlink, so it cannot have found the chunk). A slot
//! whose process is dead does not count. A reader with no slot (every slot held by a live
//! process) counts in `overflow`, which holds back every reclamation while it is not 0.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicU64, Ordering::*};

use super::Zone;

/// Reader slots in the header: more than nginx's workers on any machine it runs on; a reader
/// beyond them still works (see `overflow`).
pub const READER_SLOTS: usize = 126;

/// One reader process's slot, 64 bytes: alone on its cache line when the header is 64-aligned
/// (each worker stores to its own at every request).
#[repr(C)]
pub(crate) struct ReaderSlot {
    /// The pid of the process holding the slot; 0: free.
    owner: AtomicU64,
    /// 0: not reading; else the epoch at the pin, plus one.
    pinned: AtomicU64,
    /// Nested pins of the owner (only the owner touches it).
    depth: AtomicU64,
    _pad: [u64; 5],
}

/// The shared part: every reader slot, the epoch and the count of readers without a slot.
#[repr(C)]
pub(crate) struct Pins {
    /// Bumped by the writer after each unlink (SeqCst: see the module docs).
    epoch: AtomicU64,
    overflow: AtomicU64,
    slots: [ReaderSlot; READER_SLOTS],
}

/// A reader's registration: its slot, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reader(u32);

impl Reader {
    /// A reader without a slot: correct, but holds back every reclamation while pinned.
    pub const SHARED: Reader = Reader(u32::MAX);

    pub fn is_shared(self) -> bool {
        self.0 as usize >= READER_SLOTS
    }

    /// The reader of slot `i` (as [`Reader::index`] gave it; a process caches its slot).
    pub fn at(i: u32) -> Reader {
        Reader(i)
    }

    pub fn index(self) -> u32 {
        self.0
    }
}

/// Held while a reader uses what it found; unpins when dropped. Not Send: a pin belongs to the
/// process (thread) that took it.
pub struct Pin<'z> {
    pins: &'z Pins,
    reader: Reader,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        match self.pins.slots.get(self.reader.0 as usize) {
            Some(s) => {
                let d = s.depth.load(Relaxed).saturating_sub(1);
                s.depth.store(d, Relaxed);
                if d == 0 {
                    // Release: what this reader read happens before a writer that sees 0 frees it.
                    s.pinned.store(0, Release);
                }
            }
            None => {
                self.pins.overflow.fetch_sub(1, Release);
            }
        }
    }
}

/// The oldest pin that holds back reclamation: chunks retired at epochs below it may be
/// freed. `u64::MAX`: none.
pub(crate) fn oldest_pin(pins: &Pins, alive: &dyn Fn(u32) -> bool) -> u64 {
    if pins.overflow.load(SeqCst) != 0 {
        return 0;
    }
    let mut oldest = u64::MAX;
    for s in &pins.slots {
        let p = s.pinned.load(SeqCst);
        if p == 0 || p >= oldest {
            continue;
        }
        // The owner is read after the pin: a slot taken over since shows its new owner (the
        // check is then conservative).
        let owner = s.owner.load(SeqCst);
        if owner != 0 && alive(owner as u32) {
            oldest = p;
        }
    }
    oldest
}

/// Bumps the epoch after an unlink; returns the chunk's retirement epoch.
pub(crate) fn next_epoch(pins: &Pins) -> u64 {
    pins.epoch.fetch_add(1, SeqCst) + 1
}

/// Whether `pid` is a live process (for other processes' reader slots): `kill(pid, 0)`.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(p, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl<'z> Zone<'z> {
    /// A reader slot for process `pid`: the one it holds, a free one, or one whose process is
    /// dead (`alive`); None when every slot is held by a live process (use [`Reader::SHARED`]).
    /// Called once per process (the module caches it), not per request.
    pub fn claim_reader(&self, pid: u32, alive: &dyn Fn(u32) -> bool) -> Option<Reader> {
        let slots = &self.pins().slots;
        let pid = u64::from(pid);
        if let Some(i) = slots.iter().position(|s| s.owner.load(SeqCst) == pid) {
            return Some(Reader(i as u32));
        }
        for (i, s) in slots.iter().enumerate() {
            let owner = s.owner.load(SeqCst);
            if (owner == 0 || !alive(owner as u32))
                && s.owner.compare_exchange(owner, pid, SeqCst, SeqCst).is_ok()
            {
                // A dead owner's pin no longer counts (writers skip dead owners already).
                s.depth.store(0, Relaxed);
                s.pinned.store(0, SeqCst);
                return Some(Reader(i as u32));
            }
        }
        None
    }

    /// Pins: until the pin is dropped, nothing this reader finds is freed. Nested pins of one
    /// reader are fine. Two atomic operations (a load and a store) when not nested.
    pub fn pin(&self, reader: Reader) -> Pin<'z> {
        let pins = self.pins();
        match pins.slots.get(reader.0 as usize) {
            Some(s) => {
                let d = s.depth.load(Relaxed);
                if d == 0 {
                    let e = pins.epoch.load(SeqCst);
                    // SeqCst: ordered before the index loads that follow (see the module docs).
                    s.pinned.store(e + 1, SeqCst);
                }
                s.depth.store(d + 1, Relaxed);
            }
            None => {
                pins.overflow.fetch_add(1, SeqCst);
            }
        }
        Pin {
            pins,
            reader,
            _not_send: PhantomData,
        }
    }
}
