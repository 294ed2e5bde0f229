//! The campaign store in an nginx shared zone: the FFI glue around `tracker_core::store`,
//! which holds the algorithm (and its tests). Campaigns and their accounts (the banker's
//! counters) live in the zone's slab memory, read by every worker without a lock, changed at
//! run time by the admin API and at start and reload by zone init (in the master).
//!
//! This file: declaring the zone and initializing it (the store's header is the slab pool's
//! `data`), the slab allocator as the store's [`Chunks`] (under the pool's mutex, which is the
//! writers' lock; nginx force-unlocks it when its holder dies), this worker's reader slot, and
//! the answers the handler, the admin API and the stats need.
//!
//! A reader pins its slot from the lookup until the request is done with the account
//! ([`Hit::account`] holds the pin; it is dropped with the `Hit`); writers free what they
//! unlinked only when no live reader pinned before it (`docs/campaign-store.md`).
//!
//! A reload re-reads the campaigns file and its journal (the admin API appends every change to
//! the journal, `crate::journal`): zone init makes the zone hold exactly the campaigns they
//! hold, re-putting only those that changed and keeping the accounts.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering};

use ngx::core::{SlabPool, Status};
use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_slab_calloc_locked,
    ngx_slab_free_locked, ngx_slab_pool_t, ngx_str_t, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_NOTICE,
};
use ngx::ngx_log_error;
use tracker_core::banker::Counters;
use tracker_core::campaign::{Campaign, Caps, Pricing, Status as CampaignStatus};
use tracker_core::record::RecordView;
use tracker_core::store::{pid_alive, Chunks, PinnedAccount, Reader, Writer, Zone};

pub use tracker_core::store::StoreError;

/// A campaign as a request needs it, copied out of shared memory.
pub struct Hit {
    pub status: CampaignStatus,
    pub in_schedule: bool,
    pub publisher_allowed: bool,
    pub pricing: Pricing,
    pub caps: Caps,
    pub utc_offset_minutes: i16,
    pub has_fallback: bool,
    /// The campaign's counters, in the zone; not freed nor reused while this value lives
    /// (it holds this worker's pin).
    pub account: PinnedAccount<'static>,
}

/// The configured store: the zone, and the campaigns read from the file for this configuration.
pub struct Store {
    zone: *mut ngx_shm_zone_t,
    /// The file's campaigns, until zone init has put them in the zone (then dropped: with a
    /// million campaigns they are hundreds of megabytes that the workers would inherit).
    list: std::sync::Mutex<Vec<Campaign>>,
    path: String,
    /// This process's reader slot: `pid << 32 | slot` (0: none yet; a value inherited across
    /// fork has another pid and is replaced).
    reader: AtomicU64,
    /// `tracker_state`: the state file the accounts live in (None: in the zone). It is in the
    /// same MainConf as this store, so it lives as long.
    state: Option<*const tracker_core::state::StateFile>,
}

const SHARED_SLOT: u64 = 0xffff_ffff;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The zone's slab pool as the store's allocator; exists only while the pool's mutex is held.
struct Slab {
    pool: *mut ngx_slab_pool_t,
    base: *mut u8,
    _lock: ngx::core::slab::LockedSlabPool,
}

impl Chunks for Slab {
    fn alloc(&mut self, size: usize) -> Option<usize> {
        // SAFETY: we hold the pool's mutex (the `_lock` guard).
        let p = unsafe { ngx_slab_calloc_locked(self.pool, size) }.cast::<u8>();
        (!p.is_null()).then(|| p as usize - self.base as usize)
    }

    fn free(&mut self, off: usize) {
        // SAFETY: `off` is a chunk `alloc` returned (the store's contract); we hold the mutex.
        unsafe { ngx_slab_free_locked(self.pool, self.base.wrapping_add(off).cast()) };
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

fn alive(pid: u32) -> bool {
    pid_alive(pid)
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
                core::ptr::addr_of_mut!(crate::ngx_http_tracker_module).cast(),
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
            reader: AtomicU64::new(0),
            state: None,
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

    /// Keeps the accounts in `state` (`tracker_state`), which lives in the same MainConf.
    pub fn keep_accounts_in(&mut self, state: &tracker_core::state::StateFile) {
        self.state = Some(state);
    }

    /// The state file's table and id, when the accounts live there.
    fn accounts(&self) -> Option<(tracker_core::state::Table<'static>, u64)> {
        // SAFETY: the StateFile is in the MainConf that holds this store (keep_accounts_in):
        // it lives, mapped, as long as this store does.
        let f: &'static tracker_core::state::StateFile = unsafe { &*self.state? };
        Some((f.table(), f.file_id()))
    }

    /// For a "no room" message with `tracker_state`: how full its accounts table is.
    fn state_usage(&self) -> String {
        match self.accounts() {
            Some((t, _)) => format!(
                ", or the \"tracker_state\" file is full ({} of its {} accounts used: a state file keeps its size, see docs/directives.md)",
                t.live().len(),
                t.len()
            ),
            None => String::new(),
        }
    }

    /// The campaigns file (the admin API writes it through).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The store in the zone, once zone init made its header.
    fn zone(&self) -> Option<Zone<'static>> {
        // SAFETY: after init, the zone's slab pool `data` points at the store's header (8-
        // aligned slab memory, zeroed then changed only by the store) in shared memory mapped
        // at the same address in every process for as long as the process lives.
        unsafe {
            let base = (*self.zone).shm.addr;
            let pool = base.cast::<ngx_slab_pool_t>();
            if pool.is_null() || (*pool).data.is_null() {
                return None;
            }
            let header_off = (*pool).data as usize - base as usize;
            let zone = Zone::new(base, (*self.zone).shm.size, header_off);
            Some(match self.accounts() {
                Some((table, id)) => zone.with_accounts(table, id),
                None => zone,
            })
        }
    }

    /// A writer, holding the zone's mutex until dropped.
    fn writer(&self) -> Result<Writer<'static, 'static, Slab>, StoreError> {
        let zone = self.zone().ok_or(StoreError::NotReady)?;
        // SAFETY: the zone is initialized (zone() found our header).
        let pool = unsafe { SlabPool::from_shm_zone(&*self.zone) }.ok_or(StoreError::NotReady)?;
        let lock = pool.lock();
        // SAFETY: as in zone().
        let base = unsafe { (*self.zone).shm.addr };
        Ok(Writer::new(
            zone,
            Slab {
                pool: base.cast(),
                base,
                _lock: lock,
            },
            &alive,
        ))
    }

    /// This process's reader slot (claimed at its first lookup).
    fn reader(&self, zone: &Zone<'static>) -> Reader {
        // SAFETY: ngx_pid is set once per process before requests are handled (no getpid()
        // system call per request).
        let pid = unsafe { ngx::ffi::ngx_pid } as u32;
        let cached = self.reader.load(Ordering::Relaxed);
        if cached >> 32 == u64::from(pid) {
            let slot = cached & 0xffff_ffff;
            return if slot == SHARED_SLOT {
                Reader::SHARED
            } else {
                Reader::at(slot as u32)
            };
        }
        let r = zone.claim_reader(pid, &alive);
        let slot = r.map_or(SHARED_SLOT, |r| u64::from(r.index()));
        self.reader
            .store(u64::from(pid) << 32 | slot, Ordering::Relaxed);
        r.unwrap_or(Reader::SHARED)
    }

    /// The clock the campaigns live by: Unix seconds, plus the test offset.
    pub fn now(&self) -> i64 {
        now_secs() as i64 + self.clock_offset()
    }

    /// Moves the campaigns' clock (tests: day rollover, schedules).
    pub fn set_clock_offset(&self, secs: i64) {
        if let Some(z) = self.zone() {
            z.set_clock_offset(secs);
        }
    }

    /// The test clock's offset in seconds (0 in production).
    pub fn clock_offset(&self) -> i64 {
        self.zone().map_or(0, |z| z.clock_offset())
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
        let zone = self.zone()?;
        let reader = self.reader(&zone);
        let (hit, account) = zone.lookup(reader, id, |r| {
            landing.clear();
            landing.extend_from_slice(r.landing_url());
            fallback.clear();
            if let Some(f) = r.fallback_url() {
                fallback.extend_from_slice(f);
            }
            (
                r.status(),
                r.in_schedule(now),
                publisher.is_none_or(|p| r.allows(p)),
                r.pricing(),
                r.caps(),
                r.utc_offset_minutes(),
                r.fallback_url().is_some(),
            )
        })?;
        let (
            status,
            in_schedule,
            publisher_allowed,
            pricing,
            caps,
            utc_offset_minutes,
            has_fallback,
        ) = hit;
        Some(Hit {
            status,
            in_schedule,
            publisher_allowed,
            pricing,
            caps,
            utc_offset_minutes,
            has_fallback,
            account,
        })
    }

    /// Upserts campaigns (all or none: on a full zone nothing changes; a repeated id: the
    /// last wins). Returns how many were new.
    pub fn upsert(&self, list: &[Campaign]) -> Result<usize, StoreError> {
        let list = unique_by_id(list);
        self.writer()?.upsert(&list)
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
        let created = w.upsert(&list)?;
        Ok((created, log()))
    }

    /// Like [`Store::delete`], then `log` with the lock still held when the campaign existed.
    pub fn delete_logged<T>(
        &self,
        id: &str,
        log: impl FnOnce() -> T,
    ) -> Result<Option<T>, StoreError> {
        let mut w = self.writer()?;
        let found = w.remove(&[id.as_bytes()])? > 0;
        Ok(found.then(log))
    }

    /// Runs `f` with the zone's writer lock held (the journal's compaction, `crate::journal`).
    pub fn with_lock<T>(&self, f: impl FnOnce() -> T) -> Result<T, StoreError> {
        let _w = self.writer()?;
        Ok(f())
    }

    /// Deletes a campaign. Returns whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        self.writer()?.remove(&[id.as_bytes()]).map(|n| n > 0)
    }

    /// One campaign and its counters.
    pub fn get(&self, id: &str) -> Option<(Campaign, Counters)> {
        let w = self.writer().ok()?;
        let (r, a) = w.get(id.as_bytes())?;
        Some((r.to_campaign(), self.counters_of(&r, a)))
    }

    fn counters_of(
        &self,
        r: &RecordView<'_>,
        a: Option<&tracker_core::banker::Account>,
    ) -> Counters {
        a.map_or_else(Counters::default, |a| {
            a.counters(tracker_core::banker::day_of(
                self.now(),
                r.utc_offset_minutes(),
            ))
        })
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
        let Ok(w) = self.writer() else {
            return (Vec::new(), None);
        };
        w.page(from, limit, |r, a| f(r, self.counters_of(r, a)))
    }

    /// The number of campaigns, the zone's size and the change generation.
    pub fn summary(&self) -> (u64, usize, u64) {
        match self.zone() {
            Some(z) => (z.count(), z.size(), z.generation()),
            None => (0, 0, 0),
        }
    }

    /// Free bytes in the zone (whole free pages of the slab allocator; partly used pages of
    /// small chunks are not counted), for the stats and the memory-per-campaign measurement.
    pub fn zone_free_bytes(&self) -> usize {
        if self.zone().is_none() {
            return 0;
        }
        // SAFETY: the zone is initialized; it starts with its slab pool.
        let pool = unsafe { (*self.zone).shm.addr }.cast::<ngx_slab_pool_t>();
        // SAFETY: pfree is read without the mutex, as nginx's own status code does: a
        // momentary value is fine for statistics.
        let pages = unsafe { (*pool).pfree };
        // SAFETY: ngx_pagesize is set once at startup.
        pages * unsafe { ngx::ffi::ngx_pagesize }
    }
}
/// Zone init's part for the accounts: the zone's records must point where this configuration
/// keeps accounts (a reload that adds, removes or changes `tracker_state` is refused while the
/// zone has campaigns); at a start alone with the state file (no other nginx has it, not
/// `nginx -t`), accounts of campaigns no longer in `list` and of deleted ones are dropped.
fn bind_accounts(
    store: &Store,
    fresh: bool,
    list: &[Campaign],
    log: *mut ngx::ffi::ngx_log_t,
) -> Result<(), ()> {
    let Some(zone) = store.zone() else {
        return Ok(());
    };
    if let Err(have) = zone.bind_accounts() {
        ngx_log_error!(
            NGX_LOG_EMERG,
            log,
            "tracker_campaigns: the zone's campaigns keep their accounts in {}, this configuration in {}: \"tracker_state\" cannot be added, removed or changed by a reload; restart nginx (nginx -s quit, then start it)",
            if have == 0 { "the zone" } else { "a state file" },
            if store.state.is_some() { "the \"tracker_state\" file" } else { "the zone" }
        );
        return Err(());
    }
    let Some(state) = store.state else {
        return Ok(());
    };
    // SAFETY: as in Store::accounts; ngx_test_config and ngx_pid are set before zone init.
    let (state, testing, pid) = unsafe {
        (
            &*state,
            ngx::ffi::ngx_test_config != 0,
            ngx::ffi::ngx_pid as u32,
        )
    };
    if fresh && state.was_alone() && !testing {
        let keep: std::collections::HashSet<&[u8]> = list.iter().map(|c| c.id.as_bytes()).collect();
        let freed = state.table().prune(|id| keep.contains(id), pid);
        ngx_log_error!(
            NGX_LOG_NOTICE,
            log,
            "tracker_state: {} accounts dropped (campaigns deleted), {} kept",
            freed,
            state.table().live().len()
        );
    }
    Ok(())
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
    // SAFETY: as below.
    let fresh = unsafe { (*pool).data.is_null() };
    unsafe {
        if (*pool).data.is_null() {
            // Zeroed: an empty store. Slab chunks of this size are page-aligned.
            let h = ngx::ffi::ngx_slab_calloc(pool, Zone::header_size());
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
    let mut unbound = false;
    let result = store.writer().and_then(|mut w| {
        // Records appended since the configuration was read (crate::journal, step 1).
        match crate::journal::catch_up(&store.path, std::mem::take(&mut list)) {
            Ok(l) => list = l,
            Err(e) => {
                journal_error = Some(e);
                return Ok(0);
            }
        }
        if bind_accounts(store, fresh, &list, log).is_err() {
            unbound = true;
            return Ok(0);
        }
        let n = w.sync(&list)?;
        // Step 3: new appends go to a new journal.
        match crate::journal::rotate(&store.path, &list) {
            Ok(r) => rotation = r,
            Err(e) => journal_error = Some(format!("cannot rotate the journal: {e}")),
        }
        Ok(n)
    });
    if unbound {
        return Status::NGX_ERROR.into();
    }
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
            "tracker_campaigns: zone \"{}\" ({} bytes) has no room for {} campaigns ({:?}); make it larger{}",
            String::from_utf8_lossy(zone.shm.name.as_bytes()),
            zone.shm.size,
            list.len(),
            e,
            store.state_usage()
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
