//! Campaigns: the JSON file and its validation. (In shared memory, a campaign is a record of
//! [`crate::record`].)
//!
//! The file is a JSON array of objects `{"id", "status", "landing_url", ...}` (the fields are
//! in `docs/directives.md`, `tracker_campaigns`); the admin API takes the same objects
//! ([`parse_object`]) and writes them back with [`Campaign::to_json`]. Unknown fields are
//! refused (a misspelt budget field must not be ignored). The table is an immutable byte image
//! built by [`build_table`] and read in place by [`TableView`]: open addressing over u32
//! offsets, so lookups are O(1) and position-independent (any mapping address works).
//!
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashMap;

use crate::input::valid_campaign_id;
use crate::landing::Template;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Active,
    Paused,
    Ended,
}

impl Status {
    /// The file's spelling: "active", "paused", "ended".
    pub fn name(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Paused => "paused",
            Status::Ended => "ended",
        }
    }

    fn of_name(s: &str) -> Option<Status> {
        match s {
            "active" => Some(Status::Active),
            "paused" => Some(Status::Paused),
            "ended" => Some(Status::Ended),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Campaign {
    pub id: String,
    pub status: Status,
    pub landing_url: String,
    /// Where a click goes when the campaign cannot take it (over budget, outside its
    /// schedule, paused, publisher not allowed); a landing-URL template.
    pub fallback_url: Option<String>,
    /// Unix seconds: the campaign takes events from `start` (inclusive) to `end` (exclusive).
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Publishers allowed (the `publisher` dimension); empty: any.
    pub publishers: Vec<String>,
    pub pricing: Pricing,
    pub caps: Caps,
    /// The offset from UTC of the campaign's day boundary, in minutes (`timezone`).
    pub utc_offset_minutes: i16,
}

/// What the banker charges, in micro-units (millionths) of the campaign's currency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pricing {
    /// Per click (`price_per_click`).
    pub cpc_micros: u64,
    /// Per thousand impressions (`price_per_mille`); one impression costs a thousandth,
    /// rounded down to the micro-unit.
    pub cpm_micros: u64,
    /// Per conversion (`price_per_conversion`).
    pub cpa_micros: u64,
    /// Share of the conversion value, in parts per million (`revenue_share`, 0 to 1).
    pub revenue_share_ppm: u32,
}

/// Caps; None: no cap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub daily_spend_micros: Option<u64>,
    pub total_spend_micros: Option<u64>,
    pub daily_clicks: Option<u64>,
    pub total_clicks: Option<u64>,
    pub daily_impressions: Option<u64>,
    pub total_impressions: Option<u64>,
}

impl Campaign {
    /// A campaign with only the required fields.
    pub fn new(id: &str, status: Status, landing_url: &str) -> Campaign {
        Campaign {
            id: id.into(),
            status,
            landing_url: landing_url.into(),
            fallback_url: None,
            start: None,
            end: None,
            publishers: Vec::new(),
            pricing: Pricing::default(),
            caps: Caps::default(),
            utc_offset_minutes: 0,
        }
    }

    /// The campaign as a JSON object, in the file's form (what [`parse_object`] reads).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("status".into(), self.status.name().into());
        m.insert("landing_url".into(), self.landing_url.clone().into());
        if let Some(f) = &self.fallback_url {
            m.insert("fallback_url".into(), f.clone().into());
        }
        if let Some(t) = self.start {
            m.insert("start".into(), rfc3339(t).into());
        }
        if let Some(t) = self.end {
            m.insert("end".into(), rfc3339(t).into());
        }
        if !self.publishers.is_empty() {
            m.insert("publishers".into(), self.publishers.clone().into());
        }
        let money = |x: u64| Value::from(x as f64 / 1e6);
        let p = &self.pricing;
        for (k, v) in [
            ("price_per_click", p.cpc_micros),
            ("price_per_mille", p.cpm_micros),
            ("price_per_conversion", p.cpa_micros),
        ] {
            if v != 0 {
                m.insert(k.into(), money(v));
            }
        }
        if p.revenue_share_ppm != 0 {
            m.insert(
                "revenue_share".into(),
                Value::from(f64::from(p.revenue_share_ppm) / 1e6),
            );
        }
        let c = &self.caps;
        for (k, v) in [
            ("daily_budget", c.daily_spend_micros),
            ("total_budget", c.total_spend_micros),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), money(v));
            }
        }
        for (k, v) in [
            ("daily_clicks", c.daily_clicks),
            ("total_clicks", c.total_clicks),
            ("daily_impressions", c.daily_impressions),
            ("total_impressions", c.total_impressions),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v.into());
            }
        }
        if self.utc_offset_minutes != 0 {
            m.insert(
                "timezone".into(),
                offset_name(self.utc_offset_minutes).into(),
            );
        }
        Value::Object(m)
    }
}

/// The fields a campaign object may have.
pub const FIELDS: &[&str] = &[
    "id",
    "status",
    "landing_url",
    "fallback_url",
    "start",
    "end",
    "publishers",
    "price_per_click",
    "price_per_mille",
    "price_per_conversion",
    "revenue_share",
    "daily_budget",
    "total_budget",
    "daily_clicks",
    "total_clicks",
    "daily_impressions",
    "total_impressions",
    "timezone",
];

/// A money amount (a JSON number of currency units, at most 6 decimals kept) in micro-units.
fn money_micros(v: &Value) -> Result<u64, String> {
    let x = v.as_f64().ok_or("must be a number")?;
    if !x.is_finite() || x < 0.0 {
        return Err("must be a number of 0 or more".into());
    }
    let m = (x * 1e6).round();
    if m > 1e15 {
        return Err("is too large (at most 1e9)".into());
    }
    Ok(m as u64)
}

fn count(v: &Value) -> Result<u64, String> {
    v.as_u64()
        .filter(|&n| n < 1 << 40)
        .ok_or_else(|| "must be a whole number from 0 to 2^40".to_string())
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `+HH:MM` / `-HH:MM` / `Z` / `UTC` as minutes east of UTC.
pub fn parse_offset(s: &str) -> Option<i16> {
    if s == "Z" || s == "UTC" || s == "+00:00" {
        return Some(0);
    }
    let b = s.as_bytes();
    if b.len() != 6 || !(b[0] == b'+' || b[0] == b'-') || b[3] != b':' {
        return None;
    }
    let num = |x: &[u8]| -> Option<i16> {
        (x.len() == 2 && x.iter().all(u8::is_ascii_digit))
            .then(|| i16::from(x[0] - b'0') * 10 + i16::from(x[1] - b'0'))
    };
    let (h, m) = (num(&b[1..3])?, num(&b[4..6])?);
    if h > 14 || m > 59 {
        return None;
    }
    let v = h * 60 + m;
    Some(if b[0] == b'-' { -v } else { v })
}

fn offset_name(min: i16) -> String {
    if min == 0 {
        return "UTC".into();
    }
    let sign = if min < 0 { '-' } else { '+' };
    let a = min.unsigned_abs();
    format!("{sign}{:02}:{:02}", a / 60, a % 60)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM)` (or a number of Unix seconds) as Unix seconds.
pub fn parse_time(v: &Value) -> Result<i64, String> {
    if let Some(n) = v.as_i64() {
        return Ok(n);
    }
    let s = v
        .as_str()
        .ok_or("must be an RFC 3339 time like \"2026-11-23T00:00:00Z\" or Unix seconds")?;
    let bad = || format!("{s:?} is not an RFC 3339 time like \"2026-11-23T00:00:00Z\"");
    let b = s.as_bytes();
    // ASCII only: the fixed positions below are then character boundaries.
    if !s.is_ascii()
        || b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = &s[r];
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse::<i64>().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &r[digits..];
    }
    let off = if rest == "z" {
        Some(0)
    } else {
        parse_offset(rest).filter(|_| rest != "UTC")
    };
    let off = off.ok_or_else(bad)?;
    let days = days_from_civil(y, mo as u32, d as u32);
    Ok(days * 86_400 + h * 3600 + mi * 60 + se - i64::from(off) * 60)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Validates one campaign object (from the file or the admin API). Errors name the field:
/// `landing_url: scheme must be http or https`, `daily_budget: must be a number`,
/// `unknown field "dayly_budget"`. `what` prefixes errors about the id (`object 3`).
pub fn parse_object(obj: &Map<String, Value>, what: &str) -> Result<Campaign, String> {
    let id = match obj.get("id") {
        None => return Err(format!("{what}: missing field \"id\"")),
        Some(Value::String(s)) => s,
        Some(_) => return Err(format!("{what}: id: must be a string")),
    };
    if !valid_campaign_id(id.as_bytes()) {
        return Err(format!(
            "{what}: invalid id {id:?}: must be 1-64 characters of [A-Za-z0-9_.:-]"
        ));
    }
    let what = format!("campaign \"{id}\"");
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("{what}: unknown field {k:?}"));
    }
    let status = match obj.get("status") {
        None => return Err(format!("{what}: missing field \"status\"")),
        Some(Value::String(s)) => match Status::of_name(s) {
            Some(st) => st,
            None => {
                return Err(format!(
                    "{what}: status: {s:?} is not one of \"active\", \"paused\", \"ended\""
                ))
            }
        },
        Some(_) => return Err(format!("{what}: status: must be a string")),
    };
    let url = |key: &str| -> Result<Option<String>, String> {
        match obj.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => match Template::parse(s) {
                Ok(_) => Ok(Some(s.clone())),
                Err(e) => Err(format!("{what}: {key}: {}", e.0)),
            },
            Some(_) => Err(format!("{what}: {key}: must be a string")),
        }
    };
    let landing_url =
        url("landing_url")?.ok_or_else(|| format!("{what}: missing field \"landing_url\""))?;
    let mut c = Campaign::new(id, status, &landing_url);
    c.fallback_url = url("fallback_url")?;
    let field = |key: &str, r: Result<(), String>| r.map_err(|e| format!("{what}: {key}: {e}"));
    if let Some(v) = obj.get("start") {
        field("start", parse_time(v).map(|t| c.start = Some(t)))?;
    }
    if let Some(v) = obj.get("end") {
        field("end", parse_time(v).map(|t| c.end = Some(t)))?;
    }
    if let (Some(a), Some(b)) = (c.start, c.end) {
        if b <= a {
            return Err(format!("{what}: end: must be after start"));
        }
    }
    if let Some(v) = obj.get("publishers") {
        let list = v
            .as_array()
            .ok_or_else(|| format!("{what}: publishers: must be an array of strings"))?;
        for p in list {
            match p.as_str() {
                Some(s) if !s.is_empty() && s.len() <= 1024 => c.publishers.push(s.to_string()),
                _ => return Err(format!("{what}: publishers: must be an array of non-empty strings (at most 1024 bytes)")),
            }
        }
    }
    let money = |key: &str| -> Result<Option<u64>, String> {
        obj.get(key)
            .map(money_micros)
            .transpose()
            .map_err(|e| format!("{what}: {key}: {e}"))
    };
    c.pricing.cpc_micros = money("price_per_click")?.unwrap_or(0);
    c.pricing.cpm_micros = money("price_per_mille")?.unwrap_or(0);
    c.pricing.cpa_micros = money("price_per_conversion")?.unwrap_or(0);
    if let Some(v) = obj.get("revenue_share") {
        match v.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => {
                c.pricing.revenue_share_ppm = (x * 1e6).round() as u32
            }
            _ => {
                return Err(format!(
                    "{what}: revenue_share: must be a number from 0 to 1"
                ))
            }
        }
    }
    c.caps.daily_spend_micros = money("daily_budget")?;
    c.caps.total_spend_micros = money("total_budget")?;
    let counts = |key: &str| -> Result<Option<u64>, String> {
        obj.get(key)
            .map(count)
            .transpose()
            .map_err(|e| format!("{what}: {key}: {e}"))
    };
    c.caps.daily_clicks = counts("daily_clicks")?;
    c.caps.total_clicks = counts("total_clicks")?;
    c.caps.daily_impressions = counts("daily_impressions")?;
    c.caps.total_impressions = counts("total_impressions")?;
    if let Some(v) = obj.get("timezone") {
        let s = v
            .as_str()
            .ok_or_else(|| format!("{what}: timezone: must be a string"))?;
        c.utc_offset_minutes = parse_offset(s).ok_or_else(|| {
            format!("{what}: timezone: {s:?} is not \"UTC\" or an offset like \"+02:00\" (zone names are not supported)")
        })?;
    }
    Ok(c)
}

/// A campaigns file error: 1-based line of the offending object (or of the JSON syntax error),
/// and the reason, e.g. `line 7: campaign "c1": landing_url: scheme must be http or https`.
#[derive(Debug, PartialEq)]
pub struct FileError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for FileError {}

/// Parses and validates a campaigns file: JSON syntax, required fields, id charset
/// (`input::valid_campaign_id`), status, landing URL (`landing::Template::parse`), duplicate ids.
///
/// Messages: `object 3: missing field "id"`, `object 3: invalid id "a b": ...`,
/// `campaign "c1": missing field "landing_url"`, `campaign "c1": status: ...`,
/// `campaign "c1": landing_url: <reason>`, `campaign "c1": duplicate id (first at line 2)`;
/// JSON syntax errors give serde_json's message and line.
pub fn parse_file(text: &str) -> Result<Vec<Campaign>, FileError> {
    let raws: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| json_error(&e))?;
    let mut out: Vec<Campaign> = Vec::with_capacity(raws.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(raws.len());
    let mut lines = LineCounter::new(text);
    for (i, raw) in raws.iter().enumerate() {
        let line = lines.line_of(raw.get());
        let n = i + 1;
        let fail = |message: String| FileError { line, message };
        let obj: Map<String, Value> = match serde_json::from_str(raw.get()) {
            Ok(obj) => obj,
            Err(_) => return Err(fail(format!("object {n}: not a JSON object"))),
        };
        let c = parse_object(&obj, &format!("object {n}")).map_err(fail)?;
        let id = &c.id;
        let what = format!("campaign \"{id}\"");
        if let Some(&first) = seen.get(id.as_str()) {
            return Err(fail(format!(
                "{what}: duplicate id (first at line {first})"
            )));
        }
        seen.insert(id.clone(), line);
        out.push(c);
    }
    Ok(out)
}

/// serde_json's message without its " at line L column C" tail (the line goes to `FileError`).
fn json_error(e: &serde_json::Error) -> FileError {
    let full = e.to_string();
    let tail = format!(" at line {} column {}", e.line(), e.column());
    let message = match full.strip_suffix(&tail) {
        Some(m) => format!("{m} (column {})", e.column()),
        None => full,
    };
    FileError {
        line: e.line().max(1),
        message,
    }
}

/// Line numbers of slices of a text, for slices met in increasing order (linear overall).
struct LineCounter<'t> {
    text: &'t str,
    at: usize,
    line: usize,
}

impl<'t> LineCounter<'t> {
    fn new(text: &'t str) -> Self {
        LineCounter {
            text,
            at: 0,
            line: 1,
        }
    }

    /// The 1-based line where `part` starts; `part` must borrow from the text (else: line 1).
    fn line_of(&mut self, part: &str) -> usize {
        let off = (part.as_ptr() as usize).wrapping_sub(self.text.as_ptr() as usize);
        if off > self.text.len() {
            return 1;
        }
        if off < self.at {
            self.at = 0;
            self.line = 1;
        }
        let bytes = self.text.as_bytes();
        self.line += bytes[self.at..off].iter().filter(|&&c| c == b'\n').count();
        self.at = off;
        self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, status: Status, url: &str) -> Campaign {
        Campaign::new(id, status, url)
    }

    fn err(text: &str) -> FileError {
        parse_file(text).expect_err("accepted")
    }

    #[test]
    fn parses_a_file() {
        let text = r#"[
  {"id": "summer-sale", "status": "active",
   "landing_url": "https://shop.example.com/summer?pub={dim.publisher}&click={click_id}",
   "daily_budget": 100},
  {"id": "b.2:x_y", "status": "paused", "landing_url": "http://b.example.com/"},
  {"id": "c", "status": "ended", "landing_url": "https://c.example.com/{campaign}"}
]"#;
        let list = parse_file(text).unwrap();
        assert_eq!(
            list,
            vec![
                Campaign {
                    caps: Caps {
                        daily_spend_micros: Some(100_000_000),
                        ..Caps::default()
                    },
                    ..c(
                        "summer-sale",
                        Status::Active,
                        "https://shop.example.com/summer?pub={dim.publisher}&click={click_id}"
                    )
                },
                c("b.2:x_y", Status::Paused, "http://b.example.com/"),
                c("c", Status::Ended, "https://c.example.com/{campaign}"),
            ]
        );
        assert_eq!(parse_file("[]").unwrap(), vec![]);
        assert_eq!(parse_file(" \n[\n]\n").unwrap(), vec![]);
        // Escaped id spelling is the same id.
        assert_eq!(
            parse_file(r#"[{"id":"\u0061","status":"active","landing_url":"https://a/"}]"#)
                .unwrap()[0]
                .id,
            "a"
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = err("[\n  {\"id\": \"a\", \"status\": \"active\", \"landing_url\": \"https://a.example.com/\"},\n  {\"id\": \"b\", \"status\": \"active\" \"landing_url\": \"https://b.example.com/\"}\n]\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("expected"), "{e}");
        assert!(!e.message.contains("at line"), "{e}");
        let e = err("{\"id\": \"a\", \"status\": \"active\", \"landing_url\": \"https://a.example.com/\"}\n");
        assert_eq!(e.line, 1, "{e}");
        assert!(e.message.contains("sequence"), "{e}");
        assert_eq!(err("").line, 1);
        assert_eq!(err("\n\n[").line, 3);
        assert_eq!(err("[1,\n2,\n]").line, 3);
        assert_eq!(err("[] x").line, 1);
    }

    #[test]
    fn validation_errors_name_the_object_line() {
        let e = err("[\n  {\"id\": \"a\", \"status\": \"active\", \"landing_url\": \"https://a.example.com/\"},\n  {\"id\": \"b\", \"status\": \"active\"}\n]\n");
        assert_eq!(
            (e.line, e.message.as_str()),
            (3, "campaign \"b\": missing field \"landing_url\"")
        );
        let e = err("[\n  {\"id\": \"a\", \"status\": \"active\", \"landing_url\": \"ftp://a.example.com/\"}\n]");
        assert_eq!(e.line, 2);
        assert!(
            e.message
                .starts_with("campaign \"a\": landing_url: scheme must be http or https"),
            "{e}"
        );
        let e = err("[\n  {\"id\": \"a\", \"status\": \"active\", \"landing_url\": \"https://a.example.com/\"},\n  {\"id\": \"b\", \"status\": \"active\", \"landing_url\": \"https://{dim.publisher}.example.com/\"}\n]");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("host"), "{e}");
        let e = err("[\n  {\"id\": \"a\", \"status\": \"active\", \"landing_url\": \"https://a.example.com/?x={bogus}\"}\n]");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unknown macro \"{bogus}\""), "{e}");
        let e = err("[\n  {\"id\": \"a\", \"status\": \"active\", \"landing_url\": \"https://a.example.com/\"},\n  {\"id\": \"b\", \"status\": \"active\", \"landing_url\": \"https://b.example.com/\"},\n  {\"id\": \"a\", \"status\": \"paused\", \"landing_url\": \"https://c.example.com/\"}\n]");
        assert_eq!(
            (e.line, e.message.as_str()),
            (4, "campaign \"a\": duplicate id (first at line 2)")
        );
        let e = err("[\n  {\"id\": \"a\", \"status\": \"running\", \"landing_url\": \"https://a.example.com/\"}\n]");
        assert_eq!(e.line, 2);
        assert!(
            e.message.contains("status") && e.message.contains("running"),
            "{e}"
        );
        let e = err("[\n  {\"id\": \"a b/c\", \"status\": \"active\", \"landing_url\": \"https://a.example.com/\"}\n]");
        assert_eq!(e.line, 2);
        assert!(
            e.message.starts_with("object 1: invalid id \"a b/c\""),
            "{e}"
        );
        let e = err("[\n{\"id\":\"a\",\"status\":\"active\",\"landing_url\":\"https://a/\"},\n\n\n  {\"status\": \"active\"}]");
        assert_eq!(
            (e.line, e.message.as_str()),
            (5, "object 2: missing field \"id\"")
        );
        let e = err("[{\"id\":\"a\",\"status\":\"active\",\"landing_url\":\"https://a/\"}, 3]");
        assert_eq!(
            (e.line, e.message.as_str()),
            (1, "object 2: not a JSON object")
        );
        let e = err("[{\"id\": 5}]");
        assert_eq!(e.message, "object 1: id: must be a string");
        let e = err("[{\"id\": \"x\", \"status\": 1}]");
        assert_eq!(e.message, "campaign \"x\": status: must be a string");
        let e = err("[{\"id\": \"x\"}]");
        assert_eq!(e.message, "campaign \"x\": missing field \"status\"");
        let e = err("[{\"id\": \"x\", \"status\": \"active\", \"landing_url\": null}]");
        assert_eq!(e.message, "campaign \"x\": landing_url: must be a string");
        let e = err(&format!(
            "[{{\"id\": \"{}\", \"status\": \"active\", \"landing_url\": \"https://a/\"}}]",
            "x".repeat(65)
        ));
        assert!(e.message.contains("invalid id"));
        assert_eq!(e.to_string(), format!("line 1: {}", e.message));
    }

    #[test]
    fn budget_fields_roundtrip_and_errors() {
        let text = r#"[{"id": "s", "status": "active", "landing_url": "https://s.example/{click_id}",
            "fallback_url": "https://s.example/sorry", "start": "2026-11-01T00:00:00Z",
            "end": "2026-12-01T00:00:00+01:00", "publishers": ["pub-a", "pub-b"],
            "price_per_click": 0.25, "price_per_mille": 2.5, "price_per_conversion": 3,
            "revenue_share": 0.1, "daily_budget": 100, "total_budget": 1000.5,
            "daily_clicks": 400, "total_clicks": 4000, "daily_impressions": 1000000,
            "total_impressions": 9000000, "timezone": "-05:00"}]"#;
        let c = &parse_file(text).unwrap()[0];
        assert_eq!(c.fallback_url.as_deref(), Some("https://s.example/sorry"));
        assert_eq!(c.start, Some(1_793_491_200));
        assert_eq!(c.end, Some(1_796_083_200 - 3600));
        assert_eq!(c.publishers, ["pub-a", "pub-b"]);
        assert_eq!(
            c.pricing,
            Pricing {
                cpc_micros: 250_000,
                cpm_micros: 2_500_000,
                cpa_micros: 3_000_000,
                revenue_share_ppm: 100_000
            }
        );
        assert_eq!(c.caps.daily_spend_micros, Some(100_000_000));
        assert_eq!(c.caps.total_spend_micros, Some(1_000_500_000));
        assert_eq!(
            (c.caps.daily_clicks, c.caps.total_impressions),
            (Some(400), Some(9_000_000))
        );
        assert_eq!(c.utc_offset_minutes, -300);
        // to_json gives an object that parses to the same campaign.
        let j = c.to_json();
        let back = parse_object(j.as_object().unwrap(), "object 1").unwrap();
        assert_eq!(&back, c);
        assert_eq!(j["start"], "2026-11-01T00:00:00Z");
        assert_eq!(j["timezone"], "-05:00");

        let one = |extra: &str| {
            let t = format!(
                r#"[{{"id": "x", "status": "active", "landing_url": "https://x/"{extra}}}]"#
            );
            parse_file(&t).map(|v| v[0].clone()).map_err(|e| e.message)
        };
        assert_eq!(
            one(r#", "dayly_budget": 5"#).unwrap_err(),
            "campaign \"x\": unknown field \"dayly_budget\""
        );
        assert!(one(r#", "daily_budget": "5""#)
            .unwrap_err()
            .contains("daily_budget: must be a number"));
        assert!(one(r#", "daily_budget": -1"#)
            .unwrap_err()
            .contains("daily_budget"));
        assert!(one(r#", "daily_clicks": 1.5"#)
            .unwrap_err()
            .contains("daily_clicks: must be a whole number"));
        assert!(one(r#", "revenue_share": 2"#)
            .unwrap_err()
            .contains("revenue_share"));
        assert!(one(r#", "timezone": "Europe/Paris""#)
            .unwrap_err()
            .contains("timezone"));
        assert!(one(r#", "start": "yesterday""#)
            .unwrap_err()
            .contains("start: \"yesterday\" is not an RFC 3339 time"));
        assert!(one(r#", "start": 100, "end": 50"#)
            .unwrap_err()
            .contains("end: must be after start"));
        assert!(one(r#", "publishers": ["a", 3]"#)
            .unwrap_err()
            .contains("publishers"));
        assert!(one(r#", "fallback_url": "javascript:alert(1)""#)
            .unwrap_err()
            .contains("fallback_url"));
        assert_eq!(
            one(r#", "start": 1700000000, "timezone": "UTC""#)
                .unwrap()
                .start,
            Some(1_700_000_000)
        );
    }

    #[test]
    fn times_and_offsets() {
        use serde_json::json;
        assert_eq!(parse_time(&json!("1970-01-01T00:00:00Z")), Ok(0));
        assert_eq!(
            parse_time(&json!("2000-02-29T12:30:15.123+02:30")),
            Ok(951_827_415 - 9000)
        );
        assert_eq!(rfc3339(951_827_415), "2000-02-29T12:30:15Z");
        assert!(parse_time(&json!("2000-13-01T00:00:00Z")).is_err());
        assert!(parse_time(&json!("2000-01-01T00:00:00")).is_err());
        assert!(parse_time(&json!("2000-01-01T00:00:00UTC")).is_err());
        // Found by the campaign_file fuzz target: a multi-byte character across a cut.
        assert!(parse_time(&json!("2026-12-31T23:59:5\u{1df}")).is_err());
        assert!(parse_time(&json!("2026-12-31T23:59:59\u{e9}")).is_err());
        assert_eq!(parse_offset("+14:00"), Some(840));
        assert_eq!(parse_offset("-00:30"), Some(-30));
        assert_eq!(parse_offset("+15:00"), None);
        assert_eq!(parse_offset("0200"), None);
        for t in [-86_400 * 365 * 100, -1, 0, 1, 1_764_000_000, 4_102_444_800] {
            assert_eq!(parse_time(&json!(rfc3339(t))), Ok(t), "{t}");
        }
    }
}
