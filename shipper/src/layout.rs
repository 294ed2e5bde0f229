//! Where an event goes: the hive partition directory of an event (`type=T/date=D/hour=H`, UTC
//! from the event's timestamp) and the names of the files in it.

use std::fmt::Write as _;

/// Microseconds in an hour: events with the same `ts / US_PER_HOUR` share a partition.
pub const US_PER_HOUR: u64 = 3_600_000_000;

/// Longest type name used in a path (the module allows 64 characters; longer names are cut).
pub const MAX_TYPE_LEN: usize = 128;

/// Appends `event_type` to `out` made safe for a path component: every byte outside
/// `[A-Za-z0-9_-]` becomes `_` (so a multi-byte UTF-8 character becomes several `_`), cut at
/// MAX_TYPE_LEN bytes; an empty type becomes `_`.
pub fn sanitize_type(event_type: &str, out: &mut String) {
    if event_type.is_empty() {
        out.push('_');
        return;
    }
    for &b in event_type.as_bytes().iter().take(MAX_TYPE_LEN) {
        out.push(if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            b as char
        } else {
            '_'
        });
    }
}

/// (year, month 1-12, day 1-31) of a day number counted from 1970-01-01 (proleptic Gregorian;
/// Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The partition directory, relative to the output directory, of events of `event_type` in
/// hour bucket `hour_bucket` (= ts / US_PER_HOUR): `type=T/date=YYYY-MM-DD/hour=HH`.
pub fn partition_dir(event_type: &str, hour_bucket: u64) -> String {
    let mut s = String::with_capacity(48 + event_type.len());
    s.push_str("type=");
    sanitize_type(event_type, &mut s);
    let days = (hour_bucket / 24) as i64;
    let hour = hour_bucket % 24;
    let (y, m, d) = civil_from_days(days);
    let _ = write!(s, "/date={y:04}-{m:02}-{d:02}/hour={hour:02}");
    s
}

/// "2024-05-06T07:08:09.123Z" for a time in milliseconds since the epoch (for logs).
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        unix_ms % 1000
    )
}

/// 32 lowercase hex characters.
pub fn id_hex(id: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for &b in id {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// The name of the temporary file that becomes `final_name` at commit: `.<final_name>.tmp`
/// (hidden, and not matched by `*.ndjson.gz` globs).
pub fn tmp_name(final_name: &str) -> String {
    format!(".{final_name}.tmp")
}

/// Whether a directory entry is one of our temporary files.
pub fn is_tmp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp") && name.len() > 5
}

/// `stem.ext` for n == 0, else `stem-n.ext` (names made unique when one is taken).
pub fn numbered(stem: &str, ext: &str, n: u32) -> String {
    if n == 0 {
        format!("{stem}.{ext}")
    } else {
        format!("{stem}-{n}.{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn san(t: &str) -> String {
        let mut s = String::new();
        sanitize_type(t, &mut s);
        s
    }

    #[test]
    fn sanitize() {
        assert_eq!(san("impression"), "impression");
        assert_eq!(san("sign-up_2"), "sign-up_2");
        assert_eq!(san(""), "_");
        assert_eq!(san("../etc"), "___etc");
        assert_eq!(san("a/b c=d"), "a_b_c_d");
        assert_eq!(san("é"), "__");
        assert_eq!(san(&"x".repeat(300)).len(), MAX_TYPE_LEN);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
        assert_eq!(civil_from_days(20_089), (2025, 1, 1));
    }

    #[test]
    fn partitions() {
        // 2024-02-29T23:59:59.999999Z
        let ts: u64 = 1_709_251_199_999_999;
        assert_eq!(
            partition_dir("click", ts / US_PER_HOUR),
            "type=click/date=2024-02-29/hour=23"
        );
        assert_eq!(
            partition_dir("click", ts / US_PER_HOUR + 1),
            "type=click/date=2024-03-01/hour=00"
        );
        assert_eq!(partition_dir("a b", 0), "type=a_b/date=1970-01-01/hour=00");
    }

    #[test]
    fn names() {
        assert_eq!(tmp_name("ab.ndjson.gz"), ".ab.ndjson.gz.tmp");
        assert!(is_tmp_name(".ab.ndjson.gz.tmp"));
        assert!(!is_tmp_name("ab.ndjson.gz"));
        assert!(!is_tmp_name(".tmp"));
        assert_eq!(numbered("ab", "ndjson.gz", 0), "ab.ndjson.gz");
        assert_eq!(numbered("ab", "ndjson.gz", 2), "ab-2.ndjson.gz");
        assert_eq!(rfc3339_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        let mut id = [0u8; 16];
        id[0] = 0xab;
        id[15] = 0x01;
        assert_eq!(id_hex(&id), "ab000000000000000000000000000001");
    }
}
