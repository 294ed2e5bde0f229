//! The recently-seen set: duplicate detection over a bounded, time-windowed set of keyed
//! hashes, kept in a slice of `AtomicU64` that every nginx worker shares (a shared zone).
//!
//! The set is only atomics, needs no allocation, holds no pointers and works on a zeroed slice,
//! so any process that maps the memory can use it at once, without a lock.
//!
//! # Keys
//!
//! [`key_hash`] is SipHash-1-3 under a 128-bit secret (random per nginx master, kept in the
//! zone), over the parts of the key, each prefixed with its length (so `("ab", "c")` and
//! `("a", "bc")` differ). The secret keeps a client from choosing keys that all land in one
//! bucket to flush the set.
//!
//! # Layout
//!
//! The slots are grouped in buckets of [`BUCKET`] = 8 consecutive words (one 64-byte cache
//! line); a key's bucket is chosen from the high bits of its hash (multiply-shift, no
//! division); slots after the last whole bucket are unused. A slot word is
//!
//! ```text
//!   fingerprint (40 bits, never 0) << 24  |  time (now_s mod 2^24, 24 bits)
//! ```
//!
//! and 0 is an empty slot. The fingerprint is the top 40 bits of a second mix (a bijection) of
//! the hash, so it is independent of the bucket choice: two different keys are taken for one
//! another with probability at most 8 / 2^40 per lookup (8 live entries in the bucket): one
//! false duplicate per ~16 days at 100,000 requests a second into a full set. An entry's age is `(now - time) mod 2^24`; it is live while its
//! age is below the window. Windows are limited to [`MAX_WINDOW_S`] (7 days), far below 2^24 s
//! (194 days), so the modular age is exact for any entry younger than 194 days. An entry left
//! untouched in a quiet bucket for more than 194 days looks live again for one window (a false
//! duplicate if its very key returns then); a clock stepped backwards makes entries from the
//! "future" look expired (a duplicate let through). The window is a parameter of the lookup,
//! not stored: a reload that changes the window applies it to the entries already there.
//!
//! # Check and insert
//!
//! 1. Scan the bucket: a live slot with the same fingerprint means [`Outcome::Duplicate`].
//! 2. Otherwise choose a slot to claim: the first (lowest index) empty or expired slot; if the
//!    bucket is full of live entries, the oldest one (lowest index among equals): that evicts a
//!    live entry, reported as `First { evicted: true }` so that an operator can see the set is
//!    too small for the window and the traffic.
//! 3. Compare-and-swap the chosen slot from the value the scan saw to our entry. If the CAS
//!    fails, another worker changed the slot: start again at 1 (the other worker may just have
//!    inserted this very key). After [`RETRIES`] failed attempts we give up and answer
//!    `First` (fail open: counting a duplicate is preferred to dropping a genuine event; it
//!    takes four writers on one bucket within the same microseconds).
//! 4. Scan the bucket again (see below): if another live slot with our fingerprint sits at a
//!    lower index, the request is a `Duplicate`, otherwise it is `First`.
//!
//! Two workers racing on one key: both scan (1) before either inserts. Because everybody claims
//! the *first* claimable slot, and a slot only stops being claimable by being claimed (within
//! the same second, when nothing expires and nothing is evicted), both choose the same slot and
//! the CAS lets exactly one of them in; the loser starts again and finds the winner's entry.
//! The rescan of step 4 covers the rarer case where they chose different slots (one of them saw
//! a slot expire or be evicted that the other did not): all accesses are `SeqCst`, so of two
//! workers that each CAS then rescan, at least one sees the other's entry (the store-load
//! pattern of Dekker's algorithm); the one at the higher index then answers `Duplicate`. Only
//! if the lower-indexed one sees the higher one while the higher one did not see it (or the
//! lower entry is overwritten before the higher one rescans) do both answer `First`: that needs
//! an expiry or an eviction in the bucket during the race, and errs towards counting, never
//! towards dropping: some racer always answers `First` (the lowest-indexed entry of the race
//! finds no lower one).
//!
//! The multi-thread test below checks that N threads inserting the same M keys at the same time
//! get exactly M `First` answers.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;

/// Slots per bucket (8 × 8 bytes: one cache line).
pub const BUCKET: usize = 8;
/// The longest window: 7 days.
pub const MAX_WINDOW_S: u32 = 7 * 24 * 3600;
/// Attempts at claiming a slot before answering `First` without an entry (see the module docs).
pub const RETRIES: usize = 4;

const TIME_BITS: u32 = 24;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

/// Whether `secs` is an acceptable window: 1 second to [`MAX_WINDOW_S`].
pub fn valid_window(secs: u64) -> bool {
    (1..=u64::from(MAX_WINDOW_S)).contains(&secs)
}

/// What [`Seen::check_and_insert`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not seen within the window; now recorded (unless the claim gave up, see the module
    /// docs). `evicted`: recording it pushed out a live entry (the bucket was full): the set is
    /// too small for the window and the traffic.
    First { evicted: bool },
    /// Seen within the window.
    Duplicate,
}

/// The recently-seen set over `slots` (all zeros: empty). Only whole buckets of [`BUCKET`]
/// slots are used; a slice shorter than one bucket records nothing and answers `First`.
#[derive(Clone, Copy, Debug)]
pub struct Seen<'a> {
    slots: &'a [AtomicU64],
}

/// SplitMix64's finalizer: a bijection of u64 with good avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fingerprint(hash: u64) -> u64 {
    let fp = mix(hash) >> TIME_BITS;
    if fp == 0 {
        1
    } else {
        fp
    }
}

fn age(word: u64, now24: u64) -> u64 {
    now24.wrapping_sub(word & TIME_MASK) & TIME_MASK
}

impl<'a> Seen<'a> {
    pub fn new(slots: &'a [AtomicU64]) -> Seen<'a> {
        Seen { slots }
    }

    /// How many entries the set holds at most (whole buckets).
    pub fn capacity(&self) -> usize {
        self.slots.len() / BUCKET * BUCKET
    }

    /// Live entries at `now_s` for `window_s` (walks the whole table: statistics only).
    pub fn live(&self, now_s: u64, window_s: u32) -> usize {
        let now24 = now_s & TIME_MASK;
        let w = u64::from(window_s.min(MAX_WINDOW_S));
        self.slots[..self.capacity()]
            .iter()
            .filter(|s| {
                let v = s.load(std::sync::atomic::Ordering::Relaxed);
                v != 0 && age(v, now24) < w
            })
            .count()
    }

    /// The bucket of `hash` (None: the slice holds no whole bucket).
    fn bucket(&self, hash: u64) -> Option<&'a [AtomicU64]> {
        let nbuckets = self.slots.len() / BUCKET;
        if nbuckets == 0 {
            return None;
        }
        let b = ((u128::from(hash) * nbuckets as u128) >> 64) as usize;
        Some(&self.slots[b * BUCKET..(b + 1) * BUCKET])
    }

    /// Whether `hash` was recorded within the last `window_s` seconds before `now_s`, without
    /// recording it.
    pub fn contains(&self, hash: u64, now_s: u64, window_s: u32) -> bool {
        let Some(bucket) = self.bucket(hash) else {
            return false;
        };
        let (window, now24, fp) = (
            u64::from(window_s.min(MAX_WINDOW_S)),
            now_s & TIME_MASK,
            fingerprint(hash),
        );
        bucket.iter().any(|slot| {
            let v = slot.load(SeqCst);
            v != 0 && v >> TIME_BITS == fp && age(v, now24) < window
        })
    }

    /// Whether `hash` was recorded within the last `window_s` seconds before `now_s`; if not,
    /// records it at `now_s`. A window above [`MAX_WINDOW_S`] counts as `MAX_WINDOW_S`; a
    /// window of 0 makes every request `First` (and records it).
    pub fn check_and_insert(&self, hash: u64, now_s: u64, window_s: u32) -> Outcome {
        let Some(bucket) = self.bucket(hash) else {
            return Outcome::First { evicted: false };
        };
        let window = u64::from(window_s.min(MAX_WINDOW_S));
        let now24 = now_s & TIME_MASK;
        let fp = fingerprint(hash);
        let mine = fp << TIME_BITS | now24;
        let is_live_match = |v: u64| v != 0 && v >> TIME_BITS == fp && age(v, now24) < window;

        for _ in 0..RETRIES {
            // 1 and 2: look for the key; meanwhile pick the first claimable slot, or the oldest.
            let mut seen = [0u64; BUCKET];
            let mut claim = None;
            let mut oldest = (0usize, 0u64); // (index, age)
            for (i, slot) in bucket.iter().enumerate() {
                let v = slot.load(SeqCst);
                seen[i] = v;
                if is_live_match(v) {
                    return Outcome::Duplicate;
                }
                let a = age(v, now24);
                if claim.is_none() && (v == 0 || a >= window) {
                    claim = Some(i);
                }
                if i == 0 || a > oldest.1 {
                    oldest = (i, a);
                }
            }
            let (i, evicted) = match claim {
                Some(i) => (i, false),
                None => (oldest.0, true),
            };
            // 3: claim it, if nobody changed it since the scan.
            if bucket[i]
                .compare_exchange(seen[i], mine, SeqCst, SeqCst)
                .is_err()
            {
                continue;
            }
            // 4: a racer for the same key may have claimed another slot; the lowest index wins.
            for slot in &bucket[..i] {
                if is_live_match(slot.load(SeqCst)) {
                    return Outcome::Duplicate;
                }
            }
            return Outcome::First { evicted };
        }
        Outcome::First { evicted: false }
    }
}

/// The 64-bit keyed hash of a key made of `parts`: SipHash-1-3 under `secret`, each part
/// preceded by its length (8 bytes, little-endian).
pub fn key_hash(secret: &[u64; 2], parts: &[&[u8]]) -> u64 {
    let mut h = Sip::<1, 3>::new(secret[0], secret[1]);
    for p in parts {
        h.write(&(p.len() as u64).to_le_bytes());
        h.write(p);
    }
    h.finish()
}

/// SipHash-c-d (Aumasson and Bernstein), streaming. `std`'s `SipHasher` is deprecated and its
/// 1-3 variant is private; this is the reference algorithm in a few lines.
struct Sip<const C: usize, const D: usize> {
    v: [u64; 4],
    tail: u64,
    ntail: usize,
    len: u64,
}

impl<const C: usize, const D: usize> Sip<C, D> {
    fn new(k0: u64, k1: u64) -> Self {
        Sip {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d,
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            len: 0,
        }
    }

    #[inline]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }

    #[inline]
    fn block(&mut self, m: u64) {
        self.v[3] ^= m;
        for _ in 0..C {
            Self::round(&mut self.v);
        }
        self.v[0] ^= m;
    }

    fn write(&mut self, mut bytes: &[u8]) {
        self.len = self.len.wrapping_add(bytes.len() as u64);
        if self.ntail > 0 {
            while self.ntail < 8 {
                let Some((&b, rest)) = bytes.split_first() else {
                    return;
                };
                self.tail |= u64::from(b) << (8 * self.ntail);
                self.ntail += 1;
                bytes = rest;
            }
            let m = self.tail;
            self.block(m);
            self.tail = 0;
            self.ntail = 0;
        }
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.block(u64::from_le_bytes(c.try_into().unwrap_or([0; 8])));
        }
        for &b in chunks.remainder() {
            self.tail |= u64::from(b) << (8 * self.ntail);
            self.ntail += 1;
        }
    }

    fn finish(mut self) -> u64 {
        let m = self.tail | (self.len & 0xff) << 56;
        self.block(m);
        self.v[2] ^= 0xff;
        for _ in 0..D {
            Self::round(&mut self.v);
        }
        self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::{Arc, Barrier};

    const K: [u64; 2] = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];

    fn table(n: usize) -> Vec<AtomicU64> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    fn first() -> Outcome {
        Outcome::First { evicted: false }
    }

    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut s = seed;
        move || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            mix(s)
        }
    }

    #[test]
    #[allow(deprecated)]
    fn siphash_2_4_matches_std() {
        use std::hash::Hasher;
        // The reference vector of the SipHash paper (key 00..0f, message 00..0e).
        let msg: Vec<u8> = (0u8..15).collect();
        let mut h = Sip::<2, 4>::new(K[0], K[1]);
        h.write(&msg);
        assert_eq!(h.finish(), 0xa129_ca61_49be_45e5);
        // Every length and split against std's (deprecated) SipHash-2-4.
        let data: Vec<u8> = (0u8..=255).map(|b| b.wrapping_mul(31)).collect();
        for len in 0..64 {
            for split in 0..=len {
                let mut ours = Sip::<2, 4>::new(K[0], K[1]);
                ours.write(&data[..split]);
                ours.write(&data[split..len]);
                let mut std_h = std::hash::SipHasher::new_with_keys(K[0], K[1]);
                std_h.write(&data[..len]);
                assert_eq!(ours.finish(), std_h.finish(), "len {len} split {split}");
            }
        }
    }

    #[test]
    fn key_hash_is_length_delimited_and_keyed() {
        let a = key_hash(&K, &[b"ab", b"c"]);
        assert_ne!(a, key_hash(&K, &[b"a", b"bc"]));
        assert_ne!(a, key_hash(&K, &[b"abc"]));
        assert_ne!(a, key_hash(&K, &[b"ab", b"c", b""]));
        assert_eq!(a, key_hash(&K, &[b"ab", b"c"]));
        assert_ne!(a, key_hash(&[K[0] ^ 1, K[1]], &[b"ab", b"c"]));
        assert_ne!(key_hash(&K, &[]), key_hash(&K, &[b""]));
    }

    #[test]
    fn valid_windows() {
        assert!(!valid_window(0));
        assert!(valid_window(1));
        assert!(valid_window(7 * 86400));
        assert!(!valid_window(7 * 86400 + 1));
    }

    #[test]
    fn first_duplicate_expiry() {
        let t = table(64);
        let s = Seen::new(&t);
        let h = key_hash(&K, &[b"click", b"123"]);
        assert_eq!(s.check_and_insert(h, 1000, 10), first());
        assert_eq!(s.check_and_insert(h, 1000, 10), Outcome::Duplicate);
        assert_eq!(s.check_and_insert(h, 1009, 10), Outcome::Duplicate);
        // A duplicate does not refresh the entry: the window counts from the first.
        assert_eq!(s.check_and_insert(h, 1010, 10), first());
        assert_eq!(s.check_and_insert(h, 1019, 10), Outcome::Duplicate);
        // A longer window (a reload) applies to the entries already there.
        assert_eq!(s.check_and_insert(h, 1030, 60), Outcome::Duplicate);
        // Window 0: nothing is live.
        assert_eq!(s.check_and_insert(h, 1030, 0), first());
        assert_eq!(s.live(1030, 10), 1);
        // Other keys are independent.
        let g = key_hash(&K, &[b"click", b"124"]);
        assert_eq!(s.check_and_insert(g, 1030, 10), first());
        assert_eq!(s.live(1030, 10), 2);
    }

    #[test]
    fn zeroed_table_and_tiny_tables() {
        let t = table(8);
        let s = Seen::new(&t);
        assert_eq!(s.capacity(), 8);
        assert_eq!(s.check_and_insert(42, 0, 5), first());
        assert_eq!(s.check_and_insert(42, 4, 5), Outcome::Duplicate);
        // Fewer slots than a bucket: records nothing, every request is First.
        let t = table(7);
        let s = Seen::new(&t);
        assert_eq!(s.capacity(), 0);
        assert_eq!(s.check_and_insert(42, 0, 5), first());
        assert_eq!(s.check_and_insert(42, 0, 5), first());
        assert!(t.iter().all(|x| x.load(Relaxed) == 0));
    }

    #[test]
    fn modular_time_wrap() {
        let t = table(64);
        let s = Seen::new(&t);
        for base in [1u64 << 24, 5 << 24, 1_700_000_000 & !TIME_MASK, !TIME_MASK] {
            for &start in &[base.wrapping_sub(3), base.wrapping_sub(1)] {
                let h = mix(start ^ 0x55);
                assert_eq!(s.check_and_insert(h, start, 10), first(), "start {start}");
                // Straddles the 2^24 wrap: still live, then expired.
                assert_eq!(
                    s.check_and_insert(h, start.wrapping_add(5), 10),
                    Outcome::Duplicate
                );
                assert_eq!(
                    s.check_and_insert(h, start.wrapping_add(9), 10),
                    Outcome::Duplicate
                );
                assert_eq!(s.check_and_insert(h, start.wrapping_add(10), 10), first());
            }
        }
        // The longest window across a wrap.
        let h = 0xdead_beef;
        let start = (3u64 << 24) - 100;
        let w = MAX_WINDOW_S;
        assert_eq!(s.check_and_insert(h, start, w), first());
        assert_eq!(
            s.check_and_insert(h, start + u64::from(w) - 1, w),
            Outcome::Duplicate
        );
        assert_eq!(s.check_and_insert(h, start + u64::from(w), w), first());
        // A clock stepped back: the entry looks expired (let through, not dropped).
        assert_eq!(s.check_and_insert(h, start + u64::from(w) - 1, w), first());
    }

    /// Keys that all fall in bucket 0 of a table of `nbuckets`.
    fn keys_in_bucket0(nbuckets: usize, n: usize) -> Vec<u64> {
        let mut next = rng(7);
        let mut out = Vec::new();
        while out.len() < n {
            let h = next();
            if ((u128::from(h) * nbuckets as u128) >> 64) == 0 {
                out.push(h);
            }
        }
        out
    }

    #[test]
    fn full_bucket_evicts_the_oldest_and_says_so() {
        let t = table(4 * BUCKET);
        let s = Seen::new(&t);
        let keys = keys_in_bucket0(4, 10);
        for (i, &k) in keys[..8].iter().enumerate() {
            assert_eq!(s.check_and_insert(k, 100 + i as u64, 60), first());
        }
        // Full of live entries: the ninth key evicts the oldest (keys[0], inserted at 100).
        assert_eq!(
            s.check_and_insert(keys[8], 110, 60),
            Outcome::First { evicted: true }
        );
        assert_eq!(s.check_and_insert(keys[8], 110, 60), Outcome::Duplicate);
        for &k in &keys[1..8] {
            assert_eq!(s.check_and_insert(k, 110, 60), Outcome::Duplicate);
        }
        // keys[0] was forgotten: it comes back as First and evicts the next oldest (keys[1]).
        assert_eq!(
            s.check_and_insert(keys[0], 111, 60),
            Outcome::First { evicted: true }
        );
        assert_eq!(
            s.check_and_insert(keys[1], 112, 60),
            Outcome::First { evicted: true }
        );
        // Once entries have expired, their slots are reused without an eviction.
        assert_eq!(s.check_and_insert(keys[9], 103 + 60, 60), first());
        // Other buckets were never touched.
        assert!(t[BUCKET..].iter().all(|x| x.load(Relaxed) == 0));
    }

    #[test]
    fn many_keys_no_false_duplicates() {
        let n = 100_000;
        let t = table(4 * n); // live entries at 25% of the capacity
        let s = Seen::new(&t);
        let mut next = rng(1);
        let keys: Vec<u64> = (0..n)
            .map(|_| key_hash(&K, &[&next().to_le_bytes()]))
            .collect();
        let mut evicted = 0;
        for &k in &keys {
            match s.check_and_insert(k, 5000, 300) {
                Outcome::First { evicted: e } => evicted += usize::from(e),
                Outcome::Duplicate => panic!("false duplicate"),
            }
        }
        // At 25% load a few buckets overflow (about 1.5e-4 of the inserts, Poisson(2) keys
        // per bucket): each eviction forgets exactly one key.
        assert!(evicted < n / 1000, "{evicted} evictions");
        assert_eq!(s.live(5000, 300), n - evicted);
        let remembered = keys.iter().filter(|&&k| s.contains(k, 5001, 300)).count();
        assert_eq!(remembered, n - evicted);
    }

    #[test]
    fn racing_workers_agree_on_one_first_per_key() {
        const THREADS: usize = 8;
        const KEYS: usize = 200;
        const ROUNDS: usize = 200;
        // 200 keys in 256 buckets: many share a bucket (racers for different keys collide as
        // well), none overflows one (an eviction would forget a key and count it twice).
        let t: Arc<Vec<AtomicU64>> = Arc::new(table(256 * BUCKET));
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|id| {
                let (t, barrier) = (Arc::clone(&t), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    let s = Seen::new(&t);
                    let mut firsts = vec![0usize; ROUNDS];
                    for (round, f) in firsts.iter_mut().enumerate() {
                        // Each round: fresh keys, a time after the last round's window.
                        let now = 1_000 + round as u64 * 100;
                        barrier.wait();
                        for k in 0..KEYS {
                            // Half the threads walk the keys in the same order (they race on
                            // one key at a time), the others in another order.
                            let k = if id % 2 == 0 { k } else { (k * 7 + id) % KEYS };
                            let h = key_hash(
                                &K,
                                &[&(round as u64).to_le_bytes(), &(k as u64).to_le_bytes()],
                            );
                            if let Outcome::First { .. } = s.check_and_insert(h, now, 50) {
                                *f += 1;
                            }
                        }
                    }
                    firsts
                })
            })
            .collect();
        let per_thread: Vec<Vec<usize>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for round in 0..ROUNDS {
            let total: usize = per_thread.iter().map(|f| f[round]).sum();
            assert_eq!(total, KEYS, "round {round}");
        }
    }
}
