//! Reserving a file's blocks before it is mapped, so that a store through a shared mapping
//! never meets a full filesystem (the kernel answers that with SIGBUS, which kills the nginx
//! worker that made it).
//!
//! [`reserve`] asks the filesystem for every block of the file with `fallocate(2)` (mode 0: no
//! size change, existing data kept, cheap over blocks already allocated). Where the filesystem
//! has no fallocate, [`Fallback::Rewrite`] reads every block and writes it back (same bytes,
//! now allocated): only safe while no other process maps the file, so callers that merely
//! share the file pass [`Fallback::Refuse`]. glibc's `posix_fallocate` is not used because its
//! own emulation writes single zero bytes over blocks that read as zero, which would undo a
//! concurrent writer's stores through a mapping.
//!
//! [`no_space`] turns a failure into a message naming the path, the size asked and the space
//! free (statvfs), for `nginx -t`'s `[emerg]`.
//!
//! Hand-rolled over `libc` (already a dependency): three calls (fallocate, fstat's st_blocks,
//! fstatvfs) did not justify adding `nix`.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// What [`reserve`] does where the filesystem has no fallocate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fallback {
    /// Read every block and write it back (the caller holds the file alone: no other mapping).
    Rewrite,
    /// Fail if the file has holes (another process may be writing it through a mapping).
    Refuse,
}

/// Bytes copied at a time by the rewrite fallback.
const REWRITE_CHUNK: usize = 1 << 20;

/// Whether fewer bytes are allocated to the file than its length (it has holes).
pub fn is_sparse(file: &File) -> io::Result<bool> {
    let m = file.metadata()?;
    Ok(m.blocks().saturating_mul(512) < m.len())
}

/// Allocates every block of `[0, len)` of `file` (which is at least `len` bytes long) without
/// changing its contents. On failure the raw error (ENOSPC: the filesystem is full); see
/// [`no_space`] for the message.
pub fn reserve(file: &File, len: u64, fallback: Fallback) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match fallocate(file, len) {
        Ok(()) => Ok(()),
        Err(e) if unsupported(&e) => match fallback {
            Fallback::Rewrite => rewrite_in_place(file, len),
            Fallback::Refuse if is_sparse(file)? => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the filesystem cannot reserve space (no fallocate) and the file is open in \
                 another process, so its holes cannot be filled safely; stop that process \
                 (the shipper) and start again",
            )),
            Fallback::Refuse => Ok(()),
        },
        Err(e) => Err(e),
    }
}

/// fallocate's answers for "this filesystem does not do that".
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS)
    )
}

fn fallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    loop {
        // SAFETY: fallocate takes an fd we hold open (`file`) and plain integers; mode 0 only
        // allocates blocks, it never changes the file's size or bytes.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The fallback: every byte of `[0, len)` read and written back, which allocates the holes.
/// The caller guarantees that no one else writes the file meanwhile.
pub(crate) fn rewrite_in_place(file: &File, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; REWRITE_CHUNK.min(len as usize)];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], off)?;
        file.write_all_at(&buf[..n], off)?;
        off += n as u64;
    }
    file.sync_data()
}

/// Bytes an unprivileged process may still allocate on the filesystem of `file`.
pub fn free_space(file: &File) -> io::Result<u64> {
    // SAFETY: statvfs is plain old data; all-zero is a valid value for it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatvfs writes into `st`, which we own, about an fd we hold open.
    if unsafe { libc::fstatvfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// `n` bytes for a person: "67112960 bytes (64.0 MiB)".
pub fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let (mut v, mut unit) = (n as f64 / 1024.0, 0);
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{n} bytes ({v:.1} {})", UNITS[unit])
}

/// The error [`reserve`]'s failure `e` becomes: the path, the size asked, the cause and the
/// space free now on the file's filesystem (measure after releasing what was allocated).
/// Keeps `e`'s kind (StorageFull for ENOSPC).
pub fn no_space(file: &File, path: &Path, len: u64, e: io::Error) -> io::Error {
    let free = match free_space(file) {
        Ok(f) => human(f),
        Err(se) => format!("unknown (statvfs failed: {se})"),
    };
    io::Error::new(
        e.kind(),
        format!(
            "cannot reserve {} for {}: {e}; space free on its filesystem: {free}",
            human(len),
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse_file(dir: &tempfile::TempDir, len: u64) -> File {
        let f = tempfile::tempfile_in(dir.path()).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", len - 4).unwrap();
        f.set_len(len).unwrap();
        f
    }

    #[test]
    fn rewrite_fills_the_holes_and_keeps_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * REWRITE_CHUNK as u64 + 4096;
        let f = sparse_file(&dir, len);
        f.write_all_at(b"middle", 2 * REWRITE_CHUNK as u64 + 10)
            .unwrap();
        assert!(
            is_sparse(&f).unwrap(),
            "the test file must start with holes"
        );
        rewrite_in_place(&f, len).unwrap();
        assert!(!is_sparse(&f).unwrap(), "holes left after the rewrite");
        let mut b = [0u8; 6];
        f.read_exact_at(&mut b[..4], 0).unwrap();
        assert_eq!(&b[..4], b"head");
        f.read_exact_at(&mut b, 2 * REWRITE_CHUNK as u64 + 10)
            .unwrap();
        assert_eq!(&b, b"middle");
        f.read_exact_at(&mut b[..4], len - 4).unwrap();
        assert_eq!(&b[..4], b"tail");
        assert_eq!(f.metadata().unwrap().len(), len);
    }

    #[test]
    fn reserve_fills_the_holes_and_keeps_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let len = 8 << 20;
        let f = sparse_file(&dir, len);
        assert!(is_sparse(&f).unwrap());
        reserve(&f, len, Fallback::Refuse).unwrap();
        assert!(!is_sparse(&f).unwrap());
        let mut b = [0u8; 4];
        f.read_exact_at(&mut b, len - 4).unwrap();
        assert_eq!(&b, b"tail");
        assert_eq!(f.metadata().unwrap().len(), len);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 bytes");
        assert_eq!(human(1023), "1023 bytes");
        assert_eq!(human(1024), "1024 bytes (1.0 KiB)");
        assert_eq!(human(64 << 20), "67108864 bytes (64.0 MiB)");
        assert_eq!(human(3 << 30), "3221225472 bytes (3.0 GiB)");
    }

    #[test]
    fn no_space_names_path_size_and_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let f = tempfile::tempfile_in(dir.path()).unwrap();
        let e = no_space(
            &f,
            Path::new("/x/r.ring"),
            64 << 20,
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        let m = e.to_string();
        assert!(
            m.starts_with("cannot reserve 67108864 bytes (64.0 MiB) for /x/r.ring: "),
            "{m}"
        );
        assert!(m.contains("space free on its filesystem: "), "{m}");
        assert!(!m.contains("unknown"), "{m}");
    }
}
