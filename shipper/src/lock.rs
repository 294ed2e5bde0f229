//! The exclusive locks that keep a second shipper away: one on `<ring>.shipper.lock` (one
//! shipper per ring) and one on `DIR/_shipper/lock` (one shipper per output directory: two
//! would delete each other's temporary files). `flock` locks go away with the process, so a
//! killed shipper never leaves a stale lock; the file holds the owner's pid, for the message.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Held for the life of the process.
pub struct Lock {
    _file: File,
}

/// `<ring>.shipper.lock`
pub fn ring_lock_path(ring: &Path) -> PathBuf {
    let mut s = ring.as_os_str().to_owned();
    s.push(".shipper.lock");
    PathBuf::from(s)
}

/// Takes an exclusive lock on `path` (created if needed) without waiting. `what` names the
/// thing the lock protects, for the error message.
pub fn acquire(path: &Path, what: &str) -> Result<Lock, String> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    loop {
        // SAFETY: flock only takes an fd that `file` keeps open and an operation flag.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                let who = if owner.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {owner})")
                };
                return Err(format!(
                    "another tracker-shipper{who} is already running for {what}: {} is locked",
                    path.display()
                ));
            }
            _ => return Err(format!("cannot lock {}: {e}", path.display())),
        }
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{}", std::process::id());
    Ok(Lock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_refused_in_the_same_process() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        let l = acquire(&p, "the ring x").unwrap();
        let e = acquire(&p, "the ring x").err().unwrap();
        assert!(e.contains("already running for the ring x"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(l);
        acquire(&p, "the ring x").unwrap();
        assert_eq!(
            ring_lock_path(Path::new("/dev/shm/a.ring")),
            PathBuf::from("/dev/shm/a.ring.shipper.lock")
        );
    }
}
