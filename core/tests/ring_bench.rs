//! Write throughput, ignored by default:
//!   cargo test --release -p tracker-core --test ring_bench -- --ignored ring_bench --nocapture

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tracker_core::ring::{Read, Reader, Ring, RingFile};

const PAYLOAD: usize = 256;
const PER_THREAD: u64 = 4_000_000;

/// `writers` threads write PER_THREAD records each while a consumer thread frees space by
/// committing the producer cursor every millisecond (producer cost only). Returns writes/s.
fn write_rate(ring: &Ring, writers: u64) -> (f64, u64) {
    let stop = AtomicBool::new(false);
    let payload = [0x5au8; PAYLOAD];
    let pid = std::process::id();
    let before = ring.stats();
    let elapsed = thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                ring.commit(ring.producer_pos());
                thread::sleep(Duration::from_millis(1));
            }
        });
        let t0 = Instant::now();
        let hs: Vec<_> = (0..writers)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..PER_THREAD {
                        let _ = ring.write(0, &payload, pid);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let elapsed = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        elapsed
    });
    let after = ring.stats();
    assert_eq!(
        after.written[0] - before.written[0] + after.dropped_full[0] - before.dropped_full[0],
        writers * PER_THREAD
    );
    (
        writers as f64 * PER_THREAD as f64 / elapsed,
        after.dropped_full[0] - before.dropped_full[0],
    )
}

/// Fills the ring, then times a Reader draining it (commit every 64 records). Returns reads/s.
fn read_rate(ring: &Ring) -> f64 {
    let payload = [0x5au8; PAYLOAD];
    ring.commit(ring.producer_pos());
    let mut n = 0u64;
    while ring.write(1, &payload, std::process::id()).is_ok() {
        n += 1;
    }
    let mut reader = Reader::new(ring);
    let t0 = Instant::now();
    let mut read = 0u64;
    loop {
        match reader.next() {
            Read::Record(r) => {
                read += 1;
                if read & 63 == 0 {
                    ring.commit(r.end);
                }
            }
            Read::Empty => break,
            other => panic!("{other:?}"),
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    ring.commit(reader.position());
    assert_eq!(read, n);
    read as f64 / elapsed
}

#[test]
#[ignore]
fn ring_bench() {
    let dir = tempfile::tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    })
    .unwrap();
    let (rf, _) = RingFile::open_or_create(&dir.path().join("bench.ring"), 64 << 20).unwrap();
    let ring = rf.ring();
    println!("ring_bench: {PAYLOAD}-byte payloads, 64 MiB ring, {PER_THREAD} writes per thread");
    for writers in [1, 2] {
        let (rate, full) = write_rate(ring, writers);
        println!(
            "ring_bench: write, {writers} thread(s): {:.1} M records/s ({:.0} MB/s), ring full {full}",
            rate / 1e6,
            rate * (PAYLOAD + 16) as f64 / 1e6,
        );
    }
    let rate = read_rate(ring);
    println!(
        "ring_bench: read (Reader, payload copied to a Vec): {:.1} M records/s",
        rate / 1e6
    );
}
