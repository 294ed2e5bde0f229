//! The shipper binary against real rings: output layout, exactly-once, signals, dead letters,
//! locks, stats, config.

mod common;

use std::collections::HashSet;
use std::fs;
use std::process::Command;
use std::time::Duration;

use common::*;
use tracker_core::ring::StallPoint;

#[test]
fn once_writes_every_event_once_in_its_partition() {
    let f = Fixture::new(8 << 20);
    // 5 types (one needing sanitizing), 7 minutes apart: crosses hours and midnight UTC.
    let types = ["impression", "click", "conversion", "video", "sign up!"];
    let events = write_events(f.ring(), 3000, &types, 7 * 60 * 1_000_000 / 100);
    let out = f.once(&["--max-batch-events", "1000"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("started"), "{stderr}");
    assert!(stderr.contains("drained: 3000 events"), "{stderr}");
    check_exactly_once(&f.out, &events);
    check_clean(&f.out);
    // 3 batches of 1000 events, each over the 5 types and the hours in it: several files.
    let files = committed_files(&f.out, ".ndjson.gz");
    assert!(files.len() >= 15, "{files:?}");
    assert!(
        files
            .iter()
            .any(|p| p.starts_with("type=sign_up_/date=2024-03-01/")),
        "{files:?}"
    );
    let s = f.ring().stats();
    assert_eq!(s.consumer_pos, s.producer_pos);

    // Nothing new: a second run writes nothing.
    f.once(&[]);
    assert_eq!(committed_files(&f.out, ".ndjson.gz"), files);

    // New events: only those are written, in new files.
    let more = write_events(f.ring(), 10, &["impression"], 1);
    f.once(&[]);
    let all: Vec<Written> = events.iter().chain(more.iter()).cloned().collect();
    check_exactly_once(&f.out, &all);
}

#[test]
fn ndjson_lines_carry_the_event() {
    let f = Fixture::new(1 << 20);
    let events = write_events(f.ring(), 3, &["click"], HOUR_US);
    f.once(&[]);
    let lines = read_ndjson(&f.out);
    assert_eq!(lines.len(), 3);
    let l = lines.iter().find(|l| l.id() == events[0].id_hex).unwrap();
    assert_eq!(l.json["campaign"], "camp-1");
    assert_eq!(l.json["dims"]["t"], "shipper-test");
    assert_eq!(l.json["time"], "2024-02-29T22:00:00.000000Z");
    // The User-Agent families (tracker_core::useragent) come through.
    assert_eq!(
        (&l.json["browser"], &l.json["os"], &l.json["device"]),
        (&"chrome".into(), &"linux".into(), &"desktop".into())
    );
    assert_eq!(
        l.file,
        format!(
            "type=click/date=2024-02-29/hour=22/{}.ndjson.gz",
            events[0].id_hex
        )
    );
}

#[test]
fn msgpack_format_writes_the_raw_records() {
    let f = Fixture::new(4 << 20);
    let events = write_events(
        f.ring(),
        2000,
        &["impression", "click", "custom_x"],
        1_000_000,
    );
    f.once(&[
        "--format",
        "msgpack",
        "--max-batch-events",
        "700",
        "--gzip-level",
        "6",
    ]);
    check_clean(&f.out);
    assert!(committed_files(&f.out, ".ndjson.gz").is_empty());
    let files = committed_files(&f.out, ".msgpack.gz");
    assert!(!files.is_empty());
    let by_payload: std::collections::HashMap<&[u8], &Written> =
        events.iter().map(|w| (&w.payload[..], w)).collect();
    let mut seen = HashSet::new();
    for file in &files {
        let records = split_msgpack(&gunzip(&f.out.join(file)));
        for (i, r) in records.iter().enumerate() {
            let w = by_payload
                .get(&r[..])
                .unwrap_or_else(|| panic!("{file}: record {i} is not one we wrote"));
            assert!(seen.insert(w.id_hex.clone()), "{} twice", w.id_hex);
            assert!(
                file.starts_with(&expected_partition(&w.event_type, w.ts)),
                "{file}"
            );
            if i == 0 {
                assert!(
                    file.ends_with(&format!("/{}.msgpack.gz", w.id_hex)),
                    "{file}"
                );
            }
        }
    }
    assert_eq!(seen.len(), events.len());
}

#[test]
fn sigterm_commits_the_open_batch_and_exits_0() {
    let f = Fixture::new(4 << 20);
    let events = write_events(f.ring(), 500, &["impression", "video"], 1000);
    // Neither the size nor the interval would flush within the test: only SIGTERM does.
    let mut child = f.spawn(&[
        "--flush-interval-ms",
        "600000",
        "--max-batch-events",
        "1000000",
    ]);
    // Let it read the events (they are in the ring already), then stop it.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        committed_files(&f.out, ".ndjson.gz").is_empty(),
        "flushed before SIGTERM"
    );
    signal(&child, libc::SIGTERM);
    let st = wait_timeout(&mut child, Duration::from_secs(20));
    let err = stderr_of(&mut child);
    assert_eq!(st.code(), Some(0), "{st}: {err}");
    assert!(err.contains("stopped: 500 events"), "{err}");
    check_exactly_once(&f.out, &events);
    check_clean(&f.out);
    assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos());
}

#[test]
fn sigint_also_stops_cleanly() {
    let f = Fixture::new(1 << 20);
    let events = write_events(f.ring(), 20, &["click"], 1000);
    let mut child = f.spawn(&["--flush-interval-ms", "600000"]);
    std::thread::sleep(Duration::from_millis(800));
    signal(&child, libc::SIGHUP); // logged, no effect
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let st = wait_timeout(&mut child, Duration::from_secs(20));
    let err = stderr_of(&mut child);
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(err.contains("SIGHUP"), "{err}");
    check_exactly_once(&f.out, &events);
}

#[test]
fn running_shipper_flushes_on_the_interval() {
    let f = Fixture::new(4 << 20);
    let mut child = f.spawn(&["--flush-interval-ms", "100", "--poll-ms", "1"]);
    let mut events = Vec::new();
    for round in 0..5 {
        events.extend(write_events(
            f.ring(),
            200,
            &["impression", "click", "ev-custom"],
            1000 + round,
        ));
        std::thread::sleep(Duration::from_millis(150));
    }
    let ok = wait_until(Duration::from_secs(10), || {
        read_ndjson(&f.out).len() == events.len()
    });
    assert!(
        ok,
        "only {} of {} events committed while running",
        read_ndjson(&f.out).len(),
        events.len()
    );
    // Several commits happened while running (one file per partition per batch).
    assert!(committed_files(&f.out, ".ndjson.gz").len() > 3);
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_timeout(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
    check_exactly_once(&f.out, &events);
    check_clean(&f.out);
}

#[test]
fn garbage_goes_to_the_dead_letters_and_the_drain_goes_on() {
    let f = Fixture::new(1 << 20);
    let mut good = write_events(f.ring(), 5, &["impression"], 1000);
    let garbage: &[u8] = b"\xc1 this is not messagepack";
    let pos1 = f.ring().write(0, garbage, std::process::id()).unwrap();
    let not_a_map: &[u8] = &[0x93, 1, 2, 3]; // an array
    let pos2 = f.ring().write(4, not_a_map, std::process::id()).unwrap();
    good.extend(write_events(f.ring(), 5, &["click"], 1000));
    let out = f.once(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("undecodable record at ring position {pos1}")),
        "{stderr}"
    );
    assert!(stderr.contains("2 dead letters"), "{stderr}");
    check_exactly_once(&f.out, &good);
    check_clean(&f.out);
    let dl = f.out.join("_dead_letter");
    assert_eq!(fs::read(dl.join(format!("{pos1}.bin"))).unwrap(), garbage);
    assert_eq!(fs::read(dl.join(format!("{pos2}.bin"))).unwrap(), not_a_map);
    let reasons = fs::read_to_string(dl.join("reasons.log")).unwrap();
    let lines: Vec<&str> = reasons.lines().collect();
    assert_eq!(lines.len(), 2, "{reasons}");
    assert!(
        lines[0].contains(&format!("pos={pos1}\t"))
            && lines[0].contains(&format!("file={pos1}.bin")),
        "{reasons}"
    );
    assert!(lines[1].contains(&format!("pos={pos2}\t")), "{reasons}");
    assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos());
}

#[test]
fn a_second_shipper_is_refused() {
    let f = Fixture::new(1 << 20);
    let mut first = f.spawn(&[]);
    let lock = f.out.join("_shipper/lock");
    assert!(wait_until(Duration::from_secs(10), || fs::read_to_string(
        &lock
    )
    .is_ok_and(|s| !s.trim().is_empty())));
    // Same ring, same directory.
    let out = f.cmd(&["--once"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running for the ring"), "{err}");
    assert!(err.contains(&format!("pid {}", first.id())), "{err}");
    // Same ring, another directory.
    let other_dir = f.tmp.path().join("other");
    let out = Command::new(BIN)
        .args([
            "--ring",
            f.ring_path.to_str().unwrap(),
            "--sink",
            "file",
            "--dir",
            other_dir.to_str().unwrap(),
            "--once",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Another ring, same directory.
    let g = Fixture::new(1 << 20);
    let out = Command::new(BIN)
        .args([
            "--ring",
            g.ring_path.to_str().unwrap(),
            "--sink",
            "file",
            "--dir",
            f.out.to_str().unwrap(),
            "--once",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running for the directory"), "{err}");
    signal(&first, libc::SIGTERM);
    assert_eq!(
        wait_timeout(&mut first, Duration::from_secs(20)).code(),
        Some(0)
    );
    // Free again.
    f.once(&[]);
}

#[test]
fn stats_print_cursors_and_counters_as_json() {
    let f = Fixture::new(1 << 20);
    write_events(f.ring(), 3, &["impression"], 1);
    write_events(f.ring(), 2, &["click"], 1);
    write_events(f.ring(), 1, &["my-event"], 1);
    f.ring().count_rejected(0);
    for args in [vec!["stats", "--ring"], vec!["--print-stats", "--ring"]] {
        let out = Command::new(BIN)
            .args(&args)
            .arg(&f.ring_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["written"]["impression"], 3);
        assert_eq!(j["written"]["click"], 2);
        assert_eq!(j["written"]["custom"], 1);
        assert_eq!(j["written"]["total"], 6);
        assert_eq!(j["rejected"]["impression"], 1);
        assert_eq!(j["dropped_full"]["total"], 0);
        assert_eq!(j["consumer_pos"], 0);
        assert_eq!(j["producer_pos"], f.ring().producer_pos());
        assert_eq!(j["lag_bytes"], f.ring().producer_pos());
        assert_eq!(j["data_size"], 1 << 20);
    }
    // Stats neither take the lock nor move the cursor.
    assert_eq!(f.ring().consumer_pos(), 0);
}

#[test]
fn config_file_sets_options_and_the_command_line_wins() {
    let f = Fixture::new(1 << 20);
    let events = write_events(f.ring(), 50, &["impression"], 1);
    let cfg = f.tmp.path().join("shipper.toml");
    fs::write(
        &cfg,
        format!(
            "ring = {:?}\nsink = \"file\"\ndir = \"out\"\nformat = \"msgpack\"\nflush_interval_ms = 50\n\
             max_batch_events = 10\npoll_ms = 1\ngzip_level = 3\nmax_open_files = 4\nstale_after_ms = 500\nlog_level = \"debug\"\n",
            f.ring_path.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("--once")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // debug level: one line per commit; 50 events in batches of 10.
    assert_eq!(err.matches("DEBUG committed 10 events").count(), 5, "{err}");
    assert_eq!(committed_files(&f.out, ".msgpack.gz").len(), 5);
    // The command line wins: ndjson.
    let more = write_events(f.ring(), 5, &["click"], 1);
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["--once", "--format", "ndjson", "--log-level", "warn"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_exactly_once(&f.out, &more);
    drop(events);
    // Unknown keys are refused with exit code 2.
    fs::write(&cfg, "rign = \"x\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("--once")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rign"));
}

#[test]
fn usage_errors_exit_2() {
    let out = Command::new(BIN)
        .args(["--dir", "/tmp/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ring"));
    let out = Command::new(BIN)
        .args(["--ring", "/x", "--sink", "kafka", "--dir", "/tmp/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).args(["--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--ring",
        "--sink",
        "--dir",
        "--format",
        "--config",
        "--flush-interval-ms",
        "--max-batch-events",
        "--poll-ms",
        "--gzip-level",
        "--once",
        "--print-stats",
    ] {
        assert!(help.contains(opt), "{opt} missing from --help");
    }
}

#[test]
fn once_fails_without_a_ring() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "--ring",
            tmp.path().join("none.ring").to_str().unwrap(),
            "--sink",
            "file",
            "--dir",
            tmp.path().join("o").to_str().unwrap(),
            "--once",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open the ring"));
}

#[test]
fn daemon_waits_for_the_ring_to_appear() {
    let tmp = tempfile::tempdir().unwrap();
    let ring_path = tmp.path().join("later.ring");
    let out = tmp.path().join("o");
    let mut child = Command::new(BIN)
        .args([
            "--ring",
            ring_path.to_str().unwrap(),
            "--sink",
            "file",
            "--dir",
            out.to_str().unwrap(),
            "--flush-interval-ms",
            "50",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let (rf, _) = tracker_core::ring::RingFile::open_or_create(&ring_path, 1 << 20).unwrap();
    let events = write_events(rf.ring(), 10, &["impression"], 1);
    assert!(wait_until(Duration::from_secs(10), || read_ndjson(&out)
        .len()
        == 10));
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_timeout(&mut child, Duration::from_secs(20)).code(),
        Some(0)
    );
    let err = stderr_of(&mut child);
    assert!(err.contains("waiting for the ring"), "{err}");
    check_exactly_once(&out, &events);
}

#[test]
fn records_of_stalled_writers_are_skipped_and_committed_past() {
    // A record reserved by a writer that never finishes it: the shipper skips it after
    // --stale-after-ms and ships what follows.
    let f = Fixture::new(1 << 20);
    let before = write_events(f.ring(), 3, &["impression"], 1);
    let stuck = event("impression", T0, 99);
    let path = f.ring_path.clone();
    let reserved = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r2 = reserved.clone();
    // Blocks forever after reserving its space (the thread ends with the test process).
    std::thread::spawn(move || {
        let rf = tracker_core::ring::RingFile::open_existing(&path).unwrap();
        let _ = rf.ring().write_stalled(
            0,
            &stuck.payload,
            std::process::id(),
            StallPoint::AfterCas,
            || {
                r2.store(true, std::sync::atomic::Ordering::SeqCst);
                loop {
                    std::thread::park();
                }
            },
        );
    });
    assert!(wait_until(Duration::from_secs(5), || reserved
        .load(std::sync::atomic::Ordering::SeqCst)));
    let after = write_events(f.ring(), 3, &["impression"], 1);
    let out = f.once(&["--stale-after-ms", "200"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipped"), "{err}");
    let all: Vec<Written> = before.into_iter().chain(after).collect();
    check_exactly_once(&f.out, &all);
    assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos());
    assert_eq!(f.ring().stats().abandoned, 1);
}

#[test]
fn io_errors_drop_the_batch_and_the_daemon_retries() {
    let f = Fixture::new(1 << 20);
    let events = write_events(f.ring(), 200, &["impression", "click"], 1000);
    // A file where the click partition's directory must go: creating files in it fails.
    fs::create_dir_all(&f.out).unwrap();
    fs::write(f.out.join("type=click"), b"in the way").unwrap();

    // --once: exit 1, nothing committed, nothing left behind, the ring untouched.
    let out = f.cmd(&["--once"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("sink error"), "{err}");
    assert!(committed_files(&f.out, ".ndjson.gz").is_empty());
    check_clean(&f.out);
    assert_eq!(f.ring().consumer_pos(), 0);

    // The daemon keeps retrying, and ships everything once the obstacle is gone.
    let mut child = f.spawn(&["--flush-interval-ms", "50"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(committed_files(&f.out, ".ndjson.gz").is_empty());
    assert_eq!(f.ring().consumer_pos(), 0);
    fs::remove_file(f.out.join("type=click")).unwrap();
    let ok = wait_until(Duration::from_secs(20), || {
        read_ndjson(&f.out).len() == events.len()
    });
    signal(&child, libc::SIGTERM);
    let st = wait_timeout(&mut child, Duration::from_secs(20));
    let err = stderr_of(&mut child);
    assert!(ok, "not shipped after the obstacle was removed: {err}");
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(err.contains("retrying in 1s"), "{err}");
    check_exactly_once(&f.out, &events);
    check_clean(&f.out);
}

#[test]
fn a_replaced_ring_file_is_drained_then_the_new_one_is_read() {
    let f = Fixture::new(1 << 20);
    let mut events = write_events(f.ring(), 50, &["impression"], 1000);
    let mut child = f.spawn(&["--flush-interval-ms", "50"]);
    assert!(wait_until(Duration::from_secs(10), || read_ndjson(&f.out)
        .len()
        == 50));
    // The ring is removed and nginx makes a new one; old workers still write into the old one.
    fs::rename(&f.ring_path, f.tmp.path().join("old.ring")).unwrap();
    let (new_ring, _) =
        tracker_core::ring::RingFile::open_or_create(&f.ring_path, 1 << 20).unwrap();
    events.extend(write_events(f.ring(), 20, &["click"], 1000));
    events.extend(write_events(new_ring.ring(), 30, &["video"], 1000));
    let ok = wait_until(Duration::from_secs(40), || {
        read_ndjson(&f.out).len() == events.len()
    });
    signal(&child, libc::SIGTERM);
    let st = wait_timeout(&mut child, Duration::from_secs(20));
    let err = stderr_of(&mut child);
    assert!(
        ok,
        "{} of {} events shipped: {err}",
        read_ndjson(&f.out).len(),
        events.len()
    );
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(err.contains("switching to the new ring"), "{err}");
    check_exactly_once(&f.out, &events);
    assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos());
    assert_eq!(
        new_ring.ring().consumer_pos(),
        new_ring.ring().producer_pos()
    );
}

#[test]
fn sighup_reopens_the_log_file_and_applies_a_new_log_level() {
    let f = Fixture::new(1 << 20);
    let log = f.tmp.path().join("shipper.log");
    let conf = f.tmp.path().join("s.toml");
    std::fs::write(&conf, "log_level = 'info'\n").unwrap();
    let mut child = f
        .cmd(&[
            "--config",
            conf.to_str().unwrap(),
            "--log-file",
            log.to_str().unwrap(),
            "--flush-interval-ms",
            "50",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("started"))
    }));
    // logrotate: move the file away, then SIGHUP; and ask for debug lines meanwhile.
    let rotated = f.tmp.path().join("shipper.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    std::fs::write(&conf, "log_level = 'debug'\n").unwrap();
    signal(&child, libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains("SIGHUP: log level now DEBUG"))),
        "no new log file after SIGHUP"
    );
    let events = write_events(f.ring(), 10, &["click"], 1000);
    // At debug level, one line per commit.
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("committed 10 events"))
    }));
    // A change that needs a restart is said so, not half-applied.
    std::fs::write(&conf, "log_level = 'debug'\ngzip_level = 9\n").unwrap();
    signal(&child, libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("restart the shipper to apply it"))
    }));
    signal(&child, libc::SIGTERM);
    assert!(wait_timeout(&mut child, Duration::from_secs(20)).success());
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("started") && !old.contains("SIGHUP"), "{old}");
    assert!(
        stderr_of(&mut child).is_empty(),
        "the log went to the file only"
    );
    check_exactly_once(&f.out, &events);
}

#[test]
fn metrics_endpoint_serves_prometheus_text() {
    use std::io::{Read, Write};
    let f = Fixture::new(1 << 20);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let events = write_events(f.ring(), 30, &["impression", "click", "signup"], 1000);
    f.ring().count_rejected(0);
    let mut child = f.spawn(&["--metrics", &addr, "--flush-interval-ms", "50"]);
    let get = |path: &str| -> String {
        let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
            return String::new();
        };
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r
    };
    assert!(wait_until(Duration::from_secs(10), || get("/metrics")
        .contains(
            "tracker_shipper_events_acked_total{sink=\"file\",type=\"custom\"} 10"
        )));
    let m = get("/metrics");
    assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
    assert!(m.contains("Content-Type: text/plain; version=0.0.4"), "{m}");
    for line in [
        "tracker_shipper_events_read_total{sink=\"file\",type=\"impression\"} 10",
        "tracker_shipper_events_written_total{sink=\"file\",type=\"click\"} 10",
        "tracker_ring_events_written_total{type=\"click\"} 10",
        "tracker_ring_events_rejected_total{type=\"impression\"} 1",
        "tracker_ring_lag_bytes{sink=\"file\"} 0",
        "tracker_ring_fill_ratio 0.000000",
        "tracker_ring_events_dropped_total{reason=\"full\",type=\"video\"} 0",
        "tracker_shipper_destination_up{sink=\"file\"} -1",
        "# TYPE tracker_shipper_events_acked_total counter",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    // Every sample line is `name{labels} number` or `name number`.
    for l in m
        .split("\r\n\r\n")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
    {
        let (_, v) = l.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "bad sample {l:?}");
    }
    assert!(get("/other").starts_with("HTTP/1.1 404"));
    signal(&child, libc::SIGTERM);
    assert!(wait_timeout(&mut child, Duration::from_secs(20)).success());
    check_exactly_once(&f.out, &events);
}
