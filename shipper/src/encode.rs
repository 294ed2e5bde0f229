//! Encoding, the CPU-heavy part of the drain, done by worker threads in parallel: a chunk of
//! consecutive ring records is decoded and serialized (NDJSON lines, or the raw MessagePack
//! records), grouped by partition (event type and UTC hour). Records that do not decode become
//! dead letters. The writer thread then puts the chunks, in ring order, into the sink.

use std::sync::atomic::{AtomicU32, Ordering};

use log::warn;
use tracker_core::event::decode;
use tracker_core::ring::Record;

use crate::config::Format;
use crate::layout::US_PER_HOUR;

/// Records per chunk handed to a worker (fewer when the ring runs empty).
pub const CHUNK_RECORDS: usize = 1024;

/// Consecutive ring records, as the reader hands them to the workers.
#[derive(Debug, Default)]
pub struct Chunk {
    pub records: Vec<Record>,
    /// Ring position after the last record read or skipped (None: nothing read).
    pub end: Option<u64>,
    /// Records of dead writers skipped by the reader, and their bytes.
    pub skipped: u64,
    pub skipped_bytes: u64,
    /// The reader counted `max_batch_events` records since the last such chunk: commit after it.
    pub last_of_batch: bool,
}

/// The events of one chunk in one partition, serialized in ring order.
#[derive(Debug)]
pub struct Group {
    pub event_type: String,
    /// `ts / US_PER_HOUR`
    pub hour_bucket: u64,
    /// The id of the first event of the group.
    pub first_id: [u8; 16],
    pub events: u64,
    /// NDJSON lines (each ending with `\n`) or concatenated MessagePack records.
    pub data: Vec<u8>,
}

/// A record that did not decode.
#[derive(Debug)]
pub struct DeadRecord {
    pub pos: u64,
    pub raw: Vec<u8>,
    pub reason: String,
}

/// A chunk once encoded.
#[derive(Debug, Default)]
pub struct EncodedChunk {
    pub groups: Vec<Group>,
    pub dead: Vec<DeadRecord>,
    pub end: Option<u64>,
    pub events: u64,
    pub skipped: u64,
    pub skipped_bytes: u64,
    pub last_of_batch: bool,
}

/// Rate limit of warnings shared by the threads: a few per summary period, the rest counted.
#[derive(Default)]
pub struct WarnLimiter {
    logged: AtomicU32,
    suppressed: AtomicU32,
}

impl WarnLimiter {
    pub const PER_PERIOD: u32 = 10;

    pub fn may_warn(&self) -> bool {
        if self.logged.fetch_add(1, Ordering::Relaxed) < Self::PER_PERIOD {
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Starts a new period; returns how many warnings were not logged in the last one.
    pub fn reset(&self) -> u32 {
        self.logged.store(0, Ordering::Relaxed);
        self.suppressed.swap(0, Ordering::Relaxed)
    }
}

/// Decodes and serializes a chunk.
pub fn encode_chunk(chunk: Chunk, format: Format, warnings: &WarnLimiter) -> EncodedChunk {
    let mut out = EncodedChunk {
        end: chunk.end,
        skipped: chunk.skipped,
        skipped_bytes: chunk.skipped_bytes,
        last_of_batch: chunk.last_of_batch,
        ..Default::default()
    };
    // The group of the previous event: consecutive events often share it.
    let mut last: Option<usize> = None;
    for rec in chunk.records {
        let ev = match decode(&rec.payload) {
            Ok(ev) => ev,
            Err(e) => {
                if warnings.may_warn() {
                    warn!(
                        "undecodable record at ring position {} ({} bytes): {}; written to the dead letters",
                        rec.pos,
                        rec.payload.len(),
                        e.0
                    );
                }
                out.dead.push(DeadRecord {
                    pos: rec.pos,
                    raw: rec.payload,
                    reason: e.0,
                });
                continue;
            }
        };
        let bucket = ev.ts / US_PER_HOUR;
        let same = |g: &Group| g.hour_bucket == bucket && g.event_type == ev.event_type;
        let i = match last.filter(|&i| same(&out.groups[i])) {
            Some(i) => i,
            None => match out.groups.iter().position(same) {
                Some(i) => i,
                None => {
                    out.groups.push(Group {
                        event_type: ev.event_type.clone(),
                        hour_bucket: bucket,
                        first_id: ev.id,
                        events: 0,
                        data: Vec::with_capacity(64 * 1024),
                    });
                    out.groups.len() - 1
                }
            },
        };
        last = Some(i);
        let g = &mut out.groups[i];
        match format {
            Format::Ndjson => {
                // Appends (documented).
                ev.to_json_line(&mut g.data);
                g.data.push(b'\n');
            }
            Format::Msgpack => g.data.extend_from_slice(&rec.payload),
        }
        g.events += 1;
        out.events += 1;
    }
    out
}
