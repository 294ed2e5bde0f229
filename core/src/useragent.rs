//! User-Agent classification: browser family, OS family, device class and a crawler flag,
//! with a per-worker cache so the parser runs once per distinct User-Agent, not per request.
//!
//! The parser is the [`woothee`] crate (pure Rust, its dataset compiled into the code: no data
//! file, nothing read at run time). Its names are mapped onto the small, closed vocabularies
//! below ([`BROWSERS`], [`OSES`], [`Device`]): families only, never versions, so the values
//! are coarse counting dimensions, and stable whatever parser is used behind them.
//!
//! # The crawler flag
//!
//! [`Class::crawler`] is the OR of two tests:
//! - woothee's `crawler` category (it knows named crawlers that do not say "bot": Hatena,
//!   Yahoo! Japan, Google Web Preview, trendiction...);
//! - our [`bots::is_bot`] (`tracker_bots`), which also flags an empty User-Agent, HTTP
//!   libraries (curl, python-requests, okhttp...), headless browsers and link previewers that
//!   woothee takes for browsers or does not recognise.
//!
//! So `crawler` is true whenever `bots::is_bot` is (never less strict than the `bot` flag
//! of the events); it may be true for a few User-Agents that `bots::is_bot` lets through. A
//! crawler's device is always [`Device::Bot`]; its browser is `other` when woothee names a
//! crawler, or the browser it imitates otherwise (HeadlessChrome: `chrome`).
//!
//! # Device classes
//!
//! woothee has no tablet class: an `iPad`, an Android User-Agent without the `Mobile` token
//! (Google's convention for tablets; Firefox writes `Tablet`) and Kindle/Silk are tablets.
//! TVs, consoles and anything woothee cannot place are `other`. iPadOS Safari in its default
//! "desktop" mode sends a Mac User-Agent and is counted as a desktop: the header does not
//! tell them apart.
//!
//! # Cost
//!
//! woothee takes about 2 µs per User-Agent (release build, a realistic mix); a [`Cache`] hit
//! costs a hash and a comparison of the bytes (tens of ns) and allocates nothing.

use std::borrow::Cow;
use std::hash::BuildHasher;

use crate::bots;

/// Bytes of a User-Agent looked at (the module cuts the header there too); the rest is ignored.
pub const MAX_UA_LEN: usize = 512;

/// Browser families ([`Class::browser`]).
pub const BROWSERS: &[&str] = &[
    "chrome", "edge", "firefox", "safari", "opera", "samsung", "yandex", "vivaldi", "ie",
    "webview", "other",
];

/// OS families ([`Class::os`]).
pub const OSES: &[&str] = &[
    "windows",
    "macos",
    "ios",
    "android",
    "linux",
    "chromeos",
    "windows_phone",
    "other",
];

/// The device class of a User-Agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Desktop,
    Mobile,
    Tablet,
    /// A crawler or other automated client ([`Class::crawler`]).
    Bot,
    /// TVs, game consoles, feature phones with unknown OS, anything not placed.
    Other,
}

impl Device {
    pub const ALL: [Device; 5] = [
        Device::Desktop,
        Device::Mobile,
        Device::Tablet,
        Device::Bot,
        Device::Other,
    ];

    /// The schema's name: `desktop`, `mobile`, `tablet`, `bot` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Desktop => "desktop",
            Device::Mobile => "mobile",
            Device::Tablet => "tablet",
            Device::Bot => "bot",
            Device::Other => "other",
        }
    }
}

/// What a User-Agent is: families only (no versions), all `'static`, so a `Class` is `Copy`
/// and costs no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Class {
    /// One of [`BROWSERS`].
    pub browser: &'static str,
    /// One of [`OSES`].
    pub os: &'static str,
    pub device: Device,
    /// woothee's crawler category OR [`bots::is_bot`] (see the module documentation).
    pub crawler: bool,
}

impl Class {
    /// What an empty or absent User-Agent is: a bot of unknown kind.
    pub const EMPTY: Class = Class {
        browser: "other",
        os: "other",
        device: Device::Bot,
        crawler: true,
    };
}

fn browser_family(name: &str) -> &'static str {
    match name {
        "Chrome" => "chrome",
        "Edge" => "edge",
        "Firefox" => "firefox",
        "Safari" => "safari",
        "Opera" => "opera",
        "SamsungBrowser" => "samsung",
        "Yandex Browser" => "yandex",
        "Vivaldi" => "vivaldi",
        "Internet Explorer" => "ie",
        "Webview" => "webview",
        _ => "other",
    }
}

fn os_family(os: &str) -> &'static str {
    match os {
        "Mac OSX" | "Mac OS Classic" => "macos",
        "iPhone" | "iPad" | "iPod" | "iOS" => "ios",
        "Android" => "android",
        "Linux" => "linux",
        "ChromeOS" => "chromeos",
        _ if os.starts_with("Windows Phone") => "windows_phone",
        _ if os.starts_with("Windows") => "windows",
        _ => "other",
    }
}

/// Substrings (ASCII case-insensitive) of TV User-Agents: device `other`, not desktop/tablet.
const TV_MARKERS: &[&[u8]] = &[
    b"smart-tv",
    b"smarttv",
    b"hbbtv",
    b"googletv",
    b"android tv",
    b"crkey",
    b"web0s",
    b"netcast",
    b"appletv",
];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.len() >= needle.len()
        && haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Classifies a User-Agent without a cache (runs the parser: about 2 µs). Only the first
/// [`MAX_UA_LEN`] bytes are looked at; bytes that are not UTF-8 are replaced by U+FFFD for
/// the parser. Never panics.
pub fn classify(ua: &[u8]) -> Class {
    let ua = &ua[..ua.len().min(MAX_UA_LEN)];
    let our_bot = bots::is_bot(Some(ua));
    if ua.trim_ascii().is_empty() {
        return Class::EMPTY;
    }
    let text: Cow<'_, str> = String::from_utf8_lossy(ua);
    let parsed = woothee::parser::Parser::new().parse(&text);
    let (name, category, os) = match &parsed {
        Some(r) => (r.name, r.category, r.os),
        None => ("UNKNOWN", "UNKNOWN", "UNKNOWN"),
    };
    let crate_crawler = category == "crawler";
    let crawler = crate_crawler || our_bot;
    let browser = if crate_crawler {
        "other"
    } else {
        browser_family(name)
    };
    let os = os_family(os);
    let device = if crawler {
        Device::Bot
    } else if TV_MARKERS.iter().any(|m| contains_ci(ua, m)) {
        Device::Other
    } else {
        match category {
            "pc" => Device::Desktop,
            "smartphone" | "mobilephone" => {
                let tablet = match os {
                    "ios" => contains(ua, b"iPad"),
                    "android" => !contains(ua, b"Mobile") || contains(ua, b"Tablet"),
                    _ => false,
                } || contains(ua, b"Kindle")
                    || contains(ua, b"Silk/");
                if tablet {
                    Device::Tablet
                } else {
                    Device::Mobile
                }
            }
            _ => Device::Other,
        }
    };
    Class {
        browser,
        os,
        device,
        crawler,
    }
}

/// One slot of the cache.
#[derive(Clone)]
struct Entry {
    /// Hash of `ua` (0 with `ua` empty and `class` EMPTY in a slot never filled: the empty
    /// User-Agent's class, so a false hit on it is still right).
    hash: u64,
    /// The User-Agent, at most MAX_UA_LEN bytes; its capacity is reserved on first fill.
    ua: Vec<u8>,
    class: Class,
    filled: bool,
}

/// A per-worker cache of classifications: a fixed number of slots (a power of two, at least
/// 2), two-way set associative: a keyed 64-bit hash of the User-Agent's bytes picks a pair of
/// slots, the more recently used first. Each slot keeps the User-Agent itself so that a hit is
/// confirmed byte for byte (a hash collision is a miss, never a wrong class). A miss runs
/// [`classify`] and replaces the less recently used slot of the pair.
///
/// Memory: the slots are allocated by [`Cache::new`]; a slot's User-Agent buffer
/// ([`MAX_UA_LEN`] bytes) when the slot is first filled, and never again; a hit allocates
/// nothing. With 1024 slots that is at most about 580 KiB per worker. Not `Sync`: one per
/// worker (nginx workers are single-threaded).
pub struct Cache {
    slots: Box<[Entry]>,
    mask: usize,
    seed: u64,
    hits: u64,
    misses: u64,
}

/// Default number of slots.
pub const DEFAULT_SLOTS: usize = 1024;

impl Default for Cache {
    fn default() -> Cache {
        Cache::new(DEFAULT_SLOTS)
    }
}

impl Cache {
    /// A cache of `slots` slots (rounded up to a power of two, at least 2), hash keyed with a
    /// random seed (so slot collisions cannot be planned from outside).
    pub fn new(slots: usize) -> Cache {
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x7472_6163_6b65_72u64);
        Cache::with_seed(slots, seed)
    }

    /// As [`Cache::new`] with a given hash seed (tests, reproducible benchmarks).
    pub fn with_seed(slots: usize, seed: u64) -> Cache {
        let n = slots.clamp(2, 1 << 20).next_power_of_two();
        let empty = Entry {
            hash: 0,
            ua: Vec::new(),
            class: Class::EMPTY,
            filled: false,
        };
        Cache {
            slots: vec![empty; n].into_boxed_slice(),
            mask: n - 1,
            seed,
            hits: 0,
            misses: 0,
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// (hits, misses) since the cache was made.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// The class of a User-Agent (the first [`MAX_UA_LEN`] bytes of it; pass `b""` when the
    /// header is absent): from the cache, or by [`classify`] on a miss.
    pub fn classify(&mut self, ua: &[u8]) -> &Class {
        let ua = &ua[..ua.len().min(MAX_UA_LEN)];
        let h = hash(self.seed, ua);
        let i = (h as usize) & self.mask & !1;
        let pair = &mut self.slots[i..i + 2];
        let is = |e: &Entry| e.filled && e.hash == h && e.ua == ua;
        if is(&pair[0]) {
            self.hits += 1;
        } else if is(&pair[1]) {
            self.hits += 1;
            pair.swap(0, 1);
        } else {
            self.misses += 1;
            pair.swap(0, 1);
            let e = &mut pair[0];
            e.class = classify(ua);
            if e.ua.capacity() == 0 {
                e.ua.reserve_exact(MAX_UA_LEN);
            }
            e.ua.clear();
            e.ua.extend_from_slice(ua);
            e.hash = h;
            e.filled = true;
        }
        &self.slots[i].class
    }
}

/// 64×64→128-bit multiply, folded.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// A fast keyed hash of a byte string, 8 bytes per step (foldhash-like). Not cryptographic:
/// it picks the slot; the bytes themselves confirm a hit.
fn hash(seed: u64, bytes: &[u8]) -> u64 {
    const K1: u64 = 0x9e37_79b9_7f4a_7c15;
    const K2: u64 = 0xd6e8_feb8_6659_fd93;
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(K1);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = fold_mul(h ^ w, K2);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = fold_mul(h ^ u64::from_le_bytes(last), K2);
    }
    fold_mul(h ^ K1, K1 ^ seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(ua: &str) -> Class {
        classify(ua.as_bytes())
    }

    fn check(ua: &str, browser: &str, os: &str, device: Device, crawler: bool) {
        let got = c(ua);
        assert_eq!(
            got,
            Class {
                browser: BROWSERS.iter().find(|b| **b == browser).unwrap(),
                os: OSES.iter().find(|o| **o == os).unwrap(),
                device,
                crawler
            },
            "{ua}"
        );
    }

    #[test]
    fn desktop_browsers() {
        use Device::Desktop;
        check("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "chrome", "windows", Desktop, false);
        check("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "chrome", "macos", Desktop, false);
        check("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "chrome", "linux", Desktop, false);
        check("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "chrome", "chromeos", Desktop, false);
        check(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
            "firefox",
            "windows",
            Desktop,
            false,
        );
        check(
            "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
            "firefox",
            "linux",
            Desktop,
            false,
        );
        check("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15", "safari", "macos", Desktop, false);
        check("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51", "edge", "windows", Desktop, false);
        check("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/109.0.0.0", "opera", "windows", Desktop, false);
        check(
            "Mozilla/5.0 (Windows NT 6.1; WOW64; Trident/7.0; rv:11.0) like Gecko",
            "ie",
            "windows",
            Desktop,
            false,
        );
        check("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 YaBrowser/24.4.0.0 Safari/537.36", "yandex", "windows", Desktop, false);
    }

    #[test]
    fn mobile_browsers() {
        use Device::Mobile;
        check("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1", "safari", "ios", Mobile, false);
        check("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1", "chrome", "ios", Mobile, false);
        check("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15", "firefox", "ios", Mobile, false);
        check("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/460.0.0.40.106;FBBV/590000000;FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.4;FBSS/3;FBCR/;FBID/phone;FBLC/en_US;FBOP/5]", "webview", "ios", Mobile, false);
        check("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36", "chrome", "android", Mobile, false);
        check("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36", "samsung", "android", Mobile, false);
        check(
            "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
            "firefox",
            "android",
            Mobile,
            false,
        );
        check("Mozilla/5.0 (Linux; Android 12; M2101K6G) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 OPR/81.0.4292.78856", "opera", "android", Mobile, false);
        check("Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/124.0.6367.82 Mobile Safari/537.36", "webview", "android", Mobile, false);
    }

    #[test]
    fn tablets() {
        use Device::Tablet;
        check("Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1", "safari", "ios", Tablet, false);
        check("Mozilla/5.0 (iPad; CPU OS 16_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1", "chrome", "ios", Tablet, false);
        check("Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", "chrome", "android", Tablet, false);
        check("Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Safari/537.36", "samsung", "android", Tablet, false);
        check(
            "Mozilla/5.0 (Android 14; Tablet; rv:125.0) Gecko/125.0 Firefox/125.0",
            "firefox",
            "android",
            Tablet,
            false,
        );
        check("Mozilla/5.0 (Linux; U; Android 4.4.2; en-us; KFTHWI Build/KOT49H) AppleWebKit/537.36 (KHTML, like Gecko) Silk/3.68 like Chrome/39.0.2171.93 Safari/537.36", "chrome", "android", Tablet, false);
    }

    #[test]
    fn others() {
        use Device::Other;
        check("Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36", "samsung", "linux", Other, false);
        check("Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/13.0 Safari/605.1.15", "safari", "other", Other, false);
        check(
            "something entirely unknown/1.0",
            "other",
            "other",
            Other,
            false,
        );
    }

    #[test]
    fn crawlers() {
        use Device::Bot;
        // Named by woothee and by our matcher.
        check(
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "other",
            "other",
            Bot,
            true,
        );
        check("Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.91 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "other", "other", Bot, true);
        check(
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "other",
            "other",
            Bot,
            true,
        );
        check(
            "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
            "other",
            "other",
            Bot,
            true,
        );
        check(
            "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
            "other",
            "other",
            Bot,
            true,
        );
        check(
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "other",
            "other",
            Bot,
            true,
        );
        check("Twitterbot/1.0", "other", "other", Bot, true);
        check(
            "Mozilla/5.0 (compatible; GPTBot/1.0; +https://openai.com/gptbot)",
            "other",
            "other",
            Bot,
            true,
        );
        // Only our matcher: woothee sees the browser it imitates, or nothing.
        check("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.6367.60 Safari/537.36", "chrome", "linux", Bot, true);
        check("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_10_1) AppleWebKit/600.2.5 (KHTML, like Gecko) Version/8.0.2 Safari/600.2.5 (Applebot/0.1; +http://www.apple.com/go/applebot)", "safari", "macos", Bot, true);
        for ua in [
            "curl/8.5.0",
            "Wget/1.21.4",
            "python-requests/2.31.0",
            "Go-http-client/1.1",
            "okhttp/4.12.0",
        ] {
            check(ua, "other", "other", Bot, true);
        }
        // Only woothee: a named crawler without a marker of ours.
        let trend = "Mozilla/5.0 (Windows; U; Windows NT 6.1; en-GB; rv:1.9.1.2) Gecko/20090729 Firefox/3.5.2 (.NET CLR 3.5.30729; trendictionbot0.5.0; trendiction search; http://www.trendiction.de/bot; please let us know of any problems; web at trendiction.com) Gecko/20090729 Firefox/3.5.2";
        assert!(c(trend).crawler);
        let preview = "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like Gecko; Google Web Preview) Chrome/27.0.1453 Safari/537.36";
        assert!(!bots::is_bot(Some(preview.as_bytes())));
        assert_eq!(
            c(preview),
            Class {
                browser: "other",
                os: "other",
                device: Bot,
                crawler: true
            }
        );
        // Empty and blank are bots, as for bots::is_bot.
        for ua in ["", "   ", "\t"] {
            assert_eq!(c(ua), Class::EMPTY, "{ua:?}");
        }
    }

    #[test]
    fn crawler_is_never_less_than_is_bot() {
        for ua in include_str!("../tests/data/user_agents.txt").lines() {
            let class = c(ua);
            if bots::is_bot(Some(ua.as_bytes())) {
                assert!(class.crawler, "{ua}");
            }
            assert_eq!(class.device == Device::Bot, class.crawler, "{ua}");
            assert!(
                BROWSERS.contains(&class.browser) && OSES.contains(&class.os),
                "{ua}"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut cache = Cache::with_seed(8, 1);
        let pieces: &[&[u8]] = &[
            b"Mozilla/5.0 (",
            b"iPhone; ",
            b"Android ",
            b"Mobile",
            b"Windows NT ",
            b"; rv:",
            b")",
            b"Chrome/",
            b"bot",
            b"\xff",
            b"\xc3",
            b"\xe2\x82",
            b"\0",
            b"MSIE ",
            b"Version/",
            b"Opera",
            b"DoCoMo/",
            b"KDDI-",
            b"FOMA;",
            b"/",
            b".",
        ];
        for _ in 0..20_000 {
            let mut ua = Vec::new();
            for _ in 0..next() % 40 {
                if next() % 3 == 0 {
                    ua.push(next() as u8);
                } else {
                    ua.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
                }
            }
            let class = *cache.classify(&ua);
            assert_eq!(class, classify(&ua));
            assert!(BROWSERS.contains(&class.browser) && OSES.contains(&class.os));
        }
        // Long, invalid UTF-8, a UTF-8 sequence cut at the limit, NULs.
        let mut long = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 ".to_vec();
        long.resize(MAX_UA_LEN - 1, b'a');
        long.extend_from_slice("é".as_bytes()); // cut in the middle by MAX_UA_LEN
        long.extend(std::iter::repeat(0xffu8).take(100_000));
        let class = *cache.classify(&long);
        assert_eq!(class.browser, "chrome");
        assert_eq!(
            class,
            classify(&long[..MAX_UA_LEN]),
            "only the first MAX_UA_LEN bytes count"
        );
        for ua in [
            &b"\xff\xfe\xfd"[..],
            b"\0\0\0",
            &[0x80; 600],
            b"-",
            b"Mozilla/5.0 (\xff; Android \xff) Mobile",
        ] {
            let _ = cache.classify(ua);
        }
    }

    #[test]
    fn cache_hits_and_misses() {
        let a = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0";
        let b = b"curl/8.5.0";
        let mut cache = Cache::with_seed(1024, 42);
        assert_eq!(cache.slots(), 1024);
        assert_eq!(cache.classify(a).browser, "firefox");
        assert_eq!(cache.stats(), (0, 1));
        assert_eq!(cache.classify(a).browser, "firefox");
        assert_eq!(cache.stats(), (1, 1));
        assert!(cache.classify(b).crawler);
        assert!(cache.classify(b).crawler);
        assert_eq!(cache.stats(), (2, 2));
        // The empty User-Agent in a fresh cache is a miss, then a hit, and a bot.
        assert_eq!(*cache.classify(b""), Class::EMPTY);
        assert_eq!(*cache.classify(b""), Class::EMPTY);
        assert_eq!(cache.stats(), (3, 3));
        // Bytes past MAX_UA_LEN do not make a new key.
        let mut long = a.to_vec();
        long.resize(MAX_UA_LEN, b' ');
        let mut longer = long.clone();
        longer.extend_from_slice(b"anything");
        let _ = cache.classify(&long);
        let _ = cache.classify(&longer);
        assert_eq!(cache.stats(), (4, 4));
    }

    #[test]
    fn cache_collisions_are_misses_not_wrong_answers() {
        // One pair of slots: every User-Agent goes there; three in turn always miss (LRU).
        let mut cache = Cache::with_seed(1, 7);
        assert_eq!(cache.slots(), 2);
        let uas: [&[u8]; 3] = [
            b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
            b"Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
        ];
        for round in 0..3 {
            for ua in uas {
                assert_eq!(*cache.classify(ua), classify(ua), "round {round}");
            }
        }
        assert_eq!(cache.stats(), (0, 9));
        assert_eq!(cache.classify(uas[2]).browser, "firefox");
        assert_eq!(cache.stats(), (1, 9));
        // Two fit: the less recently used one is replaced.
        assert_eq!(cache.classify(uas[1]).device, Device::Mobile);
        assert_eq!(cache.stats(), (2, 9));
        assert_eq!(cache.classify(uas[2]).browser, "firefox");
        assert_eq!(cache.classify(uas[1]).device, Device::Mobile);
        assert_eq!(cache.stats(), (4, 9));
        assert_eq!(cache.slots[0].ua, uas[1]);
        assert!(cache.classify(uas[0]).crawler); // replaces uas[2]
        assert_eq!(cache.classify(uas[1]).device, Device::Mobile);
        assert_eq!(cache.stats(), (5, 10));
        let _ = cache.classify(uas[2]);
        // Same hash, different bytes (forced: a slot whose stored hash matches): still a miss.
        let h = hash(7, uas[0]);
        cache.slots[0].hash = h;
        assert_eq!(cache.slots[0].ua, uas[2]);
        assert_eq!(cache.slots[1].ua, uas[1]);
        assert_eq!(*cache.classify(uas[0]), classify(uas[0]));
        assert_eq!(cache.stats(), (5, 12));
        // Sizes round up to a power of two.
        assert_eq!(Cache::with_seed(0, 0).slots(), 2);
        assert_eq!(Cache::with_seed(1000, 0).slots(), 1024);
        assert_eq!(Cache::new(3).slots(), 4);
    }

    #[test]
    fn hash_spreads() {
        // Distinct short strings land in many different slots of 1024.
        let mut used = std::collections::HashSet::new();
        for i in 0..1000 {
            used.insert(hash(3, format!("Mozilla/5.0 Chrome/{i}.0").as_bytes()) & 1023);
        }
        assert!(used.len() > 550, "{}", used.len());
        assert_ne!(hash(1, b"abc"), hash(2, b"abc"));
        assert_ne!(hash(1, b""), hash(1, b"\0"));
    }

    #[test]
    fn device_names() {
        let names: Vec<_> = Device::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(names, ["desktop", "mobile", "tablet", "bot", "other"]);
    }
}
