//! 16-byte event ids: UUIDv7 layout (48-bit Unix milliseconds, version 7, 12 bits of
//! sub-millisecond time, variant, 62 bits of per-process random + counter). Time-ordered to the
//! microsecond, unique across workers, reloads and hosts without coordination.

/// One per process (nginx worker). Seed it from the OS random source at process start.
pub struct IdGenerator { /* implementation-defined */ }

impl IdGenerator {
    /// `seed`: 64 random bits (e.g. from getrandom) at worker start.
    pub fn new(seed: u64) -> IdGenerator { unimplemented!() }
    /// The next id for an event at `now_us` (Unix microseconds).
    pub fn next(&mut self, now_us: u64) -> [u8; 16] { unimplemented!() }
}

/// Lowercase hex of an id (32 bytes).
pub fn to_hex(id: &[u8; 16]) -> [u8; 32] { unimplemented!() }

/// Parses 32 hex characters back (for tests and tools).
pub fn from_hex(s: &[u8]) -> Option<[u8; 16]> { unimplemented!() }

/// The Unix microseconds encoded in an id (millisecond part * 1000 + sub-ms part).
pub fn timestamp_us(id: &[u8; 16]) -> u64 { unimplemented!() }

/// 64 random bits from the OS (getrandom(2) via libc), for seeding.
pub fn os_random_u64() -> u64 { unimplemented!() }
