//! Crash safety: the shipper killed (SIGKILL) at every step of the commit protocol, and at
//! random moments while a producer keeps writing; after restarts, every event is in exactly
//! one committed file.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tracker_core::event::Kind;
use tracker_core::ring::RingFile;

const TYPES: [&str; 4] = ["impression", "click", "video", "promo-view"];

/// Runs the shipper with the crash hook at `point` (n-th hit) and expects it to die by SIGKILL.
fn run_until_crash(f: &Fixture, point: &str, args: &[&str]) {
    let out = f
        .cmd(&["--once"])
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

#[test]
fn killed_at_every_commit_step_then_restarted() {
    for point in [
        "tmp-written",
        "manifest-written",
        "renamed-one",
        "renamed",
        "ring-committed",
    ] {
        let f = Fixture::new(4 << 20);
        // 4 types over 2 hours: 8 files per batch of 400.
        let events = write_events(f.ring(), 500, &TYPES, 2 * HOUR_US / 500);
        // Garbage in the second batch, so that a dead letter goes through the crash as well.
        f.ring()
            .write(0, b"\xc1garbage", std::process::id())
            .unwrap();
        let more = write_events(f.ring(), 1100, &TYPES, 2 * HOUR_US / 1100);
        // Crash in the second batch's commit (the first batch makes 8 files: 4 types, 2 hours;
        // `renamed-one` is hit once per file).
        let hit = if point == "renamed-one" { 9 } else { 2 };
        run_until_crash(
            &f,
            &format!("{point}:{hit}"),
            &["--max-batch-events", "400"],
        );
        let after_crash = all_files(&f.out);
        match point {
            "tmp-written" => assert!(
                after_crash.iter().any(|p| p.ends_with(".tmp")),
                "{after_crash:?}"
            ),
            "manifest-written" | "renamed-one" | "renamed" | "ring-committed" => {
                assert!(
                    after_crash.iter().any(|p| p == "_shipper/manifest.json"),
                    "{point}: {after_crash:?}"
                );
                let m = std::fs::read_to_string(f.out.join("_shipper/manifest.json")).unwrap();
                assert!(m.contains("\"_dead_letter/"), "{point}: {m}");
            }
            _ => {}
        }
        let out = f.once(&["--max-batch-events", "400"]);
        let err = String::from_utf8_lossy(&out.stderr);
        if point != "tmp-written" {
            assert!(
                err.contains("finishing the commit of an interrupted batch"),
                "{point}: {err}"
            );
        } else {
            assert!(err.contains("removed"), "{point}: {err}");
        }
        let all: Vec<Written> = events.iter().chain(more.iter()).cloned().collect();
        check_exactly_once(&f.out, &all);
        check_clean(&f.out);
        let dead: Vec<String> = all_files(&f.out.join("_dead_letter"))
            .into_iter()
            .filter(|p| p.ends_with(".bin"))
            .collect();
        assert_eq!(dead.len(), 1, "{point}: {dead:?}");
        let reasons = std::fs::read_to_string(f.out.join("_dead_letter/reasons.log")).unwrap();
        assert_eq!(reasons.lines().count(), 1, "{point}: {reasons}");
        assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos(), "{point}");
    }
}

#[test]
fn killed_during_recovery_then_restarted() {
    let f = Fixture::new(4 << 20);
    let events = write_events(f.ring(), 800, &TYPES, 2 * HOUR_US / 800);
    run_until_crash(&f, "manifest-written", &[]);
    // The recovery itself dies after its first rename.
    run_until_crash(&f, "recovery-renamed-one", &[]);
    f.once(&[]);
    check_exactly_once(&f.out, &events);
    check_clean(&f.out);
}

/// A tiny xorshift generator (reproducible from the printed seed).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

#[test]
fn sigkill_at_random_moments_while_a_producer_writes() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let f = Fixture::new(16 << 20);
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(Mutex::new(Vec::<Written>::new()));
    let producer = {
        let (stop, written, path) = (stop.clone(), written.clone(), f.ring_path.clone());
        std::thread::spawn(move || {
            let (rf, _) = RingFile::open_or_create(&path, 16 << 20).unwrap();
            let ring = rf.ring();
            let mut seq = 0u64;
            let mut full = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Bursts of 30 events, then a millisecond's pause (~20k events/s): batches are
                // cut by size and by time, and commits (fsyncs) take a good share of the
                // shipper's time, so that kills land in them too.
                for _ in 0..30 {
                    let t = TYPES[(seq % 4) as usize];
                    let w = event(t, T0 + seq * 50_000, seq);
                    seq += 1;
                    match ring.write(Kind::of_type(t).index(), &w.payload, std::process::id()) {
                        Ok(_) => written.lock().unwrap().push(w),
                        Err(_) => full += 1,
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            full
        })
    };
    let args = [
        "--flush-interval-ms",
        "10",
        "--max-batch-events",
        "500",
        "--poll-ms",
        "1",
    ];
    let kills = 16;
    let mut files_before = 0;
    let (mut finished_manifests, mut removed_tmps) = (0, 0);
    for i in 0..kills {
        let log = f.tmp.path().join(format!("run-{i}.log"));
        let mut child = f
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let delay = rng.range(30, 600);
        std::thread::sleep(Duration::from_millis(delay));
        // SAFETY (in signal): our own child.
        signal(&child, libc::SIGKILL);
        let st = child.wait().unwrap();
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "run {i} ended by itself: {st}"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        finished_manifests += text
            .matches("finishing the commit of an interrupted batch")
            .count();
        removed_tmps += text
            .matches("temporary files of an uncommitted batch")
            .count();
        let n = committed_files(&f.out, ".ndjson.gz").len();
        eprintln!(
            "run {i}: killed after {delay} ms; {n} committed files, {} events written so far",
            written.lock().unwrap().len()
        );
        files_before = n;
    }
    stop.store(true, Ordering::Relaxed);
    let full = producer.join().unwrap();
    // A last run drains everything (and recovers from the last kill first).
    let t = Instant::now();
    let out = f.once(&[]);
    let text = String::from_utf8_lossy(&out.stderr);
    finished_manifests += text
        .matches("finishing the commit of an interrupted batch")
        .count();
    removed_tmps += text
        .matches("temporary files of an uncommitted batch")
        .count();
    eprintln!("restarts that finished an interrupted commit: {finished_manifests}; that removed uncommitted tmps: {removed_tmps}");
    eprintln!(
        "final drain in {:?}; {full} writes refused (ring full)",
        t.elapsed()
    );
    let written = written.lock().unwrap();
    assert!(
        written.len() > 5_000,
        "the producer wrote only {} events",
        written.len()
    );
    assert!(
        files_before > 0,
        "no run committed anything before being killed"
    );
    check_exactly_once(&f.out, &written);
    check_clean(&f.out);
    assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos());
}

/// Drain rate of the binary: 1M events, then one `--once`. Run with
/// `cargo test --release -p tracker-shipper --test crash -- --ignored --nocapture drain_rate`.
#[test]
#[ignore]
fn drain_rate_1m_events() {
    let n = 1_000_000;
    // The ring on tmpfs, as in production (a ring file on disk is slowed down by writeback);
    // the output on the temporary directory's file system.
    let f = Fixture::new(1 << 30);
    let shm = std::path::Path::new("/dev/shm");
    let shm_ring = shm.join(format!("tracker-shipper-bench-{}.ring", std::process::id()));
    let f = if shm.is_dir() {
        let (rf, _) = RingFile::open_or_create(&shm_ring, 1 << 30).unwrap();
        Fixture {
            rf,
            ring_path: shm_ring.clone(),
            ..f
        }
    } else {
        f
    };
    let t = Instant::now();
    let mut bytes = 0;
    for i in 0..n {
        let ty = TYPES[i % 4];
        let w = event(ty, T0 + i as u64 * 1000, i as u64);
        bytes += w.payload.len();
        f.ring()
            .write(Kind::of_type(ty).index(), &w.payload, std::process::id())
            .unwrap();
    }
    eprintln!(
        "wrote {n} events ({bytes} payload bytes, {} per event) in {:?}",
        bytes / n,
        t.elapsed()
    );
    for (format, level) in [("ndjson", "1"), ("msgpack", "1"), ("ndjson", "6")] {
        // Rewind: each run drains the same events into its own directory.
        let out = f.tmp.path().join(format!("out-{format}-{level}"));
        let start = f.ring().consumer_pos();
        let t = Instant::now();
        let o = std::process::Command::new(BIN)
            .args([
                "--ring",
                f.ring_path.to_str().unwrap(),
                "--sink",
                "file",
                "--dir",
                out.to_str().unwrap(),
                "--once",
            ])
            .args(["--format", format, "--gzip-level", level])
            .output()
            .unwrap();
        let el = t.elapsed();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let size: u64 = all_files(&out)
            .iter()
            .map(|p| std::fs::metadata(out.join(p)).unwrap().len())
            .sum();
        eprintln!(
            "{format} gzip {level}: {n} events in {el:?}: {:.0} events/s, {:.1} MB/s of payload, {} bytes of files",
            n as f64 / el.as_secs_f64(),
            bytes as f64 / el.as_secs_f64() / 1e6,
            size
        );
        if format == "ndjson" && level == "1" {
            assert_eq!(read_ndjson(&out).len(), n);
        }
        // Put the events back for the next format: a new ring with the same content would be
        // slower to build; instead write them again.
        assert_eq!(f.ring().consumer_pos(), f.ring().producer_pos());
        let _ = start;
        if format == "ndjson" && level == "6" {
            break;
        }
        for i in 0..n {
            let ty = TYPES[i % 4];
            let w = event(ty, T0 + i as u64 * 1000, i as u64);
            f.ring()
                .write(Kind::of_type(ty).index(), &w.payload, std::process::id())
                .unwrap();
        }
    }
    let _ = std::fs::remove_file(&shm_ring);
    let mut lock = shm_ring.into_os_string();
    lock.push(".shipper.lock");
    let _ = std::fs::remove_file(lock);
}

/// Fills the ring at `$BENCH_RING` (created, 1 GiB) with `$BENCH_EVENTS` events (default 1M)
/// and leaves it, for profiling the binary by hand:
/// `BENCH_RING=/dev/shm/b.ring cargo test --release -p tracker-shipper --test crash -- --ignored fill_ring_for_bench`
#[test]
#[ignore]
fn fill_ring_for_bench() {
    let Ok(path) = std::env::var("BENCH_RING") else {
        return;
    };
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let (rf, _) = RingFile::open_or_create(std::path::Path::new(&path), 1 << 30).unwrap();
    for i in 0..n {
        let ty = TYPES[i % 4];
        let w = event(ty, T0 + i as u64 * 1000, i as u64);
        rf.ring()
            .write(Kind::of_type(ty).index(), &w.payload, std::process::id())
            .unwrap();
    }
}
