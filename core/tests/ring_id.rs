//! The ring's identity (header bytes 24..40): made once, kept across opens, the same for every
//! process that maps the ring, assigned at the first open of a ring that has none (zeros).

use std::os::unix::fs::FileExt;
use std::sync::Barrier;

use tracker_core::ring::{RingFile, MIN_DATA_SIZE};

#[test]
fn a_new_ring_has_an_identity_kept_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.ring");
    let (rf, _) = RingFile::open_or_create(&path, MIN_DATA_SIZE).unwrap();
    let id = rf.ring().id();
    assert_ne!(id >> 64, 0, "high word unset");
    assert_ne!(id as u64, 0, "low word unset");
    drop(rf);
    let again = RingFile::open_existing(&path).unwrap();
    assert_eq!(again.ring().id(), id);
    let (other, _) =
        RingFile::open_or_create(&dir.path().join("other.ring"), MIN_DATA_SIZE).unwrap();
    assert_ne!(other.ring().id(), id, "two rings, one identity");
}

#[test]
fn a_ring_without_identity_gets_one_and_concurrent_openers_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.ring");
    drop(RingFile::open_or_create(&path, MIN_DATA_SIZE).unwrap());
    for round in 0..20 {
        // As a ring made before identities: zeros at 24..40.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&[0u8; 16], 24)
            .unwrap();
        let barrier = Barrier::new(8);
        let ids: Vec<u128> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let rf = RingFile::open_existing(&path).unwrap();
                        let id = rf.ring().id();
                        // Held until every thread has read it: all mappings are live at once.
                        barrier.wait();
                        id
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|&i| i == ids[0]), "round {round}: {ids:x?}");
        assert_ne!(ids[0] >> 64, 0);
        assert_ne!(ids[0] as u64, 0);
    }
}
