//! Encoding, the CPU-heavy part of the drain, done by worker threads in parallel: a chunk of
//! consecutive ring records is decoded and serialized (NDJSON lines, or the raw MessagePack
//! records), either grouped by partition (event type and UTC hour: the file sink) or as one
//! message per event with its key (the Kafka sink), or aggregated into hourly rows (the
//! aggregate sink). Records that do not decode become dead letters. The writer thread then
//! puts the chunks, in ring order, into the sink.

use std::sync::atomic::{AtomicU32, Ordering};

use log::warn;
use std::ops::Range;

use tracker_core::event::{decode, Kind};
use tracker_core::ring::{Record, COUNTER_KINDS};

use crate::aggregate::Aggregates;
use crate::config::{Format, KeyField};
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

/// How a sink wants its chunks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Encoding {
    /// Events grouped by partition (type, hour), in `format`: the file sink.
    Groups(Format),
    /// One message per event, keyed by `KeyField`: the Kafka sink.
    Messages(Format, KeyField),
    /// The chunk's hourly aggregates, the publisher taken from the named dimension: the
    /// aggregate sink (the sink merges the chunks of a batch).
    Aggregates(&'static str),
}

/// One event as a message: its value is `EncodedChunk::buf[value]`.
#[derive(Debug)]
pub struct Message {
    /// The record's position in the ring (unique in the ring: the Kafka sink's `ring_pos`).
    pub pos: u64,
    pub event_type: String,
    /// `Kind::index()` of the type (for the per-type counters).
    pub kind: usize,
    pub key: Option<String>,
    pub value: Range<usize>,
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
    /// With [`Encoding::Messages`]: the events, in ring order, and their bytes.
    pub messages: Vec<Message>,
    pub buf: Vec<u8>,
    /// With [`Encoding::Aggregates`]: the rows of the chunk's events.
    pub aggregates: Aggregates,
    /// Events per type (`Kind::index()`).
    pub by_kind: [u64; COUNTER_KINDS],
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
pub fn encode_chunk(chunk: Chunk, encoding: Encoding, warnings: &WarnLimiter) -> EncodedChunk {
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
        let kind = Kind::of_type(&ev.event_type).index();
        out.by_kind[kind] += 1;
        out.events += 1;
        let format = match encoding {
            Encoding::Groups(f) => f,
            Encoding::Aggregates(publisher_dim) => {
                out.aggregates.add_owned(ev, publisher_dim);
                continue;
            }
            Encoding::Messages(format, key) => {
                let start = out.buf.len();
                match format {
                    Format::Ndjson => ev.to_json_line(&mut out.buf),
                    Format::Msgpack => out.buf.extend_from_slice(&rec.payload),
                }
                let key = match key {
                    KeyField::Campaign => Some(ev.campaign),
                    KeyField::ClickId => ev.click_id.or(Some(ev.campaign)),
                    KeyField::None => None,
                };
                out.messages.push(Message {
                    pos: rec.pos,
                    event_type: ev.event_type,
                    kind,
                    key,
                    value: start..out.buf.len(),
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
    }
    out
}
