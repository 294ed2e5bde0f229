//! The module's side of the campaign journal (`tracker_core::journal`, `docs/admin-api.md`
//! "Persistence"): reading the campaigns file and its journals at configuration, appending a
//! change's record (under the zone's writer lock, by the admin API), and the compaction that
//! zone init runs in the master at every start and reload.
//!
//! Zone init, in the master, with the zone's writer lock held (workers of the previous
//! generation may still be appending under that same lock during a reload):
//! 1. [`catch_up`]: the journal is read again, whole, and applied over the list read at
//!    configuration (records appended since then by old workers are picked up; those already
//!    applied replay idempotently);
//! 2. the zone is made to hold the list (`campaigns.rs`);
//! 3. [`rotate`]: the journal becomes `NAME.journal.old`; appends after the lock is released
//!    create a new journal.
//!
//! Then, without the lock, [`compact`] writes the list as the new campaigns file and removes
//! the old journal. The argument for a crash at any step is in `tracker_core::journal`.
//!
//! Between reloads, a worker whose change made the journal reach [`COMPACT_BYTES`] compacts
//! it in a thread of its own ([`compact_when_due`]): rotation under the lock, the new
//! campaigns file prepared from the files (campaigns file + old journal) without the lock,
//! committed under the lock only if the old journal is still the one it rotated (else a zone
//! init finished it meanwhile, with a newer state, and the worker's file is dropped).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use ngx::ffi::{NGX_LOG_ERR, NGX_LOG_NOTICE};
use ngx::ngx_log_error;

use tracker_core::campaign::Campaign;
use tracker_core::journal::{self, Appended};

use crate::campaigns::Store;

/// A journal this large is compacted in the background of the worker that grew it.
pub const COMPACT_BYTES: u64 = 16 << 20;

/// A background compaction of this worker is running.
static COMPACTING: AtomicBool = AtomicBool::new(false);

/// The campaigns of the file at `path` and its journals, for the configuration.
pub fn load(path: &str) -> Result<Vec<Campaign>, String> {
    journal::load(Path::new(path)).map(|l| l.campaigns)
}

/// Appends a change's record; the caller holds the zone's writer lock.
pub fn append(campaigns: &str, record: &[u8]) -> io::Result<Appended> {
    journal::append(&journal::journal_path(Path::new(campaigns)), record)
}

/// Zone init, step 1 (lock held): applies the old journal and the journal as they are now
/// over `list` (a worker's background compaction may have rotated the journal since the
/// configuration read it: its records are in the old journal now).
pub fn catch_up(campaigns: &str, list: Vec<Campaign>) -> Result<Vec<Campaign>, String> {
    let path = Path::new(campaigns);
    let mut l = journal::Loaded {
        campaigns: list,
        records: 0,
        torn: Vec::new(),
    };
    for j in [journal::old_journal_path(path), journal::journal_path(path)] {
        l = journal::apply_journal(l, &j)?;
    }
    Ok(l.campaigns)
}

/// What [`rotate`] did, for [`compact`].
pub struct Rotation {
    /// The old journal's length right after the rotation.
    old_len: u64,
}

/// Zone init, step 3 (lock held): the journal becomes the old journal. `list` is the state
/// (campaigns file, old journal, journal). None: nothing to compact (no journal, or an empty
/// one). If an old journal is still there (a compaction that did not finish), it is
/// finished first, here: the campaigns file is written under the lock (slow with many
/// campaigns, but only after a failure).
pub fn rotate(campaigns: &str, list: &[Campaign]) -> io::Result<Option<Rotation>> {
    let path = Path::new(campaigns);
    let old = journal::old_journal_path(path);
    if old.exists() {
        let len = std::fs::metadata(&old)?.len();
        journal::finish_compaction(path, list, len)?;
    }
    let len = std::fs::metadata(journal::journal_path(path)).map_or(0, |m| m.len());
    if len == 0 || !journal::rotate(path)? {
        return Ok(None);
    }
    let old_len = std::fs::metadata(&old).map_or(0, |m| m.len());
    Ok(Some(Rotation { old_len }))
}

/// Zone init, after the lock: writes `list` as the campaigns file, removes the old journal.
/// Returns false when the old journal was kept (it grew after the rotation).
pub fn compact(campaigns: &str, list: &[Campaign], r: &Rotation) -> io::Result<bool> {
    journal::finish_compaction(Path::new(campaigns), list, r.old_len)
}

/// The store, for the compaction thread.
struct StoreRef(*const Store);

// SAFETY: the Store lives in the http main conf of the worker's cycle, which lasts until the
// worker exits (the thread dies with it: a compaction cut short is safe, see the module
// docs). The thread only takes the zone's mutex and reads the store's path.
unsafe impl Send for StoreRef {}

/// After a durable change: when the journal has reached [`COMPACT_BYTES`] and no compaction of
/// this worker runs, starts one in a thread of its own.
pub fn compact_when_due(store: &Store) {
    let path = Path::new(store.path());
    let len = std::fs::metadata(journal::journal_path(path)).map_or(0, |m| m.len());
    if !journal::needs_compaction(len, COMPACT_BYTES) || COMPACTING.swap(true, Ordering::AcqRel) {
        return;
    }
    let s = StoreRef(store);
    let spawned = std::thread::Builder::new()
        .name("tracker-compact".into())
        .spawn(move || {
            let s = s;
            // SAFETY: see StoreRef.
            let store = unsafe { &*s.0 };
            let result = compact_in_background(store);
            COMPACTING.store(false, Ordering::Release);
            // SAFETY: ngx_cycle is set for the life of the worker; its log is thread-safe
            // (a write(2) to the log file).
            let log = unsafe { (*ngx::ffi::ngx_cycle).log };
            match result {
                Ok(Some(true)) => {
                    ngx_log_error!(
                    NGX_LOG_NOTICE,
                    log,
                    "tracker_campaigns: journal compacted into \"{}\" (it had reached {} bytes)",
                    store.path(),
                    COMPACT_BYTES
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "tracker_campaigns: compacting the journal of \"{}\" failed: {}; nothing is lost (the journal is kept), the next reload compacts it",
                    store.path(),
                    e
                    );
                }
            }
        });
    if spawned.is_err() {
        COMPACTING.store(false, Ordering::Release);
    }
}

/// The compaction: Some(committed) when one was due, None when another one got there first.
fn compact_in_background(store: &Store) -> Result<Option<bool>, String> {
    let path = Path::new(store.path());
    let locked = |what: &str| format!("{what}: the campaign zone is not ready");
    let rotated = store
        .with_lock(|| journal::rotate_when_due(path, COMPACT_BYTES))
        .map_err(|_| locked("rotation"))?
        .map_err(|e| format!("cannot rotate the journal: {e}"))?;
    let Some(rotated) = rotated else {
        return Ok(None);
    };
    let tmp = journal::prepare_compaction(path)?;
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory (the parsed campaigns file).
    unsafe {
        libc::malloc_trim(0);
    }
    store
        .with_lock(|| journal::commit_compaction(path, &tmp, rotated))
        .map_err(|_| locked("commit"))?
        .map(Some)
        .map_err(|e| format!("cannot replace the campaigns file: {e}"))
}
