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

use std::io;
use std::path::Path;

use tracker_core::campaign::Campaign;
use tracker_core::journal::{self, Appended};

/// The campaigns of the file at `path` and its journals, for the configuration.
pub fn load(path: &str) -> Result<Vec<Campaign>, String> {
    journal::load(Path::new(path)).map(|l| l.campaigns)
}

/// Appends a change's record; the caller holds the zone's writer lock.
pub fn append(campaigns: &str, record: &[u8]) -> io::Result<Appended> {
    journal::append(&journal::journal_path(Path::new(campaigns)), record)
}

/// Zone init, step 1 (lock held): applies the journal as it is now over `list`.
pub fn catch_up(campaigns: &str, list: Vec<Campaign>) -> Result<Vec<Campaign>, String> {
    let l = journal::Loaded {
        campaigns: list,
        records: 0,
        torn: Vec::new(),
    };
    journal::apply_journal(l, &journal::journal_path(Path::new(campaigns))).map(|l| l.campaigns)
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
