//! The Kafka sink: one message per event, through librdkafka's idempotent producer.
//!
//! - Topic: one per event type (`tracker.impression`, ...; custom types go to the default
//!   topic), overridable per type (`[kafka.topics]`). Key: the campaign id (or the click id, or
//!   none); partition: librdkafka's `murmur2_random`, the Java client's hash. Value: the
//!   event's MessagePack record exactly as nginx wrote it (or one JSON object). Headers:
//!   `schema_version`, `event_type`, `ring_id` and `ring_pos` (which ring, which event).
//! - Producer: `enable.idempotence=true` (so `acks=all`, retries without duplicates or
//!   reordering, at most 5 requests in flight per connection), lz4 by default,
//!   `message.timeout.ms=0`: librdkafka never gives up on a message because the broker is
//!   away; the ring holds the events meanwhile.
//!
//! # Delivery guarantee: exactly once (docs/shipper.md states the conditions)
//!
//! `add` produces every event of the batch; `commit` waits until librdkafka has reported every
//! one of them (acknowledged by all in-sync replicas, or refused for good), writes the refused
//! ones to the dead letters (fsynced), and only then moves this sink's cursor in the ring to
//! the end of the batch. So the cursor only ever covers a contiguous prefix of events that
//! Kafka has (or that are in the dead letters with the reason): nothing is lost.
//!
//! Events after the cursor are read again after a crash or a producer reset; before sending
//! any, the sink reads the partitions' tails back ([`super::kafka_tail`]) and skips the
//! events of this ring whose `ring_pos` it found: nothing is sent twice. When the tails cannot
//! be read it waits, sending nothing.
//!
//! While the broker is unreachable `commit` keeps waiting (librdkafka reconnects with backoff),
//! the sink reports itself down (log line once, `tracker_shipper_destination_up 0`), the ring
//! fills (visible as lag), and when the broker returns everything waiting is delivered and
//! logged once. A SIGTERM during the wait stops without acknowledging: the events stay in the
//! ring for the next run.
//!
//! Refused for good: errors that retrying cannot fix (message too large, authorization, unknown
//! topic, invalid record...). Such a message goes to `<dead-letter-dir>/kafka-<ring pos>.jsonl`
//! with its topic, key, value and the reason, is counted
//! (`tracker_shipper_delivery_errors_total{reason=...}`) and logged; the others go on. A fatal
//! producer error (the idempotent producer lost its sequence) drops the producer: the batch is
//! read again from the ring with a new producer, after the tails were read again.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use tracker_core::event::SCHEMA_VERSION;
use tracker_core::ring::{Cursor, COUNTER_KINDS};

use super::kafka_tail::{self, Scan, HEADER_RING_ID, HEADER_RING_POS};
use super::{Committed, Sink};
use crate::commit::{ctx, fsync_dir};
use crate::config::{Format, KafkaConfig};
use crate::encode::{EncodedChunk, Message};
use crate::metrics::SinkMetrics;

/// With no acknowledgement for this long while messages wait, the broker counts as down.
const NO_PROGRESS_DOWN: Duration = Duration::from_secs(10);
/// How long one `poll` of the producer blocks while waiting.
const POLL: Duration = Duration::from_millis(50);
/// The delivery opaque of a bad row sent to the dead-letter topic (not an event type).
const BAD_ROW: usize = usize::MAX;
/// Between two attempts to read the partitions' tails.
const TAIL_RETRY: Duration = Duration::from_secs(2);

/// A message librdkafka refused for good.
struct Refused {
    /// The event's ring position, when known.
    pos: Option<u64>,
    topic: String,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    code: Option<RDKafkaErrorCode>,
    reason: String,
    /// Whether retrying cannot help (see [`permanent`]).
    permanent: bool,
}

#[derive(Default)]
struct Deliveries {
    /// Produced in this batch and not reported yet.
    outstanding: u64,
    acked: u64,
    acked_by_kind: [u64; COUNTER_KINDS],
    refused: Vec<Refused>,
    last_progress: Option<Instant>,
    /// Bad rows sent to the dead-letter topic and not reported yet.
    bad_rows_outstanding: u64,
    /// Why bad rows could not be written to the dead-letter topic.
    bad_rows_failed: Vec<String>,
}

/// The producer's context: delivery reports and client errors, called from `poll`.
struct Context {
    metrics: Arc<SinkMetrics>,
    d: Mutex<Deliveries>,
}

impl Context {
    fn lock(&self) -> std::sync::MutexGuard<'_, Deliveries> {
        self.d.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the broker reachable; logs the end of an outage once.
    fn up(&self) {
        let since = *self
            .metrics
            .down_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.metrics.set_up(true) == 0 {
            info!(
                "kafka: brokers reachable again{}; sending the events that waited in the ring",
                since
                    .map(|t| format!(" after {:.0}s", t.elapsed().as_secs_f64()))
                    .unwrap_or_default()
            );
        }
    }

    /// Marks the broker unreachable; logs the start of an outage once.
    fn down(&self, why: &str) {
        if self.metrics.set_up(false) != 0 {
            warn!(
                "kafka: brokers unreachable ({why}); events wait in the ring (see the lag) and are sent when \
                 they are back"
            );
        }
    }
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        // librdkafka repeats connection errors every few seconds: our own outage lines say it
        // once; its lines are for debugging.
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                error!("librdkafka {fac}: {message}")
            }
            _ => debug!("librdkafka {fac}: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => self.down(reason),
            Some(RDKafkaErrorCode::Fatal) => error!("kafka: fatal producer error: {reason}"),
            _ => debug!("kafka client error: {error}: {reason}"),
        }
    }
}

impl ProducerContext for Context {
    /// The event type's `Kind::index()`.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, kind: usize) {
        let mut d = self.lock();
        if kind == BAD_ROW {
            d.bad_rows_outstanding = d.bad_rows_outstanding.saturating_sub(1);
            if let Err((e, _)) = result {
                d.bad_rows_failed.push(e.to_string());
            }
            return;
        }
        d.outstanding = d.outstanding.saturating_sub(1);
        d.last_progress = Some(Instant::now());
        match result {
            Ok(_) => {
                d.acked += 1;
                d.acked_by_kind[kind.min(COUNTER_KINDS - 1)] += 1;
                drop(d);
                self.up();
            }
            Err((e, m)) => d.refused.push(Refused {
                pos: ring_pos_of(m),
                topic: m.topic().to_string(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                code: e.rdkafka_error_code(),
                reason: e.to_string(),
                permanent: permanent(e.rdkafka_error_code()),
            }),
        }
    }
}

/// The `ring_pos` header of a message the sink produced.
fn ring_pos_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<u64> {
    use rdkafka::message::Headers;
    let h = m.headers()?.iter().find(|h| h.key == HEADER_RING_POS)?;
    std::str::from_utf8(h.value?).ok()?.parse().ok()
}

/// Whether a delivery error means the message can never be delivered as it is (dead letter).
/// Only errors that say so about the message, its topic or our rights qualify; anything else
/// (including a broker's "unknown error" while it shuts down) makes the batch be sent again
/// from the ring: losing an event to a transient error would be worse than a duplicate.
fn permanent(code: Option<RDKafkaErrorCode>) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        Some(
            MessageSizeTooLarge
                | InvalidMessageSize
                | InvalidMessage
                | BadMessage
                | InvalidRecord
                | UnsupportedForMessageFormat
                | PolicyViolation
                | UnknownTopic
                | UnknownTopicOrPartition
                | UnknownPartition
                | InvalidTopic
                | TopicAuthorizationFailed
                | ClusterAuthorizationFailed
                | InvalidArgument
        )
    )
}

pub struct KafkaSink {
    cfg: KafkaConfig,
    producer: BaseProducer<Context>,
    metrics: Arc<SinkMetrics>,
    stop: Arc<AtomicBool>,
    dead_dir: PathBuf,
    topics: HashMap<String, String>,
    /// Events produced in the current batch, by type.
    batch_written: u64,
    /// Messages refused when produced (not queued), for the dead letters.
    refused_now: Vec<Refused>,
    max_queue: usize,
    /// The `schema_version` header.
    schema: String,
    /// The `ring_id` header (set by `recover`).
    ring_id: String,
    /// The `ring_pos` header of the message being produced.
    pos_text: String,
    /// Positions at or after the cursor already stored in Kafka (read from the partitions'
    /// tails): not sent again.
    stored: HashSet<u64>,
    /// The cursor position from which the tails must be read before the next event is sent
    /// (after a producer reset).
    scan_pending: Option<u64>,
    /// Events of the batch skipped because Kafka has them, by type.
    skipped_by_kind: [u64; COUNTER_KINDS],
}

fn client_config(cfg: &KafkaConfig, max_queue: usize) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", "nginx-tracker-shipper")
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "max.in.flight.requests.per.connection",
            cfg.max_in_flight.to_string(),
        )
        .set("compression.type", cfg.compression.name())
        .set("linger.ms", cfg.linger_ms.to_string())
        .set("message.timeout.ms", cfg.message_timeout_ms.to_string())
        .set("queue.buffering.max.messages", max_queue.to_string())
        // The Java client's partitioner: a key's partition is murmur2(key) % partitions, the
        // same from every client (a null key: a random partition).
        .set("partitioner", "murmur2_random")
        // Reconnect quickly after an outage, without hammering a broker that is away.
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000")
        .set_log_level(RDKafkaLogLevel::Info);
    if let Some(b) = cfg.batch_size {
        c.set("batch.size", b.to_string());
    }
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// The tail reader's settings: the brokers and the user's properties (security...), none of
/// the producer's.
fn tail_reader_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &cfg.brokers)
        .set("client.id", "nginx-tracker-shipper")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000")
        .set_log_level(RDKafkaLogLevel::Warning);
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

impl KafkaSink {
    /// `max_batch_events`: the most events a batch holds (librdkafka's queue is sized for it).
    pub fn new(
        cfg: KafkaConfig,
        dead_dir: PathBuf,
        max_batch_events: usize,
        metrics: Arc<SinkMetrics>,
        stop: Arc<AtomicBool>,
    ) -> Result<KafkaSink, String> {
        let max_queue = (max_batch_events + 1024).clamp(1024, 10_000_000);
        let producer = Self::producer(&cfg, max_queue, &metrics)?;
        fs::create_dir_all(&dead_dir).map_err(|e| {
            format!(
                "cannot create the dead-letter directory {}: {e}",
                dead_dir.display()
            )
        })?;
        Ok(KafkaSink {
            cfg,
            producer,
            metrics,
            stop,
            dead_dir,
            topics: HashMap::new(),
            batch_written: 0,
            refused_now: Vec::new(),
            max_queue,
            schema: SCHEMA_VERSION.to_string(),
            ring_id: String::new(),
            pos_text: String::new(),
            stored: HashSet::new(),
            scan_pending: None,
            skipped_by_kind: [0; COUNTER_KINDS],
        })
    }

    fn producer(
        cfg: &KafkaConfig,
        max_queue: usize,
        metrics: &Arc<SinkMetrics>,
    ) -> Result<BaseProducer<Context>, String> {
        let ctx = Context {
            metrics: metrics.clone(),
            d: Mutex::new(Deliveries::default()),
        };
        client_config(cfg, max_queue)
            .create_with_context(ctx)
            .map_err(|e| format!("kafka producer: {e}"))
    }

    fn topic(&mut self, event_type: &str) -> &str {
        if !self.topics.contains_key(event_type) {
            let t = self.cfg.topic_for(event_type);
            self.topics.insert(event_type.to_string(), t);
        }
        &self.topics[event_type]
    }

    /// Reads the partitions' tails back (see [`kafka_tail`]) into `self.stored`, waiting
    /// while they cannot be read: never guesses. Returns Interrupted when stopped meanwhile.
    fn read_tails(&mut self, cursor: u64) -> io::Result<()> {
        self.stored.clear();
        if !self.cfg.exactly_once {
            return Ok(());
        }
        let topics = self.cfg.all_topics();
        let t0 = Instant::now();
        let mut failures = 0u32;
        let tail = loop {
            let scan = Scan {
                config: tail_reader_config(&self.cfg),
                topics: &topics,
                ring_id: &self.ring_id,
                cursor,
                max_per_partition: self.cfg.tail_scan_messages,
                stop: &self.stop,
            };
            match kafka_tail::read_tail(&scan) {
                Ok(t) => break t,
                Err(_) if self.stop.load(Relaxed) => return Err(self.stopping()),
                Err(e) => {
                    if failures == 0 {
                        warn!(
                            "kafka: cannot read the partitions' tails ({e}); nothing is sent until they can be read (they tell which events Kafka already has); retrying every {}s",
                            TAIL_RETRY.as_secs()
                        );
                    }
                    failures += 1;
                    self.producer.context().down(&e);
                    crate::batch::sleep_unless_stopped(TAIL_RETRY, &self.stop_signals());
                    if self.stop.load(Relaxed) {
                        return Err(self.stopping());
                    }
                }
            }
        };
        if failures > 0 {
            info!("kafka: read the partitions' tails after {failures} failed attempts");
        }
        info!(
            "kafka: read the tails of {} partitions ({} messages) in {} ms: {} events of this ring from position {cursor} on are in Kafka already and are not sent again{}",
            tail.partitions,
            tail.messages_read,
            t0.elapsed().as_millis(),
            tail.stored.len(),
            if tail.cut_short > 0 {
                format!(
                    "; {} partitions read back only {} messages deep (tail_scan_messages): events deeper are sent again",
                    tail.cut_short, self.cfg.tail_scan_messages
                )
            } else {
                String::new()
            }
        );
        self.stored = tail.stored;
        Ok(())
    }

    /// Also sends the batch's bad rows to the dead-letter topic, if there is one: the value and
    /// key as they were, headers `reason`, `original_topic`, `ring_id`, `ring_pos`. Waits for
    /// the broker's answer; a row it refuses for good is logged and counted (it is in the
    /// dead-letter file already), never a reason to hold the ring.
    fn send_bad_rows(&mut self, refused: &[Refused]) -> io::Result<()> {
        let Some(dlt) = self.cfg.dead_letter_topic.clone() else {
            return Ok(());
        };
        for r in refused {
            let pos = r.pos.map(|p| p.to_string());
            let mut headers = OwnedHeaders::new_with_capacity(4)
                .insert(Header {
                    key: "reason",
                    value: Some(r.reason.as_str()),
                })
                .insert(Header {
                    key: "original_topic",
                    value: Some(r.topic.as_str()),
                })
                .insert(Header {
                    key: HEADER_RING_ID,
                    value: Some(self.ring_id.as_str()),
                });
            if let Some(p) = &pos {
                headers = headers.insert(Header {
                    key: HEADER_RING_POS,
                    value: Some(p.as_str()),
                });
            }
            let mut record = BaseRecord::with_opaque_to(&dlt, BAD_ROW)
                .payload(&r.value)
                .headers(headers);
            if let Some(k) = &r.key {
                record = record.key(k);
            }
            self.producer.context().lock().bad_rows_outstanding += 1;
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if self.stop.load(Relaxed) {
                            return Err(self.stopping());
                        }
                        self.producer.poll(POLL);
                        record = back;
                    }
                    Err((e, _)) => {
                        let mut d = self.producer.context().lock();
                        d.bad_rows_outstanding -= 1;
                        d.bad_rows_failed.push(e.to_string());
                        break;
                    }
                }
            }
        }
        while self.producer.context().lock().bad_rows_outstanding > 0 {
            if self.stop.load(Relaxed) {
                return Err(self.stopping());
            }
            self.producer.poll(POLL);
        }
        let failed = std::mem::take(&mut self.producer.context().lock().bad_rows_failed);
        if let Some(first) = failed.first() {
            self.metrics.delivery_error("DeadLetterTopic");
            error!(
                "kafka: {} bad rows could not be written to the topic {dlt} (they are in the dead-letter \
                 files): first: {first}",
                failed.len()
            );
        }
        Ok(())
    }

    /// An event's headers: `schema_version`, `event_type`, `ring_id`, `ring_pos`.
    fn event_headers(&mut self, m: &Message) -> OwnedHeaders {
        self.pos_text.clear();
        let _ = write!(self.pos_text, "{}", m.pos);
        OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "schema_version",
                value: Some(self.schema.as_str()),
            })
            .insert(Header {
                key: "event_type",
                value: Some(m.event_type.as_str()),
            })
            .insert(Header {
                key: HEADER_RING_ID,
                value: Some(self.ring_id.as_str()),
            })
            .insert(Header {
                key: HEADER_RING_POS,
                value: Some(self.pos_text.as_str()),
            })
    }

    /// The batch's rows refused for good: into the dead-letter file (fsynced) and topic,
    /// counted and logged.
    fn put_aside(&mut self, refused: &[Refused], end: u64) -> io::Result<()> {
        if refused.is_empty() {
            return Ok(());
        }
        self.dead_letters(refused, end)?;
        for r in refused {
            let reason = match r.code {
                Some(c) => format!("{c:?}"),
                None if r.topic.is_empty() => "Undecodable".into(),
                None => "Other".into(),
            };
            self.metrics.delivery_error(&reason);
        }
        self.metrics
            .dead_letters
            .fetch_add(refused.len() as u64, Relaxed);
        error!(
            "kafka: {} events refused for good, written to {}: first: topic {}: {}",
            refused.len(),
            self.dead_dir.join(format!("kafka-{end}.jsonl")).display(),
            refused[0].topic,
            refused[0].reason
        );
        self.send_bad_rows(refused)
    }

    /// Moves the cursor to `end`, the batch being delivered; unless events found stored lie
    /// beyond `end`: the events of this batch that were sent again may sit after them in their
    /// partitions, so the cursor waits until it can pass them all, and a tail read never meets
    /// this ring's messages below the cursor after ones at or after it (docs/shipper.md,
    /// "Exactly once").
    fn move_cursor(&mut self, cursor: &Cursor<'_>, end: u64) {
        self.stored.retain(|&p| p >= end);
        if self.stored.is_empty() {
            cursor.commit(end);
        } else {
            debug!(
                "kafka: cursor kept before {end} until the {} events found stored beyond it are passed",
                self.stored.len()
            );
        }
    }

    fn stop_signals(&self) -> crate::drain::Signals {
        crate::drain::Signals {
            stop: self.stop.clone(),
            ..Default::default()
        }
    }

    fn stopping(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::Interrupted,
            "stopping before Kafka acknowledged the batch: its events stay in the ring for the next run",
        )
    }

    /// Writes the refused messages of the batch to a dead-letter file, durably.
    fn dead_letters(&self, refused: &[Refused], end: u64) -> io::Result<()> {
        let path = self.dead_dir.join(format!("kafka-{end}.jsonl"));
        let mut out = Vec::new();
        for r in refused {
            let line = serde_json::json!({
                "ring_pos": r.pos,
                "topic": r.topic,
                "key": r.key.as_deref().map(String::from_utf8_lossy),
                "reason": r.reason,
                "value_hex": hex(&r.value),
                "value_format": match self.cfg.format { Format::Msgpack => "msgpack", Format::Ndjson => "json" },
            });
            serde_json::to_writer(&mut out, &line).map_err(io::Error::other)?;
            out.push(b'\n');
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| ctx("cannot create", &path, e))?;
        f.write_all(&out)
            .map_err(|e| ctx("cannot write", &path, e))?;
        f.sync_data().map_err(|e| ctx("cannot fsync", &path, e))?;
        fsync_dir(&self.dead_dir)
    }
}

fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

impl Sink for KafkaSink {
    fn describe(&self) -> String {
        format!(
            "kafka sink: brokers {}, {}, key {:?}, {} compression, linger {} ms, idempotent (acks=all), \
             topics {}<type> (custom types: {}), dead letters in {}",
            self.cfg.brokers,
            match self.cfg.format {
                Format::Msgpack => "MessagePack values",
                Format::Ndjson => "JSON values",
            },
            self.cfg.key,
            self.cfg.compression.name(),
            self.cfg.linger_ms,
            self.cfg.topic_prefix,
            self.cfg.default_topic,
            self.dead_dir.display(),
        )
    }

    fn counts_acks_itself(&self) -> bool {
        true
    }

    fn recover(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        // The events after the cursor are read again; those Kafka already has are skipped.
        // Read in this sink's own thread before its first event (an unreachable broker must
        // not hold the other sinks back).
        // Also called when the ring file was replaced: a new ring, a new identity.
        self.ring_id = kafka_tail::ring_id_hex(cursor.ring().id());
        self.stored.clear();
        self.scan_pending = Some(cursor.position());
        Ok(())
    }

    fn add(&mut self, chunk: EncodedChunk) -> io::Result<()> {
        if let Some(cursor) = self.scan_pending {
            self.read_tails(cursor)?;
            self.scan_pending = None;
        }
        let mut written = [0u64; COUNTER_KINDS];
        for d in chunk.dead {
            // Not an event (a bug or a torn write): kept with the reason, never sent.
            self.refused_now.push(Refused {
                pos: Some(d.pos),
                topic: String::new(),
                key: None,
                value: d.raw,
                code: None,
                reason: format!(
                    "undecodable ring record at position {}: {}",
                    d.pos, d.reason
                ),
                permanent: true,
            });
        }
        for m in &chunk.messages {
            if !self.stored.is_empty() && self.stored.remove(&m.pos) {
                // Stored by a previous run (or the producer before a reset): not sent again.
                self.skipped_by_kind[m.kind] += 1;
                continue;
            }
            let topic = self.topic(&m.event_type).to_string();
            let headers = self.event_headers(m);
            let value = &chunk.buf[m.value.clone()];
            let mut record = BaseRecord::with_opaque_to(&topic, m.kind)
                .payload(value)
                .headers(headers);
            if let Some(k) = &m.key {
                record = record.key(k.as_bytes());
            }
            // Counted before the send: the delivery report may come during a poll below.
            self.producer.context().lock().outstanding += 1;
            loop {
                match self.producer.send(record) {
                    Ok(()) => {
                        written[m.kind] += 1;
                        self.batch_written += 1;
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // librdkafka's queue is full (the broker is slow or away): wait.
                        if self.stop.load(Relaxed) {
                            self.producer.context().lock().outstanding -= 1;
                            return Err(self.stopping());
                        }
                        self.producer.poll(POLL);
                        record = r;
                    }
                    Err((e, r)) => {
                        // Refused before it was queued (too large, unknown topic, ...).
                        self.producer.context().lock().outstanding -= 1;
                        self.refused_now.push(Refused {
                            pos: Some(m.pos),
                            topic: topic.clone(),
                            key: r.key.map(<[u8]>::to_vec),
                            value: value.to_vec(),
                            code: e.rdkafka_error_code(),
                            reason: e.to_string(),
                            permanent: permanent(e.rdkafka_error_code()),
                        });
                        break;
                    }
                }
            }
        }
        SinkMetrics::add(&self.metrics.written, &written);
        // Serve the delivery reports that are ready, without waiting.
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn commit(&mut self, cursor: &Cursor<'_>, end: u64) -> io::Result<Committed> {
        let waiting_since = Instant::now();
        loop {
            self.producer.poll(POLL);
            if let Some((code, reason)) = self.producer.client().fatal_error() {
                return Err(io::Error::other(format!(
                    "kafka: fatal producer error {code:?}: {reason}; the batch is sent again with a new producer"
                )));
            }
            let (outstanding, last) = {
                let d = self.producer.context().lock();
                (d.outstanding, d.last_progress)
            };
            if outstanding == 0 {
                break;
            }
            if self.stop.load(Relaxed) {
                return Err(self.stopping());
            }
            let quiet = last.map_or(waiting_since.elapsed(), |t| {
                t.elapsed().min(waiting_since.elapsed())
            });
            if quiet >= NO_PROGRESS_DOWN {
                self.producer.context().down(&format!(
                    "no acknowledgement for {}s, {outstanding} events waiting",
                    quiet.as_secs()
                ));
            }
        }
        let (mut acked, mut acked_by_kind, mut refused) = {
            let mut d = self.producer.context().lock();
            (
                std::mem::take(&mut d.acked),
                std::mem::take(&mut d.acked_by_kind),
                std::mem::take(&mut d.refused),
            )
        };
        refused.append(&mut self.refused_now);
        // Events Kafka had already count as acknowledged: they are delivered.
        let skipped = std::mem::take(&mut self.skipped_by_kind);
        for (a, s) in acked_by_kind.iter_mut().zip(skipped) {
            *a += s;
        }
        acked += skipped.iter().sum::<u64>();
        SinkMetrics::add(&self.metrics.acked, &acked_by_kind);
        if let Some(r) = refused.iter().find(|r| !r.permanent) {
            // Not a reason to give up on the event: read the batch again (the tails tell what was stored).
            return Err(io::Error::other(format!(
                "kafka: delivery failed for now ({}); the batch is sent again",
                r.reason
            )));
        }
        self.put_aside(&refused, end)?;
        crate::commit::crash_point("kafka-acked");
        self.move_cursor(cursor, end);
        let out = Committed {
            events: acked,
            dead_letters: refused.len() as u64,
            files: 0,
            bytes: 0,
        };
        debug!(
            "kafka: committed ring position {end}: {acked} events acknowledged, {} refused, waited {} ms",
            refused.len(),
            waiting_since.elapsed().as_millis()
        );
        self.batch_written = 0;
        Ok(out)
    }

    fn abort(&mut self, cursor: &Cursor<'_>) -> io::Result<()> {
        // Drop the producer and what it holds (the batch is read again from the cursor) and
        // start a new one: this also clears a fatal idempotence state.
        let fresh =
            Self::producer(&self.cfg, self.max_queue, &self.metrics).map_err(io::Error::other)?;
        let old = std::mem::replace(&mut self.producer, fresh);
        old.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        drop(old);
        self.refused_now.clear();
        self.batch_written = 0;
        self.skipped_by_kind = [0; COUNTER_KINDS];
        // Before anything is sent again, read back what the dropped producer stored.
        self.stored.clear();
        self.scan_pending = Some(cursor.position());
        Ok(())
    }
}
