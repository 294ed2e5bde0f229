//! Many producer threads and one consumer; writers that stall (in-process, alive).

mod ring_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ring_common::{check, len_for, payload, sum};
use tracker_core::ring::{Opened, Read, Reader, RingFile, StallPoint, WriteError};

#[test]
fn ring_threads_exactly_once_in_order() {
    const PRODUCERS: u32 = 8;
    const PER: u32 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let (rf, o) = RingFile::open_or_create(&dir.path().join("t.ring"), 256 * 1024).unwrap();
    assert_eq!(o, Opened::Created);
    let ring = rf.ring();
    let done = AtomicBool::new(false);
    // The real pid: a writer preempted mid-record must not look dead.
    let me = std::process::id();

    let (oks, fulls, got) = thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut reader = Reader::new(ring);
            let mut got: Vec<Vec<u32>> = vec![Vec::new(); PRODUCERS as usize];
            let mut uncommitted = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(Instant::now() < deadline, "consumer never finished");
                // Read the flag before looking: if it was set, an Empty means drained.
                let finished = done.load(Ordering::Acquire);
                match reader.next() {
                    Read::Record(r) => {
                        let (id, seq) = check(&r.payload);
                        assert_eq!(r.payload.len(), len_for(id, seq, 120));
                        got[id as usize].push(seq);
                        // Commit in batches, as the shipper does.
                        uncommitted += 1;
                        if uncommitted == 64 {
                            ring.commit(r.end);
                            uncommitted = 0;
                        }
                    }
                    Read::Empty => {
                        ring.commit(reader.position());
                        uncommitted = 0;
                        if finished {
                            return got;
                        }
                        thread::yield_now();
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|id| {
                s.spawn(move || {
                    let mut ok = vec![false; PER as usize];
                    let mut fulls = 0u64;
                    for seq in 0..PER {
                        let p = payload(id, seq, len_for(id, seq, 120));
                        // One retry after a yield, then drop: both paths get exercised.
                        for attempt in 0..2 {
                            match ring.write(id as usize % 5, &p, me) {
                                Ok(_) => {
                                    ok[seq as usize] = true;
                                    break;
                                }
                                Err(WriteError::Full) => {
                                    fulls += 1;
                                    if attempt == 0 {
                                        thread::yield_now();
                                    }
                                }
                                Err(e) => panic!("{e:?}"),
                            }
                        }
                    }
                    (ok, fulls)
                })
            })
            .collect();
        let results: Vec<_> = producers.into_iter().map(|h| h.join().unwrap()).collect();
        done.store(true, Ordering::Release);
        let got = consumer.join().unwrap();
        let (oks, fulls): (Vec<_>, Vec<_>) = results.into_iter().unzip();
        (oks, fulls, got)
    });

    let mut total_ok = 0u64;
    for id in 0..PRODUCERS as usize {
        let expected: Vec<u32> = (0..PER).filter(|&s| oks[id][s as usize]).collect();
        // Exactly once and in order: the sequence read equals the sequence written.
        assert!(
            got[id] == expected,
            "producer {id}: read {} records, wrote {}",
            got[id].len(),
            expected.len()
        );
        total_ok += expected.len() as u64;
    }
    let s = ring.stats();
    let total_full: u64 = fulls.iter().sum();
    eprintln!("written {total_ok}, ring-full results {total_full}");
    assert!(total_ok > 0);
    assert_eq!(sum(&s.written), total_ok);
    assert_eq!(sum(&s.dropped_full), total_full);
    assert_eq!(s.producer_pos, s.consumer_pos);
    assert_eq!(s.abandoned, 0);
    // Per kind: written + dropped = attempts (kind = id % 5, one kind may hold two producers).
    let mut attempts = [0u64; 8];
    for id in 0..PRODUCERS as usize {
        attempts[id % 5] += oks[id].iter().filter(|&&b| b).count() as u64 + fulls[id];
    }
    for (k, &a) in attempts.iter().enumerate() {
        assert_eq!(s.written[k] + s.dropped_full[k], a, "kind {k}");
    }
}

/// A live writer that stays reserved longer than stale_after is skipped (pid reuse safety),
/// and only after stale_after.
#[test]
fn ring_threads_live_writer_stalled_after_reserve_is_skipped_after_stale_after() {
    let dir = tempfile::tempdir().unwrap();
    let (rf, _) = RingFile::open_or_create(&dir.path().join("t.ring"), 1 << 20).unwrap();
    let ring = rf.ring();
    let me = std::process::id();
    thread::scope(|s| {
        // Owned by this closure: dropped if it panics, which releases the staller.
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let (stalled_tx, stalled_rx) = crossbeam_channel::bounded::<()>(1);
        ring.write(0, &payload(1, 0, 50), me).unwrap();
        let staller = s.spawn(move || {
            ring.write_stalled(0, &payload(9, 0, 64), me, StallPoint::AfterReserved, || {
                stalled_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
        });
        stalled_rx.recv().unwrap();
        for i in 1..10 {
            ring.write(0, &payload(1, i, 50), me).unwrap();
        }
        let mut reader = Reader::new(ring).with_stale_after(Duration::from_millis(100));
        let Read::Record(r) = reader.next() else {
            panic!()
        };
        assert_eq!(check(&r.payload), (1, 0));
        let stuck_at = reader.position();
        let t0 = Instant::now();
        let skipped = loop {
            match reader.next() {
                Read::Empty => thread::sleep(Duration::from_millis(2)),
                Read::Skipped { from, to } => break (from, to),
                other => panic!("{other:?}"),
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "not skipped");
        };
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(100),
            "skipped a live writer after {waited:?}"
        );
        assert_eq!(skipped, (stuck_at, stuck_at + 16 + 64));
        for i in 1..10 {
            let Read::Record(r) = reader.next() else {
                panic!()
            };
            assert_eq!(check(&r.payload), (1, i));
        }
        assert_eq!(reader.next(), Read::Empty);
        assert_eq!(ring.stats().abandoned, 1);
        release_tx.send(()).unwrap();
        assert_eq!(staller.join().unwrap(), Ok(stuck_at));
    });
}

/// A writer that reserved (CAS) and never tagged, with nothing written after it: skipped to the
/// producer cursor once stale_after passed without the producer cursor moving.
#[test]
fn ring_threads_untagged_reservation_at_the_end_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (rf, _) = RingFile::open_or_create(&dir.path().join("t.ring"), 1 << 20).unwrap();
    let ring = rf.ring();
    let me = std::process::id();
    thread::scope(|s| {
        // Owned by this closure: dropped if it panics, which releases the staller.
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let (stalled_tx, stalled_rx) = crossbeam_channel::bounded::<()>(1);
        ring.write(0, &payload(1, 0, 50), me).unwrap();
        let staller = s.spawn(move || {
            ring.write_stalled(0, &payload(9, 0, 300), me, StallPoint::AfterCas, || {
                stalled_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
        });
        stalled_rx.recv().unwrap();
        let mut reader = Reader::new(ring).with_stale_after(Duration::from_millis(100));
        let Read::Record(_) = reader.next() else {
            panic!()
        };
        let from = reader.position();
        let pp = ring.producer_pos();
        assert_eq!(pp, from + 16 + 304);
        let t0 = Instant::now();
        let skipped = loop {
            match reader.next() {
                Read::Empty => thread::sleep(Duration::from_millis(2)),
                Read::Skipped { from, to } => break (from, to),
                other => panic!("{other:?}"),
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "not skipped");
        };
        assert!(t0.elapsed() >= Duration::from_millis(100));
        assert_eq!(skipped, (from, pp));
        assert_eq!(ring.stats().abandoned, 1);
        // Later writes are read normally.
        ring.write(0, &payload(1, 1, 50), me).unwrap();
        let Read::Record(r) = reader.next() else {
            panic!()
        };
        assert_eq!(check(&r.payload), (1, 1));
        release_tx.send(()).unwrap();
        staller.join().unwrap().unwrap();
        // The late writer's record is behind the reader: never read.
        assert_eq!(reader.next(), Read::Empty);
    });
}

/// A writer that reserved and never tagged, with other records after it: the forward scan
/// finds the next record.
#[test]
fn ring_threads_untagged_reservation_then_records_is_skipped_by_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (rf, _) = RingFile::open_or_create(&dir.path().join("t.ring"), 1 << 20).unwrap();
    let ring = rf.ring();
    let me = std::process::id();
    thread::scope(|s| {
        // Owned by this closure: dropped if it panics, which releases the staller.
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let (stalled_tx, stalled_rx) = crossbeam_channel::bounded::<()>(1);
        // The stalled record's area holds stale data from an earlier lap that looks like
        // records (tags of old positions) and payload bytes.
        let mut reader = Reader::new(ring);
        let size = ring.data_size();
        while ring.producer_pos() < 3 * size + 512 {
            ring.write(0, &payload(5, 0, 40), me).unwrap();
            while let Read::Record(r) = reader.next() {
                ring.commit(r.end);
            }
        }
        let staller = s.spawn(move || {
            ring.write_stalled(0, &payload(9, 0, 1000), me, StallPoint::AfterCas, || {
                stalled_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
        });
        stalled_rx.recv().unwrap();
        let from = reader.position();
        for i in 0..20 {
            ring.write(0, &payload(1, i, 8 + i as usize), me).unwrap();
        }
        let mut reader = Reader::new(ring).with_stale_after(Duration::from_millis(100));
        assert_eq!(reader.position(), from);
        let t0 = Instant::now();
        let skipped = loop {
            match reader.next() {
                Read::Empty => thread::sleep(Duration::from_millis(2)),
                Read::Skipped { from, to } => break (from, to),
                other => panic!("{other:?}"),
            }
            assert!(t0.elapsed() < Duration::from_secs(5), "not skipped");
        };
        assert!(t0.elapsed() >= Duration::from_millis(100));
        assert_eq!(skipped, (from, from + 16 + 1008));
        for i in 0..20 {
            let Read::Record(r) = reader.next() else {
                panic!()
            };
            assert_eq!(check(&r.payload), (1, i));
        }
        assert_eq!(reader.next(), Read::Empty);
        assert_eq!(ring.stats().abandoned, 1);
        release_tx.send(()).unwrap();
        staller.join().unwrap().unwrap();
    });
}

/// A writer between CAS and tagging only for a moment is waited for, not skipped.
#[test]
fn ring_threads_short_stall_is_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (rf, _) = RingFile::open_or_create(&dir.path().join("t.ring"), 1 << 20).unwrap();
    let ring = rf.ring();
    let me = std::process::id();
    for point in [StallPoint::AfterCas, StallPoint::AfterReserved] {
        let (stalled_tx, stalled_rx) = crossbeam_channel::bounded::<()>(1);
        thread::scope(|s| {
            let staller = s.spawn(move || {
                ring.write_stalled(0, &payload(3, 0, 100), me, point, || {
                    stalled_tx.send(()).unwrap();
                    thread::sleep(Duration::from_millis(50));
                })
            });
            stalled_rx.recv().unwrap();
            ring.write(0, &payload(3, 1, 100), me).unwrap();
            let mut reader = Reader::new(ring).with_stale_after(Duration::from_millis(500));
            let mut seqs = Vec::new();
            let t0 = Instant::now();
            while seqs.len() < 2 {
                match reader.next() {
                    Read::Record(r) => {
                        seqs.push(check(&r.payload).1);
                        ring.commit(r.end);
                    }
                    Read::Empty => thread::sleep(Duration::from_millis(1)),
                    other => panic!("{point:?}: {other:?}"),
                }
                assert!(t0.elapsed() < Duration::from_secs(5));
            }
            assert_eq!(seqs, [0, 1]);
            staller.join().unwrap().unwrap();
        });
    }
    assert_eq!(ring.stats().abandoned, 0);
}
