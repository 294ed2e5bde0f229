//! The ring's space is reserved when the file is created, resized or opened: a ring that does
//! not fit on its filesystem is refused with a message (path, size asked, space free) instead of
//! being created sparse, and a sparse ring left by an older version is completed. Without this a
//! store through the mapping into a page the filesystem cannot back kills the writer (SIGBUS).
//!
//! The small-filesystem tests mount a 1 MiB tmpfs on a temporary directory (they need root and
//! CAP_SYS_ADMIN); where mounting is not permitted they print why and pass without checking.

mod ring_common;

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ring_common::{drain, records};
use tracker_core::ring::{Opened, Reader, RingError, RingFile, HEADER_SIZE, MIN_DATA_SIZE};

const PID: u32 = 4242;

/// A tmpfs of `size` mounted on a fresh temporary directory, unmounted on drop (lazily if a
/// mapping still holds it).
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// None (with the reason printed) where mounting is not permitted.
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallFs { dir }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let p = self.dir.path();
        let ok = Command::new("umount")
            .arg(p)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(p).status();
        }
    }
}

fn blocks_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

fn io_err(r: Result<(RingFile, Opened), RingError>) -> std::io::Error {
    match r {
        Err(RingError::Io(e)) => e,
        Err(e) => panic!("expected an I/O error, got {e}"),
        Ok((_, o)) => panic!("expected the ring to be refused, it was opened ({o:?})"),
    }
}

/// A copy of `src` with holes wherever a page is all zeros: a ring as a version that did not
/// reserve space left it.
fn sparse_copy(src: &Path, dst: &Path) {
    let data = std::fs::read(src).unwrap();
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .unwrap();
    for (i, page) in data.chunks(4096).enumerate() {
        if page.iter().any(|&b| b != 0) {
            f.write_all_at(page, (i * 4096) as u64).unwrap();
        }
    }
    f.set_len(data.len() as u64).unwrap();
}

#[test]
fn ring_space_created_ring_has_every_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let (rf, o) = RingFile::open_or_create(&path, 4 << 20).unwrap();
    assert_eq!(o, Opened::Created);
    let len = HEADER_SIZE as u64 + (4 << 20);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    assert!(
        blocks_bytes(&path) >= len,
        "only {} of {len} bytes allocated",
        blocks_bytes(&path)
    );
    drop(rf);
}

#[test]
fn ring_space_sparse_ring_is_completed_and_keeps_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.ring");
    let (rf, _) = RingFile::open_or_create(&full, 4 << 20).unwrap();
    rf.ring()
        .write(0, b"written by an older nginx", PID)
        .unwrap();
    drop(rf);
    let path = dir.path().join("old.ring");
    sparse_copy(&full, &path);
    let len = HEADER_SIZE as u64 + (4 << 20);
    assert!(blocks_bytes(&path) < len, "the old ring must start sparse");

    let (rf, o) = RingFile::open_or_create(&path, 4 << 20).unwrap();
    assert_eq!(o, Opened::Reused);
    assert!(
        blocks_bytes(&path) >= len,
        "only {} of {len} bytes allocated",
        blocks_bytes(&path)
    );
    let ring = rf.ring();
    let got = records(drain(&mut Reader::new(ring), ring));
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"written by an older nginx");
}

#[test]
fn ring_space_sparse_ring_open_elsewhere_is_completed() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.ring");
    drop(RingFile::open_or_create(&full, 2 << 20).unwrap());
    let path = dir.path().join("old.ring");
    sparse_copy(&full, &path);
    // A shipper has it open (shared lock): nginx maps it as it is, allocating its holes.
    let shipper = RingFile::open_existing(&path).unwrap();
    let len = HEADER_SIZE as u64 + (2 << 20);
    assert!(blocks_bytes(&path) < len);
    let (rf, o) = RingFile::open_or_create(&path, 2 << 20).unwrap();
    assert_eq!(o, Opened::Reused);
    assert!(
        blocks_bytes(&path) >= len,
        "only {} of {len} bytes allocated",
        blocks_bytes(&path)
    );
    drop((rf, shipper));
}

#[test]
fn ring_space_too_large_for_its_filesystem_is_refused() {
    let Some(fs) = SmallFs::mount("1m") else {
        return;
    };
    let path = fs.path("r.ring");
    let e = io_err(RingFile::open_or_create(&path, 4 << 20));
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    let m = e.to_string();
    let asked = HEADER_SIZE as u64 + (4 << 20);
    assert!(m.contains(&path.display().to_string()), "no path in: {m}");
    assert!(
        m.contains(&format!("cannot reserve {asked} bytes (4.0 MiB)")),
        "no size in: {m}"
    );
    assert!(m.contains("No space left on device"), "no cause in: {m}");
    // The space was given back: all of the 1 MiB is free again, and said so.
    assert!(
        m.contains("space free on its filesystem: 1048576 bytes (1.0 MiB)"),
        "free space: {m}"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "the refused ring must hold no space"
    );

    // A ring that fits is created there, every block reserved, and filled without a fault.
    let (rf, o) = RingFile::open_or_create(&path, MIN_DATA_SIZE * 8).unwrap();
    assert_eq!(o, Opened::Created);
    let len = HEADER_SIZE as u64 + MIN_DATA_SIZE * 8;
    assert!(blocks_bytes(&path) >= len);
    let ring = rf.ring();
    let mut n = 0;
    while ring.write(0, &[7u8; 1000], PID).is_ok() {
        n += 1;
    }
    assert!(n as u64 * 1000 > MIN_DATA_SIZE * 7, "only {n} records fit");
}

#[test]
fn ring_space_resize_that_does_not_fit_keeps_the_old_ring() {
    let Some(fs) = SmallFs::mount("1m") else {
        return;
    };
    let path = fs.path("r.ring");
    drop(RingFile::open_or_create(&path, MIN_DATA_SIZE * 4).unwrap());
    let e = io_err(RingFile::open_or_create(&path, 2 << 20));
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    assert!(
        e.to_string()
            .contains("cannot reserve 2101248 bytes (2.0 MiB)"),
        "{e}"
    );
    // Still the old ring, at its old length (the bigger one's space given back).
    let old_len = HEADER_SIZE as u64 + MIN_DATA_SIZE * 4;
    assert_eq!(std::fs::metadata(&path).unwrap().len(), old_len);
    let (rf, o) = RingFile::open_or_create(&path, MIN_DATA_SIZE * 4).unwrap();
    assert_eq!(o, Opened::Reused);
    assert_eq!(rf.ring().data_size(), MIN_DATA_SIZE * 4);
}

#[test]
fn ring_space_sparse_ring_that_cannot_be_completed_is_refused() {
    let Some(fs) = SmallFs::mount("1m") else {
        return;
    };
    // An older version's 2 MiB ring on a 1 MiB filesystem: sparse, most of it unbacked.
    let src = tempfile::tempdir().unwrap();
    let full = src.path().join("full.ring");
    drop(RingFile::open_or_create(&full, 2 << 20).unwrap());
    let path = fs.path("old.ring");
    sparse_copy(&full, &path);
    let e = io_err(RingFile::open_or_create(&path, 2 << 20));
    assert_eq!(e.kind(), ErrorKind::StorageFull, "{e}");
    let m = e.to_string();
    assert!(
        m.contains(&format!("for {}", path.display())) && m.contains("space free"),
        "{m}"
    );
    // Left as it was: still a ring (its events kept), never truncated.
    let len = HEADER_SIZE as u64 + (2 << 20);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    assert!(
        blocks_bytes(&path) < len,
        "still sparse: nothing was half-reserved"
    );
}
