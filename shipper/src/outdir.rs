//! An output directory written in batches through the commit protocol ([`crate::commit`]): what
//! the file sink ([`crate::sink::file`]) and the aggregate sink ([`crate::sink::aggregate`])
//! share.
//!
//! ```text
//! DIR/<rel dir>/.<name>.tmp   a file of the current batch, DIR/<rel dir>/<name> once committed
//! DIR/_dead_letter/<ring position>.bin, DIR/_dead_letter/reasons.log
//! DIR/_shipper/manifest.json (only during a commit), DIR/_shipper/lock
//! ```
//!
//! A sink creates the files of a batch with [`OutDir::create`] (in a directory made durable
//! first, under a name that neither a committed file nor another file of the batch has), writes
//! and fsyncs them, then hands their renames to [`OutDir::commit`], which adds the batch's dead
//! letters ([`OutDir::dead_letter`]), fsyncs them and the directories, writes the manifest and
//! applies it, moving the sink's cursor.
//!
//! # Delivery guarantee: exactly-once into committed files
//!
//! When `commit` returns, every file of the batch is committed (durable, under its final name)
//! and the cursor is past the batch. A shipper killed at any instant before leaves either a
//! manifest, which the next start finishes ([`OutDir::recover`]: every file committed, the
//! cursor moved), or no manifest, and then the batch's tmps are deleted and the batch is read
//! again from the cursor: its events are in committed files exactly once. [`OutDir::abort`]
//! does the same after an error. A committed file is never modified or replaced. Dead letters
//! are committed with their batch (exactly once); their line in `reasons.log` is best effort.

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tracker_core::ring::Cursor;

use crate::commit::{
    self, crash_point, ctx, fsync_dir, Applied, Manifest, Rename, DEAD_LETTER_DIR, SHIPPER_DIR,
};
use crate::encode::DeadRecord;
use crate::layout::{numbered, rfc3339_ms, tmp_name};

/// An output directory and the current batch of files written in it.
pub struct OutDir {
    dir: PathBuf,
    /// The dead letters of the current batch (tmps written), each with its `reasons.log` line.
    dead: Vec<Rename>,
    /// Relative paths of every tmp file created in the current batch (for `abort`).
    tmps: Vec<String>,
    /// Relative final paths chosen in the current batch.
    taken: HashSet<String>,
    /// Relative directories known to exist durably (created or synced by this process).
    known_dirs: HashSet<String>,
}

impl OutDir {
    /// The output directory `dir` (created if needed, with `_shipper/`).
    pub fn new(dir: &Path) -> io::Result<OutDir> {
        fs::create_dir_all(dir.join(SHIPPER_DIR))
            .map_err(|e| ctx("cannot create", &dir.join(SHIPPER_DIR), e))?;
        Ok(OutDir {
            dir: dir.to_path_buf(),
            dead: Vec::new(),
            tmps: Vec::new(),
            taken: HashSet::new(),
            known_dirs: HashSet::new(),
        })
    }

    /// The output directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Dead letters in the current batch.
    pub fn dead_letters(&self) -> u64 {
        self.dead.len() as u64
    }

    /// At startup: finishes or undoes what a previous run left half-done ([`commit::recover`]).
    pub fn recover(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        commit::recover(&self.dir, cursor).map(|_| ())
    }

    /// Creates the tmp file of a new file of the batch in `rel_dir` (a directory relative to
    /// the output directory, created if needed), to be committed as `<stem>[-n].<ext>` (the
    /// first such name that is free). Returns the file and its rename.
    pub fn create(&mut self, rel_dir: &str, stem: &str, ext: &str) -> io::Result<(File, Rename)> {
        self.ensure_dir(rel_dir)?;
        let name = self.free_name(rel_dir, stem, ext);
        let rename = Rename {
            from: format!("{rel_dir}/{}", tmp_name(&name)),
            to: format!("{rel_dir}/{name}"),
            reason: None,
        };
        let p = self.dir.join(&rename.from);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&p)
            .map_err(|e| ctx("cannot create", &p, e))?;
        self.tmps.push(rename.from.clone());
        Ok((f, rename))
    }

    /// Makes sure `rel` (a directory relative to the output directory) exists and is durable:
    /// each level is created if needed and its parent fsynced, once per process (a directory
    /// left by a crashed run may exist without being durable yet).
    fn ensure_dir(&mut self, rel: &str) -> io::Result<()> {
        if self.known_dirs.contains(rel) {
            return Ok(());
        }
        let mut prefix = String::with_capacity(rel.len());
        for comp in rel.split('/') {
            let parent = self.dir.join(&prefix);
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            if self.known_dirs.contains(&prefix) {
                continue;
            }
            let p = self.dir.join(&prefix);
            match fs::create_dir(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if !p.is_dir() {
                        return Err(ctx(
                            "cannot create directory",
                            &p,
                            io::Error::from(io::ErrorKind::NotADirectory),
                        ));
                    }
                }
                Err(e) => return Err(ctx("cannot create directory", &p, e)),
            }
            fsync_dir(&parent)?;
            self.known_dirs.insert(prefix.clone());
        }
        Ok(())
    }

    /// A free final name `<stem>[-n].<ext>` in `rel_dir`: not committed already, not chosen in
    /// this batch.
    fn free_name(&mut self, rel_dir: &str, stem: &str, ext: &str) -> String {
        let mut n = 0;
        loop {
            let name = numbered(stem, ext, n);
            let rel = format!("{rel_dir}/{name}");
            if !self.taken.contains(&rel) && self.dir.join(&rel).symlink_metadata().is_err() {
                self.taken.insert(rel);
                return name;
            }
            n += 1;
        }
    }

    /// Writes a dead letter's tmp file (`_dead_letter/<pos>.bin` once committed).
    pub fn dead_letter(&mut self, d: DeadRecord) -> io::Result<()> {
        let (mut f, mut rename) = self.create(DEAD_LETTER_DIR, &d.pos.to_string(), "bin")?;
        f.write_all(&d.raw)
            .map_err(|e| ctx("cannot write", &self.dir.join(&rename.from), e))?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        rename.reason = Some(format!(
            "{}\tpos={}\tlen={}\tfile={}\t{}",
            rfc3339_ms(now_ms),
            d.pos,
            d.raw.len(),
            file_name(&rename.to),
            one_line(&d.reason)
        ));
        self.dead.push(rename);
        Ok(())
    }

    /// Commits the batch: `renames` (the sink's files of the batch, written and fsynced) and
    /// the dead letters, then moves `cursor` to `end` ([`crate::commit`], steps 0 to 4). `None`
    /// when the batch has no file (only skipped records, or nothing): the cursor is just moved.
    /// On success the directory is ready for the next batch.
    pub fn commit(
        &mut self,
        renames: Vec<Rename>,
        end: u64,
        cursor: &Cursor<'_>,
    ) -> io::Result<Option<Applied>> {
        match self.decide(renames, end, cursor)? {
            Some(m) => self.apply(&m, cursor).map(Some),
            None => Ok(None),
        }
    }

    /// Steps 0 and 1 of [`OutDir::commit`]: the batch's files made durable and the durable
    /// decision (the manifest) written; returns it, for [`OutDir::apply`]. From here on an
    /// abort or a start finishes the batch, never undoes it. `None` as in `commit`.
    pub fn decide(
        &mut self,
        mut renames: Vec<Rename>,
        end: u64,
        cursor: &Cursor<'_>,
    ) -> io::Result<Option<Manifest>> {
        if renames.is_empty() && self.dead.is_empty() {
            commit::advance_ring(cursor, end);
            self.clear_batch();
            return Ok(None);
        }
        // Step 0: fsync the dead letters (the sink did its files), then the directories.
        for d in &self.dead {
            let path = self.dir.join(&d.from);
            File::open(&path)
                .and_then(|f| f.sync_data())
                .map_err(|e| ctx("cannot fsync", &path, e))?;
        }
        renames.append(&mut self.dead);
        let dirs: BTreeSet<&str> = renames.iter().map(|r| dir_of(&r.from)).collect();
        for d in dirs {
            fsync_dir(&self.dir.join(d))?;
        }
        crash_point("tmp-written");
        // Step 1: the decision.
        let m = Manifest::new(end, renames);
        commit::write_manifest(&self.dir, &m)?;
        crash_point("manifest-written");
        // The tmps are the manifest's now: an abort applies it, it never deletes them.
        self.clear_batch();
        Ok(Some(m))
    }

    /// Steps 2 to 4 of a manifest [`OutDir::decide`] wrote: renames, ring commit, manifest
    /// removal.
    pub fn apply(&mut self, m: &Manifest, cursor: &Cursor<'_>) -> io::Result<Applied> {
        commit::apply(&self.dir, m, cursor, false)
    }

    /// After an error (the sink's files of the batch closed): finishes a manifest that was
    /// written (a decision), then deletes the batch's tmps still there, so that the directory
    /// is consistent with `cursor` again (the caller reads again from it).
    pub fn abort(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        let tmps = std::mem::take(&mut self.tmps);
        self.clear_batch();
        // Whatever failed may have been a directory: check them all again.
        self.known_dirs.clear();
        // A manifest that was written is a decision: finish it. Otherwise drop the tmps.
        if let Some(m) = commit::read_manifest(&self.dir)? {
            commit::apply(&self.dir, &m, cursor, true)?;
        }
        for rel in tmps {
            let p = self.dir.join(&rel);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ctx("cannot remove", &p, e)),
            }
        }
        Ok(())
    }

    /// Forgets the current batch (its tmps are left for the caller to handle).
    fn clear_batch(&mut self) {
        self.dead.clear();
        self.taken.clear();
        self.tmps.clear();
    }
}

/// The directory part of a relative path (`""` for a name alone).
fn dir_of(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The name part of a relative path.
fn file_name(rel: &str) -> &str {
    rel.rsplit_once('/').map_or(rel, |(_, name)| name)
}

/// Keeps a reason on one line of reasons.log.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
