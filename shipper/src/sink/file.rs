//! The file sink: hive-partitioned, gzip-compressed files.
//!
//! ```text
//! DIR/type=<type>/date=YYYY-MM-DD/hour=HH/<first event id>.ndjson.gz    (or .msgpack.gz)
//! DIR/_dead_letter/<ring position>.bin, DIR/_dead_letter/reasons.log
//! DIR/_shipper/manifest.json (only during a commit), DIR/_shipper/lock
//! ```
//!
//! Partitions are in UTC, from the event's own timestamp. One batch writes at most one file
//! per partition, named after the first event of the batch in that partition (made unique with
//! `-1`, `-2`... if the name is taken). An NDJSON file holds one JSON object per line; a
//! MessagePack file holds the ring records as they are, one after the other (each a map).
//!
//! # Delivery guarantee: exactly-once into committed files
//!
//! Every event the ring delivered to the shipper appears in exactly one committed file (a file
//! whose name does not start with `.`), once the batch holding it is committed, whatever
//! instant the shipper is killed at. Files are written as hidden `.<name>.tmp` files,
//! fsynced, and become visible by renames decided in a durable manifest before the ring's
//! cursor moves past their events; see [`crate::commit`] for the protocol and its crash-point
//! analysis. Readers must ignore `.tmp` files (the `*.ndjson.gz` glob does). A committed file
//! is never modified or replaced afterwards.
//!
//! Undecodable records go to `_dead_letter/<pos>.bin` through the same protocol (exactly
//! once); their line in `reasons.log` is best effort (a crash at the wrong instant can lose
//! it).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use flate2::Compression;
use log::debug;
use tracker_core::ring::Cursor;

use super::{Committed, Sink};
use crate::commit::{
    self, crash_point, ctx, fsync_dir, Manifest, Rename, DEAD_LETTER_DIR, SHIPPER_DIR,
};
use crate::config::Format;
use crate::encode::{DeadRecord, EncodedChunk, Group};
use crate::layout::{id_hex, numbered, partition_dir, rfc3339_ms, tmp_name};

/// One file being written in the current batch.
struct Part {
    /// `type=../date=../hour=..`
    rel_dir: String,
    final_name: String,
    enc: GzEncoder<File>,
    events: u64,
}

struct DeadLetter {
    rel_tmp: String,
    rel_final: String,
    reason: String,
}

pub struct FileSink {
    dir: PathBuf,
    format: Format,
    level: Compression,
    max_open: usize,
    parts: Vec<Part>,
    /// event type (as in the event) → (hour bucket, index in `parts`).
    index: HashMap<String, Vec<(u64, usize)>>,
    dead: Vec<DeadLetter>,
    /// Relative paths of every tmp file created in the current batch (for `abort`).
    batch_tmps: Vec<String>,
    /// Relative final paths chosen in the current batch.
    taken: HashSet<String>,
    /// Relative directories known to exist durably (created or synced by this process).
    known_dirs: HashSet<String>,
}

impl FileSink {
    /// A sink writing under `dir` (created if needed, with `_shipper/`).
    pub fn new(
        dir: &Path,
        format: Format,
        gzip_level: u32,
        max_open: usize,
    ) -> io::Result<FileSink> {
        fs::create_dir_all(dir.join(SHIPPER_DIR))
            .map_err(|e| ctx("cannot create", &dir.join(SHIPPER_DIR), e))?;
        Ok(FileSink {
            dir: dir.to_path_buf(),
            format,
            level: Compression::new(gzip_level),
            max_open,
            parts: Vec::new(),
            index: HashMap::new(),
            dead: Vec::new(),
            batch_tmps: Vec::new(),
            taken: HashSet::new(),
            known_dirs: HashSet::new(),
        })
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

    /// The index in `parts` of the file for group `g`, opened if needed.
    fn part_for(&mut self, g: &Group) -> io::Result<usize> {
        if let Some(v) = self.index.get(g.event_type.as_str()) {
            if let Some(&(_, i)) = v.iter().find(|(b, _)| *b == g.hour_bucket) {
                return Ok(i);
            }
        }
        let rel_dir = partition_dir(&g.event_type, g.hour_bucket);
        self.ensure_dir(&rel_dir)?;
        let final_name = self.free_name(&rel_dir, &id_hex(&g.first_id), self.format.extension());
        let file = self.create_tmp(format!("{rel_dir}/{}", tmp_name(&final_name)))?;
        let i = self.parts.len();
        self.parts.push(Part {
            rel_dir,
            final_name,
            enc: GzEncoder::new(file, self.level),
            events: 0,
        });
        self.index
            .entry(g.event_type.clone())
            .or_default()
            .push((g.hour_bucket, i));
        Ok(i)
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
        let reason = format!(
            "{}\tpos={}\tlen={}\tfile={name}\t{}",
            rfc3339_ms(now_ms),
            d.pos,
            d.raw.len(),
            one_line(&d.reason)
        );
        self.dead.push(DeadLetter {
            rel_tmp,
            rel_final: format!("{DEAD_LETTER_DIR}/{name}"),
            reason,
        });
        Ok(())
    }

    /// Forgets the current batch (files are closed, tmps left for the caller to handle).
    fn clear_batch(&mut self) {
        self.parts.clear();
        self.index.clear();
        self.dead.clear();
        self.taken.clear();
        self.batch_tmps.clear();
    }
}

/// Keeps a reason on one line of reasons.log.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

impl Sink for FileSink {
    fn describe(&self) -> String {
        let fmt = match self.format {
            Format::Ndjson => "ndjson",
            Format::Msgpack => "msgpack",
        };
        format!(
            "file sink: {}, {fmt}, gzip level {}",
            self.dir.display(),
            self.level.level()
        )
    }

    fn recover(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        commit::recover(&self.dir, cursor).map(|_| ())
    }

    fn add(&mut self, chunk: EncodedChunk) -> io::Result<()> {
        for g in &chunk.groups {
            let i = self.part_for(g)?;
            let p = &mut self.parts[i];
            p.enc
                .write_all(&g.data)
                .map_err(|e| ctx("cannot write in", &self.dir.join(&p.rel_dir), e))?;
            p.events += g.events;
        }
        for d in chunk.dead {
            self.dead_letter(d)?;
        }
        Ok(())
    }

    fn wants_commit(&self) -> bool {
        self.parts.len() >= self.max_open
    }

    fn commit(&mut self, cursor: &Cursor<'_>, end: u64) -> io::Result<Committed> {
        let mut out = Committed::default();
        let started = std::time::Instant::now();
        if self.parts.is_empty() && self.dead.is_empty() {
            // Only skipped records (or nothing): no file to write.
            commit::advance_ring(cursor, end);
            self.clear_batch();
            return Ok(out);
        }
        // Step 0: finish and fsync every tmp, then the directories holding them.
        let mut renames = Vec::with_capacity(self.parts.len() + self.dead.len());
        let mut dirs = BTreeSet::new();
        for p in self.parts.iter_mut() {
            let path = self.dir.join(&p.rel_dir);
            p.enc
                .try_finish()
                .map_err(|e| ctx("cannot write in", &path, e))?;
            let f = p.enc.get_ref();
            f.sync_data()
                .map_err(|e| ctx("cannot fsync a file in", &path, e))?;
            out.bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
            out.events += p.events;
            out.files += 1;
            renames.push(Rename {
                from: format!("{}/{}", p.rel_dir, tmp_name(&p.final_name)),
                to: format!("{}/{}", p.rel_dir, p.final_name),
                reason: None,
            });
            dirs.insert(p.rel_dir.as_str());
        }
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
            dirs.insert(DEAD_LETTER_DIR);
        }
        for d in dirs {
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
            "committed {} events, {} dead letters in {} files ({} bytes), ring position {end}, in {} ms",
            out.events,
            out.dead_letters,
            a.renamed,
            out.bytes,
            started.elapsed().as_millis()
        );
        self.clear_batch();
        Ok(out)
    }

    fn abort(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        let tmps = std::mem::take(&mut self.batch_tmps);
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
}
