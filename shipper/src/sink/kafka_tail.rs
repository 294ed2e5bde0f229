//! Reading the tails of the Kafka sink's partitions back: which events of this ring, from the
//! sink's cursor on, a previous run (or the producer just dropped) already stored. The Kafka
//! sink skips exactly those when it sends the ring again from its cursor (docs/shipper.md,
//! "Exactly once").
//!
//! Every message the sink writes carries the headers `ring_id` (the ring's identity, 32 hex
//! digits) and `ring_pos` (the event's position in the ring, decimal): together they name one
//! event. Per partition, the scan reads backwards from the end in growing windows, collects
//! the positions `>= cursor` of this ring, and stops at the first (newest) message of this ring
//! below the cursor (everything older was acknowledged before the cursor moved there, so older
//! offsets hold none of this ring's events at or after the cursor), at the start of the
//! partition, or after `max_per_partition` messages. Stopping early can only make the sink send
//! an event again (a duplicate), never skip one that is not stored: a position is skipped only
//! when a message with it was read back.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// The header naming the ring (its identity as 32 lower-case hex digits).
pub const HEADER_RING_ID: &str = "ring_id";
/// The header holding the event's position in the ring (decimal).
pub const HEADER_RING_POS: &str = "ring_pos";
/// The header numbering a message among those of one ring position (decimal): the aggregate
/// topic's rows, several per batch, all with the batch's end as `ring_pos`.
pub const HEADER_BATCH_ROW: &str = "batch_row";

/// How long one metadata or watermark request may take (also how long a SIGTERM may wait
/// while the brokers are away).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long reading one round of windows may take.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// The first window read back per partition (grows 4x per round).
const FIRST_WINDOW: i64 = 64;

/// The ring identity as it appears in the `ring_id` header.
pub fn ring_id_hex(id: u128) -> String {
    format!("{id:032x}")
}

/// What the scan found.
#[derive(Debug, Default)]
pub struct Tail {
    /// Positions (at or after the cursor) of this ring's events found stored.
    pub stored: HashSet<u64>,
    /// (position, `batch_row`) of the messages of [`Tail::stored`] carrying a `batch_row`.
    pub rows: HashSet<(u64, u64)>,
    /// Partitions looked at (of existing topics).
    pub partitions: usize,
    pub messages_read: u64,
    /// Partitions whose scan hit `max_per_partition` before finding where this ring's
    /// delivered events end (duplicates are possible there).
    pub cut_short: usize,
}

/// The scan's settings.
pub struct Scan<'a> {
    /// The consumer's settings (brokers, security properties...).
    pub config: ClientConfig,
    pub topics: &'a [String],
    /// [`ring_id_hex`] of the ring.
    pub ring_id: &'a str,
    /// The sink's cursor: only positions at or after it matter.
    pub cursor: u64,
    pub max_per_partition: u64,
    pub stop: &'a AtomicBool,
}

/// One partition being read back.
struct Part {
    id: i32,
    low: i64,
    /// The window being read: [start, end).
    start: i64,
    end: i64,
    scanned: u64,
    /// Reached a message of this ring below the cursor.
    boundary: bool,
    done: bool,
}

impl Part {
    /// Whether the window is read: its last offset, or anything after it, was seen.
    fn window_read(&self, offset: i64) -> bool {
        offset >= self.end - 1
    }
}

/// Reads the tails. An error means the tails could not be read (broker away, no right to
/// read...): the caller waits and tries again, it never guesses.
pub fn read_tail(scan: &Scan<'_>) -> Result<Tail, String> {
    let mut config = scan.config.clone();
    config
        .set("group.id", "nginx-tracker-shipper-tail")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_uncommitted")
        .set("allow.auto.create.topics", "false")
        .set("fetch.wait.max.ms", "50");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| format!("kafka tail reader: {e}"))?;
    let mut tail = Tail::default();
    for topic in scan.topics {
        read_topic(&consumer, scan, topic, &mut tail)?;
    }
    Ok(tail)
}

/// The partitions of `topic`; none when the topic does not exist (or may not be described:
/// then the producer may not write to it either, and its messages go to the dead letters).
fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>, String> {
    let md = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| format!("metadata of topic {topic}: {e}"))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(Vec::new());
    };
    match t.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(
            RDKafkaErrorCode::UnknownTopicOrPartition
            | RDKafkaErrorCode::UnknownTopic
            | RDKafkaErrorCode::TopicAuthorizationFailed,
        ) => return Ok(Vec::new()),
        Some(e) => return Err(format!("metadata of topic {topic}: {e:?}")),
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

fn read_topic(
    consumer: &BaseConsumer,
    scan: &Scan<'_>,
    topic: &str,
    tail: &mut Tail,
) -> Result<(), String> {
    let mut parts = Vec::new();
    for id in partitions(consumer, topic)? {
        let (low, high) = consumer
            .fetch_watermarks(topic, id, REQUEST_TIMEOUT)
            .map_err(|e| format!("offsets of {topic}/{id}: {e}"))?;
        tail.partitions += 1;
        parts.push(Part {
            id,
            low,
            start: high.saturating_sub(FIRST_WINDOW).max(low),
            end: high,
            scanned: 0,
            boundary: false,
            done: high <= low,
        });
    }
    let mut window = FIRST_WINDOW;
    while parts.iter().any(|p| !p.done) {
        read_round(consumer, scan, topic, &mut parts, tail)?;
        window = window.saturating_mul(4);
        for p in parts.iter_mut().filter(|p| !p.done) {
            p.scanned += (p.end - p.start) as u64;
            if p.boundary || p.start <= p.low {
                p.done = true;
            } else if p.scanned >= scan.max_per_partition {
                p.done = true;
                tail.cut_short += 1;
            } else {
                p.end = p.start;
                p.start = p.end.saturating_sub(window).max(p.low);
            }
        }
    }
    Ok(())
}

/// Reads the current window of every partition of `topic` not done yet.
fn read_round(
    consumer: &BaseConsumer,
    scan: &Scan<'_>,
    topic: &str,
    parts: &mut [Part],
    tail: &mut Tail,
) -> Result<(), String> {
    let mut tpl = TopicPartitionList::new();
    for p in parts.iter().filter(|p| !p.done) {
        tpl.add_partition_offset(topic, p.id, Offset::Offset(p.start))
            .map_err(|e| format!("{topic}/{}: {e}", p.id))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| format!("reading {topic}: {e}"))?;
    let mut open: HashSet<i32> = parts.iter().filter(|p| !p.done).map(|p| p.id).collect();
    let deadline = Instant::now() + ROUND_TIMEOUT;
    while !open.is_empty() {
        if scan.stop.load(Relaxed) {
            return Err("stopping".into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "reading the tail of {topic} took more than {}s",
                ROUND_TIMEOUT.as_secs()
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(id))) => {
                open.remove(&id);
            }
            Some(Err(e)) => return Err(format!("reading the tail of {topic}: {e}")),
            Some(Ok(m)) => {
                let Some(p) = parts.iter_mut().find(|p| p.id == m.partition()) else {
                    continue;
                };
                if !open.contains(&p.id) || m.offset() >= p.end {
                    open.remove(&p.id);
                    continue;
                }
                tail.messages_read += 1;
                if let Some((pos, row)) = ring_pos(&m, scan.ring_id) {
                    if pos >= scan.cursor {
                        tail.stored.insert(pos);
                        if let Some(row) = row {
                            tail.rows.insert((pos, row));
                        }
                    } else {
                        p.boundary = true;
                    }
                }
                if p.window_read(m.offset()) {
                    open.remove(&p.id);
                }
            }
        }
    }
    consumer
        .unassign()
        .map_err(|e| format!("reading {topic}: {e}"))
}

/// The `ring_pos` (and `batch_row`, if any) of a message of the ring `ring_id`; None for
/// other messages.
fn ring_pos(m: &BorrowedMessage<'_>, ring_id: &str) -> Option<(u64, Option<u64>)> {
    let headers = m.headers()?;
    let mut id = None;
    let mut pos = None;
    let mut row = None;
    for h in headers.iter() {
        match h.key {
            HEADER_RING_ID => id = h.value,
            HEADER_RING_POS => pos = h.value,
            HEADER_BATCH_ROW => row = h.value,
            _ => {}
        }
    }
    if id? != ring_id.as_bytes() {
        return None;
    }
    let pos = std::str::from_utf8(pos?).ok()?.parse().ok()?;
    let row = row.and_then(|r| std::str::from_utf8(r).ok()?.parse().ok());
    Some((pos, row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_id_is_32_hex_digits() {
        assert_eq!(ring_id_hex(1), format!("{}1", "0".repeat(31)));
        assert_eq!(ring_id_hex(u128::MAX), "f".repeat(32));
    }
}
