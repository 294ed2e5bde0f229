//! The aggregate topic: the aggregate sink ([`super::aggregate`]) also publishes the rows of
//! each batch it commits to a Kafka topic, exactly once, so a console can sum live totals
//! without a file system.
//!
//! One message per row: the value is the row's JSON line exactly as in the batch's file
//! (without the `\n`), the key `<campaign>/<hour>` (so one campaign-hour's rows share a
//! partition, librdkafka's `murmur2_random`, the Java client's hash), the headers `ring_id`,
//! `ring_pos` (the end of the batch's ring range), `batch_start` (its start) and `batch_row`
//! (the row's number in the batch: the lines of its files in the manifest's order).
//!
//! # Exactly once
//!
//! The rows are published after the batch's manifest is durable (the batch, its ring range and
//! its files are then decided for good) and before the manifest is applied (files renamed, the
//! sink's cursor moved). A start (or an abort) that finds a manifest whose end is past the
//! cursor publishes it again from its files before applying it: rows are read back from the
//! topic's tails ([`super::kafka_tail`]), and only the `(ring_pos, batch_row)` not found are
//! sent. Per partition, the rows of a batch come after every row of the batches before it (a
//! batch is applied only once all its rows are acknowledged; the producer is idempotent, in
//! order), so the tail scan, which stops at this ring's rows of an older batch, sees them all.
//! docs/shipper.md ("Aggregates as a Kafka topic") states the conditions.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde::Deserialize;

use super::kafka_tail::{self, Scan, HEADER_BATCH_ROW, HEADER_RING_ID, HEADER_RING_POS};
use crate::config::AggregateTopicConfig;

/// The header holding the start of the batch's ring range (for readers; the end is `ring_pos`).
pub const HEADER_BATCH_START: &str = "batch_start";
/// Between two attempts to publish a batch.
const RETRY: Duration = Duration::from_secs(2);
/// How long one `poll` of the producer blocks while waiting.
const POLL: Duration = Duration::from_millis(50);
/// Waiting this long for acknowledgements is logged (once per batch).
const SLOW: Duration = Duration::from_secs(10);

/// Delivery reports of the batch being published.
#[derive(Default)]
struct Reports {
    outstanding: u64,
    failed: Vec<String>,
}

struct Context {
    r: Mutex<Reports>,
}

impl Context {
    fn lock(&self) -> std::sync::MutexGuard<'_, Reports> {
        self.r.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for Context {
    // librdkafka repeats connection errors every few seconds: the sink's own lines say it once.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        debug!("librdkafka (aggregate topic) {level:?} {fac}: {message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        debug!("kafka client error (aggregate topic): {error}: {reason}");
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut r = self.lock();
        r.outstanding = r.outstanding.saturating_sub(1);
        if let Err((e, _)) = result {
            r.failed.push(e.to_string());
        }
    }
}

/// The fields of a row its key is made of.
#[derive(Deserialize)]
struct RowKey<'a> {
    #[serde(borrow)]
    hour: Cow<'a, str>,
    #[serde(borrow)]
    campaign: Cow<'a, str>,
}

/// A row's message key: `<campaign>/<hour>`.
pub fn row_key(line: &[u8]) -> io::Result<String> {
    let k: RowKey<'_> = serde_json::from_slice(line)
        .map_err(|e| io::Error::other(format!("aggregate row without hour or campaign: {e}")))?;
    Ok(format!("{}/{}", k.campaign, k.hour))
}

/// The rows of a batch's files: their non-empty lines, in order.
pub fn rows_of(files: &[Vec<u8>]) -> impl Iterator<Item = &[u8]> {
    files
        .iter()
        .flat_map(|f| f.split(|&b| b == b'\n'))
        .filter(|l| !l.is_empty())
}

/// One batch to publish: the ring range `[start, end)` of the ring `ring_id` and its files.
pub struct Batch<'a> {
    pub ring_id: &'a str,
    pub start: u64,
    pub end: u64,
    pub files: &'a [Vec<u8>],
    /// Decided by this process just now: no attempt to publish it was ever made, so the topic
    /// cannot hold any of its rows and the first attempt does not read the tails.
    pub fresh: bool,
}

pub struct AggregateTopic {
    cfg: AggregateTopicConfig,
    producer: Option<BaseProducer<Context>>,
    stop: Arc<AtomicBool>,
}

impl AggregateTopic {
    pub fn new(cfg: AggregateTopicConfig, stop: Arc<AtomicBool>) -> AggregateTopic {
        AggregateTopic {
            cfg,
            producer: None,
            stop,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "rows also to the Kafka topic {} (brokers {}), exactly once",
            self.cfg.topic, self.cfg.brokers
        )
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.cfg.brokers)
            .set("client.id", "nginx-tracker-shipper-aggregates")
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "2000")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in &self.cfg.properties {
            c.set(k, v);
        }
        c
    }

    fn producer(&mut self) -> io::Result<&BaseProducer<Context>> {
        if self.producer.is_none() {
            let p = self
                .client_config()
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("max.in.flight.requests.per.connection", "5")
                .set("message.timeout.ms", "0")
                .set("linger.ms", "5")
                .set("partitioner", "murmur2_random")
                .create_with_context(Context {
                    r: Mutex::new(Reports::default()),
                })
                .map_err(|e| io::Error::other(format!("aggregate topic producer: {e}")))?;
            self.producer = Some(p);
        }
        Ok(self.producer.as_ref().expect("just made"))
    }

    fn stopping() -> io::Error {
        io::Error::new(
            io::ErrorKind::Interrupted,
            "stopping before the aggregate topic acknowledged the batch: it is published at the next start",
        )
    }

    /// Makes sure every row of `batch` is in the topic once: waits (retrying every 2 s) until
    /// it is. Returns the rows sent (those not found in the topic); an error only when stopped.
    pub fn publish(&mut self, batch: &Batch<'_>) -> io::Result<usize> {
        let t0 = Instant::now();
        let mut failures = 0u32;
        loop {
            if self.stop.load(Relaxed) {
                return Err(Self::stopping());
            }
            match self.try_publish(batch, batch.fresh && failures == 0) {
                Ok(sent) => {
                    if failures > 0 {
                        info!(
                            "aggregate topic {}: batch {}-{} published after {failures} failed attempts",
                            self.cfg.topic, batch.start, batch.end
                        );
                    }
                    debug!(
                        "aggregate topic {}: batch {}-{}: {sent} rows sent in {} ms",
                        self.cfg.topic,
                        batch.start,
                        batch.end,
                        t0.elapsed().as_millis()
                    );
                    return Ok(sent);
                }
                Err(_) if self.stop.load(Relaxed) => return Err(Self::stopping()),
                Err(e) => {
                    if failures == 0 {
                        warn!(
                            "aggregate topic {}: cannot publish the batch {}-{} ({e}); its files and the \
                             ring wait until it is published; retrying every {}s",
                            self.cfg.topic,
                            batch.start,
                            batch.end,
                            RETRY.as_secs()
                        );
                    }
                    failures += 1;
                    let signals = crate::drain::Signals {
                        stop: self.stop.clone(),
                        ..Default::default()
                    };
                    crate::batch::sleep_unless_stopped(RETRY, &signals);
                }
            }
        }
    }

    /// One attempt: the tails read back (unless `first`: none of the batch can be there), the
    /// rows not found sent, every report waited for.
    fn try_publish(&mut self, batch: &Batch<'_>, first: bool) -> Result<usize, String> {
        let stored = if first {
            HashSet::new()
        } else {
            self.stored_rows(batch)?
        };
        let topic = self.cfg.topic.clone();
        let end = batch.end.to_string();
        let start = batch.start.to_string();
        let stop = self.stop.clone();
        let producer = self.producer().map_err(|e| e.to_string())?;
        let mut sent = 0;
        for (i, line) in rows_of(batch.files).enumerate() {
            let row = i as u64;
            if stored.contains(&row) {
                continue;
            }
            let key = row_key(line).map_err(|e| e.to_string())?;
            let row_text = row.to_string();
            let headers = OwnedHeaders::new_with_capacity(4)
                .insert(Header {
                    key: HEADER_RING_ID,
                    value: Some(batch.ring_id),
                })
                .insert(Header {
                    key: HEADER_RING_POS,
                    value: Some(end.as_str()),
                })
                .insert(Header {
                    key: HEADER_BATCH_START,
                    value: Some(start.as_str()),
                })
                .insert(Header {
                    key: HEADER_BATCH_ROW,
                    value: Some(row_text.as_str()),
                });
            let mut record = BaseRecord::to(&topic)
                .key(key.as_str())
                .payload(line)
                .headers(headers);
            producer.context().lock().outstanding += 1;
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        if stop.load(Relaxed) {
                            return Err("stopping".into());
                        }
                        producer.poll(POLL);
                        record = back;
                    }
                    Err((e, _)) => {
                        let mut r = producer.context().lock();
                        r.outstanding -= 1;
                        r.failed.push(e.to_string());
                        break;
                    }
                }
            }
            sent += 1;
        }
        self.wait_reports()?;
        Ok(sent)
    }

    /// The `batch_row`s of `batch` already in the topic (read back from its tails).
    fn stored_rows(&self, batch: &Batch<'_>) -> Result<HashSet<u64>, String> {
        let topics = [self.cfg.topic.clone()];
        let scan = Scan {
            config: self.client_config(),
            topics: &topics,
            ring_id: batch.ring_id,
            // Rows of older batches have a `ring_pos` (their end) <= start: the scan stops there.
            cursor: batch.start + 1,
            max_per_partition: self.cfg.tail_scan_messages,
            stop: &self.stop,
        };
        let tail = kafka_tail::read_tail(&scan)?;
        if tail.cut_short > 0 {
            warn!(
                "aggregate topic {}: {} partitions read back only {} messages deep (tail_scan_messages): \
                 rows deeper are sent again",
                self.cfg.topic, tail.cut_short, self.cfg.tail_scan_messages
            );
        }
        Ok(tail
            .rows
            .into_iter()
            .filter(|&(pos, _)| pos == batch.end)
            .map(|(_, row)| row)
            .collect())
    }

    /// Waits until every row sent has its report; an error if one was refused or the producer
    /// failed for good (then it is dropped: the next attempt reads the tails again and makes a
    /// new one).
    fn wait_reports(&mut self) -> Result<(), String> {
        let Some(producer) = &self.producer else {
            return Ok(());
        };
        let since = Instant::now();
        let mut said = false;
        loop {
            producer.poll(POLL);
            if let Some((code, reason)) = producer.client().fatal_error() {
                self.drop_producer();
                return Err(format!("fatal producer error {code:?}: {reason}"));
            }
            let outstanding = producer.context().lock().outstanding;
            if outstanding == 0 {
                break;
            }
            if !said && since.elapsed() >= SLOW {
                said = true;
                warn!(
                    "aggregate topic {}: no acknowledgement for {}s, {outstanding} rows waiting (brokers \
                     away?); the batch's files and the ring wait",
                    self.cfg.topic,
                    SLOW.as_secs()
                );
            }
            if self.stop.load(Relaxed) {
                return Err("stopping".into());
            }
        }
        let failed = std::mem::take(&mut producer.context().lock().failed);
        match failed.first() {
            None => Ok(()),
            Some(first) => Err(format!("{} rows refused: first: {first}", failed.len())),
        }
    }

    fn drop_producer(&mut self) {
        if let Some(p) = self.producer.take() {
            p.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_keys() {
        let files = vec![
            b"{\"hour\":\"2024-02-29T22:00:00Z\",\"campaign\":\"c/1\",\"events\":1}\n".to_vec(),
            b"{\"hour\":\"2024-02-29T23:00:00Z\",\"campaign\":\"c\\u00e9\",\"events\":2}\n{\"hour\":\"h\",\"campaign\":\"\"}\n"
                .to_vec(),
        ];
        let rows: Vec<&[u8]> = rows_of(&files).collect();
        assert_eq!(rows.len(), 3);
        assert!(rows[1].starts_with(b"{\"hour\":\"2024-02-29T23"));
        assert_eq!(row_key(rows[0]).unwrap(), "c/1/2024-02-29T22:00:00Z");
        assert_eq!(row_key(rows[1]).unwrap(), "c\u{e9}/2024-02-29T23:00:00Z");
        assert_eq!(row_key(rows[2]).unwrap(), "/h");
        assert!(row_key(b"{\"events\":1}").is_err());
    }
}
