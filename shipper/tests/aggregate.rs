//! The aggregate sink with the real binary: hourly rows by campaign, publisher and type whose
//! sums equal an independent computation over the events written, with crashes at every step
//! of the commit protocol (no row counted twice, none lost), and next to the file sink.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::BufRead;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use tracker_core::event::{decode, encode, flags, EventRef, Kind};

/// What the test knows of an event it wrote, to compute the expected rows itself.
#[derive(Clone, Debug)]
struct AggEvent {
    written: Written,
    campaign: String,
    publisher: String,
    /// The `site` dimension.
    site: String,
    cost_micros: u64,
    value: f64,
    /// Flag names, as in the event.
    flags: Vec<String>,
}

const CAMPAIGNS: [&str; 4] = ["summer-sale", "winter-teaser", "app-install", ""];
const PUBLISHERS: [Option<&str>; 4] = [Some("news"), Some("blog"), None, Some("video-site")];
const TYPES: [&str; 5] = ["impression", "click", "conversion", "video", "signup"];
/// The row columns counting flagged events, in the row's order.
const COUNTED: [&str; 6] = [
    "over_budget",
    "outside_schedule",
    "unknown_campaign",
    "invalid_campaign",
    "inactive_campaign",
    "duplicate",
];

/// Whether `n` divides `i` (without `is_multiple_of`, newer than the workspace's Rust 1.81).
fn every(i: u64, n: u64) -> bool {
    i.checked_rem(n) == Some(0)
}

/// Event `i` of a varied set: campaigns, publishers (or none), types, costs, values and flags
/// cycle with different periods; the `site` dimension is set too (for another publisher
/// dimension). `ts` is given.
fn agg_event(i: u64, ts: u64) -> AggEvent {
    let campaign = CAMPAIGNS[(i % 4) as usize];
    let publisher = PUBLISHERS[(i / 3 % 4) as usize];
    let ty = TYPES[(i % 5) as usize];
    let cost = match ty {
        "click" => Some(250_000 + i % 7),
        "impression" if every(i, 2) => Some(1_500),
        "conversion" => Some(3_000_000),
        _ => None,
    };
    // Multiples of 1/4: sums are exact whatever the order.
    let value = matches!(ty, "conversion" | "signup").then(|| (i % 40) as f64 * 0.25);
    let mut bits = 0;
    if every(i, 11) {
        bits |= flags::OVER_BUDGET;
    }
    if every(i, 13) {
        bits |= flags::OUTSIDE_SCHEDULE | flags::INACTIVE_CAMPAIGN;
    }
    if campaign.is_empty() {
        bits |= flags::INVALID_CAMPAIGN;
    } else if every(i, 17) {
        bits |= flags::UNKNOWN_CAMPAIGN;
    }
    if every(i, 19) {
        bits |= flags::TRUNCATED; // not counted
    }
    let id = new_id();
    let site = format!("site-{}", i % 3);
    let mut dims: Vec<(&[u8], &[u8])> = vec![(b"placement", b"top"), (b"site", site.as_bytes())];
    if let Some(p) = publisher {
        dims.push((b"publisher", p.as_bytes()));
    }
    let ev = EventRef {
        id,
        ts_us: ts,
        event_type: ty.as_bytes(),
        campaign: campaign.as_bytes(),
        dims: &dims,
        ip: Some(b"192.0.2.0"),
        host: Some(b"t.example.com"),
        status: 200,
        flags: bits,
        value,
        cost_micros: cost,
        ..Default::default()
    };
    let mut payload = Vec::new();
    encode(&ev, &mut payload);
    let mut decoded = decode(&payload).unwrap();
    if every(i, 23) {
        // A flag the module does not set yet: written through the event's serde form.
        decoded.flags.push("duplicate".into());
        payload = rmp_serde::to_vec(&decoded).unwrap();
    }
    AggEvent {
        written: Written {
            id_hex: hex(&id),
            event_type: ty.to_string(),
            ts,
            payload,
        },
        campaign: campaign.to_string(),
        publisher: publisher.unwrap_or("").to_string(),
        site,
        cost_micros: cost.unwrap_or(0),
        value: value.unwrap_or(0.0),
        flags: decoded.flags,
    }
}

/// Writes `n` events numbered from `first`, from `ts0` by `step_us`.
fn write_agg_events(f: &Fixture, first: u64, n: u64, ts0: u64, step_us: u64) -> Vec<AggEvent> {
    (first..first + n)
        .map(|i| {
            let e = agg_event(i, ts0 + (i - first) * step_us);
            f.ring()
                .write(
                    Kind::of_type(&e.written.event_type).index(),
                    &e.written.payload,
                    std::process::id(),
                )
                .expect("ring write");
            e
        })
        .collect()
}

/// Row key: (hour start, campaign, publisher, type).
type RowKey = (String, String, String, String);

/// The sums of a row.
#[derive(Clone, Debug, Default, PartialEq)]
struct Sums {
    events: u64,
    cost_micros: u64,
    value: f64,
    flagged: [u64; 6],
}

/// `YYYY-MM-DDTHH:00:00Z` of `ts`, from the tests' own partition computation.
fn hour_of(ts: u64) -> String {
    let p = expected_partition("x", ts); // type=x/date=D/hour=H
    let mut parts = p.split('/').skip(1);
    let date = parts
        .next()
        .unwrap()
        .strip_prefix("date=")
        .unwrap()
        .to_string();
    let hour = parts
        .next()
        .unwrap()
        .strip_prefix("hour=")
        .unwrap()
        .to_string();
    format!("{date}T{hour}:00:00Z")
}

/// The rows the events should sum to, computed directly.
fn expected(
    events: &[AggEvent],
    publisher: impl Fn(&AggEvent) -> String,
) -> BTreeMap<RowKey, Sums> {
    let mut m: BTreeMap<RowKey, Sums> = BTreeMap::new();
    for e in events {
        let s = m
            .entry((
                hour_of(e.written.ts),
                e.campaign.clone(),
                publisher(e),
                e.written.event_type.clone(),
            ))
            .or_default();
        s.events += 1;
        s.cost_micros += e.cost_micros;
        s.value += e.value;
        for (i, name) in COUNTED.iter().enumerate() {
            if e.flags.iter().any(|f| f == name) {
                s.flagged[i] += 1;
            }
        }
    }
    m
}

/// The committed aggregate files under `agg`: (relative path, batch start, batch end).
fn aggregate_files(agg: &Path) -> Vec<(String, u64, u64)> {
    all_files(agg)
        .into_iter()
        .filter(|f| {
            f.starts_with("date=")
                && f.ends_with(".ndjson")
                && !f.rsplit('/').next().unwrap().starts_with('.')
        })
        .map(|f| {
            let name = f
                .rsplit('/')
                .next()
                .unwrap()
                .strip_suffix(".ndjson")
                .unwrap();
            let mut it = name.split('-');
            let start = it.next().unwrap().parse().unwrap();
            let end = it.next().unwrap().parse().unwrap();
            assert!(
                it.next().is_none(),
                "numbered name {f}: never needed in these tests"
            );
            (f, start, end)
        })
        .collect()
}

/// Sums the rows of every committed file, checking that each row is in its hour's directory,
/// has every column, and that a file has each key once.
fn read_sums(agg: &Path) -> BTreeMap<RowKey, Sums> {
    let mut m: BTreeMap<RowKey, Sums> = BTreeMap::new();
    for (f, _, _) in aggregate_files(agg) {
        let dir = f.rsplit_once('/').unwrap().0; // date=D/hour=H
        let (date, hour) = dir.split_once('/').unwrap();
        let want_hour = format!("{}T{}:00:00Z", &date[5..], &hour[5..]);
        let mut keys = std::collections::HashSet::new();
        for line in fs::read(agg.join(&f)).unwrap().lines() {
            let line = line.unwrap();
            let j: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{f}: {e}: {line}"));
            assert_eq!(j.as_object().unwrap().len(), 13, "{f}: {line}");
            let key: RowKey = (
                j["hour"].as_str().unwrap().into(),
                j["campaign"].as_str().unwrap().into(),
                j["publisher"].as_str().unwrap().into(),
                j["type"].as_str().unwrap().into(),
            );
            assert_eq!(key.0, want_hour, "{f}: {line}");
            assert!(keys.insert(key.clone()), "{f}: key twice: {line}");
            let s = m.entry(key).or_default();
            s.events += j["events"].as_u64().unwrap();
            s.cost_micros += j["cost_micros"].as_u64().unwrap();
            s.value += j["value"].as_f64().unwrap();
            for (i, name) in COUNTED.iter().enumerate() {
                s.flagged[i] += j[name]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{f}: no {name}: {line}"));
            }
        }
    }
    m
}

fn publisher_dim(e: &AggEvent) -> String {
    e.publisher.clone()
}

/// Checks that the committed rows sum to the events, that the batch files cover contiguous,
/// distinct ring ranges, and that nothing is left half-done.
fn check_sums(agg: &Path, events: &[AggEvent]) {
    let got = read_sums(agg);
    let want = expected(events, publisher_dim);
    if got != want {
        for (k, w) in &want {
            let g = got.get(k);
            if g != Some(w) {
                panic!(
                    "row {k:?}: got {g:?}, want {w:?} ({} rows got, {} wanted)",
                    got.len(),
                    want.len()
                );
            }
        }
        panic!(
            "rows not wanted: {:?}",
            got.keys()
                .filter(|k| !want.contains_key(*k))
                .collect::<Vec<_>>()
        );
    }
    // Every batch range once (one file per hour of the batch), the ranges back to back.
    let mut ranges: Vec<(u64, u64)> = aggregate_files(agg)
        .iter()
        .map(|(_, s, e)| (*s, *e))
        .collect();
    ranges.sort();
    ranges.dedup();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping batch ranges {w:?}");
    }
    check_clean(agg);
}

/// The shipper on the fixture's ring with `--sink <sinks> --dir OUT` (so the aggregates go to
/// OUT/_aggregates unless `args` say otherwise).
fn cmd(f: &Fixture, sinks: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--ring")
        .arg(&f.ring_path)
        .arg("--sink")
        .arg(sinks)
        .arg("--dir")
        .arg(&f.out);
    c.args(args);
    c.env_remove(CRASH_ENV);
    c
}

fn run_ok(f: &Fixture, sinks: &str, args: &[&str]) -> Output {
    let out = cmd(f, sinks, &["--once"]).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "shipper --once failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_until_crash(f: &Fixture, sinks: &str, point: &str, args: &[&str]) {
    let out = cmd(f, sinks, &["--once"])
        .args(args)
        .env(CRASH_ENV, point)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "expected a crash at {point}, got {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn agg_dir(f: &Fixture) -> PathBuf {
    f.out.join("_aggregates")
}

#[test]
fn rows_sum_to_the_events() {
    let f = Fixture::new(8 << 20);
    // 3000 events over 5 hours from 22:00 (crossing midnight), then garbage, then 10 more.
    let mut events = write_agg_events(&f, 0, 3000, T0, 5 * HOUR_US / 3000);
    f.ring()
        .write(0, b"\xc1garbage", std::process::id())
        .unwrap();
    events.extend(write_agg_events(&f, 3000, 10, T0 + HOUR_US / 2, 1));
    // Batches cut by size only, even on a slow machine.
    let out = run_ok(
        &f,
        "aggregate",
        &["--max-batch-events", "250", "--flush-interval-ms", "600000"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("aggregate sink: "), "{stderr}");
    assert!(
        stderr.contains("aggregate sink drained: 3010 events, 1 dead letters"),
        "{stderr}"
    );
    let agg = agg_dir(&f);
    check_sums(&agg, &events);
    // Every column is exercised: no sum is trivially 0.
    let sums = read_sums(&agg);
    assert!(sums.len() > 100, "{} rows", sums.len());
    for (i, name) in COUNTED.iter().enumerate() {
        assert!(sums.values().any(|s| s.flagged[i] > 0), "no {name} counted");
    }
    assert!(sums.values().any(|s| s.value > 0.0 && s.cost_micros > 0));
    assert!(sums.keys().any(|k| k.2.is_empty()) && sums.keys().any(|k| k.1.is_empty()));
    // Batches of 250 records: 13 batches, each one file per hour it has events of.
    let files = aggregate_files(&agg);
    let mut ranges: Vec<(u64, u64)> = files.iter().map(|(_, s, e)| (*s, *e)).collect();
    ranges.sort();
    ranges.dedup();
    assert_eq!(ranges.len(), 13, "{ranges:?}");
    assert_eq!(ranges[0].0, 0);
    for w in ranges.windows(2) {
        assert_eq!(w[0].1, w[1].0, "ranges not back to back: {w:?}");
    }
    let s = f.ring().stats();
    assert_eq!(ranges.last().unwrap().1, s.producer_pos);
    assert_eq!(s.consumer_pos, s.producer_pos);
    assert!(
        files
            .iter()
            .any(|(p, _, _)| p.starts_with("date=2024-03-01/hour=02/")),
        "{files:?}"
    );
    assert!(files.len() > 13, "{files:?}");
    // The undecodable record, as in the file sink.
    let dead: Vec<String> = all_files(&agg)
        .into_iter()
        .filter(|p| p.starts_with("_dead_letter/"))
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}"); // <pos>.bin and reasons.log
    assert!(dead.iter().any(|p| p.ends_with(".bin")));
    // Its own cursor in the ring, and nothing of the file sink's.
    let cursors = f.ring().cursors();
    assert_eq!(cursors, vec![("aggregate".to_string(), s.producer_pos)]);
    assert!(!f.out.join("_shipper").exists());
    // Rerun: nothing new.
    run_ok(&f, "aggregate", &[]);
    assert_eq!(aggregate_files(&agg), files);
    // New events: new files, the sums still those of every event.
    events.extend(write_agg_events(&f, 5000, 40, T0, HOUR_US / 10));
    run_ok(&f, "aggregate", &[]);
    check_sums(&agg, &events);
}

#[test]
fn killed_at_every_commit_step_then_rerun() {
    for point in [
        "tmp-written:2",
        "manifest-written:1",
        "manifest-written:2",
        "renamed-one:1",
        "renamed-one:3",
        "renamed:2",
        "ring-committed:2",
    ] {
        let f = Fixture::new(4 << 20);
        // 3 hours, with garbage in the second batch so that a dead letter crosses the crash.
        let mut events = write_agg_events(&f, 0, 400, T0, 3 * HOUR_US / 400);
        f.ring()
            .write(0, b"\xc1garbage", std::process::id())
            .unwrap();
        events.extend(write_agg_events(
            &f,
            400,
            500,
            T0 + HOUR_US,
            2 * HOUR_US / 500,
        ));
        let args = ["--max-batch-events", "300"];
        run_until_crash(&f, "aggregate", point, &args);
        let agg = agg_dir(&f);
        let name = point.split(':').next().unwrap();
        let left = all_files(&agg);
        if name != "tmp-written" {
            assert!(
                left.iter().any(|p| p == "_shipper/manifest.json"),
                "{point}: {left:?}"
            );
        } else {
            assert!(
                left.iter().any(|p| p.ends_with(".tmp")),
                "{point}: {left:?}"
            );
        }
        let out = run_ok(&f, "aggregate", &args);
        let err = String::from_utf8_lossy(&out.stderr);
        if name != "tmp-written" {
            assert!(
                err.contains("finishing the commit of an interrupted batch"),
                "{point}: {err}"
            );
        }
        check_sums(&agg, &events);
        let dead = all_files(&agg)
            .into_iter()
            .filter(|p| p.ends_with(".bin"))
            .count();
        assert_eq!(dead, 1, "{point}");
        let s = f.ring().stats();
        assert_eq!(s.consumer_pos, s.producer_pos, "{point}");
    }
}

#[test]
fn killed_twice_including_during_recovery() {
    let f = Fixture::new(4 << 20);
    let events = write_agg_events(&f, 0, 900, T0, 4 * HOUR_US / 900);
    let args = ["--max-batch-events", "300"];
    run_until_crash(&f, "aggregate", "manifest-written:2", &args);
    // The second batch's manifest has a file per hour: crash after renaming the first one.
    run_until_crash(&f, "aggregate", "recovery-renamed-one:1", &args);
    // And once more in a later batch of the next run.
    run_until_crash(&f, "aggregate", "renamed:2", &args);
    run_ok(&f, "aggregate", &args);
    check_sums(&agg_dir(&f), &events);
}

#[test]
fn next_to_the_file_sink() {
    let f = Fixture::new(8 << 20);
    let mut events = write_agg_events(&f, 0, 600, T0, 3 * HOUR_US / 600);
    // The aggregate sink alone crashes with its first batch decided but not renamed...
    run_until_crash(
        &f,
        "aggregate",
        "manifest-written:1",
        &["--max-batch-events", "250"],
    );
    let agg = agg_dir(&f);
    assert!(agg.join("_shipper/manifest.json").exists());
    assert!(all_files(&agg).iter().any(|p| p.ends_with(".tmp")));
    // ...then both sinks start: the file sink (from the start of the ring, where the consumer
    // cursor still is) must not take the aggregate sink's pending tmps for strays.
    events.extend(write_agg_events(&f, 600, 300, T0 + HOUR_US, HOUR_US / 300));
    let out = run_ok(&f, "file,aggregate", &["--max-batch-events", "250"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("file sink drained: 900 events"), "{err}");
    let written: Vec<Written> = events.iter().map(|e| e.written.clone()).collect();
    check_exactly_once(&f.out, &written);
    check_clean(&f.out);
    check_sums(&agg, &events);
    let cursors = f.ring().cursors();
    assert_eq!(cursors.len(), 2, "{cursors:?}");

    // Both sinks killed at various commits (whichever sink gets there), then rerun.
    for (i, point) in [
        "manifest-written:3",
        "renamed-one:2",
        "tmp-written:4",
        "ring-committed:1",
    ]
    .iter()
    .enumerate()
    {
        events.extend(write_agg_events(
            &f,
            1000 + i as u64 * 1000,
            500,
            T0 + i as u64 * HOUR_US,
            HOUR_US / 200,
        ));
        run_until_crash(&f, "file,aggregate", point, &["--max-batch-events", "200"]);
        run_ok(&f, "file,aggregate", &["--max-batch-events", "200"]);
        let written: Vec<Written> = events.iter().map(|e| e.written.clone()).collect();
        check_exactly_once(&f.out, &written);
        check_sums(&agg, &events);
    }
}

#[test]
fn publisher_dimension_and_directory_from_the_config_file() {
    let f = Fixture::new(1 << 20);
    let events = write_agg_events(&f, 0, 200, T0, HOUR_US / 50);
    let conf = f.tmp.path().join("shipper.toml");
    fs::write(
        &conf,
        format!(
            "ring = '{}'\nsinks = ['aggregate']\n[aggregate]\ndir = 'aggs'\npublisher_dimension = 'site'\n",
            f.ring_path.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&conf)
        .arg("--once")
        .env_remove(CRASH_ENV)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agg = f.tmp.path().join("aggs");
    let got = read_sums(&agg);
    assert_eq!(got, expected(&events, |e| e.site.clone()));
    assert!(got.keys().all(|k| k.2.starts_with("site-")));
    check_clean(&agg);
}

#[test]
fn daemon_flushes_aggregates_on_their_own_interval_and_at_sigterm() {
    let f = Fixture::new(4 << 20);
    let mut child = cmd(
        &f,
        "file,aggregate",
        &[
            "--flush-interval-ms",
            "50",
            "--aggregate-flush-interval-ms",
            "600000",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let events = write_agg_events(&f, 0, 300, T0, HOUR_US / 100);
    let producer = f.ring().producer_pos();
    let cursor = |name: &str| {
        f.ring()
            .cursors()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    };
    // The file sink commits within its 50 ms; the aggregate batch waits for its interval.
    let files_done = wait_until(std::time::Duration::from_secs(30), || {
        cursor("file") == Some(producer)
    });
    assert!(
        files_done,
        "file sink cursor {:?}, producer {producer}",
        cursor("file")
    );
    assert_eq!(cursor("aggregate"), Some(0));
    assert_eq!(
        f.ring().consumer_pos(),
        0,
        "the ring is held for the aggregate sink"
    );
    assert!(aggregate_files(&agg_dir(&f)).is_empty());
    // SIGTERM: the batch read so far is committed.
    signal(&child, libc::SIGTERM);
    let st = wait_timeout(&mut child, std::time::Duration::from_secs(30));
    let err = stderr_of(&mut child);
    assert!(st.success(), "{st}: {err}");
    assert_eq!(cursor("aggregate"), Some(producer), "{err}");
    check_sums(&agg_dir(&f), &events);
    let written: Vec<Written> = events.iter().map(|e| e.written.clone()).collect();
    check_exactly_once(&f.out, &written);
}

// ---------------------------------------------------------------------------------------------
// The aggregate topic (librdkafka's mock cluster): rows published once, across SIGKILLs
// ---------------------------------------------------------------------------------------------

const AGG_TOPIC: &str = "tracker.aggregates";

/// A row as read from the topic.
#[derive(Debug)]
struct TopicRow {
    key: String,
    ring_id: String,
    /// (ring_pos, batch_row): the row's identity.
    id: (u64, u64),
    batch_start: u64,
    value: Vec<u8>,
}

fn mock_cluster(
) -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    rdkafka::mocking::MockCluster::new(3).expect("librdkafka mock cluster")
}

/// The shipper with the aggregate sink only, its rows also to AGG_TOPIC on `bootstrap`.
fn topic_cmd(f: &Fixture, bootstrap: &str, args: &[&str]) -> Command {
    let conf = f.tmp.path().join("agg-topic.toml");
    fs::write(
        &conf,
        format!("[aggregate]\ntopic = '{AGG_TOPIC}'\nbrokers = '{bootstrap}'\n"),
    )
    .unwrap();
    let mut c = cmd(f, "aggregate", &["--config"]);
    c.arg(&conf).args(args).env("RUST_LOG", "info");
    c
}

/// Every message of AGG_TOPIC.
fn consume_rows(bootstrap: &str) -> Vec<TopicRow> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};
    use std::time::{Duration, Instant};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "aggregate-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(AGG_TOPIC), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut total = 0;
    for p in md.topics()[0].partitions() {
        let (_, high) = c
            .fetch_watermarks(AGG_TOPIC, p.id(), Duration::from_secs(10))
            .unwrap();
        total += high;
        tpl.add_partition_offset(AGG_TOPIC, p.id(), Offset::Beginning)
            .unwrap();
    }
    let mut out = Vec::new();
    if total == 0 {
        return out;
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < total && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("consumer");
            let h: BTreeMap<String, String> = m
                .headers()
                .expect("headers")
                .iter()
                .map(|x| {
                    (
                        x.key.to_string(),
                        String::from_utf8_lossy(x.value.unwrap()).into_owned(),
                    )
                })
                .collect();
            out.push(TopicRow {
                key: String::from_utf8_lossy(m.key().unwrap()).into_owned(),
                ring_id: h["ring_id"].clone(),
                id: (
                    h["ring_pos"].parse().unwrap(),
                    h["batch_row"].parse().unwrap(),
                ),
                batch_start: h["batch_start"].parse().unwrap(),
                value: m.payload().unwrap().to_vec(),
            });
        }
    }
    assert_eq!(out.len() as i64, total, "could not read every row back");
    out
}

/// The rows of the committed files, as lines.
fn file_rows(agg: &Path) -> Vec<Vec<u8>> {
    let mut rows = Vec::new();
    for (f, _, _) in aggregate_files(agg) {
        for line in fs::read(agg.join(&f)).unwrap().split(|&b| b == b'\n') {
            if !line.is_empty() {
                rows.push(line.to_vec());
            }
        }
    }
    rows
}

/// The topic holds each row of the committed files once (same bytes), no other, each named
/// by its ring range and number, keyed by campaign/hour; so its sums are the files' (and the
/// events').
fn check_topic(bootstrap: &str, f: &Fixture, events: &[AggEvent], log: &str) {
    let agg = agg_dir(f);
    check_sums(&agg, events);
    let rows = consume_rows(bootstrap);
    let ids: std::collections::HashSet<(u64, u64)> = rows.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), rows.len(), "a row published twice: {log}");
    let mut got: Vec<&[u8]> = rows.iter().map(|r| r.value.as_slice()).collect();
    let want_rows = file_rows(&agg);
    let mut want: Vec<&[u8]> = want_rows.iter().map(Vec::as_slice).collect();
    got.sort();
    want.sort();
    assert_eq!(
        got.len(),
        want.len(),
        "rows in the topic vs the files: {log}"
    );
    assert!(
        got == want,
        "the topic's rows are not the files' rows: {log}"
    );
    let ring_id = format!("{:032x}", f.ring().id());
    for r in &rows {
        assert_eq!(r.ring_id, ring_id);
        assert!(r.batch_start < r.id.0, "{r:?}");
        let j: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(
            r.key,
            format!(
                "{}/{}",
                j["campaign"].as_str().unwrap(),
                j["hour"].as_str().unwrap()
            )
        );
    }
    // The topic's sums (what a console computes) are the events'.
    let mut sums: BTreeMap<RowKey, u64> = BTreeMap::new();
    for r in &rows {
        let j: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        let k = (
            j["hour"].as_str().unwrap().into(),
            j["campaign"].as_str().unwrap().into(),
            j["publisher"].as_str().unwrap().into(),
            j["type"].as_str().unwrap().into(),
        );
        *sums.entry(k).or_default() += j["events"].as_u64().unwrap();
    }
    let want: BTreeMap<RowKey, u64> = expected(events, publisher_dim)
        .into_iter()
        .map(|(k, s)| (k, s.events))
        .collect();
    assert_eq!(sums, want, "{log}");
}

#[test]
fn topic_rows_once_and_their_sums_are_the_files() {
    let cluster = mock_cluster();
    let b = cluster.bootstrap_servers();
    let f = Fixture::new(8 << 20);
    let events = write_agg_events(&f, 0, 2000, T0, 3 * HOUR_US / 2000);
    let out = topic_cmd(&f, &b, &["--once", "--max-batch-events", "400"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("rows also to the Kafka topic tracker.aggregates"),
        "{log}"
    );
    check_topic(&b, &f, &events, &log);
    let rows = consume_rows(&b);
    let batches: std::collections::HashSet<u64> = rows.iter().map(|r| r.id.0).collect();
    assert_eq!(batches.len(), 5, "five batches of 400 events");
    // More events, another run: only their rows are added.
    let mut events = events;
    events.extend(write_agg_events(&f, 2000, 100, T0, HOUR_US / 100));
    let out = topic_cmd(&f, &b, &["--once"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    check_topic(&b, &f, &events, &log);
}

/// Killed after the broker acknowledged a batch's rows, before its files and cursor were
/// committed; and (another run) after its manifest was written, before anything was sent.
#[test]
fn topic_sigkill_after_the_ack_or_before_the_send_publishes_each_batch_once() {
    for point in ["manifest-written:2", "aggregate-published:2"] {
        let cluster = mock_cluster();
        let b = cluster.bootstrap_servers();
        let f = Fixture::new(8 << 20);
        let events = write_agg_events(&f, 0, 1600, T0, 2 * HOUR_US / 1600);
        let out = topic_cmd(&f, &b, &["--once", "--max-batch-events", "400"])
            .env(CRASH_ENV, point)
            .output()
            .unwrap();
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let before = consume_rows(&b).len();
        assert!(before > 0, "{point}: nothing published before the kill");
        let out = topic_cmd(&f, &b, &["--once", "--max-batch-events", "400"])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{point}: {log}");
        check_topic(&b, &f, &events, &format!("{point}: {log}"));
        assert!(
            log.contains("publishing the rows of the decided batch"),
            "{point}: {log}"
        );
    }
}

/// Killed while the broker has stored the rows of a batch but its acknowledgements are on
/// their way: nothing acknowledged, the cursor not moved; the next start sends none again.
#[test]
fn topic_sigkill_before_the_ack_publishes_each_batch_once() {
    use std::time::Duration;
    let cluster = mock_cluster();
    let b = cluster.bootstrap_servers();
    let f = Fixture::new(8 << 20);
    let ring = f.ring();
    let mut events = write_agg_events(&f, 0, 400, T0, HOUR_US / 400);
    let mut child = topic_cmd(
        &f,
        &b,
        &[
            "--aggregate-flush-interval-ms",
            "200",
            "--max-batch-events",
            "400",
        ],
    )
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let ok = wait_until(Duration::from_secs(30), || {
        ring.consumer_pos() == ring.producer_pos()
    });
    if !ok {
        let _ = child.kill();
        panic!("first batch not committed");
    }
    let committed = ring.consumer_pos();
    let first = consume_rows(&b).len();
    for broker in 1..=3 {
        cluster
            .broker_round_trip_time(broker, Duration::from_secs(4))
            .unwrap();
    }
    events.extend(write_agg_events(&f, 400, 1200, T0, 2 * HOUR_US / 1200));
    std::thread::sleep(Duration::from_millis(2000));
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(ring.consumer_pos(), committed, "acknowledged already");
    for broker in 1..=3 {
        cluster
            .broker_round_trip_time(broker, Duration::from_millis(0))
            .unwrap();
    }
    let stored = consume_rows(&b).len();
    assert!(
        stored > first,
        "the broker got no row after the first batch before the kill: the test proves nothing"
    );
    let out = topic_cmd(&f, &b, &["--once"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    check_topic(&b, &f, &events, &log);
    assert!(
        log.contains("publishing the rows of the decided batch"),
        "{log}"
    );
}

/// The brokers go away after a batch was decided: the sink waits (its files and cursor too);
/// a SIGTERM then keeps the decided batch for the next start, which publishes it once before
/// applying it.
#[test]
fn topic_outage_then_sigterm_keeps_the_decided_batch_for_the_next_start() {
    use std::time::Duration;
    let cluster = mock_cluster();
    let b = cluster.bootstrap_servers();
    let f = Fixture::new(8 << 20);
    let ring = f.ring();
    let mut events = write_agg_events(&f, 0, 400, T0, HOUR_US / 400);
    let mut child = topic_cmd(&f, &b, &["--aggregate-flush-interval-ms", "200"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ok = wait_until(Duration::from_secs(30), || {
        ring.consumer_pos() == ring.producer_pos()
    });
    if !ok {
        let _ = child.kill();
        panic!("first batch not committed");
    }
    let committed = ring.consumer_pos();
    for broker in 1..=3 {
        cluster.broker_down(broker).unwrap();
    }
    events.extend(write_agg_events(&f, 400, 600, T0, HOUR_US / 600));
    let manifest = agg_dir(&f).join("_shipper/manifest.json");
    let decided = wait_until(Duration::from_secs(30), || manifest.exists());
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, libc::SIGTERM);
    let st = wait_timeout(&mut child, Duration::from_secs(20));
    let log = stderr_of(&mut child);
    assert!(decided, "no batch decided during the outage: {log}");
    assert!(st.success(), "{st}: {log}");
    assert_eq!(ring.consumer_pos(), committed, "applied unpublished: {log}");
    assert!(manifest.exists(), "the decided batch was not kept: {log}");
    assert!(log.contains("it is published at the next start"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
    for broker in 1..=3 {
        cluster.broker_up(broker).unwrap();
    }
    let out = topic_cmd(&f, &b, &["--once"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    check_topic(&b, &f, &events, &log);
    assert!(
        log.contains("publishing the rows of the decided batch"),
        "{log}"
    );
}
