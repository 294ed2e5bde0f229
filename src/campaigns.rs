//! The campaign store: campaigns and their accounts (the banker's counters) in an nginx shared
//! zone, read by every worker without a lock and changed at run time by the admin API.
//!
//! Layout (slab memory of the zone; offsets from the zone start):
//! - a [`ZoneHeader`] (the slab pool's `data`): where the index is, the count, a sequence
//!   number, the list of retired chunks, the test clock;
//! - the index: a power-of-two array of `AtomicU32` slots, each the offset (>> 3) of a record
//!   (`tracker_core::record`), or EMPTY / DELETED; at most half full;
//! - records: immutable once published; a change allocates a new record and swaps the slot;
//! - accounts (`tracker_core::banker::Account`): one per campaign, kept when the campaign is
//!   replaced (budgets survive edits and reloads), freed when it is deleted.
//!
//! Readers (every request): find the slot, copy what they need out of the record, then check
//! that the slot still holds the same record and the index was not replaced (sequence number);
//! otherwise they retry. Writers (the admin API in a worker; zone init in the master at start
//! and reload) hold the slab pool's mutex. What a writer unlinks (records, accounts, an old
//! index) is retired, not freed: it is freed by a later writer once it has been unlinked for
//! [`GRACE_SECS`], far longer than a reader stays inside a record (microseconds).
//!
//! A reload re-reads the campaigns file and its journal (the admin API appends every change to
//! the journal, `crate::journal`): zone init upserts every campaign they hold, keeping the
//! accounts, and deletes the others.

use core::ffi::c_void;
use core::mem;
use core::ptr;
use core::sync::atomic::{fence, AtomicI64, AtomicU32, AtomicU64, Ordering};

use ngx::core::{SlabPool, Status};
use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_slab_calloc_locked,
    ngx_slab_free_locked, ngx_slab_pool_t, ngx_str_t, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_NOTICE,
};
use ngx::ngx_log_error;
use tracker_core::banker::{Account, Counters};
use tracker_core::campaign::{Campaign, Caps, Pricing, Status as CampaignStatus};
use tracker_core::record::{self, RecordView, DELETED, EMPTY};

/// How long an unlinked chunk stays allocated before a writer frees it.
const GRACE_SECS: u64 = 10;
const MIN_SLOTS: usize = 64;

/// A campaign as a request needs it, copied out of shared memory.
pub struct Hit {
    pub status: CampaignStatus,
    pub in_schedule: bool,
    pub publisher_allowed: bool,
    pub pricing: Pricing,
    pub caps: Caps,
    pub utc_offset_minutes: i16,
    pub has_fallback: bool,
    /// The campaign's counters, in the zone (lives as long as the worker).
    pub account: &'static Account,
}

/// Why a change was refused.
#[derive(Debug, PartialEq)]
pub enum StoreError {
    /// The zone has no room: nothing was changed.
    Full,
    /// The zone is not initialized (should not happen in a worker).
    NotReady,
}

/// A chunk waiting to be freed.
#[repr(C)]
struct Retired {
    next: u64,
    chunk: u64,
    since: u64,
}

/// Lives at the start of the zone's slab memory, shared by every process.
#[repr(C)]
struct ZoneHeader {
    /// Odd while the index is being replaced.
    seq: AtomicU64,
    index_off: AtomicU64,
    index_len: AtomicU64,
    count: AtomicU64,
    /// Bumped by every change (a stats page can tell that something changed).
    generation: AtomicU64,
    /// Seconds added to the clock (the admin API's test clock; 0 in production).
    clock_offset: AtomicI64,
    /// Offset of the first [`Retired`] (0: none). Writers only, under the mutex.
    retired: AtomicU64,
}

/// The configured store: the zone, and the campaigns read from the file for this configuration.
pub struct Store {
    zone: *mut ngx_shm_zone_t,
    /// The file's campaigns, until zone init has put them in the zone (then dropped: with a
    /// million campaigns they are hundreds of megabytes that the workers would inherit).
    list: std::sync::Mutex<Vec<Campaign>>,
    path: String,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The zone as the writers see it, with the mutex held. A change happens in two phases: first
/// every chunk it needs is allocated (records, accounts, a larger index, the nodes that will
/// retire what it unlinks); if one allocation fails, they are all freed and nothing changed
/// (`StoreError::Full`). Then it is published, which cannot fail.
struct Writer<'z> {
    base: *mut u8,
    size: usize,
    pool: *mut ngx_slab_pool_t,
    h: &'z ZoneHeader,
    /// Chunks allocated by this change (freed by `undo`).
    fresh: Vec<*mut u8>,
    /// Retire nodes allocated by this change and not used yet.
    spare: Vec<*mut u8>,
    _lock: ngx::core::slab::LockedSlabPool,
}

/// One campaign of an upsert, prepared.
struct Prepared<'c> {
    c: &'c Campaign,
    record: *mut u8,
}

impl Writer<'_> {
    fn off(&self, p: *mut u8) -> u64 {
        p as u64 - self.base as u64
    }

    fn at(&self, off: u64) -> *mut u8 {
        // SAFETY: offsets come from our own allocations in this zone.
        unsafe { self.base.add(off as usize) }
    }

    /// Zeroed slab memory, remembered in `fresh`.
    fn alloc(&mut self, size: usize) -> Result<*mut u8, StoreError> {
        // SAFETY: we hold the pool's mutex (the `_lock` guard).
        let p = unsafe { ngx_slab_calloc_locked(self.pool, size) }.cast::<u8>();
        if p.is_null() {
            return Err(StoreError::Full);
        }
        self.fresh.push(p);
        Ok(p)
    }

    fn alloc_nodes(&mut self, n: usize) -> Result<(), StoreError> {
        for _ in 0..n {
            let p = self.alloc(mem::size_of::<Retired>())?;
            self.spare.push(p);
        }
        Ok(())
    }

    /// Phase one failed: frees what this change allocated (none of it was published).
    fn undo(&mut self) {
        for p in self.fresh.drain(..) {
            // SAFETY: allocated by `alloc` under the same lock, never published.
            unsafe { ngx_slab_free_locked(self.pool, p.cast()) };
        }
        self.spare.clear();
    }

    /// Published: keeps what was allocated, frees the retire nodes not needed.
    fn done(&mut self) {
        for p in self.spare.drain(..) {
            // SAFETY: a node allocated by this change and never linked.
            unsafe { ngx_slab_free_locked(self.pool, p.cast()) };
        }
        self.fresh.clear();
        self.h.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn index(&self) -> &[AtomicU32] {
        index_of(self.base, self.size, self.h).unwrap_or(&[])
    }

    fn record(&self, v: u32) -> Option<RecordView<'_>> {
        record_at(self.base, self.size, v)
    }

    fn find(&self, id: &[u8]) -> Option<(usize, u32)> {
        let (base, size) = (self.base, self.size);
        record::find(self.index(), id, |x| {
            record_at(base, size, x).map(|r| r.id())
        })
    }

    /// Unlinks `chunk` for good, with a node from `spare`: freed after the grace period.
    fn retire(&mut self, chunk: *mut u8) {
        let Some(node) = self.spare.pop() else {
            // Not prepared (a bug): keeping the chunk allocated is safe, freeing it is not.
            return;
        };
        let r = node.cast::<Retired>();
        let next = self.h.retired.load(Ordering::Relaxed);
        let (chunk_off, r_off) = (self.off(chunk), self.off(node));
        // SAFETY: node is a chunk of this change of the size of Retired, 8-aligned.
        unsafe {
            r.write(Retired {
                next,
                chunk: chunk_off,
                since: now_secs(),
            })
        };
        self.h.retired.store(r_off, Ordering::Relaxed);
    }

    /// Frees the retired chunks whose grace period is over.
    fn reclaim(&mut self) {
        let now = now_secs();
        let mut prev: Option<*mut Retired> = None;
        let mut cur = self.h.retired.load(Ordering::Relaxed);
        while cur != 0 {
            let r = self.at(cur).cast::<Retired>();
            // SAFETY: the list holds only Retired nodes we allocated, linked under the mutex.
            let (next, chunk, since) = unsafe { ((*r).next, (*r).chunk, (*r).since) };
            if now.saturating_sub(since) >= GRACE_SECS {
                // SAFETY: unlinked GRACE_SECS ago (see the module docs); both chunks are ours.
                unsafe {
                    ngx_slab_free_locked(self.pool, self.at(chunk).cast());
                    ngx_slab_free_locked(self.pool, r.cast());
                }
                match prev {
                    // SAFETY: prev is a live node of the list.
                    Some(p) => unsafe { (*p).next = next },
                    None => self.h.retired.store(next, Ordering::Relaxed),
                }
            } else {
                prev = Some(r);
            }
            cur = next;
        }
    }

    /// Upserts `list` (ids unique), all or nothing.
    fn upsert(&mut self, list: &[Campaign]) -> Result<usize, StoreError> {
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
        let len = self.index().len();
        let need = ((self.h.count.load(Ordering::Relaxed) as usize + added) * 2).max(MIN_SLOTS);
        let new_index = if len < need {
            let n = need.next_power_of_two();
            Some((self.alloc(n * 4)?, n))
        } else {
            None
        };
        let mut prepared = Vec::with_capacity(plan.len());
        for (c, account) in plan {
            let account = match account {
                Some(a) => a,
                None => {
                    let a = self.alloc(mem::size_of::<Account>())?;
                    (self.off(a) >> 3) as u32
                }
            };
            record::encode(c, account, &mut buf);
            let p = self.alloc(buf.len())?;
            // SAFETY: p has buf.len() bytes, private until published.
            unsafe { ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len()) };
            prepared.push(Prepared { c, record: p });
        }
        self.alloc_nodes(existing + usize::from(new_index.is_some() && len > 0))?;

        // Phase two: publish.
        if let Some((p, n)) = new_index {
            // SAFETY: p has n * 4 zeroed bytes, aligned for u32 (slab chunks are).
            let new: &[AtomicU32] =
                unsafe { core::slice::from_raw_parts(p.cast::<AtomicU32>(), n) };
            let (base, size) = (self.base, self.size);
            for slot in self.index() {
                let v = slot.load(Ordering::Relaxed);
                if let Some(id) = record_at(base, size, v).map(|r| r.id()) {
                    if let Ok((i, _)) =
                        record::slot_for(new, id, |x| record_at(base, size, x).map(|r| r.id()))
                    {
                        new[i].store(v, Ordering::Relaxed);
                    }
                }
            }
            let old = self.h.index_off.load(Ordering::Relaxed);
            self.h.seq.fetch_add(1, Ordering::AcqRel);
            self.h.index_off.store(self.off(p), Ordering::Release);
            self.h.index_len.store(n as u64, Ordering::Release);
            self.h.seq.fetch_add(1, Ordering::Release);
            if old != 0 {
                let old = self.at(old);
                self.retire(old);
            }
        }
        let mut created = 0;
        for pr in prepared {
            let (base, size) = (self.base, self.size);
            let Ok((slot, old)) = record::slot_for(self.index(), pr.c.id.as_bytes(), |x| {
                record_at(base, size, x).map(|r| r.id())
            }) else {
                continue; // cannot happen: the index is at most half full
            };
            let v = (self.off(pr.record) >> 3) as u32;
            self.index()[slot].store(v, Ordering::Release);
            match old {
                Some(old) => {
                    let old = self.at(u64::from(old) << 3);
                    self.retire(old);
                }
                None => {
                    self.h.count.fetch_add(1, Ordering::Relaxed);
                    created += 1;
                }
            }
        }
        Ok(created)
    }

    /// Deletes the campaigns `ids` (and their accounts), all or nothing. Returns how many
    /// existed.
    fn remove(&mut self, ids: &[&[u8]]) -> Result<usize, StoreError> {
        let found: Vec<(usize, u32)> = ids.iter().filter_map(|id| self.find(id)).collect();
        self.alloc_nodes(found.len() * 2)?;
        for &(slot, v) in &found {
            let account = self.record(v).map(|r| r.account());
            self.index()[slot].store(DELETED, Ordering::Release);
            self.h.count.fetch_sub(1, Ordering::Relaxed);
            let rec = self.at(u64::from(v) << 3);
            self.retire(rec);
            if let Some(a) = account {
                let a = self.at(u64::from(a) << 3);
                self.retire(a);
            }
        }
        Ok(found.len())
    }

    fn ids(&self) -> Vec<Vec<u8>> {
        self.index()
            .iter()
            .filter_map(|s| {
                self.record(s.load(Ordering::Relaxed))
                    .map(|r| r.id().to_vec())
            })
            .collect()
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

/// The last of each id, in order of first appearance.
fn unique_by_id(list: &[Campaign]) -> Vec<Campaign> {
    let mut pos: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut out: Vec<Campaign> = Vec::with_capacity(list.len());
    for c in list {
        match pos.get(c.id.as_str()) {
            Some(&i) => out[i] = c.clone(),
            None => {
                pos.insert(&c.id, out.len());
                out.push(c.clone());
            }
        }
    }
    out
}

/// The index, if the header points at one inside the zone.
fn index_of<'z>(base: *mut u8, size: usize, h: &ZoneHeader) -> Option<&'z [AtomicU32]> {
    let off = h.index_off.load(Ordering::Acquire) as usize;
    let len = h.index_len.load(Ordering::Acquire) as usize;
    if off == 0
        || len == 0
        || off.checked_add(len.checked_mul(4)?)? > size
        || !off.is_multiple_of(4)
    {
        return None;
    }
    // SAFETY: [off, off + 4 len) lies in the zone mapping (checked), 4-aligned; the index is
    // only ever accessed through atomics.
    Some(unsafe { core::slice::from_raw_parts(base.add(off).cast::<AtomicU32>(), len) })
}

/// The record a slot value points to, if it lies inside the zone and parses.
fn record_at<'z>(base: *mut u8, size: usize, v: u32) -> Option<RecordView<'z>> {
    if v == EMPTY || v == DELETED {
        return None;
    }
    let off = (v as usize) << 3;
    let avail = size.checked_sub(off)?;
    // SAFETY: [off, size) lies in the zone mapping. Records are immutable once published; a
    // record retired meanwhile is still allocated for GRACE_SECS, and a reader re-checks its
    // slot afterwards. RecordView bounds-checks every length against these bytes.
    let bytes = unsafe { core::slice::from_raw_parts(base.add(off).cast_const(), avail) };
    RecordView::new(bytes)
}

impl Store {
    /// Reads and checks the file and declares the zone.
    pub fn configure(
        cf: *mut ngx_conf_t,
        path: &str,
        name: &[u8],
        size: usize,
    ) -> Result<Store, String> {
        // The file, then its journals (crate::journal).
        let list = crate::journal::load(path)?;
        let mut zone_name = ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        };
        // SAFETY: cf is the configuration being parsed; the name points into its arguments.
        let zone = unsafe {
            ngx_shared_memory_add(
                cf,
                &mut zone_name,
                size,
                ptr::addr_of_mut!(crate::ngx_http_tracker_module).cast(),
            )
        };
        if zone.is_null() {
            return Err("cannot add the shared zone".into());
        }
        // SAFETY: zone is a valid shm zone entry of this cycle.
        if unsafe { !(*zone).data.is_null() } {
            return Err(format!(
                "zone \"{}\" is already used",
                String::from_utf8_lossy(name)
            ));
        }
        Ok(Store {
            zone,
            list: std::sync::Mutex::new(list),
            path: path.to_owned(),
        })
    }

    /// Points the zone at this store, once the store has its final address (in MainConf).
    pub fn attach(&self) {
        // SAFETY: the zone was declared by `configure` for this cycle and lives as long as it.
        unsafe {
            (*self.zone).init = Some(init_zone);
            (*self.zone).data = (self as *const Store).cast_mut().cast();
        }
    }

    /// The campaigns file (the admin API writes it through).
    pub fn path(&self) -> &str {
        &self.path
    }

    fn mapping(&self) -> Option<(*mut u8, usize, &ZoneHeader)> {
        // SAFETY: after init, the zone's slab pool `data` points at our header, which lives
        // in shared memory mapped at the same address in every worker.
        unsafe {
            let base = (*self.zone).shm.addr;
            let pool = base.cast::<ngx_slab_pool_t>();
            if pool.is_null() {
                return None;
            }
            let h = (*pool).data.cast::<ZoneHeader>().as_ref()?;
            Some((base, (*self.zone).shm.size, h))
        }
    }

    fn writer(&self) -> Result<Writer<'_>, StoreError> {
        let (base, size, h) = self.mapping().ok_or(StoreError::NotReady)?;
        // SAFETY: the zone is initialized (mapping() found our header).
        let pool = unsafe { SlabPool::from_shm_zone(&*self.zone) }.ok_or(StoreError::NotReady)?;
        let lock = pool.lock();
        Ok(Writer {
            base,
            size,
            pool: base.cast(),
            h,
            fresh: Vec::new(),
            spare: Vec::new(),
            _lock: lock,
        })
    }

    /// The clock the campaigns live by: Unix seconds, plus the test offset.
    pub fn now(&self) -> i64 {
        let off = self
            .mapping()
            .map_or(0, |(_, _, h)| h.clock_offset.load(Ordering::Relaxed));
        now_secs() as i64 + off
    }

    /// Moves the campaigns' clock (tests: day rollover, schedules).
    pub fn set_clock_offset(&self, secs: i64) {
        if let Some((_, _, h)) = self.mapping() {
            h.clock_offset.store(secs, Ordering::Relaxed);
        }
    }

    /// The test clock's offset in seconds (0 in production).
    pub fn clock_offset(&self) -> i64 {
        self.mapping()
            .map_or(0, |(_, _, h)| h.clock_offset.load(Ordering::Relaxed))
    }

    /// Looks `id` up at time `now`, for `publisher`: copies the landing and fallback URLs
    /// (cleared first) and returns what the banker needs.
    pub fn lookup_full(
        &self,
        id: &[u8],
        now: i64,
        publisher: Option<&[u8]>,
        landing: &mut Vec<u8>,
        fallback: &mut Vec<u8>,
    ) -> Option<Hit> {
        let (base, size, h) = self.mapping()?;
        loop {
            let s0 = h.seq.load(Ordering::Acquire);
            if s0 & 1 == 1 {
                core::hint::spin_loop();
                continue;
            }
            let index = index_of(base, size, h)?;
            let found = record::find(index, id, |v| record_at(base, size, v).map(|r| r.id()));
            let mut hit = None;
            let mut slot_v = None;
            if let Some((slot, v)) = found {
                if let Some(r) = record_at(base, size, v) {
                    landing.clear();
                    landing.extend_from_slice(r.landing_url());
                    fallback.clear();
                    if let Some(f) = r.fallback_url() {
                        fallback.extend_from_slice(f);
                    }
                    let acc_off = (r.account() as usize) << 3;
                    if acc_off + mem::size_of::<Account>() <= size && acc_off != 0 {
                        // SAFETY: the account lies in the zone (checked), 8-aligned (slab),
                        // made only of atomics, alive while its campaign exists (and for
                        // GRACE_SECS after a delete).
                        let account: &'static Account =
                            unsafe { &*base.add(acc_off).cast::<Account>() };
                        hit = Some(Hit {
                            status: r.status(),
                            in_schedule: r.in_schedule(now),
                            publisher_allowed: publisher.is_none_or(|p| r.allows(p)),
                            pricing: r.pricing(),
                            caps: r.caps(),
                            utc_offset_minutes: r.utc_offset_minutes(),
                            has_fallback: r.fallback_url().is_some(),
                            account,
                        });
                    }
                }
                slot_v = Some((slot, v));
            }
            fence(Ordering::Acquire);
            let same_slot = slot_v.is_none_or(|(slot, v)| {
                index.get(slot).map(|s| s.load(Ordering::Acquire)) == Some(v)
            });
            if same_slot && h.seq.load(Ordering::Relaxed) == s0 {
                return hit;
            }
        }
    }

    /// Upserts campaigns (all or none: on a full zone nothing changes; a repeated id: the
    /// last wins). Returns how many were new.
    pub fn upsert(&self, list: &[Campaign]) -> Result<usize, StoreError> {
        let list = unique_by_id(list);
        self.writer()?.change(|w| w.upsert(&list))
    }

    /// Like [`Store::upsert`], then `log` (the journal append) with the lock still held, so
    /// that the journal's order is the zone's order.
    pub fn upsert_logged<T>(
        &self,
        list: &[Campaign],
        log: impl FnOnce() -> T,
    ) -> Result<(usize, T), StoreError> {
        let list = unique_by_id(list);
        let mut w = self.writer()?;
        let created = w.change(|w| w.upsert(&list))?;
        Ok((created, log()))
    }

    /// Like [`Store::delete`], then `log` with the lock still held when the campaign existed.
    pub fn delete_logged<T>(
        &self,
        id: &str,
        log: impl FnOnce() -> T,
    ) -> Result<Option<T>, StoreError> {
        let mut w = self.writer()?;
        let found = w.change(|w| w.remove(&[id.as_bytes()]))? > 0;
        Ok(found.then(log))
    }

    /// Runs `f` with the zone's writer lock held (the journal's compaction, `crate::journal`).
    pub fn with_lock<T>(&self, f: impl FnOnce() -> T) -> Result<T, StoreError> {
        let _w = self.writer()?;
        Ok(f())
    }

    /// Deletes a campaign. Returns whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        self.writer()?
            .change(|w| w.remove(&[id.as_bytes()]))
            .map(|n| n > 0)
    }

    /// One campaign and its counters.
    pub fn get(&self, id: &str) -> Option<(Campaign, Counters)> {
        let (base, size, h) = self.mapping()?;
        let _w = self.writer().ok()?;
        let index = index_of(base, size, h)?;
        let (_, v) = record::find(index, id.as_bytes(), |x| {
            record_at(base, size, x).map(|r| r.id())
        })?;
        let r = record_at(base, size, v)?;
        Some((r.to_campaign(), self.counters_of(base, size, &r)))
    }

    fn counters_of(&self, base: *mut u8, size: usize, r: &RecordView<'_>) -> Counters {
        let acc_off = (r.account() as usize) << 3;
        if acc_off == 0 || acc_off + mem::size_of::<Account>() > size {
            return Counters::default();
        }
        // SAFETY: as in lookup_full; the caller holds the mutex, so it is not freed.
        let a = unsafe { &*base.add(acc_off).cast::<Account>() };
        a.counters(tracker_core::banker::day_of(
            self.now(),
            r.utc_offset_minutes(),
        ))
    }

    /// Campaigns in index order from slot `from`, at most `limit`; and the slot to continue at.
    pub fn page(&self, from: usize, limit: usize) -> (Vec<(Campaign, Counters)>, Option<usize>) {
        self.page_with(from, limit, |r, k| (r.to_campaign(), k))
    }

    /// Like [`Store::page`] without decoding whole campaigns: id, status and counters (the
    /// stats location, `src/stats.rs`, which may read many of them).
    pub fn page_counters(
        &self,
        from: usize,
        limit: usize,
    ) -> (Vec<(String, CampaignStatus, Counters)>, Option<usize>) {
        self.page_with(from, limit, |r, k| {
            (String::from_utf8_lossy(r.id()).into_owned(), r.status(), k)
        })
    }

    /// `f(record, counters)` for the campaigns in index order from slot `from`, at most
    /// `limit`, under the zone's mutex (records are not freed meanwhile); and the next slot.
    fn page_with<T>(
        &self,
        from: usize,
        limit: usize,
        f: impl Fn(&RecordView<'_>, Counters) -> T,
    ) -> (Vec<T>, Option<usize>) {
        let mut out = Vec::new();
        let Some((base, size, h)) = self.mapping() else {
            return (out, None);
        };
        let Ok(_w) = self.writer() else {
            return (out, None);
        };
        let Some(index) = index_of(base, size, h) else {
            return (out, None);
        };
        for (i, slot) in index.iter().enumerate().skip(from) {
            if out.len() == limit {
                return (out, Some(i));
            }
            if let Some(r) = record_at(base, size, slot.load(Ordering::Relaxed)) {
                let k = self.counters_of(base, size, &r);
                out.push(f(&r, k));
            }
        }
        (out, None)
    }

    /// The number of campaigns, the zone's size and the change generation.
    pub fn summary(&self) -> (u64, usize, u64) {
        match self.mapping() {
            Some((_, size, h)) => (
                h.count.load(Ordering::Relaxed),
                size,
                h.generation.load(Ordering::Relaxed),
            ),
            None => (0, 0, 0),
        }
    }

    /// Free bytes in the zone (whole free pages of the slab allocator; partly used pages of
    /// small chunks are not counted), for the stats and the memory-per-campaign measurement.
    pub fn zone_free_bytes(&self) -> usize {
        let Some((base, _, _)) = self.mapping() else {
            return 0;
        };
        let pool = base.cast::<ngx_slab_pool_t>();
        // SAFETY: the zone starts with its slab pool; pfree is read without the mutex, as
        // nginx's own status code does: a momentary value is fine for statistics.
        let pages = unsafe { (*pool).pfree };
        // SAFETY: ngx_pagesize is set once at startup.
        pages * unsafe { ngx::ffi::ngx_pagesize }
    }
}

/// Zone init, in the master at start and at every reload: makes the zone hold exactly the
/// campaigns of this configuration's file, keeping the accounts of those that were there.
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, _old: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls init with the zone we declared; `data` is our Store (attach).
    let zone = unsafe { &mut *zone };
    let store = unsafe { &*zone.data.cast::<Store>() };
    let pool = zone.shm.addr.cast::<ngx_slab_pool_t>();
    let log = zone.shm.log;
    // SAFETY: the slab pool header sits at the start of every shared zone; its `data` field is
    // ours and survives reloads when the zone is reused. The master is alone here.
    unsafe {
        if (*pool).data.is_null() {
            let h =
                ngx::ffi::ngx_slab_calloc(pool, mem::size_of::<ZoneHeader>()).cast::<ZoneHeader>();
            if h.is_null() {
                ngx_log_error!(
                    NGX_LOG_EMERG,
                    log,
                    "tracker_campaigns: zone too small for its header"
                );
                return Status::NGX_ERROR.into();
            }
            (*pool).data = h.cast();
        }
        // A full zone is an answer (507 from the admin API, an error at reload) that we log
        // ourselves, not a [crit] from the allocator.
        (*pool).set_log_nomem(0);
    }
    let mut list = std::mem::take(&mut *store.list.lock().unwrap_or_else(|p| p.into_inner()));
    let mut journal_error = None;
    let mut rotation = None;
    let result = store.writer().and_then(|mut w| {
        // Records appended since the configuration was read (crate::journal, step 1).
        match crate::journal::catch_up(&store.path, std::mem::take(&mut list)) {
            Ok(l) => list = l,
            Err(e) => {
                journal_error = Some(e);
                return Ok(0);
            }
        }
        let keep: std::collections::HashSet<&[u8]> = list.iter().map(|c| c.id.as_bytes()).collect();
        let gone: Vec<Vec<u8>> = w
            .ids()
            .into_iter()
            .filter(|id| !keep.contains(id.as_slice()))
            .collect();
        let gone: Vec<&[u8]> = gone.iter().map(Vec::as_slice).collect();
        w.change(|w| w.remove(&gone))?;
        let n = w.change(|w| w.upsert(&list))?;
        // Step 3: new appends go to a new journal.
        match crate::journal::rotate(&store.path, &list) {
            Ok(r) => rotation = r,
            Err(e) => journal_error = Some(format!("cannot rotate the journal: {e}")),
        }
        Ok(n)
    });
    if let Some(e) = journal_error {
        ngx_log_error!(
            NGX_LOG_EMERG,
            log,
            "tracker_campaigns: \"{}\": {}",
            store.path,
            e
        );
        return Status::NGX_ERROR.into();
    }
    if let Err(e) = result {
        ngx_log_error!(
            NGX_LOG_EMERG,
            log,
            "tracker_campaigns: zone \"{}\" ({} bytes) has no room for {} campaigns ({:?}); make it larger",
            String::from_utf8_lossy(zone.shm.name.as_bytes()),
            zone.shm.size,
            list.len(),
            e
        );
        return Status::NGX_ERROR.into();
    }
    if let Some(r) = rotation {
        // Compaction (crate::journal): the master serves no requests.
        match crate::journal::compact(&store.path, &list, &r) {
            Ok(true) => {
                ngx_log_error!(
                    NGX_LOG_NOTICE,
                    log,
                    "tracker_campaigns: journal compacted into \"{}\"",
                    store.path
                );
            }
            Ok(false) => {
                ngx_log_error!(
                NGX_LOG_NOTICE,
                log,
                "tracker_campaigns: \"{}\" written; its old journal was appended to meanwhile and is kept (replayed at the next start)",
                store.path
            );
            }
            Err(e) => {
                ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "tracker_campaigns: compacting the journal into \"{}\" failed: {}; the journal is kept (nothing is lost), the next reload tries again",
                store.path,
                e
            );
            }
        }
    }
    let n = list.len();
    drop(list);
    // Give the parsed file's memory back to the system: the workers forked from this master
    // would otherwise carry it (hundreds of megabytes for a million campaigns).
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
    ngx_log_error!(
        NGX_LOG_NOTICE,
        log,
        "tracker_campaigns: {} campaigns from \"{}\" in zone \"{}\"",
        n,
        store.path,
        String::from_utf8_lossy(zone.shm.name.as_bytes())
    );
    Status::NGX_OK.into()
}
