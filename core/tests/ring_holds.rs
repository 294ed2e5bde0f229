//! Holds with the shipper's sink cursors: a sink's cursor may pass a record its reader skipped
//! while the writer may still write it, the consumer cursor (what nginx may reuse) does not;
//! the hold survives a restart of the reader and is released when the writer commits.

// `drop(reader)` marks where a shipper stops (its reader is gone): clearer than a scope.
#![allow(clippy::drop_non_drop)]

mod ring_common;

use std::thread;
use std::time::{Duration, Instant};

use ring_common::{check, payload};
use tracker_core::ring::{
    Cursor, Read, Reader, Ring, RingFile, StallPoint, WriteError, MIN_DATA_SIZE,
};

const STALE: Duration = Duration::from_millis(20);

/// The (producer, seq) of the records read, and the (from, to) of the skips.
type ReadAll = (Vec<(u32, u32)>, Vec<(u64, u64)>);

/// Reads until Empty.
fn read_all(reader: &mut Reader<'_>) -> ReadAll {
    let (mut recs, mut skips) = (Vec::new(), Vec::new());
    loop {
        match reader.next() {
            Read::Record(r) => recs.push(check(&r.payload)),
            Read::Skipped { from, to } => skips.push((from, to)),
            Read::Empty => return (recs, skips),
            other => panic!("{other:?}"),
        }
    }
}

/// Reads (committing to `cursor` after every read) until the stalled record has been skipped.
fn read_past_the_stall(reader: &mut Reader<'_>, cursor: &Cursor<'_>) -> Vec<(u64, u64)> {
    let t0 = Instant::now();
    let mut skips = Vec::new();
    while skips.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(5), "never skipped");
        let (_, s) = read_all(reader);
        skips = s;
        cursor.commit(reader.position());
        thread::sleep(Duration::from_millis(5));
    }
    skips
}

fn write_n(ring: &Ring, id: u32, n: u32) {
    for seq in 0..n {
        ring.write(0, &payload(id, seq, 48), 0).unwrap();
    }
}

#[test]
fn a_sink_cursor_passes_a_held_record_the_consumer_cursor_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.ring");
    let (rf, _) = RingFile::open_or_create(&path, MIN_DATA_SIZE).unwrap();
    let ring = rf.ring();
    let file = ring.cursor("file").unwrap();
    let me = std::process::id();
    write_n(ring, 1, 3);
    thread::scope(|s| {
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let (stalled_tx, stalled_rx) = crossbeam_channel::bounded::<()>(1);
        let staller = s.spawn(move || {
            ring.write_stalled(0, &payload(9, 0, 48), me, StallPoint::AfterReserved, || {
                stalled_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
        });
        stalled_rx.recv().unwrap();
        let stalled_at = ring.producer_pos() - 64;
        write_n(ring, 2, 5);
        let mut reader = file.reader().with_stale_after(STALE);
        let skips = read_past_the_stall(&mut reader, &file);
        assert_eq!(skips, [(stalled_at, stalled_at + 64)]);
        assert_eq!(reader.held(), Some(stalled_at));
        // The sink has everything up to the producer cursor; nginx may reuse nothing past the
        // live writer's record.
        assert_eq!(file.position(), ring.producer_pos());
        assert_eq!(ring.consumer_pos(), stalled_at);
        ring.commit(u64::MAX);
        assert_eq!(
            ring.consumer_pos(),
            stalled_at,
            "Ring::commit passed a hold"
        );

        // The ring fills up to the held record, one lap later, and no further.
        let mut fits = 0;
        while ring.write(0, &payload(3, fits, 48), 0).is_ok() {
            fits += 1;
        }
        assert_eq!(ring.producer_pos(), stalled_at + ring.data_size());
        assert_eq!(ring.write(0, b"no room", 0), Err(WriteError::Full));

        // A restarted sink (a new reader of the same cursor) resumes the hold, and re-reads
        // nothing it already had.
        drop(reader);
        let mut reader = file.reader().with_stale_after(STALE);
        assert_eq!(reader.held(), Some(stalled_at));
        assert_eq!(reader.position(), file.position());
        let (recs, skips) = read_all(&mut reader);
        assert!(
            skips.is_empty() && recs.len() == fits as usize,
            "{recs:?} {skips:?}"
        );
        assert_eq!(reader.held(), Some(stalled_at));
        file.commit(reader.position());
        assert_eq!(ring.consumer_pos(), stalled_at);

        // The writer commits: at the next Empty the reader releases the hold, and the
        // consumer cursor moves to the sink's cursor at once (no commit of the sink needed).
        release_tx.send(()).unwrap();
        assert_eq!(staller.join().unwrap(), Ok(stalled_at));
        assert_eq!(reader.next(), Read::Empty);
        assert_eq!(reader.held(), None);
        assert_eq!(ring.consumer_pos(), ring.producer_pos());
        assert_eq!(ring.stats().abandoned, 1);
        // Released for good: a new reader has no hold.
        assert_eq!(file.reader().held(), None);
    });
}

/// With two sinks, each reader holds on its own; the consumer cursor stays before the
/// smallest hold and the slowest sink.
#[test]
fn each_sink_holds_on_its_own_and_a_removed_sink_holds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (rf, _) = RingFile::open_or_create(&dir.path().join("h.ring"), MIN_DATA_SIZE).unwrap();
    let ring = rf.ring();
    let (a, b) = (ring.cursor("a").unwrap(), ring.cursor("b").unwrap());
    let me = std::process::id();
    thread::scope(|s| {
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let (stalled_tx, stalled_rx) = crossbeam_channel::bounded::<()>(1);
        let staller = s.spawn(move || {
            ring.write_stalled(0, &payload(9, 0, 48), me, StallPoint::AfterCas, || {
                stalled_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })
        });
        stalled_rx.recv().unwrap();
        write_n(ring, 1, 4);
        let mut ra = a.reader().with_stale_after(STALE);
        let mut rb = b.reader().with_stale_after(STALE);
        assert_eq!(read_past_the_stall(&mut ra, &a), [(0, 64)]);
        assert_eq!(ring.consumer_pos(), 0, "b has read nothing yet");
        assert_eq!(read_past_the_stall(&mut rb, &b), [(0, 64)]);
        assert_eq!((ra.held(), rb.held()), (Some(0), Some(0)));
        assert_eq!(
            (a.position(), b.position()),
            (ring.producer_pos(), ring.producer_pos())
        );
        assert_eq!(ring.consumer_pos(), 0);
        // Sink b is removed from the configuration: its hold goes with it; a's stays.
        drop(rb);
        assert_eq!(ring.release_cursors_except(&["a"]), ["b"]);
        assert_eq!(ring.consumer_pos(), 0);
        let b2 = ring.cursor("b").unwrap();
        assert_eq!(b2.reader().held(), None);
        assert_eq!(b2.position(), 0);
        ring.release_cursors_except(&["a"]);
        release_tx.send(()).unwrap();
        staller.join().unwrap().unwrap();
        assert_eq!(ra.next(), Read::Empty);
        assert_eq!(ra.held(), None);
        assert_eq!(ring.consumer_pos(), ring.producer_pos());
    });
}

/// A writer that dies (here: a pid that does not exist) before committing releases the hold
/// as soon as the reader looks.
#[test]
fn a_dead_writers_record_is_not_held() {
    let dir = tempfile::tempdir().unwrap();
    let (rf, _) = RingFile::open_or_create(&dir.path().join("h.ring"), MIN_DATA_SIZE).unwrap();
    let ring = rf.ring();
    let cur = ring.cursor("a").unwrap();
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    for point in [StallPoint::AfterReserved, StallPoint::AfterCas] {
        let from = ring.producer_pos();
        // The "dead" writer's record stays unfinished for as long as the reader looks.
        let (tx, rx) = crossbeam_channel::bounded::<()>(0);
        thread::scope(|s| {
            let (stalled_tx, stalled_rx) = crossbeam_channel::bounded::<()>(1);
            let h = s.spawn(move || {
                ring.write_stalled(0, &payload(9, 0, 48), dead, point, || {
                    stalled_tx.send(()).unwrap();
                    let _ = rx.recv();
                })
            });
            stalled_rx.recv().unwrap();
            write_n(ring, 1, 2);
            let mut r = cur.reader().with_stale_after(STALE);
            let skips = read_past_the_stall(&mut r, &cur);
            assert_eq!(skips, [(from, from + 64)], "{point:?}");
            assert_eq!(r.held(), None, "{point:?}");
            assert_eq!(ring.consumer_pos(), ring.producer_pos(), "{point:?}");
            // (The test's thread is alive: let it finish before the space is written again.)
            tx.send(()).unwrap();
            h.join().unwrap().unwrap();
        });
    }
}
