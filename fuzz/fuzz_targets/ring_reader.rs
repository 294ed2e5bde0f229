//! The shipper's ring reader on a corrupted ring file: a small valid ring (64 KiB data area)
//! with a few real records, then arbitrary bytes written over its data area and its producer
//! and consumer cursors, then RingFile::open_existing + Reader until it reports Empty.
//! Never panics, never loops: the number of reads is bounded (every Record or Skipped moves
//! forward, and the distance to the producer cursor is bounded by a few laps here).
//!
//! Half of the inputs keep the producer cursor within 4 laps of the consumer; the other half
//! give it any value (torn far ahead, behind, unaligned, at or above 2^62), written after the
//! file is opened (`open_existing` refuses such a header), as a stray write over a mapped ring
//! would: the reader reports it (`Corrupt`) and never scans more than a lap at a time.
#![no_main]
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tracker_core::ring::{Read, Reader, RingFile, HEADER_SIZE, MIN_DATA_SIZE};

const OFF_PRODUCER: usize = 64;
const OFF_CONSUMER: usize = 128;

fn paths() -> &'static (PathBuf, Vec<u8>) {
    static P: OnceLock<(PathBuf, Vec<u8>)> = OnceLock::new();
    P.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let path = dir.join(format!("tracker-fuzz-ring-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        {
            let (rf, _) = RingFile::open_or_create(&path, MIN_DATA_SIZE).expect("create ring");
            for i in 0..20u32 {
                let payload = vec![b'a' + (i % 26) as u8; 10 + 37 * i as usize];
                rf.ring().write((i % 5) as usize, &payload, std::process::id()).expect("write");
            }
        }
        let image = std::fs::read(&path).expect("read ring");
        (path, image)
    })
}

fuzz_target!(|data: &[u8]| {
    let (path, image) = paths();
    let size = MIN_DATA_SIZE;
    let mut file = image.clone();
    // Layout: 8 bytes consumer, 8 bytes producer delta, 2 bytes offset, then the bytes to write
    // over the data area at that offset (wrapping).
    if data.len() < 18 {
        return;
    }
    let consumer = u64::from_le_bytes(data[0..8].try_into().unwrap()) >> 4; // any position
    let raw = u64::from_le_bytes(data[8..16].try_into().unwrap());
    let torn = raw & 1 == 1;
    let producer = if torn { raw & !1 } else { consumer.saturating_add(raw % (4 * size + 1)) };
    // A torn producer is written after the open; the file first holds a sane one.
    let at_open = if torn { consumer } else { producer };
    let at = u16::from_le_bytes([data[16], data[17]]) as usize;
    file[OFF_PRODUCER..][..8].copy_from_slice(&at_open.to_ne_bytes());
    file[OFF_CONSUMER..][..8].copy_from_slice(&consumer.to_ne_bytes());
    let area = &mut file[HEADER_SIZE..];
    let n = area.len();
    for (i, &b) in data[18..].iter().enumerate() {
        area[(at + i) % n] = b;
    }
    std::fs::write(path, &file).expect("write ring file");

    let rf = match RingFile::open_existing(path) {
        Ok(rf) => rf,
        Err(_) => return,
    };
    if torn {
        let f = std::fs::OpenOptions::new().write(true).open(path).expect("open ring file");
        f.write_all_at(&producer.to_ne_bytes(), OFF_PRODUCER as u64).expect("tear the producer cursor");
    }
    let ring = rf.ring();
    let mut reader = Reader::new(ring).with_stale_after(Duration::ZERO);
    let mut steps = 0u64;
    let limit = 4 * size / 16 + 16;
    loop {
        steps += 1;
        assert!(steps <= limit, "reader did not reach Empty in {limit} reads");
        match reader.next() {
            Read::Empty => break,
            Read::Record(r) => {
                assert!(r.end > r.pos && r.payload.len() as u64 <= r.end - r.pos);
                assert!(r.end <= producer);
            }
            Read::Skipped { from, to } => assert!(to > from && to <= producer),
            Read::Corrupt { producer: p, .. } => assert_eq!(p, producer),
            Read::Resynced { from, to } => assert!(to > from && to == producer && to - from > size),
        }
    }
});
