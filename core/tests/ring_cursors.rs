//! Named sink cursors: each sink reads and acknowledges on its own; the ring's consumer cursor
//! (the space nginx may reuse) follows the slowest claimed cursor.

use tracker_core::ring::{Read, RingFile, WriteError, CURSOR_SLOTS, MIN_DATA_SIZE};

const PID: u32 = 4242;

fn read_all(reader: &mut tracker_core::ring::Reader<'_>) -> Vec<u64> {
    let mut ends = Vec::new();
    while let Read::Record(r) = reader.next() {
        ends.push(r.end);
    }
    ends
}

#[test]
fn consumer_follows_the_slowest_sink() {
    let dir = tempfile::tempdir().unwrap();
    let (rf, _) = RingFile::open_or_create(&dir.path().join("c.ring"), MIN_DATA_SIZE).unwrap();
    let ring = rf.ring();
    for _ in 0..10 {
        ring.write(0, &[1u8; 100], PID).unwrap();
    }
    let fast = ring.cursor("file").unwrap();
    let slow = ring.cursor("kafka").unwrap();
    assert_eq!((fast.position(), slow.position()), (0, 0));

    let ends = read_all(&mut fast.reader());
    assert_eq!(ends.len(), 10);
    fast.commit(*ends.last().unwrap());
    assert_eq!(fast.position(), ring.producer_pos());
    // The slow sink has acknowledged nothing: nginx may not reuse any space yet.
    assert_eq!(ring.consumer_pos(), 0);
    assert_eq!(slow.reader().position(), 0);

    let ends = read_all(&mut slow.reader());
    slow.commit(ends[4]);
    assert_eq!(ring.consumer_pos(), ends[4]);
    slow.commit(ends[9]);
    assert_eq!(ring.consumer_pos(), ring.producer_pos());

    // Positions only move forward, and never past the producer cursor.
    slow.commit(ends[1]);
    assert_eq!(slow.position(), ends[9]);
    slow.commit(u64::MAX);
    assert_eq!(slow.position(), ring.producer_pos());

    // The same name finds the same slot (and its position) again, also from another mapping.
    let rf2 = RingFile::open_existing(&dir.path().join("c.ring")).unwrap();
    let again = rf2.ring().cursor("kafka").unwrap();
    assert_eq!(again.position(), ring.producer_pos());
    let mut names: Vec<String> = ring.cursors().into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["file", "kafka"]);
}

#[test]
fn a_stopped_sink_keeps_events_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let (rf, _) = RingFile::open_or_create(&dir.path().join("c.ring"), MIN_DATA_SIZE).unwrap();
    let ring = rf.ring();
    let file = ring.cursor("file").unwrap();
    let _kafka = ring.cursor("kafka").unwrap();
    // Fill the ring; the file sink keeps up, the kafka sink does not move.
    let mut written = 0;
    loop {
        match ring.write(0, &[2u8; 1000], PID) {
            Ok(_) => written += 1,
            Err(WriteError::Full) => break,
            Err(e) => panic!("{e:?}"),
        }
        let ends = read_all(&mut file.reader());
        if let Some(&e) = ends.last() {
            file.commit(e);
        }
    }
    assert!(written > 10);
    assert_eq!(ring.consumer_pos(), 0, "the stopped sink holds the space");
    assert_eq!(file.position(), ring.producer_pos());

    // The operator removes the kafka sink: its slot is freed and the space comes back.
    let freed = ring.release_cursors_except(&["file"]);
    assert_eq!(freed, ["kafka"]);
    assert_eq!(ring.consumer_pos(), ring.producer_pos());
    assert!(ring.write(0, &[3u8; 1000], PID).is_ok());
    // A sink added later starts at the consumer cursor, not at 0.
    let late = ring.cursor("kafka").unwrap();
    assert_eq!(late.position(), ring.consumer_pos());
}

#[test]
fn slots_run_out_cleanly_and_long_names_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (rf, _) = RingFile::open_or_create(&dir.path().join("c.ring"), MIN_DATA_SIZE).unwrap();
    let ring = rf.ring();
    let long = "x".repeat(100);
    ring.cursor(&long).unwrap();
    assert_eq!(ring.cursors()[0].0.len(), 48);
    for i in 1..CURSOR_SLOTS {
        ring.cursor(&format!("sink{i}")).unwrap();
    }
    let e = ring.cursor("one-too-many").err().unwrap();
    assert!(e.contains("slots"), "{e}");
}

/// Several sinks read and commit from their own threads (as the shipper's writer threads do)
/// while a producer writes: `Cursor::commit` moves the sink's slot, then the consumer cursor to
/// the smallest slot with `fetch_max`. A minimum computed from slot values that have grown since
/// is still at most the slowest sink, so the consumer cursor never passes a sink, whichever
/// commit lands last; and once every sink has committed its last position, the consumer cursor
/// is there.
#[test]
fn sinks_committing_from_several_threads_never_pass_the_slowest() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const SINKS: usize = 4;
    const N: u32 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let (rf, _) = RingFile::open_or_create(&dir.path().join("c.ring"), MIN_DATA_SIZE).unwrap();
    let ring = rf.ring();
    let cursors: Vec<_> = (0..SINKS)
        .map(|i| ring.cursor(&format!("sink{i}")).unwrap())
        .collect();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let sinks: Vec<_> = cursors
            .iter()
            .enumerate()
            .map(|(i, cur)| {
                let done = &done;
                s.spawn(move || {
                    let mut reader = cur.reader();
                    let mut n = 0u32;
                    loop {
                        let finished = done.load(Ordering::Acquire);
                        match reader.next() {
                            Read::Record(r) => {
                                n += 1;
                                // Sinks commit at different paces.
                                if n.is_multiple_of(1 + 7 * i as u32) {
                                    cur.commit(r.end);
                                }
                            }
                            Read::Empty => {
                                cur.commit(reader.position());
                                if finished {
                                    return n;
                                }
                                std::thread::yield_now();
                            }
                            other => panic!("{other:?}"),
                        }
                    }
                })
            })
            .collect();
        let watcher = s.spawn(|| {
            // The slots as they are in the file (`Cursor::position` is never below the consumer
            // cursor, so it cannot tell): `pos` is the second word of each 64-byte slot at 1024.
            let file = std::fs::File::open(dir.path().join("c.ring")).unwrap();
            let slot_pos = |i: u64| {
                let mut b = [0u8; 8];
                std::os::unix::fs::FileExt::read_exact_at(&file, &mut b, 1024 + 64 * i + 8)
                    .unwrap();
                u64::from_ne_bytes(b)
            };
            let mut checks = 0u64;
            while !done.load(Ordering::Acquire) {
                // The consumer cursor first: slots only grow, so a later load of each is at
                // least what it was when the consumer cursor was computed.
                let c = ring.consumer_pos();
                let slowest = (0..SINKS as u64).map(slot_pos).min().unwrap();
                assert!(
                    c <= slowest,
                    "consumer cursor {c} past the slowest sink {slowest}"
                );
                checks += 1;
            }
            checks
        });
        let mut written = 0;
        while written < N {
            match ring.write(0, &[7u8; 40], PID) {
                Ok(_) => written += 1,
                Err(WriteError::Full) => std::thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
        done.store(true, Ordering::Release);
        for h in sinks {
            assert_eq!(h.join().unwrap(), N);
        }
        assert!(watcher.join().unwrap() > 0);
    });
    let pp = ring.producer_pos();
    assert!(cursors.iter().all(|c| c.position() == pp));
    assert_eq!(ring.consumer_pos(), pp);
}
