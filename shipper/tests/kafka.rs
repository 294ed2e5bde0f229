//! The kafka sink against librdkafka's mock cluster (real Kafka protocol on 127.0.0.1 sockets,
//! brokers that can be taken down and errors that can be injected), driving the real shipper
//! binary: routing, keys, headers and values; exactly once without crashes (idempotent
//! producer); broker outages with the events kept in the ring; dead letters; a SIGKILL after
//! the broker's acknowledgement or before it, a producer reset, a tail from an older ring, empty
//! topics: exactly once (the partitions' tails read back); two sinks with their own cursors.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Offset, TopicPartitionList};
use tracker_core::event::{decode, Kind};
use tracker_core::ring::Ring;

const TYPES: [&str; 5] = ["impression", "click", "conversion", "video", "signup"];

/// One message as consumed.
#[derive(Debug, Clone)]
struct Got {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<String>,
    headers: BTreeMap<String, String>,
    value: Vec<u8>,
}

fn mock(brokers: i32) -> MockCluster<'static, DefaultProducerContext> {
    MockCluster::new(brokers).expect("librdkafka mock cluster")
}

/// Reads every message of `topics` from the beginning (no consumer group offsets).
fn consume_all(bootstrap: &str, topics: &[&str]) -> Vec<Got> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "shipper-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut highs = HashMap::new();
    for &t in topics {
        let md = c.fetch_metadata(Some(t), Duration::from_secs(10)).unwrap();
        for p in md.topics()[0].partitions() {
            let (_, high) = c
                .fetch_watermarks(t, p.id(), Duration::from_secs(10))
                .unwrap();
            if high > 0 {
                tpl.add_partition_offset(t, p.id(), Offset::Beginning)
                    .unwrap();
                highs.insert((t.to_string(), p.id()), high);
            }
        }
    }
    let total: i64 = highs.values().sum();
    let mut out = Vec::new();
    if total == 0 {
        return out;
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < total && Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(h) = m.headers() {
                    for x in h.iter() {
                        headers.insert(
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Got {
                    topic: m.topic().to_string(),
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    headers,
                    value: m.payload().unwrap_or_default().to_vec(),
                });
            }
            Some(Err(e)) => panic!("consumer: {e}"),
            None => {}
        }
    }
    assert_eq!(out.len() as i64, total, "could not read every message back");
    out
}

fn topic_of(t: &str) -> String {
    match t {
        "signup" => "signups".into(),
        t if Kind::of_type(t) != Kind::Custom => format!("tracker.{t}"),
        _ => "tracker.custom".into(),
    }
}

const ALL_TOPICS: [&str; 6] = [
    "tracker.impression",
    "tracker.click",
    "tracker.conversion",
    "tracker.video",
    "tracker.custom",
    "signups",
];

/// Writes `n` events of TYPES over 10 campaigns, with a click id on clicks.
fn write_mixed(ring: &Ring, n: usize, from: usize) -> Vec<(Written, String)> {
    (from..from + n)
        .map(|i| {
            let t = TYPES[i % TYPES.len()];
            let camp = format!("camp-{}", i % 10);
            let click = format!("clk-{i}");
            let w = event_for(
                t,
                T0 + i as u64 * 1000,
                i as u64,
                &camp,
                (t == "click").then_some(click.as_str()),
            );
            ring.write(Kind::of_type(t).index(), &w.payload, std::process::id())
                .expect("ring write");
            (w, camp)
        })
        .collect()
}

fn kafka_cmd(f: &Fixture, bootstrap: &str, extra: &[&str]) -> Command {
    let conf = f.tmp.path().join("shipper.toml");
    std::fs::write(
        &conf,
        "[kafka]\nlinger_ms = 2\n[kafka.topics]\nsignup = 'signups'\n",
    )
    .unwrap();
    let mut c = Command::new(BIN);
    c.arg("--config")
        .arg(&conf)
        .arg("--ring")
        .arg(&f.ring_path)
        .arg("--sink")
        .arg("kafka")
        .arg("--brokers")
        .arg(bootstrap)
        .arg("--dead-letter-dir")
        .arg(f.tmp.path().join("dead"))
        .arg("--flush-interval-ms")
        .arg("100")
        .args(extra)
        .env_remove(CRASH_ENV)
        .env("RUST_LOG", "info");
    c
}

/// A running shipper, killed if the test panics before it stops it.
struct Running(Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn(mut c: Command) -> Running {
    Running(
        c.stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scrape(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    r
}

/// The value of one metric line (exact name with labels) in a scrape.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

fn check_message(g: &Got, w: &Written, camp: &str, ring: &Ring) {
    assert_eq!(
        g.topic,
        topic_of(&w.event_type),
        "topic of a {}",
        w.event_type
    );
    assert_eq!(g.key.as_deref(), Some(camp), "key");
    assert_eq!(
        g.headers.get("schema_version").map(String::as_str),
        Some("1")
    );
    assert_eq!(g.headers.get("event_type"), Some(&w.event_type));
    assert_eq!(
        g.headers.get("ring_id"),
        Some(&format!("{:032x}", ring.id())),
        "ring_id header"
    );
    let pos: u64 = g.headers["ring_pos"].parse().expect("a decimal ring_pos");
    assert!(
        pos < ring.producer_pos() && pos.is_multiple_of(16),
        "ring_pos {pos}"
    );
    // The value is the record exactly as nginx wrote it.
    assert_eq!(g.value, w.payload, "value of {}", w.id_hex);
}

/// Ids of the consumed messages -> how many times.
fn id_counts(got: &[Got]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for g in got {
        let ev = decode(&g.value).expect("a value that decodes");
        *m.entry(hex(&ev.id)).or_insert(0) += 1;
    }
    m
}

#[test]
fn kafka_routes_keys_and_delivers_each_event_once() {
    let cluster = mock(3);
    let b = cluster.bootstrap_servers();
    let f = Fixture::new(4 << 20);
    let written = write_mixed(f.ring(), 3000, 0);
    let out = kafka_cmd(&f, &b, &["--once"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "shipper failed: {log}");
    assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos(), "{log}");

    let got = consume_all(&b, &ALL_TOPICS);
    assert_eq!(
        got.len(),
        written.len(),
        "one message per event, no duplicates"
    );
    let by_id: HashMap<String, &Got> = got
        .iter()
        .map(|g| (hex(&decode(&g.value).unwrap().id), g))
        .collect();
    for (w, camp) in &written {
        let g = by_id
            .get(&w.id_hex)
            .unwrap_or_else(|| panic!("event {} missing", w.id_hex));
        check_message(g, w, camp, f.ring());
    }
    // ring_pos names one event.
    let positions: std::collections::HashSet<&String> =
        got.iter().map(|g| &g.headers["ring_pos"]).collect();
    assert_eq!(positions.len(), got.len(), "ring_pos repeated");
    // One campaign's events stay in order: in its partition, by offset, seq grows.
    let mut last: HashMap<(String, String), (i32, i64, u64)> = HashMap::new();
    let mut sorted = got.clone();
    sorted.sort_by_key(|g| (g.topic.clone(), g.partition, g.offset));
    for g in &sorted {
        let ev = decode(&g.value).unwrap();
        let seq: u64 = ev
            .dims
            .iter()
            .find(|(k, _)| k == "seq")
            .unwrap()
            .1
            .parse()
            .unwrap();
        let k = (g.topic.clone(), ev.campaign.clone());
        if let Some((p, _, s)) = last.get(&k) {
            assert_eq!(
                *p, g.partition,
                "campaign {} spread over partitions",
                ev.campaign
            );
            assert!(seq > *s, "campaign {} out of order", ev.campaign);
        }
        last.insert(k, (g.partition, g.offset, seq));
    }
}

#[test]
fn kafka_broker_outage_keeps_events_in_the_ring_then_resumes() {
    let cluster = mock(3);
    let b = cluster.bootstrap_servers();
    let f = Fixture::new(4 << 20);
    let port = free_port();
    let mut child = spawn(kafka_cmd(
        &f,
        &b,
        &["--metrics", &format!("127.0.0.1:{port}")],
    ));
    let ring = f.ring();
    let mut written = write_mixed(ring, 500, 0);
    assert!(
        wait_until(Duration::from_secs(30), || ring.consumer_pos()
            == ring.producer_pos()),
        "first events not acknowledged"
    );
    let up = |t: &str| metric(t, "tracker_shipper_destination_up{sink=\"kafka\"}");
    assert_eq!(up(&scrape(port)), Some(1.0));

    // Every broker down: the events stay in the ring, the shipper says so.
    for id in 1..=3 {
        cluster.broker_down(id).unwrap();
    }
    let before = ring.consumer_pos();
    written.extend(write_mixed(ring, 500, 500));
    assert!(
        wait_until(Duration::from_secs(30), || up(&scrape(port)) == Some(0.0)),
        "the outage is not reported in the metrics:\n{}",
        scrape(port)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        ring.consumer_pos(),
        before,
        "acknowledged while the brokers were down"
    );
    let m = scrape(port);
    let lag = metric(&m, "tracker_ring_lag_bytes{sink=\"kafka\"}").unwrap();
    assert!(lag > 0.0, "{m}");
    assert!(
        metric(
            &m,
            "tracker_shipper_events_read_total{sink=\"kafka\",type=\"click\"}"
        )
        .unwrap()
            >= 100.0
    );

    // Back: everything is delivered, nothing twice (same producer, idempotent).
    for id in 1..=3 {
        cluster.broker_up(id).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(60), || ring.consumer_pos()
            == ring.producer_pos()),
        "not resumed after the outage"
    );
    assert_eq!(up(&scrape(port)), Some(1.0));
    signal(&child, libc::SIGTERM);
    assert!(wait_timeout(&mut child, Duration::from_secs(20)).success());
    let log = stderr_of(&mut child);
    assert_eq!(log.matches("brokers unreachable").count(), 1, "{log}");
    assert_eq!(log.matches("brokers reachable again").count(), 1, "{log}");

    let got = consume_all(&b, &ALL_TOPICS);
    let counts = id_counts(&got);
    for (w, _) in &written {
        assert_eq!(counts.get(&w.id_hex), Some(&1), "event {}", w.id_hex);
    }
    assert_eq!(got.len(), written.len());
}

#[test]
fn kafka_sigterm_during_an_outage_keeps_the_events() {
    let cluster = mock(1);
    let b = cluster.bootstrap_servers();
    cluster.broker_down(1).unwrap();
    let f = Fixture::new(1 << 20);
    let ring = f.ring();
    let written = write_mixed(ring, 200, 0);
    let mut child = spawn(kafka_cmd(&f, &b, &[]));
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, libc::SIGTERM);
    let st = wait_timeout(&mut child, Duration::from_secs(20));
    let log = stderr_of(&mut child);
    assert!(st.success(), "{st}: {log}");
    assert_eq!(
        ring.consumer_pos(),
        0,
        "acknowledged without a broker: {log}"
    );

    // The next run delivers them.
    cluster.broker_up(1).unwrap();
    let out = kafka_cmd(&f, &b, &["--once"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = id_counts(&consume_all(&b, &ALL_TOPICS));
    for (w, _) in &written {
        assert!(counts.contains_key(&w.id_hex), "event {} lost", w.id_hex);
    }
}

#[test]
fn kafka_refused_messages_go_to_the_dead_letters_and_transient_errors_are_retried() {
    let cluster = mock(1);
    let b = cluster.bootstrap_servers();
    // The broker refuses the next produce requests for a while with retriable errors:
    // librdkafka retries them (idempotently).
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 4],
    );
    let f = Fixture::new(4 << 20);
    let ring = f.ring();
    let mut written = write_mixed(ring, 300, 0);
    // One event larger than the producer accepts (message.max.bytes below).
    let big_dims = "x".repeat(20_000);
    let big = {
        let mut w = event_for("click", T0, 9999, "camp-big", None);
        let dims: [(&[u8], &[u8]); 1] = [(b"blob", big_dims.as_bytes())];
        let ev = tracker_core::event::EventRef {
            id: new_id(),
            ts_us: T0,
            event_type: b"click",
            campaign: b"camp-big",
            dims: &dims,
            status: 302,
            ..Default::default()
        };
        w.payload.clear();
        tracker_core::event::encode(&ev, &mut w.payload);
        w.id_hex = hex(&ev.id);
        w
    };
    ring.write(Kind::Click.index(), &big.payload, std::process::id())
        .unwrap();
    written.extend(write_mixed(ring, 300, 300));
    let mut c = kafka_cmd(&f, &b, &["--once"]);
    // Over the config kafka_cmd wrote: a producer limit below the big event's size.
    std::fs::write(
        f.tmp.path().join("shipper.toml"),
        "[kafka]\n[kafka.topics]\nsignup = 'signups'\n[kafka.properties]\n'message.max.bytes' = 10000\n",
    )
    .unwrap();
    let out = c.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("refused for good"), "{log}");
    assert_eq!(ring.consumer_pos(), ring.producer_pos());

    let dead: Vec<_> = std::fs::read_dir(f.tmp.path().join("dead"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let text = std::fs::read_to_string(&dead[0]).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["topic"], "tracker.click");
    assert_eq!(lines[0]["key"], "camp-big");
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("too large"),
        "{text}"
    );
    let hex_value: String = big.payload.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(lines[0]["value_hex"], hex_value.as_str());

    let counts = id_counts(&consume_all(&b, &ALL_TOPICS));
    assert!(!counts.contains_key(&big.id_hex));
    for (w, _) in &written {
        assert_eq!(counts.get(&w.id_hex), Some(&1), "event {}", w.id_hex);
    }
}

/// Every event exactly once, and how many were read back from the tails (the shipper's log).
fn assert_exactly_once(got: &[Got], written: &[(Written, String)], log: &str) {
    let counts = id_counts(got);
    let lost = written
        .iter()
        .filter(|(w, _)| !counts.contains_key(&w.id_hex))
        .count();
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    assert_eq!(
        (lost, duplicates),
        (0, 0),
        "(lost, duplicates) of {} events: {log}",
        written.len()
    );
    assert_eq!(got.len(), written.len(), "{log}");
}

#[test]
fn kafka_sigkill_after_the_ack_sends_nothing_twice() {
    let cluster = mock(1);
    let b = cluster.bootstrap_servers();
    let f = Fixture::new(4 << 20);
    let ring = f.ring();
    let written = write_mixed(ring, 2000, 0);
    // Dies after the broker acknowledged the second batch, before the cursor moved.
    let mut c = kafka_cmd(&f, &b, &["--once", "--max-batch-events", "500"]);
    c.env(CRASH_ENV, "kafka-acked:2");
    let st = c.output().unwrap().status;
    assert!(!st.success(), "the crash hook did not fire");
    let pos = ring.consumer_pos();
    assert!(pos > 0 && pos < ring.producer_pos(), "cursor {pos}");

    let out = kafka_cmd(&f, &b, &["--once", "--max-batch-events", "500"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(ring.consumer_pos(), ring.producer_pos());
    // The second batch was acknowledged but not committed: read back from the tails, it is
    // not sent again.
    assert_exactly_once(&consume_all(&b, &ALL_TOPICS), &written, &log);
    assert!(
        log.contains("500 events of this ring from position"),
        "{log}"
    );
}

/// Killed while the broker has the messages but its acknowledgements are on their way (a
/// slow network): some are stored, none acknowledged, the cursor has not moved.
#[test]
fn kafka_sigkill_before_the_ack_sends_nothing_twice() {
    let cluster = mock(1);
    let b = cluster.bootstrap_servers();
    let f = Fixture::new(4 << 20);
    let ring = f.ring();
    let mut written = write_mixed(ring, 500, 0);
    let mut child = spawn(kafka_cmd(&f, &b, &["--max-batch-events", "500"]));
    assert!(
        wait_until(Duration::from_secs(30), || ring.consumer_pos()
            == ring.producer_pos()),
        "first events not acknowledged"
    );
    let acked = ring.consumer_pos();
    // From now on the broker stores what it gets but answers 4 s later.
    cluster
        .broker_round_trip_time(1, Duration::from_secs(4))
        .unwrap();
    written.extend(write_mixed(ring, 1500, 500));
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(ring.consumer_pos(), acked, "acknowledged already");
    cluster
        .broker_round_trip_time(1, Duration::from_millis(0))
        .unwrap();
    let stored = consume_all(&b, &ALL_TOPICS).len();
    assert!(
        stored > 500,
        "the broker got nothing after the first batch before the kill: the test proves nothing"
    );

    let out = kafka_cmd(&f, &b, &["--once", "--max-batch-events", "500"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(ring.consumer_pos(), ring.producer_pos());
    assert_exactly_once(&consume_all(&b, &ALL_TOPICS), &written, &log);
    assert!(
        log.contains(&format!(
            "{} events of this ring from position {acked}",
            stored - 500
        )),
        "{stored} stored before the kill: {log}"
    );
}

/// The topics hold events of an older ring (the file was removed and nginx made a new one) at
/// the very positions this ring's events have: they are not this ring's, nothing is skipped.
#[test]
fn kafka_tail_of_an_older_ring_is_not_taken_for_this_one() {
    let cluster = mock(1);
    let b = cluster.bootstrap_servers();
    let old = Fixture::new(4 << 20);
    let old_written = write_mixed(old.ring(), 600, 0);
    let out = kafka_cmd(&old, &b, &["--once"]).output().unwrap();
    assert!(out.status.success());

    let f = Fixture::new(4 << 20);
    assert_ne!(f.ring().id(), old.ring().id());
    // Same sizes, so the same positions as the old ring's events.
    let written = write_mixed(f.ring(), 600, 0);
    assert_eq!(f.ring().producer_pos(), old.ring().producer_pos());
    let out = kafka_cmd(&f, &b, &["--once"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let got = consume_all(&b, &ALL_TOPICS);
    let mut all = old_written;
    all.extend(written);
    assert_exactly_once(&got, &all, &log);
}

/// Kafka's Java client hash (`Utils.murmur2`), for checking the partitioner.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let r = chunks.remainder();
    if r.len() >= 3 {
        h ^= u32::from(r[2]) << 16;
    }
    if r.len() >= 2 {
        h ^= u32::from(r[1]) << 8;
    }
    if !r.is_empty() {
        h ^= u32::from(r[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[test]
fn murmur2_is_the_java_clients() {
    // Kafka's UtilsTest.testMurmur2.
    for (s, want) in [
        ("21", -973932308i32),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        ),
        ("abc", 479470107),
    ] {
        assert_eq!(murmur2(s.as_bytes()) as i32, want, "{s}");
    }
}

/// Topics that exist with 12 partitions each and nothing in them, and topics that do not exist
/// yet: nothing to skip, everything sent once; the tails read quickly.
#[test]
fn kafka_empty_topics_send_everything() {
    let cluster = mock(3);
    let b = cluster.bootstrap_servers();
    for t in &ALL_TOPICS[..4] {
        cluster.create_topic(t, 12, 1).unwrap();
    }
    let f = Fixture::new(4 << 20);
    let written = write_mixed(f.ring(), 1000, 0);
    let out = kafka_cmd(&f, &b, &["--once"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("read the tails of 48 partitions (0 messages)"),
        "{log}"
    );
    let got = consume_all(&b, &ALL_TOPICS);
    assert_exactly_once(&got, &written, &log);
    // Partitioned as the Java client does: (murmur2(key) & 0x7fffffff) % partitions.
    let mut used = std::collections::HashSet::new();
    for g in got
        .iter()
        .filter(|g| ALL_TOPICS[..4].contains(&g.topic.as_str()))
    {
        let key = g.key.as_deref().expect("keyed by campaign");
        let want = (murmur2(key.as_bytes()) & 0x7fff_ffff) % 12;
        assert_eq!(g.partition as u32, want, "{} key {key}", g.topic);
        used.insert(g.partition);
    }
    assert!(used.len() > 3, "10 campaigns on partitions {used:?}");
}

/// The tails cannot be read for a while (the broker refuses the fetches: no right to read):
/// the sink sends nothing meanwhile, says why, and once it can read them sends each event once.
#[test]
fn kafka_unreadable_tails_make_the_sink_wait_not_guess() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = mock(1);
    let b = cluster.bootstrap_servers();
    let f = Fixture::new(4 << 20);
    let ring = f.ring();
    let mut written = write_mixed(ring, 100, 0);
    let out = kafka_cmd(&f, &b, &["--once"]).output().unwrap();
    assert!(out.status.success());
    written.extend(write_mixed(ring, 100, 100));
    let before = ring.consumer_pos();
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 2],
    );
    let out = kafka_cmd(&f, &b, &["--once"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let waited = log.find("cannot read the partitions' tails").expect(&log);
    let read = log.find("read the tails of").expect(&log);
    assert!(waited < read, "{log}");
    assert!(ring.consumer_pos() > before);
    assert_exactly_once(&consume_all(&b, &ALL_TOPICS), &written, &log);
}

/// A producer reset in the middle of a run (a delivery error the sink cannot leave to
/// librdkafka: the batch is read again from the ring with a new producer) after part of the
/// batch was stored: the rest is sent, what was stored is not sent again.
#[test]
fn kafka_producer_reset_sends_nothing_twice() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = mock(1);
    let b = cluster.bootstrap_servers();
    cluster.create_topic("tracker.click", 1, 1).unwrap();
    let f = Fixture::new(4 << 20);
    let ring = f.ring();
    let written = write_mixed(ring, 1000, 0);
    // The first produce requests succeed, then one fails for good (not retriable, not a
    // reason to give up on its events): the batch is sent again.
    let mut errors = vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR; 3];
    errors.push(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN);
    cluster.request_errors(RDKafkaApiKey::Produce, &errors);
    let mut child = spawn(kafka_cmd(&f, &b, &["--max-batch-events", "1000"]));
    assert!(
        wait_until(Duration::from_secs(60), || ring.consumer_pos()
            == ring.producer_pos()),
        "not delivered"
    );
    signal(&child, libc::SIGTERM);
    assert!(wait_timeout(&mut child, Duration::from_secs(20)).success());
    let log = stderr_of(&mut child);
    assert!(log.contains("the batch is sent again"), "no reset: {log}");
    assert_exactly_once(&consume_all(&b, &ALL_TOPICS), &written, &log);
}

#[test]
fn two_sinks_have_their_own_cursors() {
    let cluster = mock(1);
    let b = cluster.bootstrap_servers();
    cluster.broker_down(1).unwrap();
    let f = Fixture::new(4 << 20);
    let ring = f.ring();
    let written = write_mixed(ring, 1000, 0);
    let mut c = kafka_cmd(&f, &b, &[]);
    c.arg("--sink").arg("file").arg("--dir").arg(&f.out);
    let mut child = spawn(c);

    // The file sink ships everything while Kafka is away; the ring keeps the events for Kafka.
    let stats = || {
        let o = f.cmd(&["stats"]).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(30), || stats()["sinks"]["file"]
            ["lag_bytes"]
            == 0),
        "file sink did not catch up: {}",
        stats()
    );
    let s = stats();
    assert!(
        s["sinks"]["kafka"]["lag_bytes"].as_u64().unwrap() > 0,
        "{s}"
    );
    assert_eq!(
        ring.consumer_pos(),
        0,
        "the ring moved past events Kafka does not have"
    );
    let only: Vec<Written> = written.iter().map(|(w, _)| w.clone()).collect();
    check_exactly_once(&f.out, &only);

    cluster.broker_up(1).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || ring.consumer_pos()
            == ring.producer_pos()),
        "kafka did not catch up: {}",
        stats()
    );
    signal(&child, libc::SIGTERM);
    assert!(wait_timeout(&mut child, Duration::from_secs(20)).success());
    let counts = id_counts(&consume_all(&b, &ALL_TOPICS));
    for w in &only {
        assert_eq!(counts.get(&w.id_hex), Some(&1), "event {}", w.id_hex);
    }
    check_exactly_once(&f.out, &only);
}

#[test]
fn kafka_unknown_topic_and_denied_topic_are_dead_letters_not_silence() {
    use rdkafka::types::RDKafkaRespErr;
    let cluster = mock(1);
    let b = cluster.bootstrap_servers();
    cluster
        .topic_error(
            "tracker.video",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
        .unwrap();
    cluster
        .topic_error(
            "tracker.conversion",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED,
        )
        .unwrap();
    let f = Fixture::new(4 << 20);
    let written = write_mixed(f.ring(), 100, 0);
    let c = kafka_cmd(&f, &b, &["--once"]);
    std::fs::write(
        f.tmp.path().join("shipper.toml"),
        "[kafka]\n[kafka.topics]\nsignup = 'signups'\n[kafka.properties]\n'topic.metadata.propagation.max.ms' = 1000\n",
    )
    .unwrap();
    let mut c = c;
    let out = c.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("refused for good"), "{log}");
    let mut dead = Vec::new();
    for e in std::fs::read_dir(f.tmp.path().join("dead")).unwrap() {
        for l in std::fs::read_to_string(e.unwrap().path()).unwrap().lines() {
            dead.push(serde_json::from_str::<serde_json::Value>(l).unwrap());
        }
    }
    let dead_topics: std::collections::BTreeSet<String> = dead
        .iter()
        .map(|d| d["topic"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        dead_topics.into_iter().collect::<Vec<_>>(),
        ["tracker.conversion", "tracker.video"],
        "{dead:?}"
    );
    assert_eq!(dead.len(), 40, "every video and conversion event: {dead:?}");
    let counts = id_counts(&consume_all(
        &b,
        &["tracker.impression", "tracker.click", "signups"],
    ));
    for (w, _) in &written {
        let delivered = counts.get(&w.id_hex).copied().unwrap_or(0);
        let expect = usize::from(w.event_type != "video" && w.event_type != "conversion");
        assert_eq!(delivered, expect, "{} event {}", w.event_type, w.id_hex);
    }
    assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos());
}

/// Bad rows as a topic: events refused for good also go to `dead_letter_topic`, value and key
/// as they were, the reason and where they came from in headers; sent once even when the
/// shipper is killed after the broker acknowledged them.
#[test]
fn kafka_bad_rows_go_to_the_dead_letter_topic_too() {
    use rdkafka::types::RDKafkaRespErr;
    let cluster = mock(1);
    let b = cluster.bootstrap_servers();
    cluster
        .topic_error(
            "tracker.video",
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        )
        .unwrap();
    let f = Fixture::new(4 << 20);
    let written = write_mixed(f.ring(), 100, 0);
    let conf = "[kafka]\ndead_letter_topic = 'tracker.bad'\n[kafka.topics]\nsignup = 'signups'\n\
                [kafka.properties]\n'topic.metadata.propagation.max.ms' = 1000\n";
    let mut c = kafka_cmd(&f, &b, &["--once", "--max-batch-events", "50"]);
    std::fs::write(f.tmp.path().join("shipper.toml"), conf).unwrap();
    // Killed after the second batch's events and bad rows were acknowledged.
    c.env(CRASH_ENV, "kafka-acked:2");
    assert!(!c.output().unwrap().status.success(), "no crash");
    let mut c = kafka_cmd(&f, &b, &["--once", "--max-batch-events", "50"]);
    std::fs::write(f.tmp.path().join("shipper.toml"), conf).unwrap();
    let out = c.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos());

    let bad = consume_all(&b, &["tracker.bad"]);
    let videos: Vec<&Written> = written
        .iter()
        .map(|(w, _)| w)
        .filter(|w| w.event_type == "video")
        .collect();
    assert_eq!(
        bad.len(),
        videos.len(),
        "one bad row per video event: {log}"
    );
    let counts = id_counts(&bad);
    for w in &videos {
        assert_eq!(counts.get(&w.id_hex), Some(&1), "bad row of {}", w.id_hex);
    }
    for g in &bad {
        assert_eq!(g.headers["original_topic"], "tracker.video");
        assert!(
            g.headers["reason"].to_lowercase().contains("unknown"),
            "{:?}",
            g.headers
        );
        assert_eq!(g.headers["ring_id"], format!("{:032x}", f.ring().id()));
        assert!(g.headers["ring_pos"].parse::<u64>().is_ok());
    }
    let good = consume_all(
        &b,
        &[
            "tracker.impression",
            "tracker.click",
            "tracker.conversion",
            "signups",
        ],
    );
    let others: Vec<(Written, String)> = written
        .iter()
        .filter(|(w, _)| w.event_type != "video")
        .cloned()
        .collect();
    assert_exactly_once(&good, &others, &log);
}

/// The kafka sink's drain rate into librdkafka's mock cluster (in this process: the broker side
/// shares the CPU). Not a test: a measurement, printed.
/// `cargo test --release -p tracker-shipper --test kafka -- --ignored --nocapture kafka_drain_rate`.
/// `KAFKA_BENCH_BROKERS=127.0.0.1:9092` measures against a real broker instead.
#[test]
#[ignore]
fn kafka_drain_rate() {
    let n = 300_000;
    let cluster = mock(1);
    let b = std::env::var("KAFKA_BENCH_BROKERS").unwrap_or_else(|_| cluster.bootstrap_servers());
    let f = Fixture::new(1 << 28);
    let t = Instant::now();
    let written = write_mixed(f.ring(), n, 0);
    let bytes: usize = written.iter().map(|(w, _)| w.payload.len()).sum();
    eprintln!(
        "wrote {n} events ({} bytes each) in {:?}",
        bytes / n,
        t.elapsed()
    );
    for (format, compression) in [("msgpack", "lz4"), ("json", "lz4"), ("msgpack", "zstd")] {
        let start = f.ring().consumer_pos();
        let t = Instant::now();
        let o = kafka_cmd(
            &f,
            &b,
            &["--once", "--format", format, "--compression", compression],
        )
        .output()
        .unwrap();
        let el = t.elapsed();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos());
        eprintln!(
            "kafka {format} {compression}: {n} events in {el:?}: {:.0} events/s, {:.1} MB/s of payload",
            n as f64 / el.as_secs_f64(),
            bytes as f64 / el.as_secs_f64() / 1e6,
        );
        let _ = start;
        write_mixed(f.ring(), n, n);
    }
}

/// CPU time of the waited-for children so far (user + system), in µs.
fn children_cpu_us() -> u64 {
    // SAFETY: getrusage fills the struct we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) },
        0
    );
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// The shipper's cost with 12 partitions per topic: start-up (reading the tails back) and CPU
/// per event with the `ring_id`/`ring_pos` headers. Not a test: a measurement, printed.
/// `cargo test --release -p tracker-shipper --test kafka -- --ignored --nocapture kafka_cost`;
/// `KAFKA_BENCH_BROKERS=127.0.0.1:9092` (topics created beforehand) measures against a real
/// broker, `KAFKA_BENCH_SHIPPER=path` another shipper binary (an older build, to compare).
#[test]
#[ignore]
fn kafka_cost() {
    let n: usize = std::env::var("KAFKA_BENCH_EVENTS").map_or(200_000, |v| v.parse().unwrap());
    let cluster = mock(1);
    let b = std::env::var("KAFKA_BENCH_BROKERS").unwrap_or_else(|_| {
        for t in &ALL_TOPICS {
            cluster.create_topic(t, 12, 1).unwrap();
        }
        cluster.bootstrap_servers()
    });
    let bin = std::env::var("KAFKA_BENCH_SHIPPER").unwrap_or_else(|_| BIN.to_string());
    let shipper = |f: &Fixture| {
        let c = kafka_cmd(f, &b, &["--once", "--max-batch-events", "5000"]);
        let mut cmd = Command::new(&bin);
        cmd.args(c.get_args())
            .env_remove(CRASH_ENV)
            .env("RUST_LOG", "info");
        cmd
    };
    // Runs the shipper --once, prints its wall and CPU time and its tail-read line.
    let run = |f: &Fixture, what: &str, events: usize| -> String {
        let cpu0 = children_cpu_us();
        let t = Instant::now();
        let o = shipper(f).output().unwrap();
        let el = t.elapsed();
        let cpu = children_cpu_us() - cpu0;
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{log}");
        assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos());
        let tails = log
            .lines()
            .find(|l| l.contains("read the tails"))
            .unwrap_or("(no tail line at info level)")
            .to_string();
        eprintln!(
            "{what}: {events} events, wall {el:?}, CPU {:.1} ms = {:.2} µs/event\n  {tails}",
            cpu as f64 / 1000.0,
            cpu as f64 / events.max(1) as f64
        );
        tails
    };
    let f = Fixture::new(1 << 28);
    let mut all = write_mixed(f.ring(), n, 0);
    run(&f, "drain (tails: empty topics)", n);
    all.extend(write_mixed(f.ring(), n, n));
    run(&f, "drain again (tails: this ring's)", n);
    all.extend(write_mixed(f.ring(), 10, 2 * n));
    run(&f, "start-up with 10 events (tails: this ring's)", 10);
    // Killed after the broker acknowledged the second batch (up to 5000 events, or what came
    // in 100 ms), before the cursor moved.
    all.extend(write_mixed(f.ring(), 20_000, 2 * n + 10));
    let mut crash = shipper(&f);
    crash.env(CRASH_ENV, "kafka-acked:2");
    assert!(
        !crash.status().unwrap().success(),
        "the crash hook did not fire"
    );
    let tails = run(&f, "restart after a SIGKILL between ack and commit", 15_000);
    assert!(!tails.contains(": 0 events of this ring"), "{tails}");
    // Fresh topics (or the mock cluster): exactly this ring's events, once each.
    assert_exactly_once(&consume_all(&b, &ALL_TOPICS), &all, &tails);
    // A new ring: the tails hold only another ring's messages, read back to the start.
    let g = Fixture::new(1 << 20);
    write_mixed(g.ring(), 10, 0);
    run(
        &g,
        "start-up of a new ring (tails: another ring's messages only, read to the start)",
        10,
    );
}

#[test]
fn kafka_json_values_and_click_id_keys() {
    let cluster = mock(1);
    let b = cluster.bootstrap_servers();
    let f = Fixture::new(1 << 20);
    let written = write_mixed(f.ring(), 50, 0);
    let out = kafka_cmd(&f, &b, &["--once", "--format", "json", "--key", "click_id"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = consume_all(&b, &ALL_TOPICS);
    assert_eq!(got.len(), written.len());
    let by_id: HashMap<String, &Got> = got
        .iter()
        .map(|g| {
            let j: serde_json::Value = serde_json::from_slice(&g.value).expect("a JSON value");
            (j["id"].as_str().unwrap().to_string(), g)
        })
        .collect();
    for (w, camp) in &written {
        let g = by_id[&w.id_hex];
        let j: serde_json::Value = serde_json::from_slice(&g.value).unwrap();
        // The same JSON object as a line of the file sink (docs/event-schema.md).
        let ev = decode(&w.payload).unwrap();
        let mut line = Vec::new();
        ev.to_json_line(&mut line);
        assert_eq!(
            j,
            serde_json::from_slice::<serde_json::Value>(&line).unwrap()
        );
        assert_eq!(g.topic, topic_of(&w.event_type));
        let want_key = ev.click_id.clone().unwrap_or_else(|| camp.clone());
        assert_eq!(
            g.key.as_deref(),
            Some(want_key.as_str()),
            "key of a {}",
            w.event_type
        );
    }
}

/// A broker answering "unknown error" (as one does while it shuts down) is not a reason to
/// drop events: the batch is sent again from the ring, nothing goes to the dead letters.
#[test]
fn kafka_unknown_broker_errors_are_retried_not_dead_lettered() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = mock(1);
    let b = cluster.bootstrap_servers();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN; 3],
    );
    let f = Fixture::new(1 << 20);
    let written = write_mixed(f.ring(), 200, 0);
    let port = free_port();
    let mut child = spawn(kafka_cmd(
        &f,
        &b,
        &["--metrics", &format!("127.0.0.1:{port}")],
    ));
    let ring = f.ring();
    assert!(
        wait_until(Duration::from_secs(60), || ring.consumer_pos()
            == ring.producer_pos()),
        "not delivered after the errors"
    );
    let m = scrape(port);
    signal(&child, libc::SIGTERM);
    assert!(wait_timeout(&mut child, Duration::from_secs(20)).success());
    let log = stderr_of(&mut child);
    assert!(
        !f.tmp.path().join("dead").read_dir().unwrap().any(|_| true),
        "dead letters: {log}"
    );
    assert_eq!(
        metric(&m, "tracker_shipper_dead_letters_total{sink=\"kafka\"}"),
        Some(0.0),
        "{m}"
    );
    let counts = id_counts(&consume_all(&b, &ALL_TOPICS));
    for (w, _) in &written {
        assert!(
            counts.contains_key(&w.id_hex),
            "event {} lost: {log}",
            w.id_hex
        );
    }
}
