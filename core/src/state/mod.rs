//! The state file (`tracker_state`): the counters that decide money, in a file-backed shared
//! mapping that outlives nginx, as the ring does (`docs/stats.md`: what survives what).
//!
//! Two kinds of file ([`Kind`]) share the layout and the rules: the accounts file
//! ([`StateFile::open_or_create`]) and the duplicates file ([`StateFile::open_duplicates`], the
//! recently-seen set of [`crate::dedup`], so that a conversion seen before a restart is a
//! duplicate after it).
//!
//! Layout: a 4096-byte header (magic (one per kind), layout version, header size, number of
//! entries, a random file id and a random salt, a checksum of those, then the accounts table's
//! lock word), then the entries: the accounts table ([`table`], fixed-size entries keyed by
//! campaign id), or the duplicates set's 8-byte slots (its hash key is the id and the salt).
//!
//! The file follows the ring's rules (`core/src/ring.rs`): created mode 0660 by the master at
//! configuration time, every block reserved before it is mapped ([`crate::filespace`]), a
//! shared `flock` held for as long as it is mapped. What only a process alone with the file may
//! do happens under an exclusive `flock` at open: initializing a blank file, moving a corrupt
//! one aside, releasing a lock word a dead process left; the caller is told it was alone
//! ([`StateFile::was_alone`]) and may then prune the table. A header that is not a valid state
//! header (another file, another layout version, a torn write, a wrong size) is moved aside to
//! `PATH.corrupt-UNIXTIME` and a new file started ([`Opened::MovedAside`]); only when the file is
//! not open elsewhere (else: an error, nothing touched).

pub mod rebuild;
pub mod table;

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

use crate::filespace::{self, Fallback};
pub use table::{Table, TableFull, ENTRY_SIZE};

pub const MAGIC: u64 = u64::from_ne_bytes(*b"TRKSTAT1");
pub const MAGIC_DUPLICATES: u64 = u64::from_ne_bytes(*b"TRKSDUP1");
pub const LAYOUT_VERSION: u32 = 1;
pub const HEADER_SIZE: usize = 4096;
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_HEADER_SIZE: usize = 12;
const OFF_ENTRIES: usize = 16;
const OFF_FILE_ID: usize = 24;
const OFF_SALT: usize = 32;
const OFF_CHECKSUM: usize = 40;
/// Bytes the checksum covers (everything before it; never changed after creation).
const CHECKED: usize = OFF_CHECKSUM;
const OFF_LOCK: usize = 64;
/// The fewest entries a state file has.
pub const MIN_ENTRIES: u64 = 16;

/// What a state file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The campaign accounts ([`Table`]).
    Accounts,
    /// The duplicates set's slots ([`crate::dedup::Seen`]).
    Duplicates,
}

impl Kind {
    fn magic(self) -> u64 {
        match self {
            Kind::Accounts => MAGIC,
            Kind::Duplicates => MAGIC_DUPLICATES,
        }
    }

    /// Bytes per entry.
    pub fn unit(self) -> u64 {
        match self {
            Kind::Accounts => ENTRY_SIZE as u64,
            Kind::Duplicates => 8,
        }
    }

    /// Entries come in multiples of this.
    fn multiple(self) -> u64 {
        match self {
            Kind::Accounts => 1,
            Kind::Duplicates => crate::dedup::BUCKET as u64,
        }
    }

    /// The smallest file of this kind.
    pub fn min_size(self) -> u64 {
        file_len(self, MIN_ENTRIES)
    }
}

/// What [`StateFile::open_or_create`] did.
#[derive(Debug, PartialEq)]
pub enum Opened {
    Created,
    /// A valid file, mapped as it is.
    Reused,
    /// A valid file of another number of entries, mapped as it is (it is not resized).
    KeptOtherSize(u64),
    /// The file was not a valid state file: renamed to `to` (why: `why`), a new one created.
    MovedAside {
        to: PathBuf,
        why: String,
    },
}

/// A mapped state file. Unmapped on drop; the mapping is inherited across fork.
pub struct StateFile {
    base: *mut u8,
    map_len: usize,
    kind: Kind,
    entries: u64,
    file_id: u64,
    salt: u64,
    alone: bool,
    /// Holds the fd and the shared flock.
    file: File,
}

// SAFETY: the mapping is accessed only through atomics (the Table); the pointer is stable.
unsafe impl Send for StateFile {}
// SAFETY: as for Send.
unsafe impl Sync for StateFile {}

/// The entries a file of `kind` and `size` bytes holds.
pub fn entries_for(kind: Kind, size: u64) -> u64 {
    let n = size.saturating_sub(HEADER_SIZE as u64) / kind.unit();
    (n - n % kind.multiple()).max(MIN_ENTRIES)
}

fn file_len(kind: Kind, entries: u64) -> u64 {
    HEADER_SIZE as u64 + entries * kind.unit()
}

fn checksum(bytes: &[u8]) -> u64 {
    crate::record::hash(bytes) ^ 0x5354_4154_4543_4b31
}

fn ctx(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{} ({}): {e}", what, path.display()))
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock only takes an fd we own and an operation flag.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What a header says.
#[derive(Debug)]
enum Found {
    Blank,
    Valid {
        entries: u64,
        file_id: u64,
        salt: u64,
    },
    Invalid(String),
}

/// Reads and checks the header; never modifies the file.
fn inspect(file: &File, kind: Kind) -> io::Result<Found> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Found::Blank);
    }
    let mut h = [0u8; HEADER_SIZE];
    let n = (len as usize).min(HEADER_SIZE);
    file.read_exact_at(&mut h[..n], 0)?;
    if h[..n].iter().all(|&b| b == 0) {
        return Ok(Found::Blank);
    }
    let u64_at = |o: usize| u64::from_ne_bytes(h[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_ne_bytes(h[o..o + 4].try_into().unwrap());
    if len < HEADER_SIZE as u64 {
        return Ok(Found::Invalid(format!(
            "{len} bytes, shorter than a state header"
        )));
    }
    let magic = u64_at(OFF_MAGIC);
    if magic != kind.magic() {
        let what = if magic == MAGIC || magic == MAGIC_DUPLICATES {
            "a tracker state file of another kind (accounts / duplicates)"
        } else {
            "not a tracker state file (bad magic)"
        };
        return Ok(Found::Invalid(what.into()));
    }
    let version = u32_at(OFF_VERSION);
    if version != LAYOUT_VERSION || u32_at(OFF_HEADER_SIZE) as usize != HEADER_SIZE {
        return Ok(Found::Invalid(format!(
            "layout version {version}, this build reads version {LAYOUT_VERSION}"
        )));
    }
    if u64_at(OFF_CHECKSUM) != checksum(&h[..CHECKED]) {
        return Ok(Found::Invalid(
            "header checksum mismatch (torn or changed)".into(),
        ));
    }
    let entries = u64_at(OFF_ENTRIES);
    let max = u64::from(u32::MAX) - 1;
    if entries < MIN_ENTRIES
        || entries > max
        || entries % kind.multiple() != 0
        || len < file_len(kind, entries)
    {
        return Ok(Found::Invalid(format!(
            "{len} bytes, its header says {entries} entries ({} bytes)",
            file_len(kind, entries.min(max))
        )));
    }
    Ok(Found::Valid {
        entries,
        file_id: u64_at(OFF_FILE_ID),
        salt: u64_at(OFF_SALT),
    })
}

/// Opens `path`, creating it (mode 0660) when absent.
fn open_file(path: &Path) -> io::Result<File> {
    loop {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o660)
            .open(path)
        {
            Ok(f) => {
                // The umask may have removed group bits.
                f.set_permissions(Permissions::from_mode(0o660))?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Under the exclusive lock: makes a blank file a new state file of `entries` entries; returns
/// its (file id, salt).
fn init(file: &File, path: &Path, kind: Kind, entries: u64) -> io::Result<(u64, u64)> {
    let full = file_len(kind, entries);
    file.set_len(0)?;
    file.set_len(full)?;
    if let Err(e) = filespace::reserve(file, full, Fallback::Rewrite) {
        let _ = file.set_len(0);
        return Err(filespace::no_space(file, path, full, e));
    }
    let file_id = crate::id::os_random_u64() | 1;
    let salt = crate::id::os_random_u64();
    let mut h = [0u8; CHECKED + 8];
    h[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&kind.magic().to_ne_bytes());
    h[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&LAYOUT_VERSION.to_ne_bytes());
    h[OFF_HEADER_SIZE..OFF_HEADER_SIZE + 4].copy_from_slice(&(HEADER_SIZE as u32).to_ne_bytes());
    h[OFF_ENTRIES..OFF_ENTRIES + 8].copy_from_slice(&entries.to_ne_bytes());
    h[OFF_FILE_ID..OFF_FILE_ID + 8].copy_from_slice(&file_id.to_ne_bytes());
    h[OFF_SALT..OFF_SALT + 8].copy_from_slice(&salt.to_ne_bytes());
    let sum = checksum(&h[..CHECKED]);
    h[OFF_CHECKSUM..OFF_CHECKSUM + 8].copy_from_slice(&sum.to_ne_bytes());
    file.write_all_at(&h, 0)?;
    file.sync_all()?;
    Ok((file_id, salt))
}

/// The name a corrupt file is moved to.
fn aside_path(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".corrupt-{secs}"));
    PathBuf::from(p)
}

/// Maps a valid file of `have` entries. Alone with it (`exclusive`, the exclusive lock held):
/// first completes its blocks (rewriting where there is no fallocate: no one else maps it) and
/// clears the accounts table's lock word (a pid left there may be any process's after a
/// reboot), then takes the shared lock. Else only allocates (never rewrites: others map it).
fn open_valid(
    file: File,
    path: &Path,
    kind: Kind,
    have: u64,
    ids: (u64, u64),
    exclusive: bool,
) -> io::Result<StateFile> {
    let len = file_len(kind, have);
    let fallback = if exclusive {
        Fallback::Rewrite
    } else {
        Fallback::Refuse
    };
    filespace::reserve(&file, len, fallback)
        .map_err(|e| filespace::no_space(&file, path, len, e))?;
    if exclusive {
        if kind == Kind::Accounts {
            file.write_all_at(&0u64.to_ne_bytes(), OFF_LOCK as u64)
                .map_err(|e| ctx("write of the lock word", path, e))?;
        }
        flock(&file, libc::LOCK_SH).map_err(|e| ctx("flock", path, e))?;
    }
    StateFile::map(file, kind, have, ids, exclusive).map_err(|e| ctx("mmap", path, e))
}

impl StateFile {
    /// Opens the state file at `path`, creating it with room for [`entries_for`]`(size)`
    /// accounts when absent or blank. A valid file is kept as it is (its size too). An
    /// invalid one is moved aside and a new one created, if no other process has it open
    /// (else an error that says so). See the module docs.
    pub fn open_or_create(path: &Path, size: u64) -> io::Result<(StateFile, Opened)> {
        Self::open_kind(path, Kind::Accounts, size)
    }

    /// Like [`StateFile::open_or_create`], for the duplicates set: `size` bytes of slots
    /// (whole buckets), see [`StateFile::slots`] and [`StateFile::key`].
    pub fn open_duplicates(path: &Path, size: u64) -> io::Result<(StateFile, Opened)> {
        Self::open_kind(path, Kind::Duplicates, size)
    }

    fn open_kind(path: &Path, kind: Kind, size: u64) -> io::Result<(StateFile, Opened)> {
        let entries = entries_for(kind, size);
        let mut file = open_file(path).map_err(|e| ctx("open", path, e))?;
        let mut moved = None;
        let mut waits = 0;
        loop {
            let exclusive = match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
                Ok(()) => true,
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => false,
                Err(e) => return Err(ctx("flock", path, e)),
            };
            if !exclusive {
                flock(&file, libc::LOCK_SH).map_err(|e| ctx("flock", path, e))?;
            }
            let found = inspect(&file, kind).map_err(|e| ctx("read of the header", path, e))?;
            match (found, exclusive) {
                (
                    Found::Valid {
                        entries: have,
                        file_id,
                        salt,
                    },
                    _,
                ) => {
                    let sf = open_valid(file, path, kind, have, (file_id, salt), exclusive)?;
                    let opened = match moved {
                        Some((to, why)) => Opened::MovedAside { to, why },
                        None if have == entries => Opened::Reused,
                        None => Opened::KeptOtherSize(have),
                    };
                    return Ok((sf, opened));
                }
                (Found::Blank, true) => {
                    let ids = init(&file, path, kind, entries).map_err(|e| ctx("init", path, e))?;
                    flock(&file, libc::LOCK_SH).map_err(|e| ctx("flock", path, e))?;
                    let sf = StateFile::map(file, kind, entries, ids, true)
                        .map_err(|e| ctx("mmap", path, e))?;
                    let opened = match moved {
                        Some((to, why)) => Opened::MovedAside { to, why },
                        None => Opened::Created,
                    };
                    return Ok((sf, opened));
                }
                (Found::Invalid(why), true) => {
                    let to = aside_path(path);
                    std::fs::rename(path, &to).map_err(|e| ctx("rename aside", path, e))?;
                    moved = Some((to, why));
                    file = open_file(path).map_err(|e| ctx("open", path, e))?;
                }
                (Found::Invalid(why), false) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} is not a valid tracker state file ({why}) and another process \
                             has it open; stop it (or remove the file) and start again",
                            path.display()
                        ),
                    ))
                }
                (Found::Blank, false) if waits < 200 => {
                    flock(&file, libc::LOCK_UN).map_err(|e| ctx("flock", path, e))?;
                    waits += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                (Found::Blank, false) => {
                    return Err(io::Error::other(format!(
                        "{} is empty and held open by another process that does not initialize it",
                        path.display()
                    )))
                }
            }
        }
    }

    fn map(
        file: File,
        kind: Kind,
        entries: u64,
        (file_id, salt): (u64, u64),
        alone: bool,
    ) -> io::Result<StateFile> {
        let map_len = usize::try_from(file_len(kind, entries)).map_err(io::Error::other)?;
        // SAFETY: a new shared mapping of map_len bytes of a file at least that long (checked
        // by inspect or made by init); the kernel picks the address.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(StateFile {
            base: addr.cast(),
            map_len,
            kind,
            entries,
            file_id,
            salt,
            alone,
            file,
        })
    }

    /// The accounts table (an accounts file; a duplicates file has none: an empty table).
    pub fn table(&self) -> Table<'_> {
        let entries = match self.kind {
            Kind::Accounts => self.entries as usize,
            Kind::Duplicates => 0,
        };
        // SAFETY: the mapping holds the header (lock word at OFF_LOCK, 8-aligned) and
        // `entries` entries after it, for as long as self lives; others change it only
        // through Table and Account atomics.
        unsafe {
            Table::new(
                self.base.add(OFF_LOCK).cast::<AtomicU64>(),
                self.base.add(HEADER_SIZE),
                entries,
            )
        }
    }

    /// The duplicates set's slots (a duplicates file; an accounts file has none: empty).
    pub fn slots(&self) -> &[AtomicU64] {
        let n = match self.kind {
            Kind::Duplicates => self.entries as usize,
            Kind::Accounts => 0,
        };
        // SAFETY: a duplicates file maps `entries` 8-byte slots after the header (8-aligned),
        // changed by others only through atomics, for as long as self lives.
        unsafe { core::slice::from_raw_parts(self.base.add(HEADER_SIZE).cast::<AtomicU64>(), n) }
    }

    /// The duplicates set's hash key: random, made with the file (kept across restarts, as the
    /// entries hashed with it are).
    pub fn key(&self) -> [u64; 2] {
        [self.file_id, self.salt]
    }

    /// The random id of this file (made at creation): tells two files apart.
    pub fn file_id(&self) -> u64 {
        self.file_id
    }

    /// Whether no other process had the file open when it was opened.
    pub fn was_alone(&self) -> bool {
        self.alone
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Writes the mapping's dirty pages to the file and waits for it (bounds what a power
    /// loss can take).
    pub fn sync(&self) -> io::Result<()> {
        self.sync_handle().sync()
    }

    /// What [`SyncHandle::sync`] needs, to call from a thread that may outlive this value.
    pub fn sync_handle(&self) -> SyncHandle {
        SyncHandle {
            addr: self.base as usize,
            len: self.map_len,
        }
    }

    /// Gives the file to `uid:gid` if it is not theirs (the master, as root, for the worker
    /// user, as with the ring). Returns whether it changed anything.
    pub fn give_to(&self, uid: u32, gid: u32) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let m = self.file.metadata()?;
        if m.uid() == uid && m.gid() == gid {
            return Ok(false);
        }
        std::os::unix::fs::fchown(&self.file, Some(uid), Some(gid))?;
        Ok(true)
    }
}

/// The address range of a state file's mapping, for msync only.
#[derive(Clone, Copy, Debug)]
pub struct SyncHandle {
    addr: usize,
    len: usize,
}

impl SyncHandle {
    /// msync(MS_SYNC) of the range: writes its dirty pages and waits. After the mapping is
    /// gone it fails (ENOMEM) without touching memory.
    pub fn sync(&self) -> io::Result<()> {
        // SAFETY: msync reads no memory of ours; on a range that is not mapped it fails.
        if unsafe { libc::msync(self.addr as *mut libc::c_void, self.len, libc::MS_SYNC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly our mapping; Tables borrow self, so none outlive it.
        unsafe {
            libc::munmap(self.base.cast(), self.map_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn alive(_: u32) -> bool {
        true
    }

    #[test]
    fn counters_survive_close_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state");
        let (s, o) = StateFile::open_or_create(&p, 1 << 20).unwrap();
        assert_eq!(o, Opened::Created);
        assert!(s.was_alone());
        let i = s.table().find_or_insert(b"camp", 1, &alive).unwrap();
        s.table()
            .account(i)
            .unwrap()
            .spend_total
            .store(800_000, Ordering::Relaxed);
        let id = s.file_id();
        drop(s);
        let (s, o) = StateFile::open_or_create(&p, 1 << 20).unwrap();
        assert_eq!(o, Opened::Reused);
        assert_eq!(s.file_id(), id);
        let j = s.table().find(b"camp").unwrap();
        assert_eq!(
            s.table()
                .account(j)
                .unwrap()
                .spend_total
                .load(Ordering::Relaxed),
            800_000
        );
    }

    #[test]
    fn second_opener_is_not_alone_and_shares_counters() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state");
        let (a, _) = StateFile::open_or_create(&p, 1 << 20).unwrap();
        let (b, o) = StateFile::open_or_create(&p, 2 << 20).unwrap();
        assert_eq!(o, Opened::KeptOtherSize(a.entries()));
        assert!(!b.was_alone());
        let i = a.table().find_or_insert(b"x", 1, &alive).unwrap();
        assert_eq!(b.table().find_or_insert(b"x", 2, &alive), Ok(i));
        a.table()
            .account(i)
            .unwrap()
            .clicks
            .fetch_add(3, Ordering::Relaxed);
        assert_eq!(
            b.table().account(i).unwrap().clicks.load(Ordering::Relaxed),
            3
        );
    }

    #[test]
    fn invalid_files_are_moved_aside_when_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state");
        // Foreign, then a torn header (checksum), then a truncated one.
        let (s, _) = StateFile::open_or_create(&p, 1 << 20).unwrap();
        drop(s);
        let good = std::fs::read(&p).unwrap();
        let mut torn = good.clone();
        torn[OFF_ENTRIES] ^= 1;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"garbage, not a state file".repeat(400), "bad magic"),
            (torn, "checksum"),
            (good[..HEADER_SIZE + 100].to_vec(), "entries"),
        ];
        for (bytes, what) in cases {
            std::fs::write(&p, &bytes).unwrap();
            let (s, o) = StateFile::open_or_create(&p, 1 << 20).unwrap();
            let Opened::MovedAside { to, why } = o else {
                panic!("{what}: {o:?}")
            };
            assert!(why.contains(what), "{why}");
            assert_eq!(std::fs::read(&to).unwrap(), bytes);
            assert!(s.table().live().is_empty());
            std::fs::remove_file(&to).unwrap();
        }
    }

    #[test]
    fn the_duplicates_set_survives_reopen_and_the_kinds_are_told_apart() {
        use crate::dedup::{Outcome, Seen};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dups");
        let (d, o) = StateFile::open_duplicates(&p, 64 * 1024).unwrap();
        assert_eq!(o, Opened::Created);
        assert_eq!(d.slots().len() % crate::dedup::BUCKET, 0);
        assert!(d.table().is_empty());
        let key = d.key();
        let h = crate::dedup::key_hash(&key, &[b"conv", b"click-1"]);
        assert!(matches!(
            Seen::new(d.slots()).check_and_insert(h, 1000, 3600),
            Outcome::First { .. }
        ));
        drop(d);
        let (d, o) = StateFile::open_duplicates(&p, 64 * 1024).unwrap();
        assert_eq!(o, Opened::Reused);
        assert_eq!(d.key(), key);
        assert_eq!(
            Seen::new(d.slots()).check_and_insert(h, 1010, 3600),
            Outcome::Duplicate
        );
        drop(d);
        // An accounts file where a duplicates file was: moved aside, never read as slots.
        let (a, o) = StateFile::open_or_create(&p, 1 << 20).unwrap();
        let Opened::MovedAside { why, .. } = o else {
            panic!("{o:?}")
        };
        assert!(why.contains("another kind"), "{why}");
        assert!(a.slots().is_empty());
    }

    #[test]
    fn sync_writes_and_fails_harmlessly_after_unmap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state");
        let (s, _) = StateFile::open_or_create(&p, 1 << 20).unwrap();
        let h = s.sync_handle();
        h.sync().unwrap();
        drop(s);
        assert!(h.sync().is_err());
    }

    #[test]
    fn invalid_file_open_elsewhere_is_an_error_and_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state");
        std::fs::write(&p, b"x".repeat(8192)).unwrap();
        let other = File::open(&p).unwrap();
        flock(&other, libc::LOCK_SH).unwrap();
        let e = StateFile::open_or_create(&p, 1 << 20).err().unwrap();
        assert!(e.to_string().contains("another process"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"x".repeat(8192));
    }

    #[test]
    fn a_dead_lock_owner_is_cleared_by_a_lone_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state");
        let (s, _) = StateFile::open_or_create(&p, 1 << 20).unwrap();
        // SAFETY: the lock word is inside the mapping.
        unsafe { &*s.base.add(OFF_LOCK).cast::<AtomicU64>() }.store(1, Ordering::Relaxed);
        drop(s);
        let (s, _) = StateFile::open_or_create(&p, 1 << 20).unwrap();
        // pid 1 is alive: without the reset this would spin forever.
        assert!(s.table().find_or_insert(b"a", 2, &alive).is_ok());
    }
}
