//! Privacy: the keyed, daily-rotating hash of client addresses (`tracker_ip hash`) and the
//! Do-Not-Track / Global Privacy Control request signals. Pure functions, no allocation. See
//! `docs/privacy.md`.
//!
//! The hash: `h:` followed by 32 lowercase hex characters (16 bytes) of SipHash-2-4 with a
//! 128-bit key, run twice with two domain-separated inputs for 128 output bits. The key of a
//! day is itself SipHash of the day number under the process's master secret: 128 random bits
//! drawn from the OS once per nginx master process (at the first configuration that uses
//! `hash`), never written anywhere. Workers inherit it by `fork`, so all of them compute the
//! same hash within a UTC day; a reload keeps it (the module stays loaded); a restart or a new
//! day gives hashes that cannot be linked to the previous ones without the secret.

use std::hash::Hasher;
use std::sync::OnceLock;

use crate::input::IP_TEXT_MAX;

/// Length of a hashed address in the event: `h:` + 32 hex characters.
pub const HASHED_IP_LEN: usize = 2 + 32;

/// Microseconds in a day.
const DAY_US: u64 = 86_400_000_000;

/// The key the address hash uses on one UTC day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayKey {
    k0: u64,
    k1: u64,
}

#[allow(deprecated)] // std's SipHasher is SipHash-2-4 with an explicit key: what we want.
fn siphash(k0: u64, k1: u64, domain: u8, data: &[u8]) -> u64 {
    let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
    h.write(&[domain]);
    h.write(data);
    h.finish()
}

impl DayKey {
    /// The key of day `day` (days since 1970-01-01 UTC) under `master`.
    pub fn derive(master: &[u64; 2], day: u64) -> DayKey {
        let d = day.to_le_bytes();
        DayKey {
            k0: siphash(master[0], master[1], 0xd0, &d),
            k1: siphash(master[0], master[1], 0xd1, &d),
        }
    }

    /// The key of the UTC day of `now_us` (Unix microseconds) under the process's master
    /// secret ([`master_secret`]).
    pub fn at(now_us: u64) -> DayKey {
        DayKey::derive(master_secret(), day_of_us(now_us))
    }
}

/// The UTC day (days since 1970-01-01) of a Unix time in microseconds.
pub fn day_of_us(now_us: u64) -> u64 {
    now_us / DAY_US
}

static MASTER: OnceLock<[u64; 2]> = OnceLock::new();

/// The process's master secret, drawn from the OS random source on first use. The nginx
/// module calls this while loading a configuration with `tracker_ip hash` (in the master
/// process), so workers inherit the same secret.
pub fn master_secret() -> &'static [u64; 2] {
    MASTER.get_or_init(|| [crate::id::os_random_u64(), crate::id::os_random_u64()])
}

/// Writes `h:` + 32 hex characters of the keyed hash of `addr` into `out`; returns that part.
/// None for an empty address. No allocation.
pub fn hash_ip<'a>(key: &DayKey, addr: &[u8], out: &'a mut [u8; IP_TEXT_MAX]) -> Option<&'a [u8]> {
    if addr.is_empty() {
        return None;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let a = siphash(key.k0, key.k1, 0xa0, addr).to_be_bytes();
    let b = siphash(key.k0, key.k1, 0xa1, addr).to_be_bytes();
    out[0] = b'h';
    out[1] = b':';
    for (i, byte) in a.iter().chain(b.iter()).enumerate() {
        out[2 + 2 * i] = HEX[usize::from(byte >> 4)];
        out[3 + 2 * i] = HEX[usize::from(byte & 15)];
    }
    Some(&out[..HASHED_IP_LEN])
}

/// Whether a request header asks not to be tracked: `DNT: 1` or `Sec-GPC: 1` (the value
/// exactly `1`, surrounding spaces allowed). `name` is compared case-insensitively.
pub fn is_opt_out_header(name: &[u8], value: &[u8]) -> bool {
    (name.eq_ignore_ascii_case(b"dnt") || name.eq_ignore_ascii_case(b"sec-gpc"))
        && value.trim_ascii() == b"1"
}

/// A first-party visitor id as the `tracker_userid` cookie holds it: exactly 32 hex
/// characters. Anything else is treated as no cookie.
pub fn valid_visitor_id(v: &[u8]) -> bool {
    v.len() == 32 && v.iter().all(u8::is_ascii_hexdigit)
}

/// The value of cookie `name` in a `Cookie` request header (`a=1; b=2`), or None. Names are
/// compared exactly (cookie names are case-sensitive).
pub fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|&c| c == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&c| c == b'=')?;
        (pair[..eq].trim_ascii() == name).then(|| pair[eq + 1..].trim_ascii())
    })
}

/// Random visitor ids for one worker: SipHash-2-4 under a random key over a counter, so ids
/// are unpredictable without the key and never repeat within a worker. No allocation.
#[derive(Clone, Debug)]
pub struct VisitorIds {
    k0: u64,
    k1: u64,
    counter: u64,
}

impl VisitorIds {
    /// `k0`, `k1`: 128 random bits (e.g. from the OS at worker start).
    pub fn new(k0: u64, k1: u64) -> VisitorIds {
        VisitorIds { k0, k1, counter: 0 }
    }

    /// The next id as 32 lowercase hex characters.
    pub fn next_hex(&mut self) -> [u8; 32] {
        self.counter = self.counter.wrapping_add(1);
        let c = self.counter.to_le_bytes();
        let a = siphash(self.k0, self.k1, 0xc0, &c).to_be_bytes();
        let b = siphash(self.k0, self.k1, 0xc1, &c).to_be_bytes();
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&a);
        id[8..].copy_from_slice(&b);
        crate::id::to_hex(&id)
    }
}

/// A date as HTTP writes it (IMF-fixdate): `Thu, 01 Jan 1970 00:00:00 GMT`.
pub fn http_date(unix_secs: u64, out: &mut Vec<u8>) {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t = crate::event::UtcTime::from_unix_us(unix_secs.saturating_mul(1_000_000));
    let wd = DAYS[((unix_secs / 86_400) % 7) as usize];
    use std::io::Write;
    let _ = write!(
        out,
        "{wd}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        t.day,
        MONTHS[(t.month as usize).saturating_sub(1).min(11)],
        t.year,
        t.hour,
        t.minute,
        t.second
    );
}

/// The `tracker_userid` cookie's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieSpec {
    pub name: Vec<u8>,
    /// Empty: no `Domain` attribute (a host-only cookie).
    pub domain: Vec<u8>,
    pub path: Vec<u8>,
    /// Lifetime in seconds; None: a session cookie (no `Expires`/`Max-Age`).
    pub max_age: Option<u64>,
}

/// Writes a `Set-Cookie` value into `out` (cleared first): `NAME=ID; Expires=...; Max-Age=N;
/// Domain=D; Path=P; SameSite=Lax` and `; Secure` when `secure`.
pub fn set_cookie(spec: &CookieSpec, id: &[u8], now_secs: u64, secure: bool, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&spec.name);
    out.push(b'=');
    out.extend_from_slice(id);
    if let Some(age) = spec.max_age {
        out.extend_from_slice(b"; Expires=");
        http_date(now_secs.saturating_add(age), out);
        out.extend_from_slice(b"; Max-Age=");
        out.extend_from_slice(age.to_string().as_bytes());
    }
    if !spec.domain.is_empty() {
        out.extend_from_slice(b"; Domain=");
        out.extend_from_slice(&spec.domain);
    }
    out.extend_from_slice(b"; Path=");
    out.extend_from_slice(&spec.path);
    out.extend_from_slice(b"; SameSite=Lax");
    if secure {
        out.extend_from_slice(b"; Secure");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: [u64; 2] = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];

    fn h(key: &DayKey, addr: &[u8]) -> Option<String> {
        let mut buf = [0u8; IP_TEXT_MAX];
        hash_ip(key, addr, &mut buf).map(|b| String::from_utf8(b.to_vec()).unwrap())
    }

    #[test]
    fn same_input_same_day_same_hash() {
        let k = DayKey::derive(&M, 20_000);
        let a = h(&k, b"192.0.2.7").unwrap();
        assert_eq!(a.len(), HASHED_IP_LEN);
        assert!(a.starts_with("h:"));
        assert!(a[2..]
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_eq!(h(&DayKey::derive(&M, 20_000), b"192.0.2.7").unwrap(), a);
        assert!(!a.contains("192.0.2"));
    }

    #[test]
    fn other_day_other_address_other_secret_differ() {
        let k = DayKey::derive(&M, 20_000);
        let a = h(&k, b"192.0.2.7").unwrap();
        assert_ne!(h(&DayKey::derive(&M, 20_001), b"192.0.2.7").unwrap(), a);
        assert_ne!(h(&k, b"192.0.2.8").unwrap(), a);
        assert_ne!(
            h(&DayKey::derive(&[M[0], M[1] ^ 1], 20_000), b"192.0.2.7").unwrap(),
            a
        );
        // The two halves are different functions.
        assert_ne!(a[2..18], a[18..]);
        // Many addresses, no collisions.
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            let addr = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            assert!(seen.insert(h(&k, addr.as_bytes()).unwrap()));
        }
    }

    #[test]
    fn empty_address_is_none() {
        assert_eq!(h(&DayKey::derive(&M, 1), b""), None);
    }

    #[test]
    fn days_roll_at_utc_midnight() {
        assert_eq!(day_of_us(0), 0);
        assert_eq!(day_of_us(DAY_US - 1), 0);
        assert_eq!(day_of_us(DAY_US), 1);
        let noon = 20_000 * DAY_US + DAY_US / 2;
        assert_eq!(DayKey::at(noon), DayKey::at(20_000 * DAY_US));
        assert_ne!(DayKey::at(noon), DayKey::at(20_001 * DAY_US));
    }

    #[test]
    fn master_secret_is_stable_in_a_process() {
        let a = *master_secret();
        assert_eq!(*master_secret(), a);
        assert_ne!(a, [0, 0]);
    }

    #[test]
    fn opt_out_headers() {
        assert!(is_opt_out_header(b"DNT", b"1"));
        assert!(is_opt_out_header(b"dnt", b" 1 "));
        assert!(is_opt_out_header(b"Sec-GPC", b"1"));
        assert!(!is_opt_out_header(b"DNT", b"0"));
        assert!(!is_opt_out_header(b"DNT", b""));
        assert!(!is_opt_out_header(b"DNT", b"11"));
        assert!(!is_opt_out_header(b"X-DNT", b"1"));
    }

    #[test]
    fn cookies() {
        let h = b"a=1; tid=0123456789abcdef0123456789abcdef;b=2 ;  Tid=x";
        assert_eq!(
            cookie_value(h, b"tid"),
            Some(&b"0123456789abcdef0123456789abcdef"[..])
        );
        assert_eq!(cookie_value(h, b"a"), Some(&b"1"[..]));
        assert_eq!(cookie_value(h, b"b"), Some(&b"2"[..]));
        assert_eq!(cookie_value(h, b"Tid"), Some(&b"x"[..]));
        assert_eq!(cookie_value(h, b"c"), None);
        assert_eq!(cookie_value(b"", b"a"), None);
        assert_eq!(cookie_value(b"a", b"a"), None);
        assert_eq!(cookie_value(b"xa=1", b"a"), None);
    }

    #[test]
    fn visitor_id_generator() {
        let mut g = VisitorIds::new(1, 2);
        let a = g.next_hex();
        let b = g.next_hex();
        assert!(valid_visitor_id(&a) && valid_visitor_id(&b));
        assert_ne!(a, b);
        assert!(a
            .iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_ne!(
            VisitorIds::new(1, 3).next_hex(),
            a,
            "another key, other ids"
        );
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(g.next_hex()));
        }
    }

    #[test]
    fn http_dates_and_set_cookie() {
        let mut d = Vec::new();
        http_date(0, &mut d);
        assert_eq!(d, b"Thu, 01 Jan 1970 00:00:00 GMT");
        d.clear();
        http_date(1_714_566_896, &mut d);
        assert_eq!(d, b"Wed, 01 May 2024 12:34:56 GMT");
        let spec = CookieSpec {
            name: b"tid".to_vec(),
            domain: Vec::new(),
            path: b"/".to_vec(),
            max_age: Some(86_400),
        };
        let mut out = b"old".to_vec();
        set_cookie(&spec, b"ab", 0, false, &mut out);
        assert_eq!(
            out,
            b"tid=ab; Expires=Fri, 02 Jan 1970 00:00:00 GMT; Max-Age=86400; Path=/; SameSite=Lax"
        );
        let spec = CookieSpec {
            domain: b".example.com".to_vec(),
            path: b"/t".to_vec(),
            max_age: None,
            ..spec
        };
        set_cookie(&spec, b"ab", 0, true, &mut out);
        assert_eq!(
            out,
            b"tid=ab; Domain=.example.com; Path=/t; SameSite=Lax; Secure"
        );
    }

    #[test]
    fn visitor_ids() {
        assert!(valid_visitor_id(b"0123456789abcdef0123456789ABCDEF"));
        assert!(!valid_visitor_id(b"0123456789abcdef0123456789abcde"));
        assert!(!valid_visitor_id(b"0123456789abcdef0123456789abcdeg"));
        assert!(!valid_visitor_id(b""));
    }
}
