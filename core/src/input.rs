//! Request input: percent-decoding of argument values, IP anonymization, campaign id checks,
//! numbers. Pure functions, fuzzed.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Maximum campaign id length in bytes.
pub const MAX_CAMPAIGN_ID: usize = 64;

/// A campaign id is 1..=64 bytes of `[A-Za-z0-9_.:-]`.
pub fn valid_campaign_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CAMPAIGN_ID
        && id.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-'))
}

/// The value of one hexadecimal digit, either case.
pub(crate) fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes an argument value (`%XX`, and `+` as space) into `out` (appended).
/// Invalid escapes are kept literally. The result may be invalid UTF-8.
pub fn percent_decode(value: &[u8], out: &mut Vec<u8>) {
    out.reserve(value.len());
    let mut i = 0;
    while i < value.len() {
        let c = value[i];
        match c {
            b'%' => {
                let hi = value.get(i + 1).copied().and_then(hex_digit);
                let lo = value.get(i + 2).copied().and_then(hex_digit);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            _ => out.push(c),
        }
        i += 1;
    }
}

/// How the client IP is stored (`tracker_ip`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpMode { Full, Anonymize, Off }

/// Applies `mode` to a textual client address (as nginx's `$remote_addr`): Full keeps it,
/// Anonymize zeroes IPv4 to /24 and IPv6 to /48 (canonical text, e.g. "192.0.2.0", "2001:db8:1::"),
/// Off gives None. Unparsable text gives None with Anonymize (never stored unmasked).
///
/// Details: Full gives None for an empty address and replaces invalid UTF-8 with U+FFFD.
/// Anonymize accepts an IPv6 address in brackets and with a zone (`%eth0`, dropped). An
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is masked like IPv4, to its /24, and keeps its
/// mapped form (`::ffff:192.0.2.0`): a /48 would keep the whole IPv4 address.
pub fn apply_ip_mode(mode: IpMode, addr: &[u8]) -> Option<String> {
    match mode {
        IpMode::Off => None,
        IpMode::Full => (!addr.is_empty()).then(|| String::from_utf8_lossy(addr).into_owned()),
        IpMode::Anonymize => anonymize(addr),
    }
}

fn anonymize(addr: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(addr).ok()?;
    if let Ok(v4) = text.parse::<Ipv4Addr>() {
        let [a, b, c, _] = v4.octets();
        return Some(Ipv4Addr::new(a, b, c, 0).to_string());
    }
    let text = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    let text = match text.find('%') {
        Some(zone) => &text[..zone],
        None => text,
    };
    let v6 = text.parse::<Ipv6Addr>().ok()?;
    let mut o = v6.octets();
    if o[..10].iter().all(|&b| b == 0) && o[10] == 0xff && o[11] == 0xff {
        o[15] = 0; // IPv4-mapped: the /24 of the IPv4 address.
    } else {
        o[6..].fill(0);
    }
    Some(Ipv6Addr::from(o).to_string())
}

/// Parses a decimal number (e.g. "12.50", "3") for conversion values and watch time.
/// None for empty, non-finite, or non-numeric input.
///
/// Accepted: an optional sign, digits, an optional fraction (`1.5`, `.5`, `5.`); at least one
/// digit. No exponent, no whitespace, no `inf`/`nan`, no hex.
pub fn parse_number(s: &[u8]) -> Option<f64> {
    let body = match s.first() {
        Some(b'-') | Some(b'+') => &s[1..],
        _ => s,
    };
    let mut digits = 0usize;
    let mut dots = 0usize;
    for &c in body {
        match c {
            b'0'..=b'9' => digits += 1,
            b'.' => dots += 1,
            _ => return None,
        }
    }
    if digits == 0 || dots > 1 {
        return None;
    }
    // Only ASCII digits, a sign and a dot: valid UTF-8.
    let text = std::str::from_utf8(s).ok()?;
    let v: f64 = text.parse().ok()?;
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        percent_decode(s, &mut out);
        out
    }

    #[test]
    fn campaign_ids() {
        assert!(valid_campaign_id(b"summer-sale"));
        assert!(valid_campaign_id(b"a"));
        assert!(valid_campaign_id(b"A.b:c_d-9"));
        assert!(valid_campaign_id(&[b'x'; 64]));
        assert!(!valid_campaign_id(&[b'x'; 65]));
        assert!(!valid_campaign_id(b""));
        assert!(!valid_campaign_id(b"a b"));
        assert!(!valid_campaign_id(b"a/b"));
        assert!(!valid_campaign_id(b"a%20"));
        assert!(!valid_campaign_id("caf\u{e9}".as_bytes()));
        assert!(!valid_campaign_id(b"a\0"));
        assert!(!valid_campaign_id(b"{click_id}"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(dec(b"a%20b"), b"a b");
        assert_eq!(dec(b"x%2By+z"), b"x+y z");
        assert_eq!(dec(b"caf%C3%A9"), "caf\u{e9}".as_bytes());
        assert_eq!(dec(b"%ffok"), b"\xffok");
        assert_eq!(dec(b"%"), b"%");
        assert_eq!(dec(b"%4"), b"%4");
        assert_eq!(dec(b"%zz"), b"%zz");
        assert_eq!(dec(b"%%41"), b"%A");
        assert_eq!(dec(b"%4%41"), b"%4A");
        assert_eq!(dec(b"100%"), b"100%");
        assert_eq!(dec(b"%00"), b"\0");
        assert_eq!(dec(b""), b"");
        assert_eq!(dec(b"++"), b"  ");
        let mut out = b"keep".to_vec();
        percent_decode(b"%41", &mut out);
        assert_eq!(out, b"keepA", "appends");
    }

    #[test]
    fn ip_modes() {
        use IpMode::*;
        let s = |m, a: &str| apply_ip_mode(m, a.as_bytes());
        assert_eq!(s(Full, "192.0.2.33").as_deref(), Some("192.0.2.33"));
        assert_eq!(s(Full, "2001:db8::1").as_deref(), Some("2001:db8::1"));
        assert_eq!(s(Full, ""), None);
        assert_eq!(s(Off, "192.0.2.33"), None);
        assert_eq!(s(Anonymize, "192.0.2.33").as_deref(), Some("192.0.2.0"));
        assert_eq!(s(Anonymize, "127.0.0.1").as_deref(), Some("127.0.0.0"));
        assert_eq!(s(Anonymize, "255.255.255.255").as_deref(), Some("255.255.255.0"));
        assert_eq!(s(Anonymize, "2001:db8:1:2:3:4:5:6").as_deref(), Some("2001:db8:1::"));
        assert_eq!(s(Anonymize, "2001:DB8:abcd:ffff::1").as_deref(), Some("2001:db8:abcd::"));
        assert_eq!(s(Anonymize, "::1").as_deref(), Some("::"));
        assert_eq!(s(Anonymize, "fe80::1%eth0").as_deref(), Some("fe80::"));
        assert_eq!(s(Anonymize, "[2001:db8:1::5]").as_deref(), Some("2001:db8:1::"));
        // IPv4-mapped: masked to the IPv4 /24, not to a /48 (which would keep it whole).
        assert_eq!(s(Anonymize, "::ffff:192.0.2.33").as_deref(), Some("::ffff:192.0.2.0"));
        assert_eq!(s(Anonymize, "::ffff:c000:0221").as_deref(), Some("::ffff:192.0.2.0"));
        // Unparsable: never stored.
        for bad in ["", "unix:", "192.0.2", "192.0.2.256", "1.2.3.4.5", "::g", "2001:db8::1/64", " 1.2.3.4", "[::1", "example.com"] {
            assert_eq!(s(Anonymize, bad), None, "{bad:?}");
        }
        assert_eq!(apply_ip_mode(Anonymize, b"\xff1.2.3.4"), None);
        assert_eq!(apply_ip_mode(Full, b"\xff").as_deref(), Some("\u{fffd}"));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(b"12.50"), Some(12.5));
        assert_eq!(parse_number(b"3"), Some(3.0));
        assert_eq!(parse_number(b"0"), Some(0.0));
        assert_eq!(parse_number(b"-1.25"), Some(-1.25));
        assert_eq!(parse_number(b"+7"), Some(7.0));
        assert_eq!(parse_number(b".5"), Some(0.5));
        assert_eq!(parse_number(b"5."), Some(5.0));
        assert_eq!(parse_number(b"007.5"), Some(7.5));
        for bad in [&b""[..], b"-", b"+", b".", b"-.", b"abc", b"1e3", b"inf", b"NaN", b"infinity", b"1.2.3", b" 1", b"1 ", b"0x10", b"1,5", b"--1", b"\xff"] {
            assert_eq!(parse_number(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
        // Too large to be finite.
        assert_eq!(parse_number(&[b'9'; 400]), None);
        assert!(parse_number(&[b'9'; 300]).is_some());
    }
}
