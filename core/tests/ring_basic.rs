//! Single-threaded ring behaviour: roundtrip, wrap-around, full, too large, counters, commit,
//! reopen, resize and file-format checks.

mod ring_common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ring_common::{check, drain, len_for, payload, records, sum};
use tracker_core::ring::{
    Opened, Read, Reader, RingError, RingFile, WriteError, COUNTER_KINDS, HEADER_SIZE, MAX_PAYLOAD,
    MIN_DATA_SIZE,
};

const PID: u32 = 4242;

fn new_ring(dir: &tempfile::TempDir, size: u64) -> (std::path::PathBuf, RingFile) {
    let path = dir.path().join("t.ring");
    let (rf, o) = RingFile::open_or_create(&path, size).unwrap();
    assert_eq!(o, Opened::Created);
    (path, rf)
}

#[test]
fn ring_roundtrip_single() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, rf) = new_ring(&dir, MIN_DATA_SIZE);
    let ring = rf.ring();
    assert_eq!(ring.data_size(), MIN_DATA_SIZE);
    let mut reader = Reader::new(ring);
    assert_eq!(reader.next(), Read::Empty);

    let a = ring.write(0, b"hello", PID).unwrap();
    let b = ring.write(1, b"", PID).unwrap();
    let c = ring.write(2, &[7u8; 16], PID).unwrap();
    let d = ring.write(3, &[9u8; 17], PID).unwrap();
    assert_eq!((a, b, c, d), (0, 32, 48, 80));
    assert_eq!(ring.producer_pos(), 80 + 16 + 32);

    let got = records(drain(&mut reader, ring));
    assert_eq!(got.len(), 4);
    assert_eq!(
        (got[0].pos, got[0].end, &got[0].payload[..]),
        (0, 32, &b"hello"[..])
    );
    assert_eq!((got[1].pos, got[1].end, got[1].payload.len()), (32, 48, 0));
    assert_eq!(
        (got[2].pos, got[2].end, &got[2].payload[..]),
        (48, 80, &[7u8; 16][..])
    );
    assert_eq!(
        (got[3].pos, got[3].end, &got[3].payload[..]),
        (80, 128, &[9u8; 17][..])
    );
    assert_eq!(reader.position(), 128);
    assert_eq!(ring.consumer_pos(), 128);
    assert_eq!(reader.next(), Read::Empty);

    let s = ring.stats();
    assert_eq!(s.written[..4], [1, 1, 1, 1]);
    assert_eq!(sum(&s.written), 4);
    assert_eq!(s.producer_pos, 128);
    assert_eq!(s.consumer_pos, 128);
    assert_eq!(s.abandoned, 0);
}

#[test]
fn ring_reader_reads_ahead_of_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, rf) = new_ring(&dir, MIN_DATA_SIZE);
    let ring = rf.ring();
    for i in 0..10 {
        ring.write(0, &payload(1, i, 40), PID).unwrap();
    }
    let mut reader = Reader::new(ring);
    let mut ends = Vec::new();
    while let Read::Record(r) = reader.next() {
        ends.push(r.end);
    }
    assert_eq!(ends.len(), 10);
    // Nothing committed: a new reader starts over.
    assert_eq!(ring.consumer_pos(), 0);
    assert_eq!(Reader::new(ring).position(), 0);
    ring.commit(ends[4]);
    assert_eq!(ring.consumer_pos(), ends[4]);
    // Commit never moves backward, and never past the producer cursor.
    ring.commit(ends[1]);
    assert_eq!(ring.consumer_pos(), ends[4]);
    ring.commit(u64::MAX);
    assert_eq!(ring.consumer_pos(), ring.producer_pos());
}

#[test]
fn ring_reader_never_reads_behind_consumer_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, rf) = new_ring(&dir, MIN_DATA_SIZE);
    let ring = rf.ring();
    let mut reader = Reader::new(ring);
    let mut ends = Vec::new();
    for i in 0..5 {
        ring.write(0, &payload(1, i, 24), PID).unwrap();
    }
    while let Read::Record(r) = reader.next() {
        ends.push(r.end);
    }
    let mut reader = Reader::new(ring);
    ring.commit(ends[2]);
    match reader.next() {
        Read::Record(r) => assert_eq!(check(&r.payload), (1, 3)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ring_wraparound_many_laps_with_padding() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, rf) = new_ring(&dir, MIN_DATA_SIZE);
    let ring = rf.ring();
    let size = ring.data_size();
    let mut reader = Reader::new(ring);
    let mut seq = 0u32;
    let mut next_read = 0u32;
    let mut padded = 0;
    let mut last_end = 0u64;
    // Fill to full, drain (in two halves), repeat: records of 8..1500 bytes at every offset.
    while ring.producer_pos() < 200 * size {
        loop {
            let p = payload(7, seq, len_for(7, seq, 1500));
            match ring.write(seq as usize % COUNTER_KINDS, &p, PID) {
                Ok(_) => seq += 1,
                Err(WriteError::Full) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        for half in 0..2 {
            loop {
                match reader.next() {
                    Read::Record(r) => {
                        assert_eq!(check(&r.payload), (7, next_read));
                        assert_eq!(r.payload.len(), len_for(7, next_read, 1500));
                        if r.pos != last_end {
                            // Only padding separates records: up to the lap boundary.
                            assert_eq!(r.pos % size, 0, "gap before record at {}", r.pos);
                            assert!(r.pos - last_end < 16 + 1500 + 16);
                            padded += 1;
                        }
                        // A record never straddles the end of the data area.
                        assert!(r.pos % size + (r.end - r.pos) <= size);
                        last_end = r.end;
                        next_read += 1;
                        ring.commit(r.end);
                        if half == 0 && next_read & 15 == 0 {
                            break;
                        }
                    }
                    Read::Empty => break,
                    other => panic!("{other:?}"),
                }
            }
        }
    }
    assert_eq!(next_read, seq);
    assert!(padded > 100, "only {padded} paddings");
    let s = ring.stats();
    assert_eq!(sum(&s.written), seq as u64);
    assert!(sum(&s.dropped_full) > 100);
    assert_eq!(s.consumer_pos, s.producer_pos);
    assert_eq!(s.abandoned, 0);
}

#[test]
fn ring_full_and_commit_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, rf) = new_ring(&dir, MIN_DATA_SIZE);
    let ring = rf.ring();
    let size = ring.data_size();
    // 1008-byte payloads: 1024-byte records, exactly 64 fit.
    let rec = 1024u64;
    let n = size / rec;
    for i in 0..n {
        assert_eq!(ring.write(2, &payload(1, i as u32, 1008), PID), Ok(i * rec));
    }
    assert_eq!(
        ring.write(2, &payload(1, 999, 1008), PID),
        Err(WriteError::Full)
    );
    assert_eq!(ring.write(3, b"x", PID), Err(WriteError::Full));
    // Reading does not free space; committing does.
    let mut reader = Reader::new(ring);
    let first = match reader.next() {
        Read::Record(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        ring.write(2, &payload(1, 999, 1008), PID),
        Err(WriteError::Full)
    );
    ring.commit(first.end);
    assert_eq!(ring.write(2, &payload(1, n as u32, 1008), PID), Ok(n * rec));
    assert_eq!(ring.write(2, b"x", PID), Err(WriteError::Full));
    let s = ring.stats();
    assert_eq!(s.written[2], n + 1);
    assert_eq!(s.dropped_full[2], 3);
    assert_eq!(s.dropped_full[3], 1);
    assert_eq!(s.producer_pos - s.consumer_pos, size);
    // Everything is still readable, in order.
    let got = records(drain(&mut reader, ring));
    let seqs: Vec<u32> = got.iter().map(|r| check(&r.payload).1).collect();
    assert_eq!(seqs, (1..=n as u32).collect::<Vec<_>>());
}

#[test]
fn ring_full_when_padding_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, rf) = new_ring(&dir, MIN_DATA_SIZE);
    let ring = rf.ring();
    let size = ring.data_size();
    // Fill to size - 16 with 1024-byte records and one 1008-byte record.
    let n = size / 1024 - 1;
    for i in 0..n {
        ring.write(0, &payload(1, i as u32, 1008), PID).unwrap();
    }
    ring.write(0, &payload(1, 0, 992 - 8), PID).unwrap(); // 16 + 992 = 1008
    assert_eq!(ring.producer_pos(), size - 16);
    // Consume one 1024-byte record.
    let mut reader = Reader::new(ring);
    let Read::Record(r) = reader.next() else {
        panic!()
    };
    ring.commit(r.end);
    // 1040 bytes are free: a 1040-byte record needs 16 (pad) + 1040 and does not fit; a
    // 1024-byte one does.
    assert_eq!(
        ring.write(0, &payload(1, 0, 1009), PID),
        Err(WriteError::Full)
    );
    assert_eq!(ring.write(0, &payload(1, 5, 1000), PID), Ok(size));
    assert_eq!(ring.producer_pos(), size + 1024);
    let got = records(drain(&mut reader, ring));
    assert_eq!(got.last().unwrap().pos, size);
    assert_eq!(check(&got.last().unwrap().payload), (1, 5));
}

#[test]
fn ring_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, rf) = new_ring(&dir, MIN_DATA_SIZE);
    let ring = rf.ring();
    let quarter = (MIN_DATA_SIZE / 4) as usize;
    assert_eq!(
        ring.write(1, &vec![1u8; quarter - 15], PID),
        Err(WriteError::TooLarge)
    );
    assert!(ring.write(1, &vec![1u8; quarter - 16], PID).is_ok());
    assert_eq!(
        ring.write(4, &vec![1u8; MAX_PAYLOAD + 1], PID),
        Err(WriteError::TooLarge)
    );
    // In a large ring MAX_PAYLOAD is the limit.
    let dir2 = tempfile::tempdir().unwrap();
    let (_p2, big) = new_ring(&dir2, 1 << 20);
    let big = big.ring();
    assert_eq!(
        big.write(4, &vec![2u8; MAX_PAYLOAD + 1], PID),
        Err(WriteError::TooLarge)
    );
    let pos = big.write(4, &vec![2u8; MAX_PAYLOAD], PID).unwrap();
    let mut reader = Reader::new(big);
    match reader.next() {
        Read::Record(r) => {
            assert_eq!(r.pos, pos);
            assert_eq!(r.payload, vec![2u8; MAX_PAYLOAD]);
        }
        other => panic!("{other:?}"),
    }
    let s = ring.stats();
    assert_eq!(s.dropped_too_large[1], 1);
    assert_eq!(s.dropped_too_large[4], 1);
    assert_eq!(s.written[1], 1);
    assert_eq!(sum(&s.dropped_full), 0);
    assert_eq!(big.stats().dropped_too_large[4], 1);
}

#[test]
fn ring_counters_rejected_and_kind_clamp() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, rf) = new_ring(&dir, MIN_DATA_SIZE);
    let ring = rf.ring();
    ring.count_rejected(0);
    ring.count_rejected(0);
    ring.count_rejected(3);
    ring.count_rejected(100); // out of range: last slot
    ring.write(100, b"x", PID).unwrap();
    ring.write(COUNTER_KINDS - 1, b"y", PID).unwrap();
    let s = ring.stats();
    assert_eq!(s.rejected[0], 2);
    assert_eq!(s.rejected[3], 1);
    assert_eq!(s.rejected[COUNTER_KINDS - 1], 1);
    assert_eq!(s.written[COUNTER_KINDS - 1], 2);
    assert_eq!(sum(&s.written), 2);
}

#[test]
fn ring_positions_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ring");
    let (before, last_end) = {
        let (rf, o) = RingFile::open_or_create(&path, MIN_DATA_SIZE).unwrap();
        assert_eq!(o, Opened::Created);
        let ring = rf.ring();
        // Several laps so positions are well past the data size.
        let mut reader = Reader::new(ring);
        for i in 0..2000u32 {
            ring.write(0, &payload(1, i, 200), PID).unwrap();
            let Read::Record(r) = reader.next() else {
                panic!()
            };
            ring.commit(r.end);
        }
        for i in 0..100u32 {
            ring.write(1, &payload(2, i, 100), PID).unwrap();
        }
        let mut last_end = 0;
        for _ in 0..40 {
            let Read::Record(r) = reader.next() else {
                panic!()
            };
            last_end = r.end;
        }
        ring.commit(last_end);
        (ring.stats(), last_end)
    };
    assert!(before.producer_pos > 5 * MIN_DATA_SIZE);

    // The shipper restarts.
    let rf = RingFile::open_existing(&path).unwrap();
    let ring = rf.ring();
    assert_eq!(ring.stats(), before);
    let mut reader = Reader::new(ring);
    assert_eq!(reader.position(), last_end);
    let got = records(drain(&mut reader, ring));
    let seqs: Vec<(u32, u32)> = got.iter().map(|r| check(&r.payload)).collect();
    assert_eq!(seqs, (40..100).map(|i| (2, i)).collect::<Vec<_>>());

    // nginx restarts: same size, reused, writes continue after the old positions.
    drop(rf);
    let (rf, o) = RingFile::open_or_create(&path, MIN_DATA_SIZE).unwrap();
    assert_eq!(o, Opened::Reused);
    let ring = rf.ring();
    let pos = ring.write(0, &payload(3, 0, 50), PID).unwrap();
    assert_eq!(pos, before.producer_pos);
    let mut reader = Reader::new(ring);
    let got = records(drain(&mut reader, ring));
    assert_eq!(got.len(), 1);
    assert_eq!(check(&got[0].payload), (3, 0));
    assert_eq!(ring.stats().written[0], 2001);
}

#[test]
fn ring_two_mappings_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let (path, writer) = new_ring(&dir, MIN_DATA_SIZE);
    let reader_file = RingFile::open_existing(&path).unwrap();
    let mut reader = Reader::new(reader_file.ring());
    for i in 0..500u32 {
        writer.ring().write(0, &payload(1, i, 300), PID).unwrap();
        let got = records(drain(&mut reader, reader_file.ring()));
        assert_eq!(got.len(), 1);
        assert_eq!(check(&got[0].payload), (1, i));
    }
    assert_eq!(writer.ring().consumer_pos(), writer.ring().producer_pos());
    // A second open_or_create while both are open: reused.
    let (_third, o) = RingFile::open_or_create(&path, MIN_DATA_SIZE).unwrap();
    assert_eq!(o, Opened::Reused);
}

#[test]
fn ring_file_mode_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rf) = new_ring(&dir, MIN_DATA_SIZE + 5000);
    assert_eq!(rf.ring().data_size(), MIN_DATA_SIZE + 4096);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.len(), HEADER_SIZE as u64 + MIN_DATA_SIZE + 4096);
    let head = std::fs::read(&path).unwrap();
    assert_eq!(&head[..8], b"NGXTRKR1");
    assert!(rf.is_file_at(&path).unwrap());
    // Requests below the minimum get the minimum.
    let (_rf2, o) = RingFile::open_or_create(&dir.path().join("small.ring"), 1000).unwrap();
    assert_eq!(o, Opened::Created);
    assert_eq!(_rf2.ring().data_size(), MIN_DATA_SIZE);
}

#[test]
fn ring_is_file_at_notices_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rf) = new_ring(&dir, MIN_DATA_SIZE);
    std::fs::remove_file(&path).unwrap();
    assert!(!rf.is_file_at(&path).unwrap());
    let (_new, o) = RingFile::open_or_create(&path, MIN_DATA_SIZE).unwrap();
    assert_eq!(o, Opened::Created);
    assert!(!rf.is_file_at(&path).unwrap());
}

#[test]
fn ring_resize_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ring");
    let end = {
        let (rf, _) = RingFile::open_or_create(&path, MIN_DATA_SIZE).unwrap();
        let ring = rf.ring();
        let mut reader = Reader::new(ring);
        for i in 0..300u32 {
            ring.write(0, &payload(1, i, 500), PID).unwrap();
            drain(&mut reader, ring);
        }
        ring.producer_pos()
    };
    let (rf, o) = RingFile::open_or_create(&path, 2 * MIN_DATA_SIZE).unwrap();
    assert_eq!(o, Opened::Resized);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        HEADER_SIZE as u64 + 2 * MIN_DATA_SIZE
    );
    let ring = rf.ring();
    let s = ring.stats();
    assert_eq!(
        (s.data_size, s.producer_pos, s.consumer_pos),
        (2 * MIN_DATA_SIZE, end, end)
    );
    assert_eq!(s.written[0], 300); // counters kept
    let mut reader = Reader::new(ring);
    assert_eq!(reader.next(), Read::Empty);
    for i in 0..1000u32 {
        ring.write(0, &payload(2, i, 300), PID).unwrap();
        let got = records(drain(&mut reader, ring));
        assert_eq!(check(&got[0].payload), (2, i));
    }
    // Shrink back.
    drop(rf);
    let (rf, o) = RingFile::open_or_create(&path, MIN_DATA_SIZE).unwrap();
    assert_eq!(o, Opened::Resized);
    assert_eq!(rf.ring().data_size(), MIN_DATA_SIZE);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        HEADER_SIZE as u64 + MIN_DATA_SIZE
    );
}

#[test]
fn ring_resize_refused_when_not_empty_or_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.ring");
    {
        let (rf, _) = RingFile::open_or_create(&path, MIN_DATA_SIZE).unwrap();
        rf.ring().write(0, &payload(1, 1, 100), PID).unwrap();
    }
    let (rf, o) = RingFile::open_or_create(&path, 4 * MIN_DATA_SIZE).unwrap();
    assert_eq!(o, Opened::KeptOtherSize(MIN_DATA_SIZE));
    let ring = rf.ring();
    assert_eq!(ring.data_size(), MIN_DATA_SIZE);
    let mut reader = Reader::new(ring);
    let got = records(drain(&mut reader, ring));
    assert_eq!(check(&got[0].payload), (1, 1));
    // Now empty, but mapped by `rf`: the size of a mapped file never changes.
    let (rf2, o) = RingFile::open_or_create(&path, 4 * MIN_DATA_SIZE).unwrap();
    assert_eq!(o, Opened::KeptOtherSize(MIN_DATA_SIZE));
    assert_eq!(rf2.ring().data_size(), MIN_DATA_SIZE);
    drop(rf2);
    drop(rf);
    let (_rf, o) = RingFile::open_or_create(&path, 4 * MIN_DATA_SIZE).unwrap();
    assert_eq!(o, Opened::Resized);
}

fn format_err(r: Result<(RingFile, Opened), RingError>) -> String {
    match r {
        Err(e @ RingError::Format(_)) => {
            let m = e.to_string();
            assert!(!m.contains('\n'), "multi-line message: {m}");
            m
        }
        Err(e) => panic!("expected a format error, got {e:?}"),
        Ok((_, o)) => panic!("expected a format error, got {o:?}"),
    }
}

fn existing_err(path: &Path) -> RingError {
    match RingFile::open_existing(path) {
        Err(e) => e,
        Ok(_) => panic!("open_existing succeeded"),
    }
}

#[test]
fn ring_refuses_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-ring");
    std::fs::write(&path, b"hello world\n").unwrap();
    let m = format_err(RingFile::open_or_create(&path, MIN_DATA_SIZE));
    assert!(
        m.contains(&path.display().to_string()) && m.contains("not a tracker ring"),
        "{m}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"hello world\n");

    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 + 1).collect();
    std::fs::write(&path, &big).unwrap();
    let m = format_err(RingFile::open_or_create(&path, MIN_DATA_SIZE));
    assert!(m.contains("bad magic"), "{m}");
    assert_eq!(std::fs::read(&path).unwrap(), big);
    assert!(matches!(existing_err(&path), RingError::Format(_)));
}

#[test]
fn ring_refuses_other_version() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rf) = new_ring(&dir, MIN_DATA_SIZE);
    rf.ring().write(0, b"keep me", PID).unwrap();
    drop(rf);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_ne_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let m = format_err(RingFile::open_or_create(&path, MIN_DATA_SIZE));
    assert!(m.contains("version 2"), "{m}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let e = existing_err(&path);
    assert!(e.to_string().contains("version 2"), "{e}");
}

#[test]
fn ring_refuses_truncated_ring() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rf) = new_ring(&dir, MIN_DATA_SIZE);
    drop(rf);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(HEADER_SIZE as u64 + 4096).unwrap();
    let m = format_err(RingFile::open_or_create(&path, MIN_DATA_SIZE));
    assert!(m.contains("truncated"), "{m}");
}

#[test]
fn ring_initializes_blank_files() {
    let dir = tempfile::tempdir().unwrap();
    // An empty file (e.g. created by an operator) and a zero-filled one (crash during init).
    let empty = dir.path().join("empty.ring");
    std::fs::write(&empty, b"").unwrap();
    let (_a, o) = RingFile::open_or_create(&empty, MIN_DATA_SIZE).unwrap();
    assert_eq!(o, Opened::Created);
    let zeros = dir.path().join("zeros.ring");
    std::fs::write(&zeros, vec![0u8; 10_000]).unwrap();
    let (b, o) = RingFile::open_or_create(&zeros, MIN_DATA_SIZE).unwrap();
    assert_eq!(o, Opened::Created);
    assert_eq!(b.ring().producer_pos(), 0);
    assert_eq!(
        std::fs::metadata(&zeros).unwrap().len(),
        HEADER_SIZE as u64 + MIN_DATA_SIZE
    );
}

#[test]
fn ring_open_existing_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.ring");
    match existing_err(&missing) {
        RingError::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        e => panic!("{e:?}"),
    }
    let empty = dir.path().join("empty.ring");
    std::fs::write(&empty, b"").unwrap();
    let e = existing_err(&empty);
    assert!(matches!(e, RingError::Format(_)), "{e:?}");
    assert!(
        e.to_string().contains("not an initialized tracker ring"),
        "{e}"
    );
    // open_existing never initializes.
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
}
