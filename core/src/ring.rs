//! The event ring: a file mapped in shared memory, written by every nginx worker (many
//! producers, lock-free) and read by one shipper. The contract is in `docs/ring.md`.
//!
//! Layout: a 4096-byte header (magic, version, data size, producer and consumer cursors on
//! separate cache lines, per-kind counters), then the data area. Positions are absolute,
//! monotonically increasing u64 byte offsets; `pos % data_size` is the place in the data area.
//! A record is a 16-byte header then the payload, padded to 16 bytes:
//!   word0 (u64, atomic): state tag = `pos << 2 | state` (state: 1 = reserved, 2 = committed,
//!                        3 = padding to the end of the data area); a stale tag from an earlier lap
//!                        never matches the current position.
//!   word1 (u64): writer pid << 32 | payload length.
//! Producers publish themselves in the writers table (ring/writers.rs), reserve space with a
//! CAS on the producer cursor, write word1, publish "reserved" (and leave the table), copy the
//! payload and publish "committed" (release). The consumer reads committed records in order,
//! skips records of dead or stalled writers (reserved by a pid that no longer exists, or for
//! too long, or never tagged for a while), and advances the consumer cursor only when its
//! caller acknowledges, never past the space of a skipped writer that may still be alive
//! (ring/hold.rs).
//!
//! Every access to the data area goes through `AtomicU64` (the payload is copied as 8-byte
//! words with relaxed stores and loads), so a reader scanning a region that a producer is
//! writing never races with a non-atomic access.
//!
//! Every process that maps the ring holds a shared `flock` on its file for as long as the
//! mapping lives; the file is (re)initialized or resized only under an exclusive `flock`, that is
//! when no other process has it open, so a mapping never sees its file change size under it.
//! Every block of the file is allocated before it is mapped ([`crate::filespace`]): a store
//! into a page its filesystem cannot back would kill the writer with SIGBUS.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{fence, AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use crate::filespace::{self, Fallback};

mod hold;
mod writers;

use hold::Hold;
use writers::WRITER_SLOTS;

/// Number of per-kind counter slots in the header (`event::Kind::index()` < COUNTER_KINDS).
pub const COUNTER_KINDS: usize = 8;
/// Number of per-reason counter slots for invalid requests (`limits::Reason::index()` < this).
pub const INVALID_REASONS: usize = 16;
/// Size of the file header in bytes; the data area starts here.
pub const HEADER_SIZE: usize = 4096;
/// Largest payload accepted by [`Ring::write`].
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Smallest data area.
pub const MIN_DATA_SIZE: u64 = 64 * 1024;

/// The first 8 bytes of a ring file (`NGXTRKR1`, readable with `head -c 8`).
pub const MAGIC: u64 = u64::from_ne_bytes(*b"NGXTRKR1");
/// Layout version stored at offset 8; a file of another version is refused.
pub const LAYOUT_VERSION: u32 = 1;
/// How long [`Reader`] waits on a record that does not get committed before skipping it,
/// unless [`Reader::with_stale_after`] says otherwise.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(2);
/// A record reserved by a pid that no longer exists is skipped once it has been seen reserved
/// for this long (or `stale_after`, if shorter). The grace keeps a reader in another pid
/// namespace, where every writer pid looks dead, from skipping records still being copied.
pub const DEAD_WRITER_GRACE: Duration = Duration::from_millis(10);

const REC_HDR: u64 = 16;
const STATE_RESERVED: u64 = 1;
const STATE_COMMITTED: u64 = 2;
const STATE_PADDING: u64 = 3;
const PAGE: u64 = 4096;
/// Positions must stay below 2^62 so that `pos << 2` keeps them whole (at 1 GB/s: 146 years).
const MAX_POS: u64 = 1 << 62;
/// The bits that are zero in every valid position: 62 and up, and 0 to 3 (multiples of 16).
const BAD_POS_BITS: u64 = !(MAX_POS - 1) | (REC_HDR - 1);

#[derive(Debug)]
pub enum RingError {
    Io(std::io::Error),
    /// The file is not a ring, or of another layout version: message says what.
    Format(String),
}
impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::Io(e) => write!(f, "{e}"),
            RingError::Format(m) => f.write_str(m),
        }
    }
}
impl std::error::Error for RingError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RingError::Io(e) => Some(e),
            RingError::Format(_) => None,
        }
    }
}
impl From<io::Error> for RingError {
    fn from(e: io::Error) -> RingError {
        RingError::Io(e)
    }
}

/// An I/O error with what was being done ("mmap of 1052672 bytes failed: ...").
fn io_ctx(what: &str, e: io::Error) -> RingError {
    RingError::Io(io::Error::new(e.kind(), format!("{what} failed: {e}")))
}

/// What [`RingFile::open_or_create`] found.
#[derive(Debug, PartialEq)]
pub enum Opened {
    Created,
    /// An existing ring with the requested size was reused (its cursors and events kept).
    Reused,
    /// An existing empty ring of another size was re-initialized to the requested size.
    Resized,
    /// An existing non-empty ring of another size was kept as it is, with this data size.
    /// Also returned for an empty ring of another size that another process has open
    /// (the size of a mapped file never changes).
    KeptOtherSize(u64),
}

// ---------------------------------------------------------------------------------------------
// Header layout
// ---------------------------------------------------------------------------------------------

/// The first 512 bytes of the file (the rest of the 4096-byte header is reserved, zero).
/// Every field is atomic: other processes write it while we hold references to it.
#[repr(C)]
struct Header {
    magic: AtomicU64,        // 0
    version: AtomicU32,      // 8
    header_size: AtomicU32,  // 12
    data_size: AtomicU64,    // 16
    ring_id: [AtomicU64; 2], // 24..40: the ring's identity (random); 0: none yet
    _r0: [AtomicU64; 3],     // 40..64
    producer_pos: AtomicU64, // 64: own cache line
    _r1: [AtomicU64; 7],
    consumer_pos: AtomicU64, // 128: own cache line
    _r2: [AtomicU64; 7],
    written: [AtomicU64; COUNTER_KINDS],           // 192
    dropped_full: [AtomicU64; COUNTER_KINDS],      // 256
    dropped_too_large: [AtomicU64; COUNTER_KINDS], // 320
    rejected: [AtomicU64; COUNTER_KINDS],          // 384
    abandoned: AtomicU64,                          // 448
    _r3: [AtomicU64; 7],                           // 456..512
    invalid: [AtomicU64; INVALID_REASONS], // 512..640: requests refused as invalid, by reason
    duplicates: [AtomicU64; COUNTER_KINDS], // 640..704: duplicates seen, by kind
    duplicate_evictions: AtomicU64,        // 704: live duplicate-set entries pushed out
    _r4: [AtomicU64; 7],                   // 712..768
    holds: [AtomicU64; HOLD_SLOTS],        // 768..904: readers' holds (hold.rs), 0: none
    _r5: [AtomicU64; 15],                  // 904..1024
    cursors: [CursorSlot; CURSOR_SLOTS],   // 1024..2048
    writers: [AtomicU64; WRITER_SLOTS],    // 2048..4096: writers in flight (writers.rs), 0: free
}

/// One hold word per cursor slot, then one for a reader without a cursor ([`Reader::new`]).
const HOLD_SLOTS: usize = CURSOR_SLOTS + 1;
const ANON_HOLD: usize = CURSOR_SLOTS;

/// Number of named consumer cursors in the header (one per shipper sink).
pub const CURSOR_SLOTS: usize = 16;
/// Longest sink name kept in a cursor slot (longer names are cut).
pub const CURSOR_NAME_MAX: usize = 48;

/// A named consumer cursor (one cache line): how far one sink of the shipper has acknowledged.
/// Written only by the shipper; nginx never reads it (it reads `consumer_pos`, which the
/// shipper keeps at the smallest position of the claimed slots).
#[repr(C)]
struct CursorSlot {
    /// 0: free; otherwise the FNV-1a hash of the name (never 0).
    id: AtomicU64,
    pos: AtomicU64,
    name: [AtomicU64; CURSOR_NAME_MAX / 8],
}

const OFF_MAGIC: usize = std::mem::offset_of!(Header, magic);
const OFF_VERSION: usize = std::mem::offset_of!(Header, version);
const OFF_HEADER_SIZE: usize = std::mem::offset_of!(Header, header_size);
const OFF_DATA_SIZE: usize = std::mem::offset_of!(Header, data_size);
const OFF_PRODUCER: usize = std::mem::offset_of!(Header, producer_pos);
const OFF_CONSUMER: usize = std::mem::offset_of!(Header, consumer_pos);

const _: () = {
    assert!(std::mem::size_of::<Header>() == HEADER_SIZE);
    assert!(std::mem::size_of::<CursorSlot>() == 64);
    assert!(std::mem::offset_of!(Header, holds) == 768);
    assert!(std::mem::offset_of!(Header, cursors) == 1024);
    assert!(std::mem::offset_of!(Header, writers) == 2048);
    assert!(OFF_MAGIC == 0);
    assert!(OFF_VERSION == 8);
    assert!(OFF_HEADER_SIZE == 12);
    assert!(OFF_DATA_SIZE == 16);
    assert!(std::mem::offset_of!(Header, ring_id) == 24);
    assert!(OFF_PRODUCER == 64);
    assert!(OFF_CONSUMER == 128);
    assert!(std::mem::offset_of!(Header, written) == 192);
    assert!(std::mem::offset_of!(Header, dropped_full) == 256);
    assert!(std::mem::offset_of!(Header, dropped_too_large) == 320);
    assert!(std::mem::offset_of!(Header, rejected) == 384);
    assert!(std::mem::offset_of!(Header, abandoned) == 448);
    assert!(std::mem::offset_of!(Header, invalid) == 512);
    assert!(std::mem::offset_of!(Header, duplicates) == 640);
    assert!(std::mem::offset_of!(Header, duplicate_evictions) == 704);
    assert!(COUNTER_KINDS * 8 == 64);
    assert!(HEADER_SIZE as u64 & (PAGE - 1) == 0);
    assert!(MIN_DATA_SIZE & (PAGE - 1) == 0);
    // A record of MAX_PAYLOAD must be accepted by the smallest ring (need <= size / 4).
    assert!(REC_HDR + MAX_PAYLOAD as u64 <= MIN_DATA_SIZE * 2);
};

// ---------------------------------------------------------------------------------------------
// Ring arithmetic: small pure functions
// ---------------------------------------------------------------------------------------------

/// `n` rounded up to a multiple of 16.
#[inline]
fn round16(n: u64) -> u64 {
    (n + 15) & !15
}

/// The word0 tag of a record at `pos` in `state`.
#[inline]
fn tag(pos: u64, state: u64) -> u64 {
    (pos << 2) | state
}

/// Bytes a record of `len` payload bytes occupies, or None if it is too large: over
/// MAX_PAYLOAD, or over a quarter of the data area (so that padding never wastes more than
/// a quarter of the ring's worth of records at once).
#[inline]
fn record_need(len: usize, size: u64) -> Option<u64> {
    if len > MAX_PAYLOAD {
        return None;
    }
    let need = REC_HDR + round16(len as u64);
    if need > size / 4 {
        return None;
    }
    Some(need)
}

/// A reservation decided from a producer cursor: `[start - pad, start)` is padding up to
/// the end of the data area (pad == 0: none), the record is `[start, end)`.
#[derive(Debug, PartialEq)]
struct Reservation {
    pad: u64,
    start: u64,
    end: u64,
}

/// Where a record of `need` bytes goes when the producer cursor is `p` and the consumer
/// cursor `c`; None when it does not fit (ring full). A record never straddles the end of the
/// data area: if it would, the reservation includes padding to the end and the record starts
/// at offset 0 of the next lap.
#[inline]
fn plan(p: u64, c: u64, size: u64, need: u64) -> Option<Reservation> {
    let off = p % size;
    let pad = if off + need > size { size - off } else { 0 };
    let end = p + pad + need;
    // `c` may be ahead of a stale `p`: the CAS on `p` then fails; never underflow here.
    if end > c + size {
        return None;
    }
    Some(Reservation {
        pad,
        start: p + pad,
        end,
    })
}

/// The position of the next lap boundary after `pos` (where padding at `pos` ends).
#[inline]
fn lap_end(pos: u64, size: u64) -> u64 {
    pos + (size - pos % size)
}

/// Whether a record header at offset `off` claiming `len` payload bytes is plausible: len
/// within MAX_PAYLOAD and the record inside the data area.
#[inline]
fn record_fits(off: u64, len: u64, size: u64) -> bool {
    len <= MAX_PAYLOAD as u64 && off + REC_HDR + round16(len) <= size
}

/// The data size [`RingFile::open_or_create`] uses for a requested one: rounded down to a
/// multiple of 4096, at least MIN_DATA_SIZE.
pub fn normalize_data_size(requested: u64) -> u64 {
    (requested / PAGE * PAGE).max(MIN_DATA_SIZE)
}

// ---------------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------------

/// A mapped ring file (MAP_SHARED). Unmapped on drop. Mappings inherited across fork stay
/// valid in the child.
pub struct RingFile {
    ring: Ring,
    map_len: usize,
    /// Holds the fd, and with it the shared flock that keeps others from resizing the file.
    _file: File,
}

/// What a header says, read with pread (before mapping).
#[derive(Debug)]
enum Found {
    /// Empty file or all-zero header: never initialized (or a crash during initialization).
    Blank,
    Valid {
        data_size: u64,
        producer: u64,
        consumer: u64,
    },
}

fn path_str(path: &Path) -> String {
    path.display().to_string()
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock only takes an fd we own (kept open by `file`) and an operation flag.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Ok(false) when another open file description holds a conflicting lock.
fn try_flock_exclusive(file: &File) -> io::Result<bool> {
    match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads and checks the header. Never modifies the file.
fn inspect(file: &File, path: &Path) -> Result<Found, RingError> {
    let len = file.metadata().map_err(|e| io_ctx("fstat", e))?.len();
    if len == 0 {
        return Ok(Found::Blank);
    }
    let mut buf = [0u8; HEADER_SIZE];
    let n = (len as usize).min(HEADER_SIZE);
    file.read_exact_at(&mut buf[..n], 0)
        .map_err(|e| io_ctx("read of the ring header", e))?;
    if buf[..n].iter().all(|&b| b == 0) {
        return Ok(Found::Blank);
    }
    let p = path_str(path);
    if len < HEADER_SIZE as u64 {
        return Err(RingError::Format(format!(
            "{p} is not a tracker ring ({len} bytes, not empty, shorter than a ring header); \
             refusing to overwrite it: remove it or use another path"
        )));
    }
    let u64_at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_ne_bytes(buf[o..o + 4].try_into().unwrap());
    if u64_at(OFF_MAGIC) != MAGIC {
        return Err(RingError::Format(format!(
            "{p} is not a tracker ring (bad magic number); refusing to overwrite it: \
             remove it or use another path"
        )));
    }
    let version = u32_at(OFF_VERSION);
    if version != LAYOUT_VERSION {
        return Err(RingError::Format(format!(
            "{p} is a tracker ring of layout version {version}, this build reads version \
             {LAYOUT_VERSION}; ship its events with the matching shipper, then remove it"
        )));
    }
    let header_size = u32_at(OFF_HEADER_SIZE);
    let data_size = u64_at(OFF_DATA_SIZE);
    let (producer, consumer) = (u64_at(OFF_PRODUCER), u64_at(OFF_CONSUMER));
    if header_size as usize != HEADER_SIZE
        || data_size < MIN_DATA_SIZE
        || data_size % PAGE != 0
        || producer % REC_HDR != 0
        || consumer % REC_HDR != 0
        || producer >= MAX_POS
    {
        return Err(RingError::Format(format!(
            "{p} is a corrupt tracker ring (header size {header_size}, data size {data_size}, \
             producer cursor {producer}, consumer cursor {consumer}); remove it"
        )));
    }
    if len < HEADER_SIZE as u64 + data_size {
        return Err(RingError::Format(format!(
            "{p} is a truncated tracker ring ({len} bytes, its header says {}); remove it",
            HEADER_SIZE as u64 + data_size
        )));
    }
    Ok(Found::Valid {
        data_size,
        producer,
        consumer,
    })
}

/// Checks cursors that no one can move (we hold the exclusive lock).
fn check_cursors(
    path: &Path,
    data_size: u64,
    producer: u64,
    consumer: u64,
) -> Result<(), RingError> {
    if consumer > producer || producer - consumer > data_size {
        return Err(RingError::Format(format!(
            "{} is a corrupt tracker ring (producer cursor {producer}, consumer cursor \
             {consumer}, data size {data_size}); remove it",
            path_str(path)
        )));
    }
    Ok(())
}

/// Under the exclusive lock: creates, re-initializes or resizes the file as needed.
fn init_exclusive(file: &File, path: &Path, size: u64) -> Result<Opened, RingError> {
    let full = HEADER_SIZE as u64 + size;
    match inspect(file, path)? {
        Found::Blank => {
            // Truncating to 0 first guarantees a zeroed data area.
            file.set_len(0).map_err(|e| io_ctx("ftruncate", e))?;
            file.set_len(full)
                .map_err(|e| io_ctx(&format!("ftruncate to {full} bytes"), e))?;
            if let Err(e) = filespace::reserve(file, full, Fallback::Rewrite) {
                // Give back what was allocated: the file stays blank, the space free.
                let _ = file.set_len(0);
                return Err(no_space(file, path, full, e));
            }
            let mut h = [0u8; HEADER_SIZE];
            h[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&MAGIC.to_ne_bytes());
            h[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&LAYOUT_VERSION.to_ne_bytes());
            h[OFF_HEADER_SIZE..OFF_HEADER_SIZE + 4]
                .copy_from_slice(&(HEADER_SIZE as u32).to_ne_bytes());
            h[OFF_DATA_SIZE..OFF_DATA_SIZE + 8].copy_from_slice(&size.to_ne_bytes());
            file.write_all_at(&h, 0)
                .map_err(|e| io_ctx("write of the ring header", e))?;
            Ok(Opened::Created)
        }
        Found::Valid {
            data_size,
            producer,
            consumer,
        } => {
            check_cursors(path, data_size, producer, consumer)?;
            let kept = HEADER_SIZE as u64 + data_size;
            if data_size == size {
                // Completes a sparse ring (made by an older version): cheap when it is not.
                reserve_kept(file, path, kept)?;
                Ok(Opened::Reused)
            } else if producer == consumer {
                // Empty, and no one else has it open: new data area, same cursors (positions
                // keep growing), same counters. Shrinking to the header first zeroes the data.
                file.set_len(HEADER_SIZE as u64)
                    .map_err(|e| io_ctx("ftruncate", e))?;
                file.set_len(full)
                    .map_err(|e| io_ctx(&format!("ftruncate to {full} bytes"), e))?;
                if let Err(e) = filespace::reserve(file, full, Fallback::Rewrite) {
                    // Back to the old size (the header still says it), the new space given back.
                    let _ = file
                        .set_len(HEADER_SIZE as u64)
                        .and_then(|()| file.set_len(kept));
                    return Err(no_space(file, path, full, e));
                }
                file.write_all_at(&size.to_ne_bytes(), OFF_DATA_SIZE as u64)
                    .map_err(|e| io_ctx("write of the ring header", e))?;
                Ok(Opened::Resized)
            } else {
                reserve_kept(file, path, kept)?;
                Ok(Opened::KeptOtherSize(data_size))
            }
        }
    }
}

/// Reserves the blocks of a ring that is kept as it is (its events stay). `fallback`:
/// [`Fallback::Rewrite`] only under the exclusive lock (no one else maps the file).
fn reserve_kept_with(
    file: &File,
    path: &Path,
    len: u64,
    fallback: Fallback,
) -> Result<(), RingError> {
    filespace::reserve(file, len, fallback).map_err(|e| no_space(file, path, len, e))
}

fn reserve_kept(file: &File, path: &Path, len: u64) -> Result<(), RingError> {
    reserve_kept_with(file, path, len, Fallback::Rewrite)
}

/// A failed reservation as the ring's error: path, size asked, space free, and what to do.
fn no_space(file: &File, path: &Path, len: u64, e: io::Error) -> RingError {
    let e = filespace::no_space(file, path, len, e);
    RingError::Io(io::Error::new(
        e.kind(),
        format!(
            "{e}; make the ring smaller, free space there or put the ring on a larger filesystem"
        ),
    ))
}

impl RingFile {
    /// For nginx: opens the file, creating and initializing it with a data area of `data_size`
    /// bytes (rounded down to a multiple of 4096, at least MIN_DATA_SIZE) when absent or invalid-
    /// and-empty. Never destroys unread events. File mode 0660.
    ///
    /// The file is initialized or resized only when no other process has it open (an
    /// exclusive flock succeeds); otherwise an existing ring is mapped as it is (Reused or
    /// KeptOtherSize).
    ///
    /// Every block of the file is reserved before it is mapped, an existing sparse ring
    /// completed; when its filesystem lacks the space, an `Io` error of kind StorageFull names
    /// the path, the size asked and the space free, and the file is left as it was (a new one
    /// empty).
    pub fn open_or_create(path: &Path, data_size: u64) -> Result<(RingFile, Opened), RingError> {
        let size = normalize_data_size(data_size);
        let file = loop {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o660)
                .open(path)
            {
                Ok(f) => {
                    // The umask may have removed group bits: apply the mode explicitly.
                    f.set_permissions(Permissions::from_mode(0o660))
                        .map_err(|e| io_ctx("fchmod", e))?;
                    break f;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_ctx("open", e)),
            }
            match OpenOptions::new().read(true).write(true).open(path) {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
                Err(e) => return Err(io_ctx("open", e)),
            }
        };
        let mut blank_waits = 0;
        loop {
            if try_flock_exclusive(&file).map_err(|e| io_ctx("flock", e))? {
                let outcome = init_exclusive(&file, path, size);
                // Downgrade (not atomic: release then acquire). Mapped only after, with the
                // size the header has then.
                flock(&file, libc::LOCK_SH).map_err(|e| io_ctx("flock", e))?;
                let outcome = outcome?;
                let rf = RingFile::map(file, path)?;
                let mapped = rf.ring.size;
                let outcome = match outcome {
                    Opened::KeptOtherSize(_) => Opened::KeptOtherSize(mapped),
                    o if mapped == size => o,
                    _ => Opened::KeptOtherSize(mapped),
                };
                return Ok((rf, outcome));
            }
            // Someone else has it open (or is initializing it): wait for a shared lock.
            flock(&file, libc::LOCK_SH).map_err(|e| io_ctx("flock", e))?;
            match inspect(&file, path)? {
                Found::Valid { data_size, .. } => {
                    // Others map it: allocate only (rewriting could undo their stores).
                    reserve_kept_with(
                        &file,
                        path,
                        HEADER_SIZE as u64 + data_size,
                        Fallback::Refuse,
                    )?;
                    let rf = RingFile::map(file, path)?;
                    let mapped = rf.ring.size;
                    let o = if mapped == size {
                        Opened::Reused
                    } else {
                        Opened::KeptOtherSize(mapped)
                    };
                    return Ok((rf, o));
                }
                Found::Blank if blank_waits < 200 => {
                    // Opened by someone who has not initialized it (yet): retry shortly.
                    flock(&file, libc::LOCK_UN).map_err(|e| io_ctx("flock", e))?;
                    blank_waits += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Found::Blank => {
                    return Err(RingError::Format(format!(
                        "{} is empty and held open by another process that does not initialize it",
                        path_str(path)
                    )))
                }
            }
        }
    }

    /// For the shipper: opens an existing ring; Format error if it is not one.
    pub fn open_existing(path: &Path) -> Result<RingFile, RingError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io_ctx("open", e))?;
        flock(&file, libc::LOCK_SH).map_err(|e| io_ctx("flock", e))?;
        RingFile::map(file, path)
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Gives the file to `uid:gid` if it is not theirs already (nginx's master, running as
    /// root, hands the ring to its worker user so that a shipper in that user's group can open
    /// it, as nginx does with its temp paths). Returns whether it changed anything.
    pub fn give_to(&self, uid: u32, gid: u32) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let m = self._file.metadata()?;
        if m.uid() == uid && m.gid() == gid {
            return Ok(false);
        }
        std::os::unix::fs::fchown(&self._file, Some(uid), Some(gid))?;
        Ok(true)
    }

    /// Whether `path` still names the file this mapping is of (same device and inode). A
    /// shipper can use it to notice that the file was removed and created again.
    pub fn is_file_at(&self, path: &Path) -> io::Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let mine = self._file.metadata()?;
        match std::fs::metadata(path) {
            Ok(m) => Ok(m.dev() == mine.dev() && m.ino() == mine.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Maps a valid ring; the caller holds at least a shared lock on `file`.
    fn map(file: File, path: &Path) -> Result<RingFile, RingError> {
        let data_size = match inspect(&file, path)? {
            Found::Valid { data_size, .. } => data_size,
            Found::Blank => {
                return Err(RingError::Format(format!(
                    "{} is not an initialized tracker ring (empty)",
                    path_str(path)
                )))
            }
        };
        let map_len = usize::try_from(HEADER_SIZE as u64 + data_size).map_err(|_| {
            RingError::Format(format!(
                "{}: data size {data_size} too large",
                path_str(path)
            ))
        })?;
        // SAFETY: a fresh shared mapping of `map_len` bytes of an fd we hold open; the kernel
        // picks the address, so no existing memory is affected. `inspect` checked that the file
        // is at least `map_len` bytes long, and the shared lock we hold keeps every process of
        // ours from truncating it while mapped.
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
            return Err(io_ctx(
                &format!("mmap of {map_len} bytes"),
                io::Error::last_os_error(),
            ));
        }
        let base = NonNull::new(addr.cast::<u8>()).expect("mmap returned null");
        // SAFETY: HEADER_SIZE < map_len, so the data area pointer stays inside the mapping.
        let data = unsafe { NonNull::new_unchecked(base.as_ptr().add(HEADER_SIZE)) };
        let ring = Ring {
            hdr: base.cast::<Header>(),
            data,
            size: data_size,
        };
        ring.assign_id();
        Ok(RingFile {
            ring,
            map_len,
            _file: file,
        })
    }
}

impl Drop for RingFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `map`; `Ring` references borrow the
        // RingFile, so none outlive this. The fd (and its lock) is closed after, when `_file`
        // drops.
        unsafe {
            libc::munmap(self.ring.hdr.as_ptr().cast(), self.map_len);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The ring
// ---------------------------------------------------------------------------------------------

/// The ring in a mapping. All methods take `&self`: it is shared between processes.
pub struct Ring {
    hdr: NonNull<Header>,
    data: NonNull<u8>,
    /// The data size of the mapping (fixed for the mapping's life).
    size: u64,
}

// SAFETY: a Ring is a view over a shared mapping that is accessed only through atomics; it
// holds no thread-local state, so it can be used and shared from any thread.
unsafe impl Send for Ring {}
// SAFETY: see Send: every access through `&Ring` is an atomic operation.
unsafe impl Sync for Ring {}

/// Why a write did not happen. Both are counted in the header (dropped_full / dropped_too_large).
#[derive(Debug, PartialEq)]
pub enum WriteError {
    Full,
    TooLarge,
}

/// Where [`Ring::write_stalled`] calls its closure (test hook).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StallPoint {
    /// After the CAS on the producer cursor, before anything is written at the record.
    AfterCas,
    /// After the "reserved" tag is published, before the payload is copied.
    AfterReserved,
}

/// Counters and cursors, for stats and metrics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RingStats {
    pub data_size: u64,
    pub producer_pos: u64,
    pub consumer_pos: u64,
    pub written: [u64; COUNTER_KINDS],
    pub dropped_full: [u64; COUNTER_KINDS],
    pub dropped_too_large: [u64; COUNTER_KINDS],
    /// Events not stored on purpose (e.g. unknown campaign with `tracker_unknown_campaign count`).
    pub rejected: [u64; COUNTER_KINDS],
    /// Records the consumer skipped because their writer died, or stalled past `stale_after`,
    /// before committing (one that commits later is in `written` too).
    pub abandoned: u64,
    /// Requests refused as invalid, by `limits::Reason::index()`; never stored.
    pub invalid: [u64; INVALID_REASONS],
    /// Duplicates (`tracker_duplicates`), by kind: stored flagged, or only counted.
    pub duplicates: [u64; COUNTER_KINDS],
    /// Entries of the duplicate set pushed out while still in their window.
    pub duplicate_evictions: u64,
}

fn load_all(a: &[AtomicU64; COUNTER_KINDS]) -> [u64; COUNTER_KINDS] {
    std::array::from_fn(|i| a[i].load(Relaxed))
}

impl Ring {
    #[inline]
    fn header(&self) -> &Header {
        // SAFETY: the mapping starts with HEADER_SIZE >= size_of::<Header>() bytes, is page
        // aligned, lives as long as `self` (owned by the RingFile we borrow), and Header is
        // made only of atomics, valid for any bit pattern and meant for shared mutation.
        unsafe { self.hdr.as_ref() }
    }

    /// The atomic word at byte offset `off` of the data area.
    #[inline]
    fn word(&self, off: u64) -> &AtomicU64 {
        assert!(
            off & 7 == 0 && off + 8 <= self.size,
            "ring word offset {off} out of range"
        );
        // SAFETY: checked just above: `off` is 8-aligned (the data area is page aligned) and
        // the word lies inside the data area of the mapping, which lives as long as `self`.
        // The data area is only ever accessed through AtomicU64 (by every process), so this
        // reference never aliases a non-atomic access.
        unsafe { &*self.data.as_ptr().add(off as usize).cast::<AtomicU64>() }
    }

    /// Copies `payload` into the data area at `off` as 8-byte words, zero-filling up to the
    /// record's 16-byte boundary. The caller owns `[off, off + round16(len))`.
    #[inline]
    fn store_payload(&self, off: u64, payload: &[u8]) {
        let words = round16(payload.len() as u64) / 8;
        let mut i = 0u64;
        let mut chunks = payload.chunks_exact(8);
        for ch in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(ch);
            self.word(off + i * 8).store(u64::from_ne_bytes(b), Relaxed);
            i += 1;
        }
        let rem = chunks.remainder();
        if !rem.is_empty() {
            let mut b = [0u8; 8];
            b[..rem.len()].copy_from_slice(rem);
            self.word(off + i * 8).store(u64::from_ne_bytes(b), Relaxed);
            i += 1;
        }
        while i < words {
            self.word(off + i * 8).store(0, Relaxed);
            i += 1;
        }
    }

    /// Copies `len` payload bytes at `off` out of the data area.
    fn load_payload(&self, off: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut i = 0u64;
        while out.len() < len {
            let b = self.word(off + i * 8).load(Relaxed).to_ne_bytes();
            let n = (len - out.len()).min(8);
            out.extend_from_slice(&b[..n]);
            i += 1;
        }
        out
    }

    /// Producer: stores one record for counter slot `kind`, never blocking. `pid`: the writer's
    /// pid (for dead-writer detection). Returns the record's position. On Full/TooLarge the
    /// matching counter is incremented.
    ///
    /// A `kind` >= COUNTER_KINDS is counted in the last slot.
    #[inline]
    pub fn write(&self, kind: usize, payload: &[u8], pid: u32) -> Result<u64, WriteError> {
        self.write_inner(kind, payload, pid, None, || {})
    }

    /// Test hook: like [`Ring::write`], but calls `stall` at `at` (e.g. to block forever and be
    /// killed there, leaving an abandoned record). Not for production use.
    #[doc(hidden)]
    pub fn write_stalled(
        &self,
        kind: usize,
        payload: &[u8],
        pid: u32,
        at: StallPoint,
        stall: impl FnOnce(),
    ) -> Result<u64, WriteError> {
        self.write_inner(kind, payload, pid, Some(at), stall)
    }

    #[inline(always)]
    fn write_inner(
        &self,
        kind: usize,
        payload: &[u8],
        pid: u32,
        at: Option<StallPoint>,
        stall: impl FnOnce(),
    ) -> Result<u64, WriteError> {
        let h = self.header();
        let k = kind.min(COUNTER_KINDS - 1);
        let size = self.size;
        let len = payload.len();
        let Some(need) = record_need(len, size) else {
            h.dropped_too_large[k].fetch_add(1, Relaxed);
            return Err(WriteError::TooLarge);
        };
        let mut p = h.producer_pos.load(Acquire);
        // The word of the writers table that says we are in flight (claimed at the first
        // attempt that fits): see writers.rs for why it is published before the CAS.
        let mut mine: Option<&AtomicU64> = None;
        let res = loop {
            // A producer cursor that no producer could have made (an overwritten header):
            // refuse, like a full ring, rather than write at an unaligned or overflowing
            // place (one test of a register on the hot path).
            let fits = if p & BAD_POS_BITS != 0 {
                None
            } else {
                // Acquire: the consumer's reads of the space it released happen before our
                // writes.
                plan(p, h.consumer_pos.load(Acquire), size, need)
            };
            let Some(res) = fits else {
                if let Some(w) = mine {
                    writers::clear(w);
                }
                h.dropped_full[k].fetch_add(1, Relaxed);
                return Err(WriteError::Full);
            };
            let e = writers::entry(pid, p);
            match mine {
                Some(w) => writers::update(w, e),
                None => match writers::claim(&h.writers, pid, e) {
                    Some(w) => mine = Some(w),
                    // More writers in flight than words: refused, counted as full.
                    None => {
                        h.dropped_full[k].fetch_add(1, Relaxed);
                        return Err(WriteError::Full);
                    }
                },
            }
            // Release (the entry above is visible to whoever sees this reservation), and every
            // change of the producer cursor is a CAS, which keeps the release sequence going.
            match h
                .producer_pos
                .compare_exchange_weak(p, res.end, AcqRel, Acquire)
            {
                Ok(_) => break res,
                Err(actual) => p = actual,
            }
        };
        let mine = mine.expect("claimed before the CAS");
        // [p, res.end) is ours alone until we tag it.
        if at == Some(StallPoint::AfterCas) {
            stall();
            return self.finish_write(h, k, p, res, payload, pid, mine, None::<fn()>);
        }
        let stall_after_reserved = if at == Some(StallPoint::AfterReserved) {
            Some(stall)
        } else {
            None
        };
        self.finish_write(h, k, p, res, payload, pid, mine, stall_after_reserved)
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn finish_write(
        &self,
        h: &Header,
        k: usize,
        p: u64,
        res: Reservation,
        payload: &[u8],
        pid: u32,
        mine: &AtomicU64,
        stall_after_reserved: Option<impl FnOnce()>,
    ) -> Result<u64, WriteError> {
        let size = self.size;
        let pid_word = (pid as u64) << 32;
        if res.pad > 0 {
            let off = p % size;
            self.word(off + 8)
                .store(pid_word | (res.pad - REC_HDR), Relaxed);
            self.word(off).store(tag(p, STATE_PADDING), Release);
        }
        let q = res.start;
        let off = q % size;
        self.word(off + 8)
            .store(pid_word | payload.len() as u64, Relaxed);
        // Release: word1 is visible to whoever sees "reserved".
        self.word(off).store(tag(q, STATE_RESERVED), Release);
        // From here word1 names us: out of the writers table (Release: after the tag).
        writers::clear(mine);
        if let Some(stall) = stall_after_reserved {
            stall();
        }
        self.store_payload(off + REC_HDR, payload);
        // Release: the payload is visible to whoever sees "committed".
        self.word(off).store(tag(q, STATE_COMMITTED), Release);
        h.written[k].fetch_add(1, Relaxed);
        Ok(q)
    }

    /// Counts an event that was not stored on purpose.
    pub fn count_rejected(&self, kind: usize) {
        self.header().rejected[kind.min(COUNTER_KINDS - 1)].fetch_add(1, Relaxed);
    }

    /// Counts a request refused as invalid (`limits::Reason::index()`); nothing was stored.
    pub fn count_invalid(&self, reason: usize) {
        self.header().invalid[reason.min(INVALID_REASONS - 1)].fetch_add(1, Relaxed);
    }

    /// Counts a duplicate (`tracker_duplicates`), stored flagged or only counted.
    pub fn count_duplicate(&self, kind: usize) {
        self.header().duplicates[kind.min(COUNTER_KINDS - 1)].fetch_add(1, Relaxed);
    }

    /// Counts an entry of the duplicate set pushed out while still in its window (the set is
    /// too small for the traffic: `tracker_duplicates_zone`).
    pub fn count_duplicate_eviction(&self) {
        self.header().duplicate_evictions.fetch_add(1, Relaxed);
    }

    pub fn stats(&self) -> RingStats {
        let h = self.header();
        let consumer_pos = h.consumer_pos.load(Acquire);
        let producer_pos = h.producer_pos.load(Acquire);
        RingStats {
            data_size: self.size,
            producer_pos,
            consumer_pos,
            written: load_all(&h.written),
            dropped_full: load_all(&h.dropped_full),
            dropped_too_large: load_all(&h.dropped_too_large),
            rejected: load_all(&h.rejected),
            abandoned: h.abandoned.load(Relaxed),
            invalid: std::array::from_fn(|i| h.invalid[i].load(Relaxed)),
            duplicates: load_all(&h.duplicates),
            duplicate_evictions: h.duplicate_evictions.load(Relaxed),
        }
    }

    /// Gives the ring its identity if it has none yet (a ring created before identities, or
    /// just created): each of the two words is set by a CAS from 0 to a random non-zero value,
    /// so of the processes that open the ring at once (nginx's workers, the shipper) exactly
    /// one value per word wins and all of them read the same identity after this returns.
    fn assign_id(&self) {
        for w in &self.header().ring_id {
            if w.load(Acquire) == 0 {
                let r = crate::id::os_random_u64().max(1);
                let _ = w.compare_exchange(0, r, AcqRel, Acquire);
            }
        }
    }

    /// The ring's identity: 128 random bits made when the ring was first opened (kept in its
    /// header, bytes 24..40), never 0. Two ring files never share one (with 2^-64 odds per
    /// word); a ring recreated (file removed) gets a new one. The Kafka sink tags every message
    /// with it (docs/shipper.md).
    pub fn id(&self) -> u128 {
        let [hi, lo] = &self.header().ring_id;
        (u128::from(hi.load(Acquire)) << 64) | u128::from(lo.load(Acquire))
    }

    pub fn data_size(&self) -> u64 {
        self.size
    }

    pub fn consumer_pos(&self) -> u64 {
        self.header().consumer_pos.load(Acquire)
    }

    pub fn producer_pos(&self) -> u64 {
        self.header().producer_pos.load(Acquire)
    }

    /// Consumer: acknowledges everything before `pos` (a record end returned by the reader).
    /// Only moves forward; producers may then reuse the space.
    ///
    /// Clamped to the producer cursor (a position past it would let producers overwrite
    /// unread records) and to the readers' holds (a record skipped while its writer may still
    /// write it: see hold.rs). A commit cut short by a hold is not remembered: commit again once
    /// the reader has released it ([`Cursor::commit`] remembers, in the sink's slot).
    pub fn commit(&self, pos: u64) {
        let h = self.header();
        // SeqCst fence: pairs with the one in Hold::set (a hold released at the same time is
        // seen here, or that reader sees our cursor and commits itself).
        fence(SeqCst);
        let pos = pos.min(h.producer_pos.load(Acquire));
        let pos = hold::smallest(&h.holds).map_or(pos, |held| pos.min(held));
        // Release: our reads of the records before `pos` happen before a producer's writes
        // over them (producers load the consumer cursor with Acquire).
        h.consumer_pos.fetch_max(pos, Release);
    }

    /// The named consumer cursor `name` (a shipper sink): finds its slot, or claims a free one
    /// starting at the consumer cursor. Only the shipper (one process, under its lock) calls
    /// this. Err when every slot is taken by another name.
    pub fn cursor(&self, name: &str) -> Result<Cursor<'_>, String> {
        let id = cursor_id(name);
        let slots = &self.header().cursors;
        let slot = match slots.iter().position(|s| s.id.load(Acquire) == id) {
            Some(i) => i,
            None => {
                let i = slots
                    .iter()
                    .position(|s| s.id.load(Acquire) == 0)
                    .ok_or_else(|| {
                        format!("all {CURSOR_SLOTS} sink cursor slots of the ring are taken")
                    })?;
                let s = &slots[i];
                // A fresh sink holds nothing (a hold left by a released sink is void).
                self.header().holds[i].store(0, Release);
                s.pos.store(self.consumer_pos(), Release);
                let mut bytes = [0u8; CURSOR_NAME_MAX];
                let n = name.len().min(CURSOR_NAME_MAX);
                bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
                for (w, c) in s.name.iter().zip(bytes.chunks_exact(8)) {
                    w.store(u64::from_le_bytes(c.try_into().expect("8 bytes")), Relaxed);
                }
                // Release: the position and the name are visible to whoever sees the id.
                s.id.store(id, Release);
                i
            }
        };
        Ok(Cursor { ring: self, slot })
    }

    /// Frees every claimed cursor slot whose name is not in `keep` (sinks no longer
    /// configured, which would otherwise hold the consumer cursor back), then moves the
    /// consumer cursor to the smallest remaining one. Returns the names freed.
    pub fn release_cursors_except(&self, keep: &[&str]) -> Vec<String> {
        let ids: Vec<u64> = keep.iter().map(|n| cursor_id(n)).collect();
        let mut freed = Vec::new();
        for (i, s) in self.header().cursors.iter().enumerate() {
            let id = s.id.load(Acquire);
            if id != 0 && !ids.contains(&id) {
                freed.push(self.cursor_name(i));
                s.id.store(0, Release);
                self.header().holds[i].store(0, Release);
            }
        }
        self.commit_to_slowest_cursor();
        freed
    }

    /// The claimed cursors: (name, position).
    pub fn cursors(&self) -> Vec<(String, u64)> {
        let c = self.consumer_pos();
        let slots = &self.header().cursors;
        (0..CURSOR_SLOTS)
            .filter(|&i| slots[i].id.load(Acquire) != 0)
            .map(|i| (self.cursor_name(i), slots[i].pos.load(Acquire).max(c)))
            .collect()
    }

    fn cursor_name(&self, slot: usize) -> String {
        let s = &self.header().cursors[slot];
        let bytes: Vec<u8> = s
            .name
            .iter()
            .flat_map(|w| w.load(Relaxed).to_le_bytes())
            .collect();
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }

    /// Moves the consumer cursor to the smallest claimed cursor (nothing if none is claimed),
    /// or to the smallest hold if that is smaller.
    ///
    /// Several sinks commit from their own threads: each moves its slot forward, then this
    /// loads every slot and moves the consumer cursor to the minimum with `fetch_max`. A
    /// minimum computed from slot values that have since grown is still a lower bound of the
    /// slowest sink, so the consumer cursor never passes a sink, whichever commit lands last.
    /// The SeqCst fence keeps two sinks that commit at once from both missing the other's new
    /// slot value (which would leave the consumer cursor behind until the next commit).
    fn commit_to_slowest_cursor(&self) {
        fence(SeqCst);
        let min = self
            .header()
            .cursors
            .iter()
            .filter(|s| s.id.load(Acquire) != 0)
            .map(|s| s.pos.load(Acquire))
            .min();
        if let Some(m) = min {
            self.commit(m);
        }
    }
}

/// FNV-1a of a cursor name, never 0 (0 marks a free slot).
fn cursor_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

/// One sink's consumer cursor (see [`Ring::cursor`]). Each sink reads from its own position
/// and acknowledges what its destination has; the ring's consumer cursor, which frees space
/// for nginx, follows the slowest sink, so a slow or stopped sink never loses events that a
/// faster one already shipped.
#[derive(Clone, Copy)]
pub struct Cursor<'r> {
    ring: &'r Ring,
    slot: usize,
}

impl<'r> Cursor<'r> {
    pub fn ring(&self) -> &'r Ring {
        self.ring
    }

    /// Where this sink resumes: everything before it is acknowledged by this sink.
    pub fn position(&self) -> u64 {
        let p = self.ring.header().cursors[self.slot].pos.load(Acquire);
        p.max(self.ring.consumer_pos())
    }

    /// Acknowledges everything before `pos` for this sink (only moves forward, clamped to the
    /// producer cursor), then moves the ring's consumer cursor to the slowest sink's position.
    ///
    /// The slot may go past a record this sink's reader skipped while its writer may still
    /// write it: the reader's hold (in the header, resumed by the next reader of this sink)
    /// keeps the consumer cursor before it until the writer finishes or exits.
    pub fn commit(&self, pos: u64) {
        let pos = pos.min(self.ring.producer_pos());
        self.ring.header().cursors[self.slot]
            .pos
            .fetch_max(pos, AcqRel);
        self.ring.commit_to_slowest_cursor();
    }

    /// A reader starting at this cursor's position, with this sink's hold.
    pub fn reader(&self) -> Reader<'r> {
        Reader::with_hold(self.ring, self.position(), self.slot)
    }
}

// ---------------------------------------------------------------------------------------------
// The consumer
// ---------------------------------------------------------------------------------------------

/// One record as read: `pos` where it starts, `end` the position after it (what to commit),
/// and the payload, copied out of the ring.
#[derive(Debug, PartialEq)]
pub struct Record {
    pub pos: u64,
    pub end: u64,
    pub payload: Vec<u8>,
}

/// What the reader found at its position.
#[derive(Debug, PartialEq)]
pub enum Read {
    Record(Record),
    /// Nothing committed yet at this position (caught up, or a writer still writing).
    Empty,
    /// Records of dead or stalled writers skipped from `from` to `to` (counted in `abandoned`).
    /// For delivery only: while such a writer may be alive, the space stays held
    /// ([`Reader::held`]), and commits do not hand it back to producers.
    Skipped {
        from: u64,
        to: u64,
    },
    /// The header's cursors break the ring's invariant (`consumer_pos <= producer_pos <=
    /// consumer_pos + data_size`, both multiples of 16 below 2^62): a torn or overwritten
    /// header, never a normal state. Reported once per bad value, with the values seen; the
    /// reader then goes on as docs/ring.md says (bounded: it never scans more than a lap).
    Corrupt {
        producer: u64,
        consumer: u64,
    },
    /// After a `Corrupt` producer cursor that jumped more than a lap ahead: nothing was found
    /// from `from` on (a full lap scanned, a `stale_after` wait), so the reader gave up
    /// `[from, to)` and goes on at `to`, the producer cursor. Not counted in `abandoned`.
    Resynced {
        from: u64,
        to: u64,
    },
}

/// What is wrong with the cursors the reader loaded (see [`Read::Corrupt`]).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Cursors {
    Sane,
    /// `producer_pos` more than a lap ahead of `consumer_pos`: readable up to a lap, then
    /// resynchronized at `producer_pos`.
    Ahead,
    /// `producer_pos` behind `consumer_pos`: nothing to read until it passes it.
    Behind,
    /// `consumer_pos` not a multiple of 16: read on from the next multiple of 16.
    ConsumerUnaligned,
    /// `producer_pos` not a multiple of 16 or at least 2^62: nothing can be read (producers
    /// refuse to write, `Full`).
    Unusable,
}

/// A position the reader is waiting on, since when, with what tag there.
#[derive(Debug)]
struct Stuck {
    pos: u64,
    word0: u64,
    since: Instant,
    /// The producer cursor when the wait (re)started.
    producer: u64,
}

/// The single consumer. Reads ahead of the committed cursor: the caller commits positions
/// only after its sink has the events, so a crash re-reads from the last commit.
pub struct Reader<'r> {
    ring: &'r Ring,
    pos: u64,
    stale_after: Duration,
    stuck: Option<Stuck>,
    count_skips: bool,
    /// The damage last reported as [`Read::Corrupt`], until the cursors are sane again.
    reported: Option<Cursors>,
    /// Where the space this reader skipped may still be written by a live writer.
    hold: Hold,
}

impl<'r> Reader<'r> {
    /// Starts at the ring's consumer cursor.
    pub fn new(ring: &'r Ring) -> Reader<'r> {
        Reader::at(ring, ring.consumer_pos())
    }

    /// Starts at `pos`, a record boundary at or after the consumer cursor (a sink's
    /// [`Cursor::position`]).
    ///
    /// Its hold (see [`Reader::held`]) is the one for readers without a cursor: use one such
    /// reader per ring at a time.
    pub fn at(ring: &'r Ring, pos: u64) -> Reader<'r> {
        Reader::with_hold(ring, pos, ANON_HOLD)
    }

    fn with_hold(ring: &'r Ring, pos: u64, slot: usize) -> Reader<'r> {
        let hold = Hold::resume(ring, slot, pos);
        Reader {
            ring,
            pos,
            stale_after: DEFAULT_STALE_AFTER,
            stuck: None,
            count_skips: true,
            reported: None,
            hold,
        }
    }

    /// The first position this reader skipped whose writer may still write it (None: none).
    /// The consumer cursor does not pass it (commits stop there) until the writer commits or
    /// its process is gone; the reader checks after every skip, when it finds nothing to read,
    /// and every 1024 records.
    pub fn held(&self) -> Option<u64> {
        self.hold.position()
    }

    /// Whether skipped records are counted in the header's `abandoned` (default yes). When
    /// several readers (sinks) read the same ring, only one counts them.
    pub fn counting_skips(mut self, count: bool) -> Reader<'r> {
        self.count_skips = count;
        self
    }

    /// How long a record may stay uncommitted (reserved by a live writer, or never tagged)
    /// before it is skipped as abandoned. Default [`DEFAULT_STALE_AFTER`] (2 s).
    pub fn with_stale_after(mut self, stale_after: Duration) -> Reader<'r> {
        self.stale_after = stale_after;
        self
    }

    /// The position of the next read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    #[allow(clippy::should_implement_trait)] // never ends: Empty is not the end
    pub fn next(&mut self) -> Read {
        let read = self.read();
        if !matches!(read, Read::Skipped { .. }) {
            self.hold
                .after_read(self.ring, self.pos, read == Read::Empty);
        }
        read
    }

    fn read(&mut self) -> Read {
        let ring = self.ring;
        let h = ring.header();
        let size = ring.size;
        loop {
            // Records before the consumer cursor are acknowledged (and may be overwritten):
            // never read behind it.
            let c = h.consumer_pos.load(Acquire);
            if self.pos < c {
                self.pos = c;
                self.stuck = None;
            }
            // Positions are multiples of 16; a torn consumer cursor (or a caller's position)
            // that is not is rounded up, to the next record boundary or into a record (then
            // resynchronized like a stale tag).
            if !self.pos.is_multiple_of(REC_HDR) {
                self.pos = self.pos.saturating_add(REC_HDR - 1) & !(REC_HDR - 1);
                self.stuck = None;
            }
            let pp = h.producer_pos.load(Acquire);
            let state = classify(c, pp, size, || h.consumer_pos.load(Acquire));
            if state == Cursors::Sane {
                self.reported = None;
            } else if self.reported != Some(state) {
                // Once per episode (per kind of damage), not once per call.
                self.reported = Some(state);
                return Read::Corrupt {
                    producer: pp,
                    consumer: c,
                };
            } else if state == Cursors::Unusable {
                self.stuck = None;
                return Read::Empty;
            }
            let pos = self.pos;
            if pos >= pp {
                self.stuck = None;
                return Read::Empty;
            }
            let off = pos % size;
            // Acquire: pairs with the writer's Release tag stores (word1, payload visible).
            let w0 = ring.word(off).load(Acquire);
            // `next <= pp` and `end <= pp` below never refuse a real record: `pos < pp`, so the
            // CAS that reserved `pos` is at or before the `pp` loaded, and that one CAS moved the
            // producer cursor over the writer's padding and the whole record after it. (Were
            // they two CASes, the reader could pass padding into a lap no one had reserved.)
            // The checks refuse leftovers and torn headers that would take the reader past the
            // producer cursor. Test: ring_threads_padding_and_its_record_are_reserved_by_one_cas.
            if w0 == tag(pos, STATE_PADDING) {
                let next = lap_end(pos, size);
                if off != 0 && next <= pp {
                    self.pos = next;
                    self.stuck = None;
                    continue;
                }
            } else if w0 == tag(pos, STATE_COMMITTED) {
                let len = ring.word(off + 8).load(Relaxed) & 0xffff_ffff;
                let end = pos + REC_HDR + round16(len);
                if record_fits(off, len, size) && end <= pp {
                    let payload = ring.load_payload(off + REC_HDR, len as usize);
                    self.pos = end;
                    self.stuck = None;
                    return Read::Record(Record { pos, end, payload });
                }
            } else if w0 == tag(pos, STATE_RESERVED) {
                let w1 = ring.word(off + 8).load(Relaxed);
                let (pid, len) = ((w1 >> 32) as u32, w1 & 0xffff_ffff);
                let end = pos + REC_HDR + round16(len);
                if record_fits(off, len, size) && end <= pp {
                    let waited = self.waited(pos, w0, pp);
                    let grace = DEAD_WRITER_GRACE.min(self.stale_after);
                    if waited >= self.stale_after || (waited >= grace && !pid_alive(pid)) {
                        return self.skip(pos, end);
                    }
                    return Read::Empty;
                }
            }
            // A stale tag (the writer has not tagged yet, or died before tagging) or an
            // implausible header: wait, then resynchronize.
            if self.waited(pos, w0, pp) < self.stale_after {
                return Read::Empty;
            }
            return self.recover(pos);
        }
    }

    /// How long the reader has been looking at tag `w0` at `pos` (zero the first time).
    fn waited(&mut self, pos: u64, w0: u64, pp: u64) -> Duration {
        match &self.stuck {
            Some(s) if s.pos == pos && s.word0 == w0 => s.since.elapsed(),
            _ => {
                self.stuck = Some(Stuck {
                    pos,
                    word0: w0,
                    since: Instant::now(),
                    producer: pp,
                });
                Duration::ZERO
            }
        }
    }

    fn skip(&mut self, from: u64, to: u64) -> Read {
        if self.count_skips {
            self.ring.header().abandoned.fetch_add(1, Relaxed);
        }
        self.pos = to;
        self.stuck = None;
        self.hold.skipped(self.ring, from, to);
        Read::Skipped { from, to }
    }

    /// After `stale_after` at a position without a valid tag: skip to the first later position
    /// that carries its own tag (the next record written after the dead one), or, if there is
    /// none and no producer moved during the wait, to the producer cursor.
    fn recover(&mut self, pos: u64) -> Read {
        let ring = self.ring;
        let pp = ring.header().producer_pos.load(Acquire);
        if !pp.is_multiple_of(REC_HDR) || pp >= MAX_POS {
            // Unusable (Corrupt): next() stops before reading at all.
            return Read::Empty;
        }
        // One lap at most: past `pos + size` the words are the same ones again, and no live
        // reservation reaches beyond it (producers stay within `consumer_pos + size`).
        let limit = pp.min(pos.saturating_add(ring.size));
        // Cut at the first writer in flight after `pos`: its record is not part of the dead
        // range (it gets its own wait, and skip if it stalls too).
        if let Some(q) = hold::first_tag(ring, pos, limit) {
            return self.skip(pos, hold::writer_between(ring, pos, q).unwrap_or(q));
        }
        let Some(stuck) = self.stuck.as_mut() else {
            return Read::Empty;
        };
        if pp == stuck.producer {
            if pp - pos > ring.size {
                // Only a producer cursor that jumped ahead (Corrupt) leaves more than a lap
                // without a record: start again at it, which lets producers write again
                // once the caller commits.
                self.pos = pp;
                self.stuck = None;
                return Read::Resynced { from: pos, to: pp };
            }
            return self.skip(pos, hold::writer_between(ring, pos, pp).unwrap_or(pp));
        }
        // Producers moved but nothing after `pos` is tagged yet: wait once more.
        stuck.producer = pp;
        stuck.since = Instant::now();
        Read::Empty
    }
}

/// What the cursors say: `c` loaded before `pp`; `reload` loads the consumer cursor again (a
/// sink's commit between the two loads lets producers reserve past the first `c + size`).
fn classify(c: u64, pp: u64, size: u64, reload: impl FnOnce() -> u64) -> Cursors {
    if !pp.is_multiple_of(REC_HDR) || pp >= MAX_POS {
        Cursors::Unusable
    } else if !c.is_multiple_of(REC_HDR) {
        Cursors::ConsumerUnaligned
    } else if pp < c {
        Cursors::Behind
    } else if pp - c > size && pp > reload().saturating_add(size) {
        Cursors::Ahead
    } else {
        Cursors::Sane
    }
}

/// Whether process `pid` may still exist (true when unknown).
fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled; nothing is
    // sent, no memory is touched.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round16_rounds_up() {
        assert_eq!(round16(0), 0);
        assert_eq!(round16(1), 16);
        assert_eq!(round16(15), 16);
        assert_eq!(round16(16), 16);
        assert_eq!(round16(17), 32);
    }

    #[test]
    fn tags_encode_position_and_state() {
        assert_eq!(tag(0, STATE_RESERVED), 1);
        assert_eq!(tag(16, STATE_COMMITTED), 66);
        assert_eq!(tag(32, STATE_PADDING) >> 2, 32);
        assert_ne!(tag(16, STATE_COMMITTED), tag(16 + 65536, STATE_COMMITTED));
    }

    #[test]
    fn record_need_and_too_large() {
        let size = 1 << 20;
        assert_eq!(record_need(0, size), Some(16));
        assert_eq!(record_need(1, size), Some(32));
        assert_eq!(record_need(16, size), Some(32));
        assert_eq!(
            record_need(MAX_PAYLOAD, size),
            Some(16 + MAX_PAYLOAD as u64)
        );
        assert_eq!(record_need(MAX_PAYLOAD + 1, size), None);
        // A quarter of the data area at most.
        let small = MIN_DATA_SIZE;
        assert_eq!(
            record_need((small / 4 - 16) as usize, small),
            Some(small / 4)
        );
        assert_eq!(record_need((small / 4 - 15) as usize, small), None);
    }

    #[test]
    fn plan_without_padding() {
        assert_eq!(
            plan(0, 0, 4096, 32),
            Some(Reservation {
                pad: 0,
                start: 0,
                end: 32
            })
        );
        // Exactly to the end of the data area: no padding.
        assert_eq!(
            plan(4064, 4064, 4096, 32),
            Some(Reservation {
                pad: 0,
                start: 4064,
                end: 4096
            })
        );
        // Later lap.
        assert_eq!(
            plan(3 * 4096 + 16, 3 * 4096, 4096, 32),
            Some(Reservation {
                pad: 0,
                start: 12304,
                end: 12336
            })
        );
    }

    #[test]
    fn plan_with_padding() {
        // 4080 + 32 > 4096: pad 16, record at the next lap's offset 0.
        assert_eq!(
            plan(4080, 4080, 4096, 32),
            Some(Reservation {
                pad: 16,
                start: 4096,
                end: 4128
            })
        );
        assert_eq!(
            plan(8192 + 4000, 8192 + 4000, 4096, 112),
            Some(Reservation {
                pad: 96,
                start: 12288,
                end: 12400
            })
        );
    }

    #[test]
    fn plan_full() {
        // Exactly full fits; one more byte does not.
        assert_eq!(
            plan(4064, 0, 4096, 32),
            Some(Reservation {
                pad: 0,
                start: 4064,
                end: 4096
            })
        );
        assert_eq!(plan(4080, 0, 4096, 32), None);
        assert_eq!(plan(4096, 0, 4096, 16), None);
        // Padding counts against the space.
        assert_eq!(plan(4080, 16, 4096, 32), None);
        assert_eq!(
            plan(4080, 32, 4096, 32),
            Some(Reservation {
                pad: 16,
                start: 4096,
                end: 4128
            })
        );
        // A consumer cursor ahead of a stale producer cursor does not underflow.
        assert!(plan(0, 64, 4096, 32).is_some());
    }

    #[test]
    fn lap_end_and_fits() {
        assert_eq!(lap_end(4080, 4096), 4096);
        assert_eq!(lap_end(4096, 4096), 8192);
        assert_eq!(lap_end(5000, 4096), 8192);
        assert!(record_fits(0, 0, 4096));
        assert!(record_fits(4064, 16, 4096));
        assert!(!record_fits(4064, 17, 4096));
        assert!(!record_fits(0, MAX_PAYLOAD as u64 + 1, 1 << 30));
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_data_size(0), MIN_DATA_SIZE);
        assert_eq!(normalize_data_size(MIN_DATA_SIZE + 4095), MIN_DATA_SIZE);
        assert_eq!(normalize_data_size(1 << 20), 1 << 20);
        assert_eq!(normalize_data_size((1 << 20) + 100), 1 << 20);
    }

    #[test]
    fn magic_reads_as_text() {
        assert_eq!(&MAGIC.to_ne_bytes(), b"NGXTRKR1");
    }

    // ---- torn or overwritten header cursors (docs/ring.md, "Corrupt cursors") ----

    fn scratch_ring(size: u64) -> (tempfile::TempDir, RingFile) {
        let dir = tempfile::tempdir().unwrap();
        let (rf, _) = RingFile::open_or_create(&dir.path().join("r.ring"), size).unwrap();
        (dir, rf)
    }

    /// Overwrites the producer cursor in the mapping, as a stray write would.
    fn tear_producer(ring: &Ring, v: u64) {
        ring.header().producer_pos.store(v, Release);
    }

    fn payload(i: u8) -> Vec<u8> {
        vec![i; 20 + i as usize]
    }

    /// Reads until Empty (bounded), committing records; returns what was read.
    fn read_all(r: &mut Reader<'_>, ring: &Ring) -> Vec<Read> {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match r.next() {
                Read::Empty => return out,
                Read::Record(rec) => {
                    ring.commit(rec.end);
                    out.push(Read::Record(rec));
                }
                other => out.push(other),
            }
        }
        panic!("no Empty in 10000 reads: {out:?}");
    }

    #[test]
    fn producer_far_ahead_is_reported_read_to_its_lap_then_resynced() {
        let (_d, rf) = scratch_ring(MIN_DATA_SIZE);
        let ring = rf.ring();
        for i in 0..5 {
            ring.write(0, &payload(i), 1).unwrap();
        }
        let real = ring.producer_pos();
        // A header torn to a huge (but aligned, below 2^62) position: before, the reader
        // scanned up to it 16 bytes at a time (2^57 steps).
        let bad = 1u64 << 61;
        tear_producer(ring, bad);
        assert_eq!(ring.write(1, b"refused", 1), Err(WriteError::Full));
        let mut r = Reader::new(ring).with_stale_after(Duration::from_millis(30));
        assert_eq!(
            r.next(),
            Read::Corrupt {
                producer: bad,
                consumer: 0
            }
        );
        // The records still in the lap are read, each once; the report is not repeated.
        let reads = read_all(&mut r, ring);
        let payloads: Vec<Vec<u8>> = reads
            .into_iter()
            .map(|x| match x {
                Read::Record(rec) => rec.payload,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(payloads, (0..5).map(payload).collect::<Vec<_>>());
        assert_eq!(r.position(), real);
        // After stale_after, one scan of at most a lap, then a jump to the producer cursor.
        std::thread::sleep(Duration::from_millis(40));
        let t = Instant::now();
        assert_eq!(
            r.next(),
            Read::Resynced {
                from: real,
                to: bad
            }
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(ring.stats().abandoned, 0, "not a dead writer");
        // Once the caller commits, the ring is sane again and producers write at `bad`.
        ring.commit(r.position());
        assert_eq!(ring.consumer_pos(), bad);
        assert_eq!(ring.write(2, b"after", 1), Ok(bad));
        match r.next() {
            Read::Record(rec) => {
                assert_eq!((rec.pos, rec.payload.as_slice()), (bad, &b"after"[..]))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.next(), Read::Empty);
        assert_eq!(ring.stats().dropped_full[1], 1);
    }

    #[test]
    fn producer_just_over_a_lap_ahead_with_a_hole_resyncs_within_a_lap() {
        let (_d, rf) = scratch_ring(MIN_DATA_SIZE);
        let ring = rf.ring();
        let size = ring.data_size();
        ring.write(0, &payload(1), 1).unwrap();
        let real = ring.producer_pos();
        tear_producer(ring, real + size + 4096);
        let mut r = Reader::new(ring).with_stale_after(Duration::ZERO);
        assert!(matches!(r.next(), Read::Corrupt { .. }));
        assert!(matches!(r.next(), Read::Record(_)));
        assert_eq!(
            r.next(),
            Read::Resynced {
                from: real,
                to: real + size + 4096
            }
        );
        assert_eq!(r.next(), Read::Empty);
    }

    #[test]
    fn producer_behind_the_consumer_is_reported_and_read_after_it_passes() {
        let (_d, rf) = scratch_ring(MIN_DATA_SIZE);
        let ring = rf.ring();
        for i in 0..4 {
            ring.write(0, &payload(i), 1).unwrap();
        }
        let c = ring.producer_pos();
        ring.commit(c);
        tear_producer(ring, 0);
        let mut r = Reader::new(ring).with_stale_after(Duration::ZERO);
        assert_eq!(
            r.next(),
            Read::Corrupt {
                producer: 0,
                consumer: c
            }
        );
        assert_eq!(r.next(), Read::Empty);
        // Producers write from 0 again: behind the consumer, never read (lost), no report
        // per write.
        while ring.producer_pos() <= c + 64 {
            ring.write(0, &payload(9), 1).unwrap();
            assert!(
                matches!(
                    r.next(),
                    Read::Empty | Read::Skipped { .. } | Read::Record(_)
                ),
                "no second report"
            );
        }
        // Past the consumer the reader finds its way (into a record: a bounded resync).
        let reads = read_all(&mut r, ring);
        assert!(
            reads
                .iter()
                .all(|x| matches!(x, Read::Record(_) | Read::Skipped { .. })),
            "{reads:?}"
        );
        assert_eq!(r.position(), ring.producer_pos());
        ring.write(3, b"next", 1).unwrap();
        assert!(matches!(r.next(), Read::Record(rec) if rec.payload == b"next"));
    }

    #[test]
    fn unusable_producer_cursor_stops_reads_and_writes_without_panics() {
        for bad in [MAX_POS, MAX_POS + 16, u64::MAX, u64::MAX - 15, 1004, 7] {
            let (_d, rf) = scratch_ring(MIN_DATA_SIZE);
            let ring = rf.ring();
            ring.write(0, &payload(1), 1).unwrap();
            tear_producer(ring, bad);
            let mut r = Reader::new(ring).with_stale_after(Duration::ZERO);
            assert_eq!(
                r.next(),
                Read::Corrupt {
                    producer: bad,
                    consumer: 0
                },
                "{bad}"
            );
            for _ in 0..3 {
                assert_eq!(r.next(), Read::Empty, "{bad}");
            }
            // Producers refuse (counted as full) instead of writing at a broken place.
            assert_eq!(ring.write(2, b"x", 1), Err(WriteError::Full), "{bad}");
            assert_eq!(ring.stats().dropped_full[2], 1);
            // Repaired (e.g. by hand): the reader goes on.
            tear_producer(ring, 48);
            assert!(matches!(r.next(), Read::Record(_)), "{bad}");
        }
    }

    #[test]
    fn unaligned_consumer_cursor_is_reported_and_resynced() {
        let (_d, rf) = scratch_ring(MIN_DATA_SIZE);
        let ring = rf.ring();
        ring.write(0, &payload(1), 1).unwrap(); // [0, 48)
        ring.write(0, &payload(2), 1).unwrap();
        ring.header().consumer_pos.store(8, Release);
        let mut r = Reader::new(ring).with_stale_after(Duration::ZERO);
        assert!(matches!(r.next(), Read::Corrupt { consumer: 8, .. }));
        // From 16, inside the first record: skipped to the second one.
        assert_eq!(r.next(), Read::Skipped { from: 16, to: 48 });
        assert!(matches!(r.next(), Read::Record(rec) if rec.payload == payload(2)));
        assert_eq!(r.next(), Read::Empty);
    }

    #[test]
    fn classify_cursors() {
        let s = 4096;
        let never = || -> u64 { panic!("no reload needed") };
        assert_eq!(classify(0, 0, s, never), Cursors::Sane);
        assert_eq!(classify(16, 16 + s, s, never), Cursors::Sane);
        // More than a lap with the first consumer load, within a lap with a later one: sane.
        assert_eq!(classify(0, s + 16, s, || 16), Cursors::Sane);
        assert_eq!(classify(0, s + 16, s, || 0), Cursors::Ahead);
        assert_eq!(classify(32, 16, s, never), Cursors::Behind);
        assert_eq!(classify(8, 16, s, never), Cursors::ConsumerUnaligned);
        assert_eq!(classify(0, 24, s, never), Cursors::Unusable);
        assert_eq!(classify(0, MAX_POS, s, never), Cursors::Unusable);
        assert_eq!(
            classify(u64::MAX - 15, MAX_POS - 16, s, never),
            Cursors::Behind
        );
        assert_eq!(classify(0, MAX_POS - 16, s, || u64::MAX), Cursors::Sane);
    }

    #[test]
    fn pid_alive_checks() {
        assert!(pid_alive(std::process::id()));
        assert!(pid_alive(0)); // unknown: never "dead"
                               // A child that has exited and been reaped is dead.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }
}
