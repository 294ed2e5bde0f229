//! The duplicates zone: the recently-seen set of `tracker_core::dedup` in an nginx shared zone
//! ("tracker_duplicates"), shared by every worker.
//!
//! Layout: nginx puts its slab pool header at the start of every shared zone (ngx_init_zone_pool)
//! and we leave it to nginx. Zone init (in the master) takes every free page of the fresh pool
//! in one zeroed allocation: a [`Header`] (64 bytes: a magic number, the slot count, the hash
//! key) followed by the slots, 8 bytes each, a whole number of 8-slot buckets. The pool's
//! `data` points at the header. Nothing is allocated afterwards: workers only touch the slots,
//! with atomics.
//!
//! With `tracker_state`, the set lives in a file instead (`PATH.duplicates`, a
//! `tracker_core::state` duplicates file: slots and hash key kept across restarts, so a
//! conversion seen before a restart is a duplicate after it); the zone is then declared at its
//! smallest size and unused.
//!
//! Reload: nginx maps the same memory again when the zone keeps its size (and tag), and zone
//! init finds the header: the set (and the hash key its entries were made with) is kept, so a
//! reload forgets nothing. A new size is a new, zeroed mapping: the set starts empty, with a
//! new key. The window is not stored in the zone: a reload that changes it applies it to the
//! entries already there.

use core::ffi::c_void;
use core::mem;
use core::ptr;
use core::sync::atomic::AtomicU64;

use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_slab_calloc, ngx_slab_pool_t,
    ngx_str_t, NGX_LOG_EMERG, NGX_LOG_NOTICE,
};
use ngx::ngx_log_error;
use tracker_core::dedup::{self, Seen, BUCKET};

/// The zone's name (one per configuration).
pub const ZONE_NAME: &str = "tracker_duplicates";
/// The smallest zone accepted.
pub const MIN_SIZE: usize = 64 * 1024;

const MAGIC: u64 = u64::from_be_bytes(*b"TRKDUP01");

/// At the start of our allocation in the zone; the slots follow it.
#[repr(C, align(64))]
struct Header {
    magic: u64,
    nslots: u64,
    key: [u64; 2],
}

/// The configured duplicates zone.
pub struct DedupZone {
    zone: *mut ngx_shm_zone_t,
    window_s: u32,
    /// The set's file when `tracker_state` is set (then the zone is unused).
    file: Option<tracker_core::state::StateFile>,
}

impl DedupZone {
    /// Declares the zone ("tracker_duplicates", `size` bytes) for a window of `window_s`
    /// seconds. Called while parsing the configuration.
    pub fn add(cf: *mut ngx_conf_t, size: usize, window_s: u32) -> Result<DedupZone, String> {
        if !dedup::valid_window(u64::from(window_s)) {
            return Err(format!(
                "the duplicate window must be 1 second to {} seconds (7 days), not {}",
                dedup::MAX_WINDOW_S,
                window_s
            ));
        }
        if size < MIN_SIZE {
            return Err(format!(
                "the duplicates zone must be at least {}k, not {} bytes",
                MIN_SIZE / 1024,
                size
            ));
        }
        let mut name = ngx_str_t {
            len: ZONE_NAME.len(),
            data: ZONE_NAME.as_ptr().cast_mut(),
        };
        // SAFETY: cf is the configuration being parsed; nginx copies nothing but keeps the name
        // pointer, which is a 'static string.
        let zone = unsafe {
            ngx_shared_memory_add(
                cf,
                &mut name,
                size,
                ptr::addr_of_mut!(crate::ngx_http_tracker_module).cast(),
            )
        };
        if zone.is_null() {
            return Err(format!(
                "cannot add the shared zone \"{ZONE_NAME}\" ({size} bytes)"
            ));
        }
        // SAFETY: zone is a valid shm zone entry of this cycle, alive as long as the cycle.
        unsafe {
            if !(*zone).data.is_null() {
                return Err(format!(
                    "the shared zone \"{ZONE_NAME}\" is already declared"
                ));
            }
            (*zone).init = Some(init_zone);
            // Marks the zone as ours until init points `data` at the header (any non-null value:
            // nginx only hands it back to the next cycle's init, which does not use it).
            (*zone).data = zone.cast();
        }
        Ok(DedupZone {
            zone,
            window_s,
            file: None,
        })
    }

    /// Keeps the set in the file at `path` (`tracker_state`'s path + `.duplicates`) instead of
    /// the zone, of the zone's size; the zone shrinks to its minimum (it is mapped but unused).
    /// Called after the http block is parsed, before nginx maps the zones.
    pub fn use_file(
        &mut self,
        path: &std::path::Path,
    ) -> std::io::Result<tracker_core::state::Opened> {
        // SAFETY: the zone was declared by `add` in this configuration; nginx maps it only
        // after the configuration is parsed, with the size it then has.
        let size = unsafe { (*self.zone).shm.size };
        let (file, opened) = tracker_core::state::StateFile::open_duplicates(path, size as u64)?;
        self.file = Some(file);
        // SAFETY: as above.
        unsafe { (*self.zone).shm.size = MIN_SIZE };
        Ok(opened)
    }

    /// The set's file, if it has one (to give it to the workers' user).
    pub fn file(&self) -> Option<&tracker_core::state::StateFile> {
        self.file.as_ref()
    }

    /// The window, in seconds.
    pub fn window_s(&self) -> u32 {
        self.window_s
    }

    /// The set's hash key and slots: the file's, or the zone's.
    fn parts(&self) -> Option<([u64; 2], &[AtomicU64])> {
        match &self.file {
            Some(f) => Some((f.key(), f.slots())),
            None => self.header().map(|(h, slots)| (h.key, slots)),
        }
    }

    fn header(&self) -> Option<(&Header, &[AtomicU64])> {
        // SAFETY: the zone lives as long as the cycle (and so as this configuration). Once
        // nginx has mapped it (shm.addr non-null) it begins with the slab pool header, whose
        // `data` our init sets to the Header it allocated in the zone, at the same address in
        // every process (the mapping is inherited from the master).
        unsafe {
            let base = (*self.zone).shm.addr;
            let size = (*self.zone).shm.size;
            if base.is_null() {
                return None;
            }
            let h = (*base.cast::<ngx_slab_pool_t>()).data.cast::<Header>();
            if h.is_null() || (*h).magic != MAGIC {
                return None;
            }
            let nslots = (*h).nslots as usize;
            let slots = h.add(1).cast::<AtomicU64>();
            let end = (slots as usize).checked_add(nslots.checked_mul(8)?)?;
            if (h as usize) < base as usize || end > base as usize + size {
                return None;
            }
            // The slots lie inside the mapping (checked), 8-aligned (after a 64-aligned Header),
            // and are only ever accessed through atomics.
            Some((&*h, core::slice::from_raw_parts(slots, nslots)))
        }
    }

    /// The recently-seen set (None until the zone is mapped and initialized).
    pub fn seen(&self) -> Option<Seen<'_>> {
        self.parts().map(|(_, slots)| Seen::new(slots))
    }

    /// The zone's hash key (random per zone, kept across reloads that keep the size).
    pub fn key(&self) -> Option<[u64; 2]> {
        self.parts().map(|(key, _)| key)
    }

    /// `tracker_core::dedup::key_hash` of `parts` under the zone's key.
    pub fn hash(&self, parts: &[&[u8]]) -> Option<u64> {
        self.key().map(|k| dedup::key_hash(&k, parts))
    }

    /// How many entries the zone holds.
    pub fn capacity(&self) -> usize {
        self.seen().map_or(0, |s| s.capacity())
    }
}

/// Zone init, in the master at start and at every reload (nginx calls it for a zone it has
/// just mapped, or for the old mapping when the size is unchanged).
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, _old: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls init with the zone we declared, mapped; the master is alone here.
    let zone = unsafe { &mut *zone };
    let pool = zone.shm.addr.cast::<ngx_slab_pool_t>();
    let log = zone.shm.log;
    let name = String::from_utf8_lossy(zone.shm.name.as_bytes()).into_owned();

    // SAFETY: the slab pool header sits at the start of the mapping; `data` is ours. On a
    // reused mapping it points at the Header we allocated in it at an earlier init.
    let old = unsafe { (*pool).data.cast::<Header>() };
    if !old.is_null() {
        // SAFETY: non-null `data` was set by an earlier init of this same mapping.
        if unsafe { (*old).magic } == MAGIC {
            zone.data = old.cast();
            // SAFETY: as above.
            let n = unsafe { (*old).nslots };
            ngx_log_error!(
                NGX_LOG_NOTICE,
                log,
                "tracker: zone \"{}\" kept ({} entries)",
                name,
                n
            );
            return Status::NGX_OK.into();
        }
        ngx_log_error!(
            NGX_LOG_EMERG,
            log,
            "tracker: zone \"{}\" holds something else",
            name
        );
        return Status::NGX_ERROR.into();
    }

    // A fresh pool: its free pages are one run; take them all in one allocation.
    // SAFETY: pool is this zone's initialized slab pool; ngx_pagesize is set at startup;
    // ngx_slab_calloc takes the pool's mutex (uncontended: the master is alone).
    let (bytes, h) = unsafe {
        (*pool).set_log_nomem(0);
        let bytes = (*pool).pfree * ngx::ffi::ngx_pagesize;
        (bytes, ngx_slab_calloc(pool, bytes).cast::<Header>())
    };
    let nslots = bytes.saturating_sub(mem::size_of::<Header>()) / 8 / BUCKET * BUCKET;
    if h.is_null() || nslots == 0 {
        ngx_log_error!(
            NGX_LOG_EMERG,
            log,
            "tracker: cannot allocate {} bytes in zone \"{}\" ({} bytes)",
            bytes,
            name,
            zone.shm.size
        );
        return Status::NGX_ERROR.into();
    }
    let key = [
        tracker_core::id::os_random_u64(),
        tracker_core::id::os_random_u64(),
    ];
    // SAFETY: h is a fresh, zeroed, page-aligned chunk of `bytes` bytes (>= the Header and the
    // slots); the workers are not forked yet. The slots stay zero: an empty set.
    unsafe {
        h.write(Header {
            magic: MAGIC,
            nslots: nslots as u64,
            key,
        });
        (*pool).data = h.cast();
    }
    zone.data = h.cast();
    ngx_log_error!(
        NGX_LOG_NOTICE,
        log,
        "tracker: zone \"{}\" ({} bytes) holds {} entries",
        name,
        zone.shm.size,
        nslots
    );
    Status::NGX_OK.into()
}
