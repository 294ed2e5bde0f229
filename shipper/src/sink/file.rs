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
//! analysis, and [`crate::outdir`] for the code that runs it (shared with the aggregate sink).
//! Readers must ignore `.tmp` files (the `*.ndjson.gz` glob does). A committed file is never
//! modified or replaced afterwards.
//!
//! Undecodable records go to `_dead_letter/<pos>.bin` through the same protocol (exactly
//! once); their line in `reasons.log` is best effort (a crash at the wrong instant can lose
//! it).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;
use log::debug;
use tracker_core::ring::Cursor;

use super::{Committed, Sink};
use crate::commit::{ctx, Rename};
use crate::config::Format;
use crate::encode::{EncodedChunk, Group};
use crate::layout::{id_hex, partition_dir};
use crate::outdir::OutDir;

/// One file being written in the current batch.
struct Part {
    /// `type=../date=../hour=..`
    rel_dir: String,
    /// Its tmp and final paths.
    rename: Rename,
    enc: GzEncoder<File>,
    events: u64,
}

pub struct FileSink {
    out: OutDir,
    format: Format,
    level: Compression,
    max_open: usize,
    parts: Vec<Part>,
    /// event type (as in the event) → (hour bucket, index in `parts`).
    index: HashMap<String, Vec<(u64, usize)>>,
}

impl FileSink {
    /// A sink writing under `dir` (created if needed, with `_shipper/`).
    pub fn new(
        dir: &Path,
        format: Format,
        gzip_level: u32,
        max_open: usize,
    ) -> io::Result<FileSink> {
        Ok(FileSink {
            out: OutDir::new(dir)?,
            format,
            level: Compression::new(gzip_level),
            max_open,
            parts: Vec::new(),
            index: HashMap::new(),
        })
    }

    /// The index in `parts` of the file for group `g`, opened if needed.
    fn part_for(&mut self, g: &Group) -> io::Result<usize> {
        if let Some(v) = self.index.get(g.event_type.as_str()) {
            if let Some(&(_, i)) = v.iter().find(|(b, _)| *b == g.hour_bucket) {
                return Ok(i);
            }
        }
        let rel_dir = partition_dir(&g.event_type, g.hour_bucket);
        let stem = id_hex(&g.first_id);
        let (file, rename) = self.out.create(&rel_dir, &stem, self.format.extension())?;
        let i = self.parts.len();
        self.parts.push(Part {
            rel_dir,
            rename,
            enc: GzEncoder::new(file, self.level),
            events: 0,
        });
        self.index
            .entry(g.event_type.clone())
            .or_default()
            .push((g.hour_bucket, i));
        Ok(i)
    }

    /// Forgets the files of the current batch (closed; their tmps are the output directory's).
    fn clear_batch(&mut self) {
        self.parts.clear();
        self.index.clear();
    }
}

impl Sink for FileSink {
    fn describe(&self) -> String {
        let fmt = match self.format {
            Format::Ndjson => "ndjson",
            Format::Msgpack => "msgpack",
        };
        format!(
            "file sink: {}, {fmt}, gzip level {}",
            self.out.path().display(),
            self.level.level()
        )
    }

    fn recover(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        self.out.recover(cursor)
    }

    fn add(&mut self, chunk: EncodedChunk) -> io::Result<()> {
        for g in &chunk.groups {
            let i = self.part_for(g)?;
            let p = &mut self.parts[i];
            p.enc
                .write_all(&g.data)
                .map_err(|e| ctx("cannot write in", &self.out.path().join(&p.rel_dir), e))?;
            p.events += g.events;
        }
        for d in chunk.dead {
            self.out.dead_letter(d)?;
        }
        Ok(())
    }

    fn wants_commit(&self) -> bool {
        self.parts.len() >= self.max_open
    }

    fn commit(&mut self, cursor: &Cursor<'_>, end: u64) -> io::Result<Committed> {
        let started = std::time::Instant::now();
        let mut out = Committed {
            dead_letters: self.out.dead_letters(),
            ..Committed::default()
        };
        // Step 0 (the output directory does the rest): finish and fsync every file.
        let mut renames = Vec::with_capacity(self.parts.len());
        for p in self.parts.iter_mut() {
            let path = self.out.path().join(&p.rel_dir);
            p.enc
                .try_finish()
                .map_err(|e| ctx("cannot write in", &path, e))?;
            let f = p.enc.get_ref();
            f.sync_data()
                .map_err(|e| ctx("cannot fsync a file in", &path, e))?;
            out.bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
            out.events += p.events;
            out.files += 1;
            renames.push(p.rename.clone());
        }
        let applied = self.out.commit(renames, end, cursor)?;
        self.clear_batch();
        if let Some(a) = applied {
            debug!(
                "committed {} events, {} dead letters in {} files ({} bytes), ring position {end}, in {} ms",
                out.events,
                out.dead_letters,
                a.renamed,
                out.bytes,
                started.elapsed().as_millis()
            );
        }
        Ok(out)
    }

    fn abort(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        self.clear_batch();
        self.out.abort(cursor)
    }
}
