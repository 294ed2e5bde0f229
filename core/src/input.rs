//! Request input: percent-decoding of argument values, IP anonymization, campaign id checks,
//! numbers. Pure functions, fuzzed.

use std::net::Ipv6Addr;

/// Maximum campaign id length in bytes.
pub const MAX_CAMPAIGN_ID: usize = 64;

/// A campaign id is 1..=64 bytes of `[A-Za-z0-9_.:-]`.
pub fn valid_campaign_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CAMPAIGN_ID
        && id
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b':' | b'-'))
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
    // Text before the first escape or '+' (often all of it) is copied at once.
    let plain = value
        .iter()
        .position(|&c| c == b'%' || c == b'+')
        .unwrap_or(value.len());
    out.extend_from_slice(&value[..plain]);
    if plain == value.len() {
        return;
    }
    out.reserve(value.len() - plain);
    let mut i = plain;
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

/// The value of argument `name` in a query string, as nginx's `$arg_NAME` (`ngx_http_arg`)
/// gives it: the raw (not decoded) text after `name=` in the first `&`-separated part that
/// starts with `name` followed by `=`, the name compared ASCII case-insensitively, up to the
/// next `&`. None when no part matches. `name` is a variable name, `[a-z0-9_]+`.
///
/// One pass over the parts that compares lengths first: cheaper than `ngx_http_arg`'s substring
/// search of the whole query string for every argument.
pub fn arg_value<'a>(args: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let n = name.len();
    let mut rest = args;
    loop {
        let end = rest.iter().position(|&c| c == b'&').unwrap_or(rest.len());
        let part = &rest[..end];
        if part.len() > n && part[n] == b'=' && part[..n].eq_ignore_ascii_case(name) {
            return Some(&part[n + 1..]);
        }
        if end == rest.len() {
            return None;
        }
        rest = &rest[end + 1..];
    }
}

/// How many `&`-separated parts [`ArgIndex`] records; parts beyond are searched with
/// [`arg_value`].
const ARG_PARTS: usize = 32;

/// A query string split once at its `&`s, for several [`arg_value`] lookups in one request
/// (campaign, click id, dimensions...): each lookup then compares name lengths, then the
/// names' last bytes, and whole names only where both are equal, so many arguments and
/// dimensions (`d1`..`d20`, all of one length) stay cheap. Gives exactly what [`arg_value`]
/// gives.
pub struct ArgIndex<'a> {
    args: &'a [u8],
    /// For each of the first `n` parts: its start and the length of its name (the text before
    /// its first `=`; u32::MAX when it has none).
    parts: [(u32, u32); ARG_PARTS],
    n: usize,
    /// Start of the parts that did not fit in `parts` (`args.len() + 1` when all did).
    rest: usize,
}

impl<'a> ArgIndex<'a> {
    pub fn new(args: &'a [u8]) -> ArgIndex<'a> {
        // Only parts[..n] is ever read.
        let mut ix = ArgIndex {
            args,
            parts: [(0, 0); ARG_PARTS],
            n: 0,
            rest: args.len() + 1,
        };
        if args.len() >= u32::MAX as usize {
            ix.rest = 0;
            return ix;
        }
        let (mut start, mut name_len) = (0usize, u32::MAX);
        for (i, &c) in args.iter().enumerate() {
            if c == b'&' {
                ix.parts[ix.n] = (start as u32, name_len);
                ix.n += 1;
                start = i + 1;
                name_len = u32::MAX;
                if ix.n == ARG_PARTS {
                    ix.rest = start;
                    return ix;
                }
            } else if c == b'=' && name_len == u32::MAX {
                name_len = (i - start) as u32;
            }
        }
        ix.parts[ix.n] = (start as u32, name_len);
        ix.n += 1;
        ix
    }

    /// [`arg_value`]`(args, name)`.
    pub fn get(&self, name: &[u8]) -> Option<&'a [u8]> {
        let n = name.len();
        let last = name.last().map_or(0, u8::to_ascii_lowercase);
        for (i, &(start, name_len)) in self.parts[..self.n].iter().enumerate() {
            if name_len as usize != n {
                continue;
            }
            let start = start as usize;
            let candidate = &self.args[start..start + n];
            if n > 0 && candidate[n - 1].to_ascii_lowercase() != last {
                continue;
            }
            if candidate.eq_ignore_ascii_case(name) {
                let end = if i + 1 < self.n {
                    self.parts[i + 1].0 as usize - 1
                } else if self.rest <= self.args.len() {
                    self.rest - 1
                } else {
                    self.args.len()
                };
                return Some(&self.args[start + n + 1..end]);
            }
        }
        match self.args.get(self.rest..) {
            Some(rest) if self.rest <= self.args.len() => arg_value(rest, name),
            _ => None,
        }
    }
}

/// How the client IP is stored (`tracker_ip`). `Hash`: a keyed hash under a key that rotates
/// every UTC day ([`crate::privacy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpMode {
    Full,
    Anonymize,
    Off,
    Hash,
}

/// Room for the longest text [`client_ip`] writes: an IPv6 address in full
/// ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" is 45 bytes).
pub const IP_TEXT_MAX: usize = 48;

/// Applies `mode` to a textual client address (as nginx's `$remote_addr`): Full keeps it,
/// Anonymize zeroes IPv4 to /24 and IPv6 to /48 (canonical text, e.g. "192.0.2.0", "2001:db8:1::"),
/// Off gives None. Unparsable text gives None with Anonymize (never stored unmasked).
///
/// Details: Full gives None for an empty address and replaces invalid UTF-8 with U+FFFD.
/// Anonymize accepts an IPv6 address in brackets and with a zone (`%eth0`, dropped). An
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is masked like IPv4, to its /24, and keeps its
/// mapped form (`::ffff:192.0.2.0`): a /48 would keep the whole IPv4 address.
///
/// This allocates the result; the request path uses [`client_ip`], which does not.
pub fn apply_ip_mode(mode: IpMode, addr: &[u8]) -> Option<String> {
    let mut buf = [0u8; IP_TEXT_MAX];
    client_ip(mode, addr, &mut buf).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// [`apply_ip_mode`] without allocating or formatting: Full returns `addr` itself (the event
/// encoder replaces invalid UTF-8 as `apply_ip_mode` does), Anonymize writes the masked address
/// into `buf` and returns that part of it. Same results as `apply_ip_mode` for every input.
pub fn client_ip<'a>(
    mode: IpMode,
    addr: &'a [u8],
    buf: &'a mut [u8; IP_TEXT_MAX],
) -> Option<&'a [u8]> {
    match mode {
        IpMode::Off => None,
        IpMode::Full => (!addr.is_empty()).then_some(addr),
        IpMode::Anonymize => {
            let n = anonymize(addr, buf)?;
            Some(&buf[..n])
        }
        IpMode::Hash => {
            let now_us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            crate::privacy::hash_ip(&crate::privacy::DayKey::at(now_us), addr, buf)
        }
    }
}

/// A dotted-quad IPv4 address as Rust's `Ipv4Addr` parser accepts it (four decimal octets
/// 0..=255 of 1-3 digits, no leading zero): its octets and the offset of its last `.`, or None.
/// One pass, no allocation.
fn parse_ipv4(text: &[u8]) -> Option<([u8; 4], usize)> {
    let mut octets = [0u8; 4];
    let (mut k, mut v, mut digits, mut last_dot) = (0usize, 0u32, 0u32, 0usize);
    for (i, &c) in text.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                if digits == 1 && v == 0 {
                    return None; // a leading zero
                }
                v = v * 10 + u32::from(c - b'0');
                digits += 1;
                if v > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && k < 3 => {
                octets[k] = v as u8;
                k += 1;
                v = 0;
                digits = 0;
                last_dot = i;
            }
            _ => return None,
        }
    }
    if digits == 0 || k != 3 {
        return None;
    }
    octets[3] = v as u8;
    Some((octets, last_dot))
}

/// Appends the decimal text of `v` at `out[at..]`; returns the new end.
fn put_u8(out: &mut [u8], mut at: usize, v: u8) -> usize {
    if v >= 100 {
        out[at] = b'0' + v / 100;
        at += 1;
    }
    if v >= 10 {
        out[at] = b'0' + v / 10 % 10;
        at += 1;
    }
    out[at] = b'0' + v % 10;
    at + 1
}

/// Writes `a.b.c.d` at `out[at..]`; returns the new end.
fn put_ipv4(out: &mut [u8], mut at: usize, o: [u8; 4]) -> usize {
    for (i, &v) in o.iter().enumerate() {
        if i > 0 {
            out[at] = b'.';
            at += 1;
        }
        at = put_u8(out, at, v);
    }
    at
}

/// Writes an IPv6 address as `Ipv6Addr`'s `Display` does (RFC 5952: lowercase hex without
/// leading zeros, the first longest run of two or more zero groups as `::`, an IPv4-mapped
/// address as `::ffff:a.b.c.d`); returns the length.
fn put_ipv6(out: &mut [u8; IP_TEXT_MAX], o: [u8; 16]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if o[..10].iter().all(|&b| b == 0) && o[10] == 0xff && o[11] == 0xff {
        out[..7].copy_from_slice(b"::ffff:");
        return put_ipv4(out, 7, [o[12], o[13], o[14], o[15]]);
    }
    let seg: [u16; 8] = core::array::from_fn(|i| u16::from_be_bytes([o[2 * i], o[2 * i + 1]]));
    // The first longest run of zero groups, if at least two long.
    let (mut best_at, mut best_len, mut run_at, mut run_len) = (0usize, 0usize, 0usize, 0usize);
    for (i, &s) in seg.iter().enumerate() {
        if s == 0 {
            if run_len == 0 {
                run_at = i;
            }
            run_len += 1;
            if run_len > best_len {
                best_at = run_at;
                best_len = run_len;
            }
        } else {
            run_len = 0;
        }
    }
    let mut at = 0;
    let put_group = |out: &mut [u8; IP_TEXT_MAX], at: &mut usize, s: u16| {
        let mut started = false;
        for shift in [12u32, 8, 4, 0] {
            let d = (s >> shift) & 15;
            if d != 0 || started || shift == 0 {
                out[*at] = HEX[d as usize];
                *at += 1;
                started = true;
            }
        }
    };
    if best_len >= 2 {
        for (i, &s) in seg[..best_at].iter().enumerate() {
            if i > 0 {
                out[at] = b':';
                at += 1;
            }
            put_group(out, &mut at, s);
        }
        out[at] = b':';
        out[at + 1] = b':';
        at += 2;
        for (i, &s) in seg[best_at + best_len..].iter().enumerate() {
            if i > 0 {
                out[at] = b':';
                at += 1;
            }
            put_group(out, &mut at, s);
        }
    } else {
        for (i, &s) in seg.iter().enumerate() {
            if i > 0 {
                out[at] = b':';
                at += 1;
            }
            put_group(out, &mut at, s);
        }
    }
    at
}

/// The anonymized text of `addr` written into `out`; its length, or None if unparsable.
fn anonymize(addr: &[u8], out: &mut [u8; IP_TEXT_MAX]) -> Option<usize> {
    if let Some((_, last_dot)) = parse_ipv4(addr) {
        // Canonical already (no leading zeros): the text up to the last dot, then 0.
        out[..=last_dot].copy_from_slice(&addr[..=last_dot]);
        out[last_dot + 1] = b'0';
        return Some(last_dot + 2);
    }
    let text = std::str::from_utf8(addr).ok()?;
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
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
    Some(put_ipv6(out, o))
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
        assert_eq!(
            s(Anonymize, "255.255.255.255").as_deref(),
            Some("255.255.255.0")
        );
        assert_eq!(
            s(Anonymize, "2001:db8:1:2:3:4:5:6").as_deref(),
            Some("2001:db8:1::")
        );
        assert_eq!(
            s(Anonymize, "2001:DB8:abcd:ffff::1").as_deref(),
            Some("2001:db8:abcd::")
        );
        assert_eq!(s(Anonymize, "::1").as_deref(), Some("::"));
        assert_eq!(s(Anonymize, "fe80::1%eth0").as_deref(), Some("fe80::"));
        assert_eq!(
            s(Anonymize, "[2001:db8:1::5]").as_deref(),
            Some("2001:db8:1::")
        );
        // IPv4-mapped: masked to the IPv4 /24, not to a /48 (which would keep it whole).
        assert_eq!(
            s(Anonymize, "::ffff:192.0.2.33").as_deref(),
            Some("::ffff:192.0.2.0")
        );
        assert_eq!(
            s(Anonymize, "::ffff:c000:0221").as_deref(),
            Some("::ffff:192.0.2.0")
        );
        // Unparsable: never stored.
        for bad in [
            "",
            "unix:",
            "192.0.2",
            "192.0.2.256",
            "1.2.3.4.5",
            "::g",
            "2001:db8::1/64",
            " 1.2.3.4",
            "[::1",
            "example.com",
        ] {
            assert_eq!(s(Anonymize, bad), None, "{bad:?}");
        }
        assert_eq!(apply_ip_mode(Anonymize, b"\xff1.2.3.4"), None);
        assert_eq!(apply_ip_mode(Full, b"\xff").as_deref(), Some("\u{fffd}"));
    }

    /// The allocating implementation `client_ip` replaced, as the reference.
    fn reference(mode: IpMode, addr: &[u8]) -> Option<String> {
        use std::net::Ipv4Addr;
        match mode {
            IpMode::Off | IpMode::Hash => None,
            IpMode::Full => (!addr.is_empty()).then(|| String::from_utf8_lossy(addr).into_owned()),
            IpMode::Anonymize => {
                let text = std::str::from_utf8(addr).ok()?;
                if let Ok(v4) = text.parse::<Ipv4Addr>() {
                    let [a, b, c, _] = v4.octets();
                    return Some(Ipv4Addr::new(a, b, c, 0).to_string());
                }
                let text = text
                    .strip_prefix('[')
                    .and_then(|t| t.strip_suffix(']'))
                    .unwrap_or(text);
                let text = match text.find('%') {
                    Some(zone) => &text[..zone],
                    None => text,
                };
                let v6 = text.parse::<Ipv6Addr>().ok()?;
                let mut o = v6.octets();
                if o[..10].iter().all(|&b| b == 0) && o[10] == 0xff && o[11] == 0xff {
                    o[15] = 0;
                } else {
                    o[6..].fill(0);
                }
                Some(Ipv6Addr::from(o).to_string())
            }
        }
    }

    #[test]
    fn client_ip_matches_the_reference() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut inputs: Vec<Vec<u8>> = [
            "0.0.0.0",
            "1.2.3.4",
            "01.2.3.4",
            "1.2.3.04",
            "00.1.1.1",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.",
            ".1.2.3",
            "1..2.3",
            "1.2.3.4 ",
            "+1.2.3.4",
            "1.2.3.-4",
            "0001.2.3.4",
            "::",
            "::1",
            "1::",
            "::ffff:1.2.3.4",
            "::ffff:0:0",
            "::1.2.3.4",
            "64:ff9b::1.2.3.4",
            "[::1]%x",
            "[::1%x]",
            "fe80::1%",
            "%",
            "[",
            "[]",
            "a:b:c:d:e:f:0:1",
            "0:0:1:0:0:0:1:0",
            "1:0:0:1:0:0:1:1",
            "::ffff:255.255.255.255",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7::",
            "0:0:0:0:0:0:0:0",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        for _ in 0..20_000 {
            let r = next();
            let v4 = std::net::Ipv4Addr::from(r as u32).to_string().into_bytes();
            // IPv6 with zero groups here and there, to exercise the `::` choice.
            let mut seg = [0u16; 8];
            for (i, s) in seg.iter_mut().enumerate() {
                if (r >> (32 + i)) & 1 == 1 {
                    *s = (next() & if r >> 60 & 1 == 1 { 0xff } else { 0xffff }) as u16;
                }
            }
            let v6 = Ipv6Addr::from(seg).to_string().into_bytes();
            let mut junk = v4.clone();
            let at = (r >> 40) as usize % junk.len();
            let subst = b"0.:9f%[]x\xff";
            junk[at] = subst[(r >> 48) as usize % subst.len()];
            inputs.extend([v4, v6, junk]);
        }
        let mut buf = [0u8; IP_TEXT_MAX];
        for a in &inputs {
            for mode in [IpMode::Full, IpMode::Anonymize, IpMode::Off] {
                let got =
                    client_ip(mode, a, &mut buf).map(|b| String::from_utf8_lossy(b).into_owned());
                assert_eq!(
                    got,
                    reference(mode, a),
                    "{mode:?} {:?}",
                    String::from_utf8_lossy(a)
                );
            }
        }
    }

    #[test]
    fn ipv6_text_as_display() {
        let mut buf = [0u8; IP_TEXT_MAX];
        // Every pattern of zero and non-zero groups, with short and long groups.
        for mask in 0u32..256 {
            for fill in [1u16, 0xab, 0xffff, 0x1000] {
                let seg: [u16; 8] =
                    core::array::from_fn(|i| if mask >> i & 1 == 1 { fill } else { 0 });
                let a = Ipv6Addr::from(seg);
                let n = put_ipv6(&mut buf, a.octets());
                assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), a.to_string());
            }
        }
    }

    /// nginx's ngx_http_arg (with ngx_strlcasestrn), transcribed, as the reference.
    fn ngx_http_arg<'a>(args: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
        let len = name.len();
        if args.is_empty() || len == 0 {
            return None;
        }
        let mut p = 0;
        while p < args.len() {
            // ngx_strlcasestrn(p, last - 1, name, len - 1): the first q >= p with
            // q + len < args.len() where args[q..q + len] equals name case-insensitively.
            let found = (p..args.len())
                .find(|&q| q + len < args.len() && args[q..q + len].eq_ignore_ascii_case(name))?;
            if (found == 0 || args[found - 1] == b'&') && args[found + len] == b'=' {
                let v = found + len + 1;
                let end = args[found..]
                    .iter()
                    .position(|&c| c == b'&')
                    .map_or(args.len(), |e| found + e);
                return Some(&args[v..end.max(v)]);
            }
            p = found + 1;
        }
        None
    }

    #[test]
    fn arg_value_as_nginx() {
        let cases: &[(&[u8], &[u8], Option<&[u8]>)] = &[
            (b"cid=a&pub=b", b"cid", Some(b"a")),
            (b"cid=a&pub=b", b"pub", Some(b"b")),
            (b"CID=a", b"cid", Some(b"a")),
            (b"xcid=a&cid=b", b"cid", Some(b"b")),
            (b"cid&cid=b", b"cid", Some(b"b")),
            (b"cid=", b"cid", Some(b"")),
            (b"cid=a=b&c", b"cid", Some(b"a=b")),
            (b"cid", b"cid", None),
            (b"", b"cid", None),
            (b"&&cid=1&", b"cid", Some(b"1")),
            (b"ci=1", b"cid", None),
            (
                b"utm_campaignx=0&UTM_Campaign=1&utm_campaign=2",
                b"utm_campaign",
                Some(b"1"),
            ),
            (b"utm_campaigx=0&utm_campaign", b"utm_campaign", None),
            (b"utm_campaig=0&utm_campaign_=1", b"utm_campaign", None),
            (b"abcdefgh=0&abcdefghi=1", b"abcdefghi", Some(b"1")),
            (b"abcdefgh=0&abcdefghi=1", b"abcdefgh", Some(b"0")),
        ];
        for (args, name, want) in cases {
            assert_eq!(
                arg_value(args, name),
                *want,
                "{:?} {:?}",
                String::from_utf8_lossy(args),
                String::from_utf8_lossy(name)
            );
            assert_eq!(ngx_http_arg(args, name), *want, "reference");
            assert_eq!(ArgIndex::new(args).get(name), *want, "index");
        }
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let alphabet = b"cidCID_&&=x1%ccc";
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 90) as usize;
            let mut y = x;
            let args: Vec<u8> = (0..len)
                .map(|_| {
                    y ^= y << 13;
                    y ^= y >> 7;
                    y ^= y << 17;
                    alphabet[(y % alphabet.len() as u64) as usize]
                })
                .collect();
            let index = ArgIndex::new(&args);
            for name in [
                &b"cid"[..],
                b"c",
                b"ci_d",
                b"x1",
                b"cidcidcid",
                b"cidcidci",
                b"ccccccccc_d",
            ] {
                let want = ngx_http_arg(&args, name);
                assert_eq!(
                    arg_value(&args, name),
                    want,
                    "{:?} {:?}",
                    String::from_utf8_lossy(&args),
                    String::from_utf8_lossy(name)
                );
                assert_eq!(
                    index.get(name),
                    want,
                    "index {:?} {:?}",
                    String::from_utf8_lossy(&args),
                    String::from_utf8_lossy(name)
                );
            }
        }
        // More parts than the index holds: the rest is searched too, in order.
        for parts in [ARG_PARTS - 1, ARG_PARTS, ARG_PARTS + 1, 3 * ARG_PARTS] {
            for at in [0, parts / 2, parts.saturating_sub(1)] {
                let mut args: Vec<String> = (0..parts).map(|i| format!("p{i}={i}")).collect();
                args[at] = format!("cid=v{at}");
                args.push("cid=last".into());
                let args = args.join("&");
                let want = format!("v{at}");
                assert_eq!(
                    ArgIndex::new(args.as_bytes()).get(b"cid"),
                    Some(want.as_bytes()),
                    "{parts} {at}"
                );
                assert_eq!(ArgIndex::new(args.as_bytes()).get(b"nope"), None);
                assert_eq!(
                    ArgIndex::new(args.as_bytes()).get(b"p0"),
                    (at != 0).then_some(&b"0"[..])
                );
            }
        }
        assert_eq!(ArgIndex::new(b"").get(b"cid"), None);
        assert_eq!(ArgIndex::new(b"&").get(b"cid"), None);
        assert_eq!(ArgIndex::new(b"cid=1&").get(b"cid"), Some(&b"1"[..]));
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
        for bad in [
            &b""[..],
            b"-",
            b"+",
            b".",
            b"-.",
            b"abc",
            b"1e3",
            b"inf",
            b"NaN",
            b"infinity",
            b"1.2.3",
            b" 1",
            b"1 ",
            b"0x10",
            b"1,5",
            b"--1",
            b"\xff",
        ] {
            assert_eq!(
                parse_number(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Too large to be finite.
        assert_eq!(parse_number(&[b'9'; 400]), None);
        assert!(parse_number(&[b'9'; 300]).is_some());
    }
}
