//! A campaign store over plain process memory, for the store's tests: a shared anonymous
//! mapping (forked children see it, as nginx's workers see a zone), a
//! first-fit allocator that hands freed chunks out again at once (so that a chunk freed too
//! early is reused and overwritten), the writers' lock that nginx's slab mutex is (with the
//! force-unlock nginx does when the holder died), and fake reader pids that a test can kill.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracker_core::campaign::{Campaign, Status};
use tracker_core::store::{Chunks, Reader, Writer, Zone};

/// Where the header lives (offset 0 stays unused: 0 means "none" in the store).
const HEADER_OFF: usize = 64;
/// What a freed chunk is overwritten with.
pub const POISON: u8 = 0xA5;

#[derive(Default)]
struct Heap {
    /// Free blocks: offset -> size.
    free: BTreeMap<usize, usize>,
    /// Allocated chunks: offset -> size.
    live: BTreeMap<usize, usize>,
    /// Every offset freed so far.
    freed: HashSet<usize>,
}

pub struct TestZone {
    /// A MAP_SHARED anonymous mapping of `size` bytes (page-aligned, zeroed).
    region: *mut u8,
    size: usize,
    heap: Mutex<Heap>,
    lock: AtomicBool,
    /// The fake clock the writers are given (seconds).
    clock: AtomicU64,
}

/// Fake reader pids (threads playing worker processes) are `FAKE_PID + n`: above any real
/// pid (pid_max is at most 2^22).
const FAKE_PID: u32 = 1 << 30;

/// Fake readers a test has killed (numbers are distinct across the tests of a binary).
static DEAD: Mutex<Option<HashSet<u32>>> = Mutex::new(None);

/// Whether reader `pid` is alive: a fake one until [`kill`]ed; a real process (a forked
/// child) as the module tells, with `kill(pid, 0)`.
pub fn alive(pid: u32) -> bool {
    if pid < FAKE_PID {
        return tracker_core::store::pid_alive(pid);
    }
    !DEAD
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|d| d.contains(&pid))
}

/// Kills fake reader `n` (its process is gone: the writers' `kill(pid, 0)` would fail).
pub fn kill(n: u32) {
    DEAD.lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(FAKE_PID + n);
}

/// The allocator as one writer uses it.
pub struct TestChunks<'a>(&'a TestZone);

impl Chunks for TestChunks<'_> {
    fn alloc(&mut self, size: usize) -> Option<usize> {
        let size = size.max(8).next_multiple_of(8);
        let mut heap = self.0.heap.lock().unwrap();
        let (&off, &have) = heap.free.iter().find(|(_, &s)| s >= size)?;
        heap.free.remove(&off);
        if have > size {
            heap.free.insert(off + size, have - size);
        }
        heap.live.insert(off, size);
        // SAFETY: [off, off + size) is inside the region and now ours.
        unsafe { std::ptr::write_bytes(self.0.base().add(off), 0, size) };
        Some(off)
    }

    fn free(&mut self, off: usize) {
        let mut heap = self.0.heap.lock().unwrap();
        let size = heap
            .live
            .remove(&off)
            .unwrap_or_else(|| panic!("free of {off}: not allocated"));
        // SAFETY: the chunk was ours; poison it so that a reader still using it sees garbage.
        unsafe { std::ptr::write_bytes(self.0.base().add(off), POISON, size) };
        heap.free.insert(off, size);
        heap.freed.insert(off);
    }
}

// SAFETY: the region is only accessed through atomics or the store's protocol; the rest of
// TestZone is Sync.
unsafe impl Send for TestZone {}
// SAFETY: as for Send.
unsafe impl Sync for TestZone {}

impl Drop for TestZone {
    fn drop(&mut self) {
        // SAFETY: our mapping, no longer used (every Zone borrowed self).
        unsafe { libc::munmap(self.region.cast(), self.size) };
    }
}

impl TestZone {
    pub fn new(bytes: usize) -> Arc<TestZone> {
        let size = bytes.next_multiple_of(4096);
        // SAFETY: a new anonymous mapping; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(p != libc::MAP_FAILED, "mmap");
        let region = p.cast::<u8>();
        let start = (HEADER_OFF + Zone::header_size()).next_multiple_of(64);
        let mut heap = Heap::default();
        heap.free.insert(start, size - start);
        Arc::new(TestZone {
            region,
            size,
            heap: Mutex::new(heap),
            lock: AtomicBool::new(false),
            clock: AtomicU64::new(1_000_000),
        })
    }

    fn base(&self) -> *mut u8 {
        self.region
    }

    pub fn zone(&self) -> Zone<'_> {
        // SAFETY: the region lives as long as self and is only shared through Zone.
        unsafe { Zone::new(self.base(), self.size, HEADER_OFF) }
    }

    /// Takes the writers' lock (spins like nginx's shmtx).
    pub fn lock(&self) {
        while self
            .lock
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
    }

    pub fn unlock(&self) {
        self.lock.store(false, Ordering::Release);
    }

    /// What nginx does when a process died holding the slab mutex.
    pub fn force_unlock(&self) {
        self.lock.store(false, Ordering::Release);
    }

    /// A writer (the caller holds the lock).
    pub fn writer(&self) -> Writer<'_, '_, TestChunks<'_>> {
        Writer::new(self.zone(), TestChunks(self), &alive)
    }

    /// A writer of `zone`, this region with its accounts elsewhere (the caller holds the lock).
    pub fn writer_on<'a>(&'a self, zone: Zone<'a>) -> Writer<'a, 'a, TestChunks<'a>> {
        Writer::new(zone, TestChunks(self), &alive)
    }

    /// Runs `f` with a writer, under the lock.
    pub fn write<T>(&self, f: impl FnOnce(&mut Writer<'_, '_, TestChunks<'_>>) -> T) -> T {
        self.lock();
        let t = f(&mut self.writer());
        self.unlock();
        t
    }

    /// Moves the writers' clock forward (an NTP step, a VM resume, or a reader stalled that long).
    pub fn advance_clock(&self, secs: u64) {
        self.clock.fetch_add(secs, Ordering::Relaxed);
    }

    /// Whether the chunk at `off` was ever freed (it may have been handed out again since).
    pub fn was_freed(&self, off: usize) -> bool {
        self.heap.lock().unwrap().freed.contains(&off)
    }

    /// Takes all the free memory but the last `keep` bytes (so that the next allocations
    /// land at the end of the region); [`TestZone::unreserve`] gives it back.
    pub fn reserve_all_but(&self, keep: usize) -> usize {
        let size = *self
            .heap
            .lock()
            .unwrap()
            .free
            .values()
            .next()
            .expect("free memory");
        TestChunks(self).alloc(size - keep).expect("reserve")
    }

    pub fn unreserve(&self, off: usize) {
        TestChunks(self).free(off);
    }

    pub fn is_allocated(&self, off: usize) -> bool {
        self.heap.lock().unwrap().live.contains_key(&off)
    }

    pub fn allocated_bytes(&self) -> usize {
        self.heap.lock().unwrap().live.values().sum()
    }

    /// The offset of `p` in the region.
    pub fn offset_of<T>(&self, p: &T) -> usize {
        (p as *const T as usize) - self.base() as usize
    }

    /// Registers fake reader `n`.
    pub fn reader(&self, n: u32) -> Reader {
        self.zone()
            .claim_reader(FAKE_PID + n, &alive)
            .expect("a reader slot")
    }
}

/// A campaign whose landing URL tells its id and version.
pub fn campaign(id: &str, version: u32) -> Campaign {
    Campaign::new(
        id,
        Status::Active,
        &format!("https://{id}.example/v{version}"),
    )
}

/// The id and version a landing URL of [`campaign`] tells.
pub fn landing_of(url: &[u8]) -> (String, u32) {
    let s = std::str::from_utf8(url).expect("utf-8 landing");
    let rest = s
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("landing {s:?}"));
    let (id, v) = rest
        .split_once(".example/v")
        .unwrap_or_else(|| panic!("landing {s:?}"));
    (
        id.to_owned(),
        v.parse().unwrap_or_else(|_| panic!("landing {s:?}")),
    )
}
