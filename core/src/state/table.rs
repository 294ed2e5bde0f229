//! The accounts table of the state file: campaign accounts ([`Account`]) keyed by campaign id,
//! in fixed-size entries that never move, so that a campaign record refers to its account by
//! the entry's index and every process resolves it against its own mapping.
//!
//! Open addressing with linear probing over [`Entry`]s. An entry's `state` says what it is:
//! EMPTY (never used: ends a probe), LIVE (an id and its account), DEAD (its campaign was
//! deleted while processes may still charge it: kept as it is until a start where no other
//! process has the file), FREE (may be reused by an insert; probes go on past it).
//!
//! Writers (inserts, deletes, the exclusive start's prune) hold the table's lock, a word in the
//! file's header holding the writer's pid: two nginx masters (a binary upgrade) and their
//! workers may insert at once, and a lock held by a dead process is taken over
//! ([`crate::store::pid_alive`]). Charges never take it: they go to an account found before.
//!
//! Crash consistency: an insert writes the id and zeroes the account of an entry that is EMPTY
//! or FREE, then stores LIVE; a process killed before that store leaves the entry as it was.
//! Every counter is one 8-byte atomic, whole after a SIGKILL.

use core::sync::atomic::{AtomicU64, Ordering::*};

use crate::banker::Account;
use crate::input::MAX_CAMPAIGN_ID;

pub const EMPTY: u64 = 0;
pub const LIVE: u64 = 1;
pub const DEAD: u64 = 2;
pub const FREE: u64 = 3;

/// One account and its campaign id. 192 bytes.
#[repr(C)]
pub struct Entry {
    state: AtomicU64,
    id_len: AtomicU64,
    /// Written (bytes as 8 little-endian words) only while the entry is EMPTY or FREE, under
    /// the lock.
    id: [AtomicU64; MAX_CAMPAIGN_ID / 8],
    account: Account,
    _pad: [u64; 1],
}

pub const ENTRY_SIZE: usize = core::mem::size_of::<Entry>();
const _: () = assert!(ENTRY_SIZE == 192);

/// The table is full: no EMPTY nor FREE entry on the id's probe path.
#[derive(Debug, PartialEq)]
pub struct TableFull;

/// The table in a mapping: the lock word and the entries.
#[derive(Clone, Copy)]
pub struct Table<'m> {
    lock: &'m AtomicU64,
    entries: &'m [Entry],
}

// SAFETY: a Table only accesses shared memory through atomics.
unsafe impl Send for Table<'_> {}
// SAFETY: as for Send.
unsafe impl Sync for Table<'_> {}

/// Holds the table's lock (as a pid) until dropped.
struct Locked<'m> {
    lock: &'m AtomicU64,
    pid: u64,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let _ = self.lock.compare_exchange(self.pid, 0, Release, Relaxed);
    }
}

impl Entry {
    fn id_into(&self, buf: &mut [u8; MAX_CAMPAIGN_ID]) -> usize {
        for (i, w) in self.id.iter().enumerate() {
            buf[i * 8..i * 8 + 8].copy_from_slice(&w.load(Relaxed).to_le_bytes());
        }
        (self.id_len.load(Relaxed) as usize).min(MAX_CAMPAIGN_ID)
    }

    fn has_id(&self, id: &[u8]) -> bool {
        let mut buf = [0u8; MAX_CAMPAIGN_ID];
        let n = self.id_into(&mut buf);
        &buf[..n] == id
    }

    fn set_id(&self, id: &[u8]) {
        let mut buf = [0u8; MAX_CAMPAIGN_ID];
        buf[..id.len()].copy_from_slice(id);
        for (i, w) in self.id.iter().enumerate() {
            w.store(
                u64::from_le_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap()),
                Relaxed,
            );
        }
        self.id_len.store(id.len() as u64, Relaxed);
    }

    fn zero_account(&self) {
        let a = &self.account;
        for c in [
            &a.spend_total,
            &a.spend_day,
            &a.clicks_charged,
            &a.clicks_day,
            &a.impressions_charged,
            &a.impressions_day,
            &a.impressions,
            &a.clicks,
            &a.conversions,
            &a.video_completes,
            &a.over_budget,
            &a.rejected,
            &a.value_micros,
        ] {
            c.store(0, Relaxed);
        }
    }
}

impl<'m> Table<'m> {
    /// The table over `entries` entries at `base`, locked by the word at `lock`.
    ///
    /// # Safety
    /// `base` is 8-aligned, mapped readable and writable for `entries * ENTRY_SIZE` bytes for
    /// 'm, and `lock` for 'm; both changed by others only through this module (or as the
    /// atomics of an [`Account`]).
    pub unsafe fn new(lock: *const AtomicU64, base: *mut u8, entries: usize) -> Table<'m> {
        // SAFETY: the caller's promise; Entry is only atomics, valid for any bits.
        unsafe {
            Table {
                lock: &*lock,
                entries: core::slice::from_raw_parts(base.cast::<Entry>(), entries),
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The account of entry `i`, if there is one.
    pub fn account(&self, i: usize) -> Option<&'m Account> {
        self.entries.get(i).map(|e| &e.account)
    }

    /// Entry `i`'s state.
    pub fn state(&self, i: usize) -> Option<u64> {
        self.entries.get(i).map(|e| e.state.load(Acquire))
    }

    fn lock(&self, pid: u32, alive: &dyn Fn(u32) -> bool) -> Locked<'m> {
        let me = u64::from(pid);
        let mut spins = 0u32;
        loop {
            match self.lock.compare_exchange(0, me, Acquire, Relaxed) {
                Ok(_) => break,
                Err(owner) if owner == me => break, // our own, left by a killed thread of ours
                Err(owner) if !alive(owner as u32) => {
                    if self
                        .lock
                        .compare_exchange(owner, me, Acquire, Relaxed)
                        .is_ok()
                    {
                        break;
                    }
                }
                Err(_) => {
                    spins += 1;
                    if spins.is_multiple_of(64) {
                        std::thread::yield_now();
                    }
                    core::hint::spin_loop();
                }
            }
        }
        Locked {
            lock: self.lock,
            pid: me,
        }
    }

    fn start(&self, id: &[u8]) -> usize {
        crate::record::hash(id) as usize % self.entries.len().max(1)
    }

    /// The LIVE entry of `id`.
    pub fn find(&self, id: &[u8]) -> Option<usize> {
        let n = self.entries.len();
        let mut i = self.start(id);
        for _ in 0..n {
            let e = &self.entries[i];
            match e.state.load(Acquire) {
                EMPTY => return None,
                LIVE if e.has_id(id) => return Some(i),
                _ => {}
            }
            i = (i + 1) % n;
        }
        None
    }

    /// The LIVE entry of `id`, inserted (its account zeroed) when there is none. `pid` is the
    /// caller's process (the lock's owner).
    pub fn find_or_insert(
        &self,
        id: &[u8],
        pid: u32,
        alive: &dyn Fn(u32) -> bool,
    ) -> Result<usize, TableFull> {
        if id.is_empty() || id.len() > MAX_CAMPAIGN_ID {
            return Err(TableFull);
        }
        let _locked = self.lock(pid, alive);
        let n = self.entries.len();
        let mut i = self.start(id);
        let mut free = None;
        for _ in 0..n {
            let e = &self.entries[i];
            match e.state.load(Acquire) {
                EMPTY => {
                    free = free.or(Some(i));
                    break;
                }
                LIVE if e.has_id(id) => return Ok(i),
                FREE => free = free.or(Some(i)),
                _ => {}
            }
            i = (i + 1) % n;
        }
        let i = free.ok_or(TableFull)?;
        let e = &self.entries[i];
        e.set_id(id);
        e.zero_account();
        e.state.store(LIVE, Release);
        Ok(i)
    }

    /// Entry `i`'s campaign was deleted: DEAD (processes that found it may still charge it; it
    /// is reused only after a start where no other process has the file).
    pub fn release(&self, i: usize, pid: u32, alive: &dyn Fn(u32) -> bool) {
        let _locked = self.lock(pid, alive);
        if let Some(e) = self.entries.get(i) {
            let _ = e.state.compare_exchange(LIVE, DEAD, AcqRel, Relaxed);
        }
    }

    /// At a start where no other process has the file: every DEAD entry and every LIVE one
    /// whose id `keep` refuses becomes FREE. Returns how many were freed.
    pub fn prune(&self, keep: impl Fn(&[u8]) -> bool, pid: u32) -> usize {
        let _locked = self.lock(pid, &|_| false);
        let mut freed = 0;
        let mut buf = [0u8; MAX_CAMPAIGN_ID];
        for e in self.entries {
            let s = e.state.load(Acquire);
            let drop = match s {
                DEAD => true,
                LIVE => {
                    let n = e.id_into(&mut buf);
                    !keep(&buf[..n])
                }
                _ => false,
            };
            if drop {
                e.state.store(FREE, Release);
                freed += 1;
            }
        }
        freed
    }

    /// The LIVE entries: (index, id). For tools and tests.
    pub fn live(&self) -> Vec<(usize, Vec<u8>)> {
        let mut buf = [0u8; MAX_CAMPAIGN_ID];
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state.load(Acquire) == LIVE)
            .map(|(i, e)| {
                let n = e.id_into(&mut buf);
                (i, buf[..n].to_vec())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    struct Mem {
        buf: Vec<u64>,
        lock: AtomicU64,
    }

    fn mem(entries: usize) -> Mem {
        Mem {
            buf: vec![0u64; entries * ENTRY_SIZE / 8],
            lock: AtomicU64::new(0),
        }
    }

    fn table(m: &mut Mem) -> Table<'_> {
        let n = m.buf.len() * 8 / ENTRY_SIZE;
        // SAFETY: the buffer is 8-aligned, n entries long, and outlives the table.
        unsafe { Table::new(&m.lock, m.buf.as_mut_ptr().cast(), n) }
    }

    fn alive(_: u32) -> bool {
        true
    }

    #[test]
    fn insert_find_keep_counters() {
        let mut m = mem(8);
        let t = table(&mut m);
        let a = t.find_or_insert(b"alpha", 1, &alive).unwrap();
        let b = t.find_or_insert(b"beta", 1, &alive).unwrap();
        assert_ne!(a, b);
        t.account(a).unwrap().clicks.store(7, Ordering::Relaxed);
        assert_eq!(t.find(b"alpha"), Some(a));
        assert_eq!(t.find_or_insert(b"alpha", 2, &alive), Ok(a));
        assert_eq!(t.account(a).unwrap().clicks.load(Ordering::Relaxed), 7);
        assert_eq!(t.find(b"gamma"), None);
        assert_eq!(m.lock.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn full_table_refuses() {
        let mut m = mem(2);
        let t = table(&mut m);
        t.find_or_insert(b"a", 1, &alive).unwrap();
        t.find_or_insert(b"b", 1, &alive).unwrap();
        assert_eq!(t.find_or_insert(b"c", 1, &alive), Err(TableFull));
        assert_eq!(t.find_or_insert(&[b'x'; 65], 1, &alive), Err(TableFull));
    }

    #[test]
    fn released_stays_until_prune_then_reused_zeroed() {
        let mut m = mem(4);
        let t = table(&mut m);
        let a = t.find_or_insert(b"a", 1, &alive).unwrap();
        t.account(a).unwrap().clicks.store(5, Ordering::Relaxed);
        t.release(a, 1, &alive);
        assert_eq!(t.state(a), Some(DEAD));
        // A re-created campaign gets a new account while the dead one may still be charged.
        let a2 = t.find_or_insert(b"a", 1, &alive).unwrap();
        assert_ne!(a, a2);
        assert_eq!(t.account(a2).unwrap().clicks.load(Ordering::Relaxed), 0);
        let k = t.find_or_insert(b"keep", 1, &alive).unwrap();
        let g = t.find_or_insert(b"gone", 1, &alive).unwrap();
        assert_eq!(t.prune(|id| id != b"gone", 1), 2);
        assert_eq!(t.state(a), Some(FREE));
        assert_eq!(t.state(g), Some(FREE));
        assert_eq!(t.find(b"keep"), Some(k));
        assert_eq!(t.find(b"a"), Some(a2));
        let n = t.find_or_insert(b"new", 1, &alive).unwrap();
        assert!(n == a || n == g);
        assert_eq!(t.account(n).unwrap().clicks.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn lock_of_dead_process_is_taken_over() {
        let mut m = mem(4);
        m.lock.store(999, Ordering::Relaxed);
        let t = table(&mut m);
        let dead = |p: u32| p != 999;
        assert!(t.find_or_insert(b"a", 1, &dead).is_ok());
        assert_eq!(m.lock.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn insert_killed_before_live_leaves_entry_unused() {
        let mut m = mem(4);
        let t = table(&mut m);
        // A writer that wrote an id and was killed before storing LIVE.
        let i = t.start(b"a");
        t.entries[i].set_id(b"a");
        t.entries[i].account.clicks.store(3, Ordering::Relaxed);
        assert_eq!(t.find(b"a"), None);
        assert_eq!(t.find_or_insert(b"a", 1, &alive), Ok(i));
        assert_eq!(t.account(i).unwrap().clicks.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn racing_inserters_agree_on_one_entry_per_id() {
        let mut m = mem(64);
        let t = table(&mut m);
        let ids: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        let results: Vec<Vec<usize>> = std::thread::scope(|s| {
            let hs: Vec<_> = (1..=4u32)
                .map(|p| {
                    let ids = &ids;
                    s.spawn(move || {
                        ids.iter()
                            .map(|id| t.find_or_insert(id.as_bytes(), p, &alive).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
        assert_eq!(t.live().len(), 40);
    }
}
