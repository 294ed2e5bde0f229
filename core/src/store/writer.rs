//! The writer: changes to the store, one at a time (the caller holds the writers' lock).

use core::mem;
use core::sync::atomic::{AtomicU32, Ordering};

use super::pins::{next_epoch, oldest_pin};
use super::{index_word, Chunks, StoreError, Zone};
use crate::banker::Account;
use crate::campaign::Campaign;
use crate::record::{self, RecordView, DELETED, EMPTY};

const MIN_SLOTS: usize = 64;

/// Where a writer calls its hook (tests: a writer stopped or killed at every step).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    /// Everything is allocated; nothing is published.
    Allocated,
    /// A new index is published.
    IndexPublished,
    /// One slot is stored.
    SlotStored,
    /// A chunk is retired.
    Retired,
    /// A retired chunk is taken off the list, not freed yet.
    Unlisted,
    /// A retired chunk is freed (its node not yet).
    Freed,
}

/// A retired chunk, waiting for the readers that may hold it.
#[repr(C)]
struct RetiredNode {
    next: u64,
    chunk: u64,
    /// The epoch its unlink bumped the store to: readers pinned at or before it may hold it.
    epoch: u64,
}

/// The zone as a writer sees it. A change happens in two phases: first every chunk it needs
/// is allocated (records, accounts, a larger index, the nodes that will retire what it
/// unlinks); if one allocation fails, they are all freed and nothing changed
/// ([`StoreError::Full`]). Then it is published, which cannot fail.
pub struct Writer<'z, 'h, A: Chunks> {
    zone: Zone<'z>,
    chunks: A,
    /// Whether a reader's process is alive ([`super::pid_alive`]; tests fake it).
    alive: &'h dyn Fn(u32) -> bool,
    /// Chunks allocated by this change (freed by `undo`).
    fresh: Vec<usize>,
    /// Retire nodes allocated by this change and not used yet.
    spare: Vec<usize>,
    hook: Option<&'h mut dyn FnMut(Step)>,
}

impl<'z, 'h, A: Chunks> Writer<'z, 'h, A> {
    /// The writer of `zone`, allocating from `chunks`. The caller holds the writers' lock for
    /// the writer's whole life.
    pub fn new(zone: Zone<'z>, chunks: A, alive: &'h dyn Fn(u32) -> bool) -> Self {
        Writer {
            zone,
            chunks,
            alive,
            fresh: Vec::new(),
            spare: Vec::new(),
            hook: None,
        }
    }

    #[doc(hidden)]
    pub fn with_hook(mut self, hook: &'h mut dyn FnMut(Step)) -> Self {
        self.hook = Some(hook);
        self
    }

    fn step(&mut self, s: Step) {
        if let Some(h) = self.hook.as_mut() {
            h(s);
        }
    }

    /// Zeroed memory, remembered in `fresh`.
    fn alloc(&mut self, size: usize) -> Result<usize, StoreError> {
        let off = self.chunks.alloc(size).ok_or(StoreError::Full)?;
        self.fresh.push(off);
        Ok(off)
    }

    fn alloc_nodes(&mut self, n: usize) -> Result<(), StoreError> {
        for _ in 0..n {
            let p = self.alloc(mem::size_of::<RetiredNode>())?;
            self.spare.push(p);
        }
        Ok(())
    }

    /// Phase one failed: frees what this change allocated (none of it was published).
    fn undo(&mut self) {
        for p in self.fresh.drain(..) {
            self.chunks.free(p);
        }
        self.spare.clear();
    }

    /// Published: keeps what was allocated, frees the retire nodes not needed.
    fn done(&mut self) {
        for p in self.spare.drain(..) {
            self.chunks.free(p);
        }
        self.fresh.clear();
        self.zone
            .header()
            .generation()
            .fetch_add(1, Ordering::Relaxed);
    }

    fn index(&self) -> &'z [AtomicU32] {
        self.zone.index()
    }

    fn record(&self, v: u32) -> Option<RecordView<'z>> {
        self.zone.record_at(v)
    }

    fn find(&self, id: &[u8]) -> Option<(usize, u32)> {
        let z = self.zone;
        record::find(self.index(), id, |x| z.record_at(x).map(|r| r.id()))
    }

    /// `chunk` was just unlinked (no new reader can find it): freed once the readers that may
    /// hold it are gone, with a node from `spare`.
    fn retire(&mut self, chunk: usize) {
        let Some(node) = self.spare.pop() else {
            // Not prepared (a bug): keeping the chunk allocated is safe, freeing it is not.
            return;
        };
        let h = self.zone.header();
        let epoch = next_epoch(self.zone.pins());
        let next = h.retired().load(Ordering::Relaxed);
        // SAFETY: node is a chunk of this change of the size of RetiredNode, 8-aligned.
        unsafe {
            self.zone
                .ptr(node)
                .cast::<RetiredNode>()
                .write(RetiredNode {
                    next,
                    chunk: chunk as u64,
                    epoch,
                })
        };
        h.retired().store(node as u64, Ordering::Relaxed);
        self.step(Step::Retired);
    }

    /// Frees the retired chunks that no live reader may hold.
    fn reclaim(&mut self) {
        let h = self.zone.header();
        if h.retired().load(Ordering::Relaxed) == 0 {
            return;
        }
        let oldest = oldest_pin(self.zone.pins(), self.alive);
        let mut prev: Option<*mut RetiredNode> = None;
        let mut cur = h.retired().load(Ordering::Relaxed);
        while cur != 0 {
            let r = self.zone.ptr(cur as usize).cast::<RetiredNode>();
            // SAFETY: the list holds only nodes we allocated, linked by writers.
            let (next, chunk, epoch) = unsafe { ((*r).next, (*r).chunk, (*r).epoch) };
            // Pins are `epoch + 1` of their time: a pin above `epoch` came after the unlink.
            if oldest > epoch {
                // Off the list first: a writer killed from here on leaks the chunk, it never
                // leaves a freed chunk on the list for the next writer to free again.
                match prev {
                    // SAFETY: prev is a live node of the list.
                    Some(p) => unsafe { (*p).next = next },
                    None => h.retired().store(next, Ordering::Relaxed),
                }
                self.step(Step::Unlisted);
                self.chunks.free(chunk as usize);
                self.step(Step::Freed);
                self.chunks.free(cur as usize);
            } else {
                prev = Some(r);
            }
            cur = next;
        }
    }

    /// Upserts `list` (ids unique), all or nothing. Returns how many were new.
    pub fn upsert(&mut self, list: &[Campaign]) -> Result<usize, StoreError> {
        self.change(|w| w.upsert_inner(list))
    }

    /// Deletes the campaigns `ids` (and their accounts), all or nothing. Returns how many
    /// existed.
    pub fn remove(&mut self, ids: &[&[u8]]) -> Result<usize, StoreError> {
        self.change(|w| w.remove_inner(ids))
    }

    fn upsert_inner(&mut self, list: &[Campaign]) -> Result<usize, StoreError> {
        // Phase one: allocate. First what changes: unchanged campaigns (a reload re-reads
        // the whole file) need nothing.
        let mut buf = Vec::new();
        let mut plan: Vec<(&Campaign, Option<u32>)> = Vec::with_capacity(list.len());
        for c in list {
            match self.find(c.id.as_bytes()).and_then(|(_, v)| self.record(v)) {
                Some(r) => {
                    record::encode(c, r.account(), &mut buf);
                    if r.bytes() != buf.as_slice() {
                        plan.push((c, Some(r.account())));
                    }
                }
                None => plan.push((c, None)),
            }
        }
        let added = plan.iter().filter(|(_, a)| a.is_none()).count();
        let existing = plan.len() - added;
        // At most half of the slots are used (records and tombstones): else a new index,
        // sized for the live campaigns, without the tombstones.
        let len = self.index().len();
        let used = self.zone.header().used().load(Ordering::Relaxed) as usize;
        let new_index = if (used + added) * 2 > len || len == 0 {
            let n = ((self.zone.count() as usize + added) * 2)
                .max(MIN_SLOTS)
                .next_power_of_two();
            Some((self.alloc(n * 4)?, n))
        } else {
            None
        };
        let mut prepared = Vec::with_capacity(plan.len());
        for (c, account) in plan {
            let account = match account {
                Some(a) => a,
                None => self.new_account(c.id.as_bytes())?,
            };
            record::encode(c, account, &mut buf);
            let p = self.alloc(buf.len())?;
            // SAFETY: p has buf.len() bytes, private until published.
            unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), self.zone.ptr(p), buf.len()) };
            prepared.push((c, p));
        }
        self.alloc_nodes(existing + usize::from(new_index.is_some() && len > 0))?;
        self.step(Step::Allocated);

        // Phase two: publish.
        if let Some((p, n)) = new_index {
            self.publish_index(p, n);
        }
        let mut created = 0;
        for (c, p) in prepared {
            let z = self.zone;
            let Ok((slot, old)) = record::slot_for(self.index(), c.id.as_bytes(), |x| {
                z.record_at(x).map(|r| r.id())
            }) else {
                continue; // cannot happen: the index is at most half full
            };
            let h = self.zone.header();
            if old.is_none() {
                // Counted first: a writer killed after the store leaves the count high (a
                // larger index next time), never low (an index more than half full).
                h.count().fetch_add(1, Ordering::Relaxed);
                if self.index()[slot].load(Ordering::Relaxed) == EMPTY {
                    h.used().fetch_add(1, Ordering::Relaxed);
                }
                created += 1;
            }
            self.index()[slot].store((p >> 3) as u32, Ordering::SeqCst);
            self.step(Step::SlotStored);
            if let Some(old) = old {
                self.retire((old as usize) << 3);
            }
        }
        Ok(created)
    }

    /// A new campaign's account field: its entry in the state file's table (found by id: the
    /// counters it had before a restart; + 1), or a zeroed chunk of the region (>> 3).
    /// An entry inserted here stays when the change fails: it is found again by id.
    fn new_account(&mut self, id: &[u8]) -> Result<u32, StoreError> {
        match self.zone.accounts_table() {
            Some(t) => t
                .find_or_insert(id, std::process::id(), self.alive)
                .map(|i| (i + 1) as u32)
                .map_err(|_| StoreError::Full),
            None => Ok((self.alloc(mem::size_of::<Account>())? >> 3) as u32),
        }
    }

    /// Fills the new index at `p` (`n` slots) from the current one and publishes it.
    fn publish_index(&mut self, p: usize, n: usize) {
        // SAFETY: p has n * 4 zeroed bytes, aligned for u32 (chunks are 8-aligned).
        let new: &[AtomicU32] =
            unsafe { core::slice::from_raw_parts(self.zone.ptr(p).cast::<AtomicU32>(), n) };
        let z = self.zone;
        let mut copied = 0;
        for slot in self.index() {
            let v = slot.load(Ordering::Relaxed);
            if let Some(id) = z.record_at(v).map(|r| r.id()) {
                if let Ok((i, _)) = record::slot_for(new, id, |x| z.record_at(x).map(|r| r.id())) {
                    new[i].store(v, Ordering::Relaxed);
                    copied += 1;
                }
            }
        }
        let h = self.zone.header();
        let old = self.index();
        h.used().store(copied, Ordering::Relaxed);
        // The new index's slots are published by this store (SeqCst is also Release).
        h.index_word().store(index_word(p, n), Ordering::SeqCst);
        self.step(Step::IndexPublished);
        if !old.is_empty() {
            self.retire(self.zone.offset_of(old.as_ptr().cast()));
        }
    }

    fn remove_inner(&mut self, ids: &[&[u8]]) -> Result<usize, StoreError> {
        let found: Vec<(usize, u32)> = ids.iter().filter_map(|id| self.find(id)).collect();
        self.alloc_nodes(found.len() * 2)?;
        self.step(Step::Allocated);
        for &(slot, v) in &found {
            let account = self.record(v).map(|r| r.account());
            self.index()[slot].store(DELETED, Ordering::SeqCst);
            self.step(Step::SlotStored);
            self.zone.header().count().fetch_sub(1, Ordering::Relaxed);
            self.retire((v as usize) << 3);
            match (account, self.zone.accounts_table()) {
                (Some(a), Some(t)) => {
                    t.release((a as usize).wrapping_sub(1), std::process::id(), self.alive)
                }
                (Some(a), None) => self.retire((a as usize) << 3),
                (None, _) => {}
            }
        }
        Ok(found.len())
    }

    /// Makes the store hold exactly `list` (ids unique): deletes the others, upserts these
    /// (accounts of the campaigns that stay are kept). Zone init at start and reload.
    pub fn sync(&mut self, list: &[Campaign]) -> Result<usize, StoreError> {
        let keep: std::collections::HashSet<&[u8]> = list.iter().map(|c| c.id.as_bytes()).collect();
        let gone: Vec<Vec<u8>> = self
            .ids()
            .into_iter()
            .filter(|id| !keep.contains(id.as_slice()))
            .collect();
        let gone: Vec<&[u8]> = gone.iter().map(Vec::as_slice).collect();
        self.remove(&gone)?;
        self.upsert(list)
    }

    /// The ids in the store.
    pub fn ids(&self) -> Vec<Vec<u8>> {
        self.index()
            .iter()
            .filter_map(|s| {
                self.record(s.load(Ordering::Relaxed))
                    .map(|r| r.id().to_vec())
            })
            .collect()
    }

    /// The record of `id` and its account.
    pub fn get(&self, id: &[u8]) -> Option<(RecordView<'_>, Option<&Account>)> {
        let (_, v) = self.find(id)?;
        let r = self.record(v)?;
        Some((r, self.zone.account_at(r.account())))
    }

    /// `f(record, account)` for the campaigns in index order from slot `from`, at most
    /// `limit`; and the slot to continue at.
    pub fn page<T>(
        &self,
        from: usize,
        limit: usize,
        mut f: impl FnMut(&RecordView<'_>, Option<&Account>) -> T,
    ) -> (Vec<T>, Option<usize>) {
        let mut out = Vec::new();
        for (i, slot) in self.index().iter().enumerate().skip(from) {
            if out.len() == limit {
                return (out, Some(i));
            }
            if let Some(r) = self.record(slot.load(Ordering::Relaxed)) {
                out.push(f(&r, self.zone.account_at(r.account())));
            }
        }
        (out, None)
    }

    /// Runs a change: `f` either succeeds (published) or fails in its first phase (undone).
    fn change<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.reclaim();
        match f(self) {
            Ok(t) => {
                self.done();
                Ok(t)
            }
            Err(e) => {
                self.undo();
                Err(e)
            }
        }
    }
}
