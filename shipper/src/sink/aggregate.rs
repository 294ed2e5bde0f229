//! The aggregate sink: hourly rows by campaign, publisher and event type, as NDJSON files.
//!
//! ```text
//! AGGDIR/date=YYYY-MM-DD/hour=HH/<batch start>-<batch end>.ndjson     (ring positions)
//! AGGDIR/_dead_letter/<ring position>.bin, AGGDIR/_dead_letter/reasons.log
//! AGGDIR/_shipper/manifest.json (only during a commit), AGGDIR/_shipper/lock
//! ```
//!
//! The encoding workers aggregate their chunks ([`crate::aggregate`]); this sink merges the
//! chunks of a batch and, at commit, writes one file per UTC hour the batch has events of,
//! holding one row per (hour, campaign, publisher, type) of the batch, named after the ring
//! range the batch covers (made unique with `-1`, `-2`... should the name be taken: positions
//! start again at 0 in a ring created anew). An hour's totals are the sums of the rows of every
//! file in its directory.
//!
//! # Delivery guarantee: exactly-once into committed files
//!
//! The files are committed with the file sink's protocol ([`crate::commit`]): written as
//! hidden `.<name>.tmp`, fsynced, made visible by renames decided in a durable manifest
//! (`AGGDIR/_shipper/manifest.json`) before this sink's cursor moves past the batch, and a
//! start finishes or undoes what a crash left. So every event the ring delivered is counted in
//! exactly one committed row, whatever instant the shipper is killed at: a batch whose files
//! were not decided is read again (its tmps deleted), a decided one is finished and not read
//! again. Replaying never doubles a sum.
//!
//! Undecodable records cannot be aggregated: they go to `AGGDIR/_dead_letter/<pos>.bin` (as in
//! the file sink, exactly once; the `reasons.log` line best effort).

use std::collections::{BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use log::debug;
use tracker_core::ring::Cursor;

use super::{Committed, Sink};
use crate::aggregate::{hour_dir, write_row, Aggregates};
use crate::commit::{
    self, crash_point, ctx, fsync_dir, Manifest, Rename, DEAD_LETTER_DIR, SHIPPER_DIR,
};
use crate::encode::{DeadRecord, EncodedChunk};
use crate::layout::{numbered, rfc3339_ms, tmp_name};

/// The extension of the aggregate files.
pub const EXTENSION: &str = "ndjson";

struct DeadLetter {
    rel_tmp: String,
    rel_final: String,
    reason: String,
}

pub struct AggregateSink {
    dir: PathBuf,
    publisher_dimension: String,
    /// The rows of the current batch.
    rows: Aggregates,
    /// Events in the current batch.
    events: u64,
    dead: Vec<DeadLetter>,
    /// Relative paths of every tmp file created in the current batch (for `abort`).
    batch_tmps: Vec<String>,
    /// Relative final paths chosen in the current batch.
    taken: HashSet<String>,
    /// Relative directories known to exist durably (created or synced by this process).
    known_dirs: HashSet<String>,
}

impl AggregateSink {
    /// A sink writing under `dir` (created if needed, with `_shipper/`).
    pub fn new(dir: &Path, publisher_dimension: &str) -> io::Result<AggregateSink> {
        fs::create_dir_all(dir.join(SHIPPER_DIR))
            .map_err(|e| ctx("cannot create", &dir.join(SHIPPER_DIR), e))?;
        Ok(AggregateSink {
            dir: dir.to_path_buf(),
            publisher_dimension: publisher_dimension.to_string(),
            rows: Aggregates::default(),
            events: 0,
            dead: Vec::new(),
            batch_tmps: Vec::new(),
            taken: HashSet::new(),
            known_dirs: HashSet::new(),
        })
    }

    /// Makes sure `rel` (a directory relative to the aggregate directory) exists and is
    /// durable: each level is created if needed and its parent fsynced, once per process.
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

    fn create_tmp(&mut self, rel_tmp: String) -> io::Result<File> {
        let p = self.dir.join(&rel_tmp);
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&p)
            .map_err(|e| ctx("cannot create", &p, e))?;
        self.batch_tmps.push(rel_tmp);
        Ok(f)
    }

    /// Writes a dead letter's tmp file.
    fn dead_letter(&mut self, d: DeadRecord) -> io::Result<()> {
        self.ensure_dir(DEAD_LETTER_DIR)?;
        let name = self.free_name(DEAD_LETTER_DIR, &d.pos.to_string(), "bin");
        let rel_tmp = format!("{DEAD_LETTER_DIR}/{}", tmp_name(&name));
        let mut f = self.create_tmp(rel_tmp.clone())?;
        f.write_all(&d.raw)
            .map_err(|e| ctx("cannot write", &self.dir.join(&rel_tmp), e))?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let reason: String = d
            .reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.dead.push(DeadLetter {
            rel_tmp,
            rel_final: format!("{DEAD_LETTER_DIR}/{name}"),
            reason: format!(
                "{}\tpos={}\tlen={}\tfile={name}\t{reason}",
                rfc3339_ms(now_ms),
                d.pos,
                d.raw.len()
            ),
        });
        Ok(())
    }

    /// Forgets the current batch.
    fn clear_batch(&mut self) {
        self.rows = Aggregates::default();
        self.events = 0;
        self.dead.clear();
        self.taken.clear();
        self.batch_tmps.clear();
    }
}

impl Sink for AggregateSink {
    fn describe(&self) -> String {
        format!(
            "aggregate sink: {}, hourly rows by campaign, publisher (dimension {:?}) and type, ndjson",
            self.dir.display(),
            self.publisher_dimension
        )
    }

    fn recover(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        commit::recover(&self.dir, cursor).map(|_| ())
    }

    fn add(&mut self, chunk: EncodedChunk) -> io::Result<()> {
        self.rows.merge(chunk.aggregates);
        self.events += chunk.events;
        for d in chunk.dead {
            self.dead_letter(d)?;
        }
        Ok(())
    }

    fn commit(&mut self, cursor: &Cursor<'_>, end: u64) -> io::Result<Committed> {
        let mut out = Committed::default();
        let started = std::time::Instant::now();
        if self.rows.is_empty() && self.dead.is_empty() {
            // Only skipped records (or nothing): no file to write.
            commit::advance_ring(cursor, end);
            self.clear_batch();
            return Ok(out);
        }
        // The batch covers the ring from this sink's cursor (everything before it is
        // committed) to `end`.
        let stem = format!("{}-{end}", cursor.position());
        let rows = std::mem::take(&mut self.rows);
        let mut renames = Vec::new();
        let mut dirs = BTreeSet::new();
        let mut buf = Vec::with_capacity(64 * 1024);
        // Step 0: one tmp per hour, fsynced, then the directories holding them.
        for (bucket, hour_rows) in rows.by_hour() {
            let rel_dir = hour_dir(bucket);
            self.ensure_dir(&rel_dir)?;
            let final_name = self.free_name(&rel_dir, &stem, EXTENSION);
            let rel_tmp = format!("{rel_dir}/{}", tmp_name(&final_name));
            let mut f = self.create_tmp(rel_tmp.clone())?;
            buf.clear();
            for (k, s) in hour_rows {
                write_row(k, s, &mut buf);
            }
            let path = self.dir.join(&rel_tmp);
            f.write_all(&buf)
                .map_err(|e| ctx("cannot write", &path, e))?;
            f.sync_data().map_err(|e| ctx("cannot fsync", &path, e))?;
            out.bytes += buf.len() as u64;
            out.files += 1;
            renames.push(Rename {
                from: rel_tmp,
                to: format!("{rel_dir}/{final_name}"),
                reason: None,
            });
            dirs.insert(rel_dir);
        }
        out.events = self.events;
        for d in &self.dead {
            let path = self.dir.join(&d.rel_tmp);
            File::open(&path)
                .and_then(|f| f.sync_data())
                .map_err(|e| ctx("cannot fsync", &path, e))?;
            renames.push(Rename {
                from: d.rel_tmp.clone(),
                to: d.rel_final.clone(),
                reason: Some(d.reason.clone()),
            });
            out.dead_letters += 1;
        }
        if !self.dead.is_empty() {
            dirs.insert(DEAD_LETTER_DIR.to_string());
        }
        for d in &dirs {
            fsync_dir(&self.dir.join(d))?;
        }
        crash_point("tmp-written");
        // Step 1: the decision.
        let m = Manifest::new(end, renames);
        commit::write_manifest(&self.dir, &m)?;
        crash_point("manifest-written");
        // Steps 2-4: renames, ring commit, manifest removal.
        let a = commit::apply(&self.dir, &m, cursor, false)?;
        debug!(
            "aggregate: committed {} events as {} rows in {} files ({} bytes), {} dead letters, ring position {end}, \
             in {} ms",
            out.events,
            rows.rows.len(),
            a.renamed,
            out.bytes,
            out.dead_letters,
            started.elapsed().as_millis()
        );
        self.clear_batch();
        Ok(out)
    }

    fn abort(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        let tmps = std::mem::take(&mut self.batch_tmps);
        self.clear_batch();
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
}
