//! The campaign store: a table image (`tracker_core::campaign`) in an nginx shared zone.
//!
//! The master parses the campaigns file while reading the configuration (so `nginx -t` and a
//! reload report a bad file and change nothing), then the zone's init callback copies the table
//! into slab memory and publishes it. Workers read without a lock: a sequence counter (a
//! seqlock) tells a reader that a reload replaced the table during its lookup, and it retries.
//! The previous table is freed after the swap; a reader still inside it sees the sequence
//! change and never trusts what it read. A reload needs room for the old and the new table.

use core::ffi::c_void;
use core::mem;
use core::ptr;
use core::sync::atomic::{fence, AtomicU64, Ordering};

use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_slab_alloc, ngx_slab_free,
    ngx_slab_pool_t, ngx_str_t, NGX_LOG_EMERG, NGX_LOG_NOTICE,
};
use ngx::ngx_log_error;
use tracker_core::campaign::{self, Status as CampaignStatus, TableView};

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Active,
    Inactive,
    Unknown,
}

/// Lives at the start of the zone's slab memory, shared by every process.
#[repr(C)]
struct ZoneHeader {
    /// Even: stable; odd: the table is being swapped.
    seq: AtomicU64,
    /// Offset of the current table image from the zone start, and its length (0: none).
    offset: AtomicU64,
    len: AtomicU64,
    count: AtomicU64,
}

/// The configured store: the zone, and the table built from the file for this configuration.
pub struct Store {
    zone: *mut ngx_shm_zone_t,
    image: Vec<u8>,
    count: usize,
    path: String,
}

impl Store {
    /// Reads and checks the file, builds the table and declares the zone.
    pub fn configure(cf: *mut ngx_conf_t, path: &str, name: &[u8], size: usize) -> Result<Store, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let list = campaign::parse_file(&text).map_err(|e| format!("line {}: {}", e.line, e.message))?;
        let mut image = Vec::new();
        campaign::build_table(&list, &mut image);
        if image.len() + 64 * 1024 > size {
            return Err(format!(
                "{} campaigns need {} bytes, more than zone \"{}\" of {} bytes can hold",
                list.len(),
                image.len(),
                String::from_utf8_lossy(name),
                size
            ));
        }
        let mut zone_name = ngx_str_t { len: name.len(), data: name.as_ptr() as *mut u8 };
        // SAFETY: cf is the configuration being parsed; nginx copies nothing but keeps the
        // name pointer, which points into the configuration's argument strings (pool memory).
        let zone = unsafe {
            ngx_shared_memory_add(cf, &mut zone_name, size, ptr::addr_of_mut!(crate::ngx_http_tracker_module).cast())
        };
        if zone.is_null() {
            return Err("cannot add the shared zone".into());
        }
        // SAFETY: zone is a valid shm zone entry of this cycle.
        if unsafe { !(*zone).data.is_null() } {
            return Err(format!("zone \"{}\" is already used", String::from_utf8_lossy(name)));
        }
        Ok(Store { zone, image, count: list.len(), path: path.to_owned() })
    }

    /// Points the zone at this store, once the store has its final address (in MainConf).
    pub fn attach(&self) {
        // SAFETY: the zone was declared by `configure` for this cycle and lives as long as it.
        unsafe {
            (*self.zone).init = Some(init_zone);
            (*self.zone).data = (self as *const Store).cast_mut().cast();
        }
    }

    fn header(&self) -> Option<&ZoneHeader> {
        // SAFETY: after init, the zone's slab pool `data` points at our header, which lives
        // in shared memory mapped at the same address in every worker.
        unsafe {
            let pool = (*self.zone).shm.addr.cast::<ngx_slab_pool_t>();
            if pool.is_null() {
                return None;
            }
            (*pool).data.cast::<ZoneHeader>().as_ref()
        }
    }

    /// Looks a campaign up and copies its landing URL into `url` (cleared first).
    pub fn lookup(&self, id: &[u8], url: &mut Vec<u8>) -> Found {
        let Some(h) = self.header() else { return Found::Unknown };
        // SAFETY: the zone's mapping is valid for the process lifetime.
        let (base, zone_size) = unsafe { ((*self.zone).shm.addr.cast::<u8>().cast_const(), (*self.zone).shm.size) };
        loop {
            let s0 = h.seq.load(Ordering::Acquire);
            if s0 & 1 == 1 {
                core::hint::spin_loop();
                continue;
            }
            let off = h.offset.load(Ordering::Acquire) as usize;
            let len = h.len.load(Ordering::Acquire) as usize;
            url.clear();
            let mut found = Found::Unknown;
            if len > 0 && off.checked_add(len).is_some_and(|end| end <= zone_size) {
                // SAFETY: [off, off+len) lies inside the zone mapping (checked above). A
                // concurrent reload may free and rewrite this memory while we read it; the
                // sequence check below then discards the result, and TableView bounds-checks
                // every offset, so a torn image yields a wrong answer, never an invalid access.
                let image = unsafe { core::slice::from_raw_parts(base.add(off), len) };
                if let Some(c) = TableView::new(image).and_then(|t| t.get(id)) {
                    url.extend_from_slice(c.landing_url);
                    found = if c.status == CampaignStatus::Active { Found::Active } else { Found::Inactive };
                }
            }
            fence(Ordering::Acquire);
            if h.seq.load(Ordering::Relaxed) == s0 {
                return found;
            }
        }
    }
}

/// Zone init, in the master at start and at every reload: publishes this configuration's table.
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, _old: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls init with the zone we declared; `data` is our Store (attach).
    let zone = unsafe { &mut *zone };
    let store = unsafe { &*zone.data.cast::<Store>() };
    let pool = zone.shm.addr.cast::<ngx_slab_pool_t>();
    let log = zone.shm.log;

    // SAFETY: the slab pool header sits at the start of every shared zone; its `data` field is
    // ours and survives reloads when the zone is reused.
    let header = unsafe {
        if (*pool).data.is_null() {
            let h = ngx_slab_alloc(pool, mem::size_of::<ZoneHeader>()).cast::<ZoneHeader>();
            if h.is_null() {
                ngx_log_error!(NGX_LOG_EMERG, log, "tracker_campaigns: zone too small for its header");
                return Status::NGX_ERROR.into();
            }
            h.write(ZoneHeader {
                seq: AtomicU64::new(0),
                offset: AtomicU64::new(0),
                len: AtomicU64::new(0),
                count: AtomicU64::new(0),
            });
            (*pool).data = h.cast();
        }
        &*(*pool).data.cast::<ZoneHeader>()
    };

    // SAFETY: slab allocation in our zone; the new table is private until published.
    let buf = unsafe { ngx_slab_alloc(pool, store.image.len().max(1)) }.cast::<u8>();
    if buf.is_null() {
        ngx_log_error!(
            NGX_LOG_EMERG,
            log,
            "tracker_campaigns: zone \"{}\" has no room for {} campaigns ({} bytes; a reload needs room for the old and the new table)",
            String::from_utf8_lossy(zone.shm.name.as_bytes()),
            store.count,
            store.image.len()
        );
        return Status::NGX_ERROR.into();
    }
    // SAFETY: buf has image.len() bytes.
    unsafe { ptr::copy_nonoverlapping(store.image.as_ptr(), buf, store.image.len()) };

    let old_off = header.offset.load(Ordering::Relaxed);
    let old_len = header.len.load(Ordering::Relaxed);
    header.seq.fetch_add(1, Ordering::AcqRel);
    header.offset.store(buf as u64 - zone.shm.addr as u64, Ordering::Release);
    header.len.store(store.image.len() as u64, Ordering::Release);
    header.count.store(store.count as u64, Ordering::Relaxed);
    header.seq.fetch_add(1, Ordering::Release);
    if old_len > 0 {
        // SAFETY: the old table was allocated from this pool by a previous init; readers that
        // are still inside it will see the sequence change and retry.
        unsafe { ngx_slab_free(pool, zone.shm.addr.add(old_off as usize).cast()) };
    }
    ngx_log_error!(
        NGX_LOG_NOTICE,
        log,
        "tracker_campaigns: {} campaigns from \"{}\" in zone \"{}\"",
        store.count,
        store.path,
        String::from_utf8_lossy(zone.shm.name.as_bytes())
    );
    Status::NGX_OK.into()
}
