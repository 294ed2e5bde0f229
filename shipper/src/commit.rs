//! The commit protocol of the file sink: how a batch of temporary files becomes committed files
//! and the ring's consumer cursor moves past the batch, such that a crash at any instant
//! (SIGKILL, panic, OOM kill) neither loses an event nor puts one in two committed files.
//!
//! A batch is written as temporary files `.<name>.tmp` next to their final names, then:
//!
//! 0. every temporary file is fsynced, and so is every directory holding one (and, the first
//!    time this process uses a directory, its parents: a directory created by a run that
//!    crashed before syncing it might not be durable);
//! 1. the manifest `_shipper/manifest.json` is written: the list of renames (tmp → final) and
//!    the ring position `end` the batch ends at. Written as `_shipper/.manifest.json.tmp`,
//!    fsynced, renamed over `manifest.json`, and `_shipper/` fsynced: from then on the batch
//!    is *decided*;
//! 2. every tmp is renamed to its final name, and the directories are fsynced;
//! 3. the ring is committed up to `end` (`Ring::commit`: producers may reuse the space);
//! 4. the manifest is deleted.
//!
//! At startup, [`recover`] finishes a manifest left behind: renames the tmps that still exist
//! (a final that already exists is kept), commits `end` if the consumer cursor is behind it,
//! deletes the manifest; then every `.tmp` file left (listed in no manifest) is deleted. Only
//! then does the reader start, at the consumer cursor.
//!
//! Crash points (the ring lives in shared memory and survives the shipper; its cursor moves
//! only in step 3):
//! - before step 1 completes (while reading, writing or syncing tmps, or writing the manifest
//!   tmp): no `manifest.json` (rename is atomic: the old one was deleted in step 4, the new one
//!   does not exist yet), the cursor was not moved. Recovery deletes the tmps; the reader
//!   re-reads the batch from the cursor and writes it again. No committed file holds any of
//!   its events, so nothing is duplicated, and nothing is lost since the ring still has it.
//! - after step 1, before or during step 2: the manifest lists every tmp of the batch, and
//!   each tmp is durable (step 0). Each rename is atomic, so each entry is either still a tmp
//!   (recovery renames it) or already final (recovery skips it). Recovery then commits `end`:
//!   the batch is in committed files exactly once and will not be read again.
//! - after step 2, before step 3: recovery finds all finals, commits `end`.
//! - after step 3, before step 4: recovery finds all finals; the cursor is already at `end`
//!   (commit only moves forward), so nothing changes; the manifest is deleted.
//! - after step 4: nothing to recover.
//! - during recovery itself: recovery is idempotent (every step checks what is done), so a
//!   crash during it is handled by the next recovery.
//!
//! Names: a final name is `<first event id>.<ext>`, made unique (`-1`, `-2`, ...) when taken,
//! so a rename never replaces a committed file. A re-read batch gets the same names as the
//! crashed attempt, whose tmps were deleted first.
//!
//! The ring position in the manifest is checked before it is committed: positions only grow,
//! so an `end` past the ring's producer cursor means the ring is not the one the manifest was
//! written for (removed and created again); it is then not committed (a warning says so).
//!
//! What this does not cover: a power loss or kernel crash loses the ring itself when it is on
//! tmpfs (`/dev/shm`); the committed files and the manifest are durable (fsynced), and a
//! ring on a disk file may come back with an older cursor than what was committed (the mapping
//! is not msynced), in which case events are shipped again (at-least-once; ids are unique, so
//! duplicates can be removed by id).

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use log::{debug, info, warn};
use serde::{Deserialize, Serialize};
use tracker_core::ring::Cursor;

use crate::layout::is_tmp_name;

/// Directory (under the output directory) of the manifest and the lock.
pub const SHIPPER_DIR: &str = "_shipper";
/// The manifest, relative to the output directory.
pub const MANIFEST: &str = "_shipper/manifest.json";
const MANIFEST_TMP: &str = "_shipper/.manifest.json.tmp";
/// Dead letters: `<pos>.bin` files and `reasons.log`.
pub const DEAD_LETTER_DIR: &str = "_dead_letter";
pub const REASONS_LOG: &str = "_dead_letter/reasons.log";
const MANIFEST_VERSION: u32 = 1;

/// The decision to commit one batch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The ring position to commit once the files are in place.
    pub end: u64,
    pub renames: Vec<Rename>,
}

/// One temporary file and its final name, both relative to the output directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rename {
    pub from: String,
    pub to: String,
    /// For a dead letter: the line appended to `_dead_letter/reasons.log` once it is renamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Manifest {
    pub fn new(end: u64, renames: Vec<Rename>) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            end,
            renames,
        }
    }
}

/// What applying a manifest did.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Tmps renamed to their final name.
    pub renamed: usize,
    /// Entries already final (renamed before a crash).
    pub already: usize,
    /// Entries with neither the tmp nor the final (should not happen: someone removed them).
    pub missing: usize,
    /// Whether the ring's consumer cursor was moved.
    pub ring_committed: bool,
}

// ---------------------------------------------------------------------------------------------
// Test hook: crash (SIGKILL ourselves) at a named point of the protocol
// ---------------------------------------------------------------------------------------------

/// Environment variable naming a crash point, optionally with the hit count at which to crash:
/// `TRACKER_SHIPPER_CRASH_AT=renamed-one` or `=manifest-written:3`. For tests only.
pub const CRASH_ENV: &str = "TRACKER_SHIPPER_CRASH_AT";

static CRASH_AT: OnceLock<Option<(String, AtomicU32)>> = OnceLock::new();

/// Kills the process with SIGKILL when `TRACKER_SHIPPER_CRASH_AT` names this point (at its
/// n-th hit). Points: `tmp-written`, `manifest-written`, `renamed-one`, `renamed`,
/// `ring-committed`, `recovery-renamed-one`; the kafka sink's `kafka-acked` (every event of a
/// batch acknowledged by the broker, the cursor not moved yet); the aggregate topic's
/// `aggregate-published` (a batch's rows acknowledged, its manifest not applied yet).
pub fn crash_point(name: &str) {
    let hook = CRASH_AT.get_or_init(|| {
        let v = std::env::var(CRASH_ENV).ok()?;
        let (point, n) = match v.split_once(':') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (v, 1),
        };
        Some((point, AtomicU32::new(n)))
    });
    if let Some((point, left)) = hook {
        if point == name && left.fetch_sub(1, Ordering::Relaxed) == 1 {
            // SAFETY: kill only sends a signal to our own pid.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// File system helpers
// ---------------------------------------------------------------------------------------------

/// fsyncs a directory (makes its entries durable: created, renamed, deleted files).
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path).and_then(|d| d.sync_all()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("fsync of directory {} failed: {e}", path.display()),
        )
    })
}

/// Adds the path of what failed to an I/O error.
pub fn ctx(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Whether a manifest path is relative and stays inside the output directory.
fn is_safe_rel(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

fn parent_of(dir: &Path, rel: &str) -> PathBuf {
    dir.join(rel)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.to_path_buf())
}

// ---------------------------------------------------------------------------------------------
// The protocol
// ---------------------------------------------------------------------------------------------

/// Step 1: makes `m` the durable manifest of `dir` (tmp, fsync, rename, fsync of `_shipper/`).
pub fn write_manifest(dir: &Path, m: &Manifest) -> io::Result<()> {
    let tmp = dir.join(MANIFEST_TMP);
    let json = serde_json::to_vec(m).map_err(io::Error::other)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|e| ctx("cannot create", &tmp, e))?;
    f.write_all(&json)
        .map_err(|e| ctx("cannot write", &tmp, e))?;
    f.sync_all().map_err(|e| ctx("cannot fsync", &tmp, e))?;
    drop(f);
    let path = dir.join(MANIFEST);
    fs::rename(&tmp, &path).map_err(|e| ctx("cannot rename manifest to", &path, e))?;
    fsync_dir(&dir.join(SHIPPER_DIR))
}

/// Reads the manifest of `dir`, if there is one.
pub fn read_manifest(dir: &Path) -> io::Result<Option<Manifest>> {
    let path = dir.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ctx("cannot read", &path, e)),
    };
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a valid manifest: {e}", path.display()),
        )
    })?;
    if m.version != MANIFEST_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} has version {}, this shipper knows version {MANIFEST_VERSION}",
                path.display(),
                m.version
            ),
        ));
    }
    if let Some(r) = m
        .renames
        .iter()
        .find(|r| !is_safe_rel(&r.from) || !is_safe_rel(&r.to))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} names a path outside the output directory: {:?} -> {:?}",
                path.display(),
                r.from,
                r.to
            ),
        ));
    }
    Ok(Some(m))
}

/// Moves the file sink's cursor (and so, if it is the slowest sink, the ring's consumer cursor)
/// to `end` if it is behind and `end` is a position of this ring.
pub fn advance_ring(cursor: &Cursor<'_>, end: u64) -> bool {
    let consumer = cursor.position();
    if end <= consumer {
        return false;
    }
    let producer = cursor.ring().producer_pos();
    if end > producer {
        warn!(
            "not committing ring position {end}: it is past the ring's producer cursor {producer}, \
             so the ring is not the one this batch was read from (removed and created again?)"
        );
        return false;
    }
    cursor.commit(end);
    true
}

/// Steps 2 to 4 for a durable manifest `m` (also the recovery of a manifest found at startup,
/// with `recovering`: a missing tmp is then expected, if its final exists).
pub fn apply(
    dir: &Path,
    m: &Manifest,
    cursor: &Cursor<'_>,
    recovering: bool,
) -> io::Result<Applied> {
    let mut out = Applied::default();
    let mut dirs = BTreeSet::new();
    let mut reasons = Vec::new();
    for r in &m.renames {
        let from = dir.join(&r.from);
        let to = dir.join(&r.to);
        let from_exists = from.symlink_metadata().is_ok();
        if from_exists {
            if to.symlink_metadata().is_ok() {
                // Cannot happen with our names (a final name is chosen free, and only one
                // shipper works in the directory); keep the committed file, drop the tmp.
                warn!(
                    "{} exists already; removing {} instead of replacing it",
                    to.display(),
                    from.display()
                );
                fs::remove_file(&from).map_err(|e| ctx("cannot remove", &from, e))?;
                out.already += 1;
            } else {
                fs::rename(&from, &to)
                    .map_err(|e| ctx(&format!("cannot rename {} to", from.display()), &to, e))?;
                out.renamed += 1;
                if let Some(reason) = &r.reason {
                    reasons.push(reason.as_str());
                }
                crash_point(if recovering {
                    "recovery-renamed-one"
                } else {
                    "renamed-one"
                });
            }
            dirs.insert(parent_of(dir, &r.to));
        } else if to.symlink_metadata().is_ok() {
            out.already += 1;
        } else {
            warn!(
                "{} and {} are both missing: their events were lost after being written",
                from.display(),
                to.display()
            );
            out.missing += 1;
        }
    }
    for d in &dirs {
        fsync_dir(d)?;
    }
    if !reasons.is_empty() {
        append_reasons(dir, &reasons)?;
    }
    crash_point("renamed");
    out.ring_committed = advance_ring(cursor, m.end);
    crash_point("ring-committed");
    let path = dir.join(MANIFEST);
    fs::remove_file(&path).map_err(|e| ctx("cannot remove", &path, e))?;
    // The removal is not fsynced: if it is lost, the next start applies this manifest again,
    // which finds every final in place and the cursor past `end`, and changes nothing.
    Ok(out)
}

/// Appends lines to `_dead_letter/reasons.log` (fsynced). Best effort across crashes: a crash
/// between a dead letter's rename and this append loses its line (the `.bin` is kept).
fn append_reasons(dir: &Path, lines: &[&str]) -> io::Result<()> {
    let path = dir.join(REASONS_LOG);
    let mut text = String::new();
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(&path)
        .map_err(|e| ctx("cannot open", &path, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| ctx("cannot write", &path, e))?;
    f.sync_data().map_err(|e| ctx("cannot fsync", &path, e))
}

/// What startup recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    pub manifest: Option<Applied>,
    pub stray_tmps_removed: usize,
}

/// Startup: finishes a manifest left by a crash, then deletes every temporary file not in a
/// manifest. Must run before any reader starts (the reader starts at the consumer cursor that
/// this may move) and with the output directory locked.
pub fn recover(dir: &Path, cursor: &Cursor<'_>) -> io::Result<Recovered> {
    let mut rec = Recovered::default();
    if let Some(m) = read_manifest(dir)? {
        info!(
            "finishing the commit of an interrupted batch: {} files, ring position {} (consumer cursor {})",
            m.renames.len(),
            m.end,
            cursor.position()
        );
        let a = apply(dir, &m, cursor, true)?;
        info!(
            "interrupted batch committed: {} renamed, {} already in place, {} missing, ring {}",
            a.renamed,
            a.already,
            a.missing,
            if a.ring_committed {
                "advanced"
            } else {
                "already past it"
            }
        );
        rec.manifest = Some(a);
    }
    rec.stray_tmps_removed = remove_stray_tmps(dir)?;
    if rec.stray_tmps_removed > 0 {
        info!("removed {} temporary files of an uncommitted batch (their events are re-read from the ring)", rec.stray_tmps_removed);
    }
    Ok(rec)
}

/// Deletes every `.*.tmp` file under `dir` (partition directories, dead letters, manifest tmp).
pub fn remove_stray_tmps(dir: &Path) -> io::Result<usize> {
    fn walk(d: &Path, depth: u32, n: &mut usize) -> io::Result<()> {
        let rd = match fs::read_dir(d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ctx("cannot list", d, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| ctx("cannot list", d, e))?;
            let ft = entry.file_type().map_err(|e| ctx("cannot stat in", d, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if ft.is_dir() {
                // type=/date=/hour= is 3 levels deep; do not wander into anything else.
                if depth < 3 {
                    walk(&entry.path(), depth + 1, n)?;
                }
            } else if ft.is_file() && is_tmp_name(name) {
                let p = entry.path();
                debug!("removing stray {}", p.display());
                fs::remove_file(&p).map_err(|e| ctx("cannot remove", &p, e))?;
                *n += 1;
            }
        }
        Ok(())
    }
    let mut n = 0;
    walk(dir, 0, &mut n)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracker_core::ring::RingFile;

    fn ring_with(dir: &Path, records: usize) -> (RingFile, Vec<u64>) {
        let (rf, _) = RingFile::open_or_create(&dir.join("r.ring"), 1 << 16).unwrap();
        let mut ends = Vec::new();
        for _ in 0..records {
            let pos = rf.ring().write(0, &[1u8; 20], std::process::id()).unwrap();
            ends.push(pos + 16 + 32);
        }
        (rf, ends)
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        fs::create_dir_all(out.join(SHIPPER_DIR)).unwrap();
        fs::create_dir_all(out.join("type=a/date=2024-01-01/hour=00")).unwrap();
        (t, out)
    }

    fn rename(from: &str, to: &str) -> Rename {
        Rename {
            from: from.into(),
            to: to.into(),
            reason: None,
        }
    }

    #[test]
    fn manifest_roundtrip_and_validation() {
        let (_t, out) = setup();
        assert_eq!(read_manifest(&out).unwrap(), None);
        let m = Manifest::new(42, vec![rename("type=a/.x.tmp", "type=a/x")]);
        write_manifest(&out, &m).unwrap();
        assert_eq!(read_manifest(&out).unwrap(), Some(m));
        assert!(!out.join(MANIFEST_TMP).exists());
        let bad = Manifest::new(1, vec![rename("../.x.tmp", "x")]);
        write_manifest(&out, &bad).unwrap();
        assert!(read_manifest(&out).is_err());
        fs::write(out.join(MANIFEST), b"{").unwrap();
        assert!(read_manifest(&out).is_err());
    }

    #[test]
    fn recover_finishes_partial_renames() {
        let (t, out) = setup();
        let (rf, ends) = ring_with(t.path(), 3);
        let ring = rf.ring();
        let p = "type=a/date=2024-01-01/hour=00";
        fs::write(out.join(format!("{p}/.one.tmp")), b"1").unwrap();
        fs::write(out.join(format!("{p}/two")), b"2").unwrap(); // renamed before the "crash"
        fs::write(out.join(format!("{p}/.stray.tmp")), b"s").unwrap();
        let m = Manifest::new(
            ends[1],
            vec![
                rename(&format!("{p}/.one.tmp"), &format!("{p}/one")),
                rename(&format!("{p}/.two.tmp"), &format!("{p}/two")),
            ],
        );
        write_manifest(&out, &m).unwrap();
        let r = recover(&out, &ring.cursor("file").unwrap()).unwrap();
        let a = r.manifest.unwrap();
        assert_eq!(
            (a.renamed, a.already, a.missing, a.ring_committed),
            (1, 1, 0, true)
        );
        assert_eq!(r.stray_tmps_removed, 1);
        assert_eq!(ring.consumer_pos(), ends[1]);
        assert_eq!(fs::read(out.join(format!("{p}/one"))).unwrap(), b"1");
        assert!(!out.join(MANIFEST).exists());
        assert!(!out.join(format!("{p}/.stray.tmp")).exists());
        // Idempotent: again, nothing.
        write_manifest(&out, &m).unwrap();
        let a = recover(&out, &ring.cursor("file").unwrap())
            .unwrap()
            .manifest
            .unwrap();
        assert_eq!((a.renamed, a.already, a.ring_committed), (0, 2, false));
    }

    #[test]
    fn recover_refuses_positions_of_another_ring() {
        let (t, out) = setup();
        let (rf, ends) = ring_with(t.path(), 2);
        let m = Manifest::new(ends[1] + 4096, vec![]);
        write_manifest(&out, &m).unwrap();
        let a = recover(&out, &rf.ring().cursor("file").unwrap())
            .unwrap()
            .manifest
            .unwrap();
        assert!(!a.ring_committed);
        assert_eq!(rf.ring().consumer_pos(), 0);
    }

    #[test]
    fn dead_letter_reasons_appended_once() {
        let (t, out) = setup();
        let (rf, ends) = ring_with(t.path(), 1);
        fs::create_dir_all(out.join(DEAD_LETTER_DIR)).unwrap();
        fs::write(out.join("_dead_letter/.0.bin.tmp"), b"x").unwrap();
        let m = Manifest::new(
            ends[0],
            vec![Rename {
                from: "_dead_letter/.0.bin.tmp".into(),
                to: "_dead_letter/0.bin".into(),
                reason: Some("r0".into()),
            }],
        );
        write_manifest(&out, &m).unwrap();
        apply(&out, &m, &rf.ring().cursor("file").unwrap(), false).unwrap();
        write_manifest(&out, &m).unwrap();
        recover(&out, &rf.ring().cursor("file").unwrap()).unwrap();
        assert_eq!(fs::read_to_string(out.join(REASONS_LOG)).unwrap(), "r0\n");
    }
}
