//! kafka_dump: reads Kafka topics from the beginning and prints every message as one JSON line.
//! A test tool for the shipper's Kafka sink (t/e2e/kafka-end-to-end.sh), not part of the shipper.
//!
//! ```text
//! cargo run -p tracker-shipper --example kafka_dump -- \
//!     --brokers 127.0.0.1:9092 --topics tracker.impression,tracker.click [--expect-idle-ms 3000]
//!     [--timeout-ms 120000] [--create-topics N]
//! ```
//!
//! Dump mode (the default): assigns every partition of the topics (from the broker's metadata;
//! no consumer group, no offset commits) at `Offset::Beginning` and prints, for each message,
//!
//! ```json
//! {"topic":"tracker.click","partition":0,"offset":12,"key":"summer-sale",
//!  "headers":{"schema_version":"1","event_type":"click"},"value_len":250,"format":"msgpack",
//!  "event":{...}}
//! ```
//!
//! where `event` is the value decoded with `tracker_core::event::decode` in the file sink's JSON
//! form (`"format": "msgpack"`; a value that is a JSON event, from a shipper run with
//! `--format ndjson`, is read as such: `"format": "json"`), or `"undecodable": "<reason>"`
//! instead when it is neither (the keys of a line come in alphabetical order). A missing key is
//! `null`; keys and header values that are not UTF-8 are printed lossily. The dump stops once
//! every partition has been read up to its high watermark and no message arrived for
//! `--expect-idle-ms` (default 3000); it fails (exit 1) if that has not happened after
//! `--timeout-ms` (default 120000). A summary goes to stderr. A topic the broker does not know is
//! reported on stderr and read as empty.
//!
//! `--create-topics N`: creates the topics with N partitions (replication factor 1) with the
//! admin API, and exits; a topic that exists already is fine.
//!
//! Exit codes: 0 done, 1 a Kafka error or the timeout, 2 a bad command line.
//!
//! `KAFKA_DUMP_DEBUG=fetch,protocol` (any librdkafka `debug` contexts) logs librdkafka's
//! debugging output to stderr.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Map, Value};
use tracker_core::event::Event;

struct Args {
    brokers: String,
    topics: Vec<String>,
    idle: Duration,
    timeout: Duration,
    create_topics: Option<i32>,
}

const USAGE: &str = "usage: kafka_dump --brokers HOST:PORT[,...] --topics T1[,T2...] \
[--expect-idle-ms MS] [--timeout-ms MS] [--create-topics PARTITIONS]";

fn parse_args() -> Result<Args, String> {
    let mut brokers = None;
    let mut topics = None;
    let mut idle_ms: u64 = 3000;
    let mut timeout_ms: u64 = 120_000;
    let mut create_topics = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            "--brokers" => brokers = Some(value()?),
            "--topics" => {
                topics = Some(
                    value()?
                        .split(',')
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect::<Vec<_>>(),
                )
            }
            "--expect-idle-ms" => {
                idle_ms = value()?
                    .parse()
                    .map_err(|e| format!("--expect-idle-ms: {e}"))?
            }
            "--timeout-ms" => {
                timeout_ms = value()?.parse().map_err(|e| format!("--timeout-ms: {e}"))?
            }
            "--create-topics" => {
                let n: i32 = value()?
                    .parse()
                    .map_err(|e| format!("--create-topics: {e}"))?;
                if n < 1 {
                    return Err("--create-topics needs at least 1 partition".into());
                }
                create_topics = Some(n)
            }
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    let brokers = brokers.ok_or("--brokers is required")?;
    let topics = topics
        .filter(|t| !t.is_empty())
        .ok_or("--topics is required")?;
    Ok(Args {
        brokers,
        topics,
        idle: Duration::from_millis(idle_ms),
        timeout: Duration::from_millis(timeout_ms),
        create_topics,
    })
}

/// librdkafka's log lines (through rdkafka's `log` calls) to stderr.
struct StderrLog;
impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, r: &log::Record) {
        eprintln!("kafka_dump: {} {}: {}", r.level(), r.target(), r.args());
    }
    fn flush(&self) {}
}

/// The librdkafka `debug` setting from KAFKA_DUMP_DEBUG, if any (then logging to stderr).
fn debug_contexts() -> Option<String> {
    static LOGGER: StderrLog = StderrLog;
    let contexts = std::env::var("KAFKA_DUMP_DEBUG")
        .ok()
        .filter(|v| !v.is_empty())?;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    Some(contexts)
}

fn client_config(brokers: &str) -> ClientConfig {
    // Before ClientConfig::new(), which takes its log level from the logger's.
    let debug = debug_contexts();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    if let Some(contexts) = debug {
        config.set("debug", contexts);
    }
    config
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kafka_dump: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match args.create_topics {
        Some(partitions) => create_topics(&args, partitions),
        None => dump(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kafka_dump: error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Runs a future to completion on this thread (rdkafka's admin client resolves its futures
/// from its own polling thread; no async runtime is needed).
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => thread::park_timeout(Duration::from_millis(100)),
        }
    }
}

fn create_topics(args: &Args, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = client_config(&args.brokers)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let new: Vec<NewTopic> = args
        .topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = block_on(admin.create_topics(new.iter(), &opts))
        .map_err(|e| format!("create topics: {e}"))?;
    let mut failed = Vec::new();
    for r in results {
        match r {
            Ok(topic) => eprintln!("kafka_dump: created {topic} ({partitions} partitions)"),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                eprintln!("kafka_dump: {topic} exists already")
            }
            Err((topic, code)) => failed.push(format!("{topic}: {code}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("create topics: {}", failed.join(", ")))
    }
}

fn new_consumer(brokers: &str) -> Result<BaseConsumer, String> {
    client_config(brokers)
        // Required by librdkafka for a consumer; never used: partitions are assigned by hand
        // and no offset is committed or stored.
        .set("group.id", "kafka_dump")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| format!("consumer: {e}"))
}

/// A partition being read: where it must be read up to.
struct Part {
    /// The high watermark (last fetched).
    high: i64,
    /// The offset after the last message printed (or the low watermark before any).
    next: i64,
    messages: u64,
}

fn dump(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let consumer = new_consumer(&args.brokers)?;
    // Metadata and watermarks come through a second client, on its own connection: a broker that
    // answers one request at a time per connection (tansu does) would otherwise make each
    // watermark query wait behind the consumer's long-polling fetch (fetch.wait.max.ms).
    let probe = new_consumer(&args.brokers)?;
    let meta_timeout = Duration::from_secs(30);

    let mut parts: BTreeMap<(String, i32), Part> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for topic in &args.topics {
        let md = probe
            .fetch_metadata(Some(topic), meta_timeout)
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            eprintln!("kafka_dump: warning: no metadata for topic {topic}; read as empty");
            continue;
        };
        if let Some(err) = t.error() {
            eprintln!(
                "kafka_dump: warning: topic {topic}: {:?}; read as empty",
                RDKafkaErrorCode::from(err)
            );
            continue;
        }
        for p in t.partitions() {
            let (low, high) = probe
                .fetch_watermarks(topic, p.id(), meta_timeout)
                .map_err(|e| format!("watermarks of {topic}/{}: {e}", p.id()))?;
            parts.insert(
                (topic.clone(), p.id()),
                Part {
                    high,
                    next: low,
                    messages: 0,
                },
            );
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .map_err(|e| format!("assign {topic}/{}: {e}", p.id()))?;
        }
    }
    if parts.is_empty() {
        eprintln!("kafka_dump: no partitions to read");
        return Ok(());
    }
    consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut total: u64 = 0;
    let mut undecodable: u64 = 0;
    let mut last_message = Instant::now();
    let mut last_check = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last_message = Instant::now();
                total += 1;
                let mut line = Map::new();
                line.insert("topic".into(), json!(m.topic()));
                line.insert("partition".into(), json!(m.partition()));
                line.insert("offset".into(), json!(m.offset()));
                line.insert(
                    "key".into(),
                    m.key()
                        .map_or(Value::Null, |k| json!(String::from_utf8_lossy(k))),
                );
                let mut headers = Map::new();
                if let Some(hs) = m.headers() {
                    for h in hs.iter() {
                        let v = h
                            .value
                            .map_or(Value::Null, |v| json!(String::from_utf8_lossy(v)));
                        headers.insert(h.key.to_string(), v);
                    }
                }
                line.insert("headers".into(), Value::Object(headers));
                let payload = m.payload().unwrap_or(&[]);
                line.insert("value_len".into(), json!(payload.len()));
                match decode_value(payload) {
                    Ok((format, ev)) => {
                        let v =
                            serde_json::to_value(&ev).map_err(|e| format!("event to JSON: {e}"))?;
                        line.insert("format".into(), json!(format));
                        line.insert("event".into(), v);
                    }
                    Err(e) => {
                        undecodable += 1;
                        line.insert("undecodable".into(), json!(e));
                    }
                }
                serde_json::to_writer(&mut out, &Value::Object(line))
                    .map_err(|e| format!("stdout: {e}"))?;
                out.write_all(b"\n").map_err(|e| format!("stdout: {e}"))?;
                if let Some(p) = parts.get_mut(&(m.topic().to_string(), m.partition())) {
                    p.next = p.next.max(m.offset() + 1);
                    p.messages += 1;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => eprintln!("kafka_dump: warning: {e}"),
            None => {}
        }
        if last_message.elapsed() >= args.idle && last_check.elapsed() >= Duration::from_millis(500)
        {
            last_check = Instant::now();
            if caught_up(&consumer, &probe, &mut parts)? {
                break;
            }
        }
        if started.elapsed() >= args.timeout {
            let _ = out.flush();
            summary(&parts, total, undecodable, started);
            return Err(format!(
                "timeout after {:?}: not every partition was read up to its high watermark",
                args.timeout
            ));
        }
    }
    out.flush().map_err(|e| format!("stdout: {e}"))?;
    summary(&parts, total, undecodable, started);
    Ok(())
}

/// A message value: the event's MessagePack record (`tracker_core::event::decode`), or, from a
/// shipper run with `--format ndjson`, its JSON object.
fn decode_value(payload: &[u8]) -> Result<(&'static str, Event), String> {
    match tracker_core::event::decode(payload) {
        Ok(ev) => Ok(("msgpack", ev)),
        Err(e) if payload.first() == Some(&b'{') => serde_json::from_slice::<Event>(payload)
            .map(|ev| ("json", ev))
            .map_err(|je| format!("neither MessagePack ({e}) nor a JSON event ({je})")),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether every partition has been read up to its current high watermark (fetched again, so
/// messages produced while the dump runs are waited for too).
fn caught_up(
    consumer: &BaseConsumer,
    probe: &BaseConsumer,
    parts: &mut BTreeMap<(String, i32), Part>,
) -> Result<bool, String> {
    // The consumer's position covers offsets it skipped (control records, compaction).
    let mut position: BTreeMap<(String, i32), i64> = BTreeMap::new();
    if let Ok(tpl) = consumer.position() {
        for e in tpl.elements() {
            if let Offset::Offset(o) = e.offset() {
                position.insert((e.topic().to_string(), e.partition()), o);
            }
        }
    }
    for ((topic, partition), p) in parts.iter_mut() {
        let (_, high) = probe
            .fetch_watermarks(topic, *partition, Duration::from_secs(10))
            .map_err(|e| format!("watermarks of {topic}/{partition}: {e}"))?;
        p.high = high;
        let at = p.next.max(
            position
                .get(&(topic.clone(), *partition))
                .copied()
                .unwrap_or(0),
        );
        if at < high {
            return Ok(false);
        }
    }
    Ok(true)
}

fn summary(parts: &BTreeMap<(String, i32), Part>, total: u64, undecodable: u64, started: Instant) {
    let detail: Vec<String> = parts
        .iter()
        .map(|((t, p), part)| format!("{t}/{p}: {} (high {})", part.messages, part.high))
        .collect();
    eprintln!(
        "kafka_dump: {total} messages ({undecodable} undecodable) from {} partitions in {:.1}s: {}",
        parts.len(),
        started.elapsed().as_secs_f64(),
        detail.join(", ")
    );
}
