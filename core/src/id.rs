//! 16-byte event ids: UUIDv7 layout (48-bit Unix milliseconds, version 7, 12 bits of
//! sub-millisecond time, variant, 62 bits of per-process random + counter). Time-ordered to the
//! microsecond, unique across workers, reloads and hosts without coordination.
//!
//! Layout (big-endian, as RFC 9562 UUIDv7 with "method 3" sub-millisecond precision):
//!
//! ```text
//! bytes 0..6   Unix milliseconds (48 bits)
//! byte  6      0x7_ : version 7 in the high nibble, then 12 bits of microseconds within
//! byte  7             the millisecond (0..=999)
//! byte  8      0b10 in the top two bits (RFC 4122 variant), then 62 bits of
//! bytes 9..16  tail = (mix(seed) + counter) mod 2^62
//! ```
//!
//! Uniqueness: the tail of one generator steps by one per id, so one generator never repeats a
//! tail within 2^62 ids whatever its clock does. Two generators collide only if their tail
//! intervals `[mix(seed), mix(seed) + n)` overlap, which for random 64-bit seeds and n ids each
//! has probability about `2n / 2^62` per pair (about 4e-10 for a billion ids per worker).
//!
//! Order: an id's timestamp is `max(now, last)`; at an equal timestamp the tail is larger than
//! the previous one (on the rare tail wrap the timestamp moves one microsecond ahead), so the ids
//! of one generator are strictly increasing in byte order. A clock that steps back by less than
//! [`MAX_STEP_BACK_US`] keeps the last timestamp; a larger step is followed (ids stay unique, but
//! order restarts from the new time).

use crate::input::hex_digit;

/// A backwards clock step at most this large (1 s) is absorbed: ids keep the last timestamp.
/// A larger step is followed so that id timestamps stay close to event times.
pub const MAX_STEP_BACK_US: u64 = 1_000_000;

const TAIL_BITS: u32 = 62;
const TAIL_MASK: u64 = (1 << TAIL_BITS) - 1;
/// Largest microsecond timestamp that fits the 48-bit millisecond field.
const MAX_TS_US: u64 = ((1u64 << 48) - 1) * 1000 + 999;

/// One per process (nginx worker). Seed it from the OS random source at process start.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    /// Microsecond timestamp of the last id (0: none yet).
    last_us: u64,
    /// Tail of the last id (62 bits).
    last_tail: u64,
    /// Tail of the next id (62 bits): mix(seed) + number of ids made, mod 2^62.
    next_tail: u64,
}

impl IdGenerator {
    /// `seed`: 64 random bits (e.g. from getrandom) at worker start.
    pub fn new(seed: u64) -> IdGenerator {
        IdGenerator {
            last_us: 0,
            last_tail: 0,
            next_tail: splitmix64(seed) & TAIL_MASK,
        }
    }

    /// The next id for an event at `now_us` (Unix microseconds).
    pub fn next(&mut self, now_us: u64) -> [u8; 16] {
        let now_us = now_us.min(MAX_TS_US);
        let tail = self.next_tail;
        self.next_tail = (tail + 1) & TAIL_MASK;
        let ts = if now_us > self.last_us || self.last_us - now_us > MAX_STEP_BACK_US {
            now_us
        } else if tail > self.last_tail || self.last_us == MAX_TS_US {
            // Same (or slightly earlier) time: the larger tail keeps the order.
            self.last_us
        } else {
            // The tail wrapped around: move one microsecond ahead.
            self.last_us + 1
        };
        self.last_us = ts;
        self.last_tail = tail;
        compose(ts, tail)
    }
}

fn compose(ts_us: u64, tail: u64) -> [u8; 16] {
    let ms = ts_us / 1000;
    let sub = (ts_us % 1000) as u16;
    let mut id = [0u8; 16];
    id[0..6].copy_from_slice(&ms.to_be_bytes()[2..8]);
    id[6..8].copy_from_slice(&(0x7000 | sub).to_be_bytes());
    id[8..16].copy_from_slice(&((0b10 << TAIL_BITS) | (tail & TAIL_MASK)).to_be_bytes());
    id
}

/// SplitMix64 finalizer: spreads nearby seeds (1, 2, 3...) far apart in the tail space.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of an id (32 bytes).
pub fn to_hex(id: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in id.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
    out
}

/// Parses 32 hex characters back (for tests and tools). Either case is accepted.
pub fn from_hex(s: &[u8]) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        id[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(id)
}

/// The Unix microseconds encoded in an id (millisecond part * 1000 + sub-ms part).
pub fn timestamp_us(id: &[u8; 16]) -> u64 {
    let mut ms = [0u8; 8];
    ms[2..8].copy_from_slice(&id[0..6]);
    let sub = u16::from_be_bytes([id[6], id[7]]) & 0x0fff;
    u64::from_be_bytes(ms) * 1000 + u64::from(sub)
}

/// 64 random bits from the OS (getrandom(2) via libc), for seeding. Falls back to mixing the
/// time, the pid and an address when getrandom is unavailable.
pub fn os_random_u64() -> u64 {
    if let Some(x) = getrandom_u64() {
        return x;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let pid = u64::from(std::process::id());
    let local = 0u8;
    let addr = &local as *const u8 as u64;
    splitmix64(nanos ^ splitmix64(pid ^ splitmix64(addr)))
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn getrandom_u64() -> Option<u64> {
    let mut buf = [0u8; 8];
    let mut filled = 0usize;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled part of `buf`.
        let n = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr().cast::<libc::c_void>(),
                buf.len() - filled,
                0,
            )
        };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        filled += n as usize;
    }
    Some(u64::from_ne_bytes(buf))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn getrandom_u64() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn layout() {
        let mut g = IdGenerator::new(42);
        let now = 1_700_000_000_123_456u64;
        let id = g.next(now);
        assert_eq!(id[6] >> 4, 7, "version nibble");
        assert_eq!(id[8] >> 6, 0b10, "variant");
        assert_eq!(timestamp_us(&id), now);
        let hex = to_hex(&id);
        assert_eq!(hex[12], b'7');
        assert!(matches!(hex[16], b'8' | b'9' | b'a' | b'b'));
        // The first 12 hex digits are the milliseconds.
        let ms = u64::from_str_radix(std::str::from_utf8(&hex[..12]).unwrap(), 16).unwrap();
        assert_eq!(ms, now / 1000);
    }

    #[test]
    fn unique_across_generators_at_identical_timestamps() {
        let mut gens: Vec<IdGenerator> = (1..=4u64).map(IdGenerator::new).collect();
        let mut seen = HashSet::with_capacity(1_000_000);
        let now = 1_700_000_000_000_000u64;
        for i in 0..250_000u64 {
            // Every generator sees the same clock, which moves only every 1000 ids.
            let t = now + i / 1000;
            for g in gens.iter_mut() {
                assert!(seen.insert(g.next(t)), "duplicate id");
            }
        }
        assert_eq!(seen.len(), 1_000_000);
    }

    #[test]
    fn unique_with_random_seeds_and_frozen_clock() {
        let mut gens: Vec<IdGenerator> =
            (0..4).map(|_| IdGenerator::new(os_random_u64())).collect();
        let mut seen = HashSet::with_capacity(400_000);
        for _ in 0..100_000 {
            for g in gens.iter_mut() {
                assert!(seen.insert(g.next(1_000)));
            }
        }
    }

    #[test]
    fn monotonic_same_time_and_small_step_back() {
        let mut g = IdGenerator::new(7);
        let mut prev = g.next(5_000_000);
        let clock = [
            5_000_000u64,
            5_000_000,
            4_999_000,
            4_998_500,
            5_000_001,
            5_000_001,
            5_002_000,
            5_001_999,
        ];
        for &t in clock.iter().cycle().take(10_000) {
            let id = g.next(t);
            assert!(
                id > prev,
                "{:?} !> {:?} at t={t}",
                to_hex(&id),
                to_hex(&prev)
            );
            assert!(timestamp_us(&id) >= timestamp_us(&prev));
            prev = id;
        }
    }

    #[test]
    fn monotonic_across_tail_wrap() {
        // A seed whose mixed tail is 2 below the wrap point.
        let mut g = IdGenerator {
            last_us: 0,
            last_tail: 0,
            next_tail: TAIL_MASK - 2,
        };
        let mut prev = g.next(1_000_000);
        for _ in 0..10 {
            let id = g.next(1_000_000);
            assert!(id > prev);
            prev = id;
        }
        assert_eq!(
            timestamp_us(&prev),
            1_000_001,
            "moved one microsecond ahead at the wrap"
        );
    }

    #[test]
    fn large_step_back_follows_clock() {
        let mut g = IdGenerator::new(1);
        let a = g.next(10_000_000_000);
        let b = g.next(10_000_000_000 - 5 * MAX_STEP_BACK_US);
        assert_ne!(a, b);
        assert_eq!(timestamp_us(&b), 10_000_000_000 - 5 * MAX_STEP_BACK_US);
    }

    #[test]
    fn hex_roundtrip() {
        let mut g = IdGenerator::new(os_random_u64());
        for t in 0..1000u64 {
            let id = g.next(1_600_000_000_000_000 + t * 7919);
            let hex = to_hex(&id);
            assert!(hex
                .iter()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)));
            assert_eq!(from_hex(&hex), Some(id));
            assert_eq!(from_hex(&hex.to_ascii_uppercase()), Some(id));
        }
        assert_eq!(from_hex(b""), None);
        assert_eq!(from_hex(&[b'0'; 31]), None);
        assert_eq!(from_hex(&[b'0'; 33]), None);
        let mut bad = [b'0'; 32];
        bad[5] = b'g';
        assert_eq!(from_hex(&bad), None);
        assert_eq!(to_hex(&[0xab; 16]), *b"abababababababababababababababab");
    }

    #[test]
    fn timestamp_roundtrip() {
        let mut g = IdGenerator::new(3);
        for &t in &[
            0u64,
            1,
            999,
            1000,
            1_700_000_000_999_999,
            1_700_000_001_000_000,
            MAX_TS_US,
        ] {
            let id = g.next(t);
            // The generator never goes backwards, so use a fresh one for each value.
            let fresh = IdGenerator::new(3).next(t);
            assert_eq!(timestamp_us(&fresh), t);
            assert!(timestamp_us(&id) >= t);
        }
        // Beyond the 48-bit millisecond field: clamped, never wrapped.
        assert_eq!(timestamp_us(&IdGenerator::new(3).next(u64::MAX)), MAX_TS_US);
    }

    #[test]
    fn os_random_differs() {
        let a = os_random_u64();
        let b = os_random_u64();
        assert_ne!(a, b);
    }
}
