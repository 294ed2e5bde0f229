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
//! The files are committed with the file sink's protocol ([`crate::commit`]), by the same code
//! ([`crate::outdir`]): written as hidden `.<name>.tmp`, fsynced, made visible by renames
//! decided in a durable manifest (`AGGDIR/_shipper/manifest.json`) before this sink's cursor
//! moves past the batch, and a start finishes or undoes what a crash left. So every event the
//! ring delivered is counted in exactly one committed row, whatever instant the shipper is
//! killed at: a batch whose files were not decided is read again (its tmps deleted), a decided
//! one is finished and not read again. Replaying never doubles a sum.
//!
//! With a topic (`topic` in `[aggregate]`), the rows of each batch are also published to Kafka,
//! exactly once ([`super::aggregate_topic`]): after the manifest is durable and before it is
//! applied; a start or an abort that finds a manifest not applied publishes it first.
//!
//! Undecodable records cannot be aggregated: they go to `AGGDIR/_dead_letter/<pos>.bin` (as in
//! the file sink, exactly once; the `reasons.log` line best effort).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use log::{debug, info};
use tracker_core::ring::Cursor;

use super::aggregate_topic::{self, AggregateTopic};
use super::kafka_tail::ring_id_hex;
use super::{Committed, Sink};
use crate::aggregate::{hour_dir, write_row, Aggregates};
use crate::commit::{self, crash_point, ctx, Manifest, DEAD_LETTER_DIR};
use crate::encode::EncodedChunk;
use crate::outdir::OutDir;

/// The extension of the aggregate files.
pub const EXTENSION: &str = "ndjson";

pub struct AggregateSink {
    out: OutDir,
    publisher_dimension: String,
    /// The rows of the current batch.
    rows: Aggregates,
    /// Events in the current batch.
    events: u64,
    /// Where the rows are also published, if anywhere.
    topic: Option<AggregateTopic>,
}

impl AggregateSink {
    /// A sink writing under `dir` (created if needed, with `_shipper/`).
    pub fn new(
        dir: &Path,
        publisher_dimension: &str,
        topic: Option<AggregateTopic>,
    ) -> io::Result<AggregateSink> {
        Ok(AggregateSink {
            out: OutDir::new(dir)?,
            publisher_dimension: publisher_dimension.to_string(),
            rows: Aggregates::default(),
            events: 0,
            topic,
        })
    }

    /// Publishes the rows of the decided batch `m` to the topic, if there is one (the batch
    /// covers the ring from `cursor` to `m.end`; nothing to do when the cursor is past it: the
    /// batch was published before the cursor moved).
    /// `fresh`: decided just now (see [`aggregate_topic::Batch::fresh`]).
    fn publish(&mut self, m: &Manifest, cursor: &Cursor<'_>, fresh: bool) -> io::Result<()> {
        let Some(topic) = &mut self.topic else {
            return Ok(());
        };
        let start = cursor.position();
        if start >= m.end {
            return Ok(());
        }
        let mut files = Vec::new();
        for r in &m.renames {
            if r.to.starts_with(DEAD_LETTER_DIR) || !r.to.ends_with(EXTENSION) {
                continue;
            }
            let from = self.out.path().join(&r.from);
            let to = self.out.path().join(&r.to);
            // Renamed already (a start finishing a manifest), or not yet.
            let data = match fs::read(&from) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::read(&to).map_err(|e| ctx("cannot read", &to, e))?
                }
                Err(e) => return Err(ctx("cannot read", &from, e)),
            };
            files.push(data);
        }
        let ring_id = ring_id_hex(cursor.ring().id());
        topic.publish(&aggregate_topic::Batch {
            ring_id: &ring_id,
            start,
            end: m.end,
            files: &files,
            fresh,
        })?;
        crash_point("aggregate-published");
        Ok(())
    }

    /// Publishes a manifest left on disk (by a crash, or a commit that failed or was stopped
    /// after its decision) before it is applied.
    fn publish_pending(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        if self.topic.is_none() {
            return Ok(());
        }
        if let Some(m) = commit::read_manifest(self.out.path())? {
            if cursor.position() < m.end {
                info!(
                    "aggregate: publishing the rows of the decided batch ending at ring position {} \
                     (those the topic has already are not sent again)",
                    m.end
                );
            }
            self.publish(&m, cursor, false)?;
        }
        Ok(())
    }
}

impl Sink for AggregateSink {
    fn describe(&self) -> String {
        format!(
            "aggregate sink: {}, hourly rows by campaign, publisher (dimension {:?}) and type, ndjson{}",
            self.out.path().display(),
            self.publisher_dimension,
            self.topic
                .as_ref()
                .map(|t| format!("; {}", t.describe()))
                .unwrap_or_default()
        )
    }

    fn recover(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        self.publish_pending(cursor)?;
        self.out.recover(cursor)
    }

    fn add(&mut self, chunk: EncodedChunk) -> io::Result<()> {
        self.rows.merge(chunk.aggregates);
        self.events += chunk.events;
        for d in chunk.dead {
            self.out.dead_letter(d)?;
        }
        Ok(())
    }

    fn commit(&mut self, cursor: &Cursor<'_>, end: u64) -> io::Result<Committed> {
        let started = std::time::Instant::now();
        let rows = std::mem::take(&mut self.rows);
        let events = std::mem::take(&mut self.events);
        let mut out = Committed {
            dead_letters: self.out.dead_letters(),
            ..Committed::default()
        };
        // The batch covers the ring from this sink's cursor (everything before it is
        // committed) to `end`.
        let stem = format!("{}-{end}", cursor.position());
        let mut renames = Vec::new();
        let mut buf = Vec::with_capacity(64 * 1024);
        // Step 0 (the output directory does the rest): one file per hour, fsynced.
        for (bucket, hour_rows) in rows.by_hour() {
            let (mut f, rename) = self.out.create(&hour_dir(bucket), &stem, EXTENSION)?;
            buf.clear();
            for (k, s) in hour_rows {
                write_row(k, s, &mut buf);
            }
            let path = self.out.path().join(&rename.from);
            f.write_all(&buf)
                .map_err(|e| ctx("cannot write", &path, e))?;
            f.sync_data().map_err(|e| ctx("cannot fsync", &path, e))?;
            out.bytes += buf.len() as u64;
            out.files += 1;
            renames.push(rename);
        }
        let Some(m) = self.out.decide(renames, end, cursor)? else {
            // Only skipped records (or nothing): no file was written.
            return Ok(out);
        };
        self.publish(&m, cursor, true)?;
        let a = self.out.apply(&m, cursor)?;
        out.events = events;
        let ms = started.elapsed().as_millis();
        debug!(
            "aggregate: committed {events} events as {} rows in {} files ({} bytes), {} dead letters, \
             ring position {end}, in {ms} ms",
            rows.rows.len(),
            a.renamed,
            out.bytes,
            out.dead_letters
        );
        Ok(out)
    }

    fn abort(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        self.rows = Aggregates::default();
        self.events = 0;
        // The abort applies a decided batch: its rows go to the topic first. When stopping
        // meanwhile, the manifest is left as it is, for the next start to publish and apply.
        match self.publish_pending(cursor) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            r => r?,
        }
        self.out.abort(cursor)
    }
}
