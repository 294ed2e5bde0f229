//! The event schema (version 1) and its MessagePack encoding. See `docs/event-schema.md`.
//!
//! The module encodes an [`EventRef`] (borrowed request data) with [`encode`] into a reused
//! buffer, then copies the bytes into the ring. The shipper decodes with [`decode`] into an
//! owned [`Event`], which serializes to JSON for the file sink.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Schema version written in every event as key `v`.
pub const SCHEMA_VERSION: u8 = 1;

/// The built-in event kinds; anything else is a custom event type. The discriminant is the
/// index of the kind's counters in the ring header (`ring::COUNTER_KINDS` slots).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Impression = 0,
    Click = 1,
    Conversion = 2,
    Video = 3,
    Custom = 4,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Impression,
        Kind::Click,
        Kind::Conversion,
        Kind::Video,
        Kind::Custom,
    ];
    /// The index of this kind's counters in the ring header.
    pub fn index(self) -> usize {
        self as usize
    }
    /// The `type` string of the built-in kinds ("impression", ...); "custom" for Custom.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Impression => "impression",
            Kind::Click => "click",
            Kind::Conversion => "conversion",
            Kind::Video => "video",
            Kind::Custom => "custom",
        }
    }
    /// Maps a `type` string to its kind: unknown names are Custom.
    pub fn of_type(event_type: &str) -> Kind {
        match event_type {
            "impression" => Kind::Impression,
            "click" => Kind::Click,
            "conversion" => Kind::Conversion,
            "video" => Kind::Video,
            _ => Kind::Custom,
        }
    }
}

/// Flags: why an event is special. Stored as an array of strings under key `flags`
/// (absent when empty). Bit values are internal; names are the schema.
pub mod flags {
    pub const UNKNOWN_CAMPAIGN: u32 = 1 << 0; // "unknown_campaign": no campaign with that id
    pub const INVALID_CAMPAIGN: u32 = 1 << 1; // "invalid_campaign": missing id or bad charset/length
    pub const INACTIVE_CAMPAIGN: u32 = 1 << 2; // "inactive_campaign": campaign paused or ended
    pub const INVALID_VALUE: u32 = 1 << 3; // "invalid_value": conversion value / watch time not a number
    pub const INVALID_VIDEO_EVENT: u32 = 1 << 4; // "invalid_video_event": not start|q1|mid|q3|complete
    pub const TRUNCATED: u32 = 1 << 5; // "truncated": a field was cut to its length limit
    pub const OVER_BUDGET: u32 = 1 << 6; // "over_budget": a cap of the campaign was reached: not charged
    pub const OUTSIDE_SCHEDULE: u32 = 1 << 7; // "outside_schedule": before the campaign's start or after its end
    pub const PUBLISHER_NOT_ALLOWED: u32 = 1 << 8; // "publisher_not_allowed": not one of the campaign's publishers
    pub const DNT: u32 = 1 << 9; // "dnt": the request had DNT: 1 or Sec-GPC: 1; personal fields left out
    pub const UNSIGNED: u32 = 1 << 10; // "unsigned": `tracker_signed flag` and no valid signature
    pub const BOT: u32 = 1 << 11; // "bot": the User-Agent is a crawler or other bot: not charged
    pub const PREFETCH: u32 = 1 << 12; // "prefetch": a prefetch/preview request (Sec-Purpose...): not charged
    pub const DUPLICATE: u32 = 1 << 13; // "duplicate": seen within the duplicate window (tracker_duplicates): not charged
    /// (bit, name) pairs in schema order.
    pub const NAMES: &[(u32, &str)] = &[
        (UNKNOWN_CAMPAIGN, "unknown_campaign"),
        (INVALID_CAMPAIGN, "invalid_campaign"),
        (INACTIVE_CAMPAIGN, "inactive_campaign"),
        (INVALID_VALUE, "invalid_value"),
        (INVALID_VIDEO_EVENT, "invalid_video_event"),
        (TRUNCATED, "truncated"),
        (OVER_BUDGET, "over_budget"),
        (OUTSIDE_SCHEDULE, "outside_schedule"),
        (PUBLISHER_NOT_ALLOWED, "publisher_not_allowed"),
        (DNT, "dnt"),
        (UNSIGNED, "unsigned"),
        (BOT, "bot"),
        (PREFETCH, "prefetch"),
        (DUPLICATE, "duplicate"),
    ];
}

/// An event as the module has it: borrowed request bytes. Byte strings need not be UTF-8;
/// the encoder writes them as MessagePack `str` after replacing invalid UTF-8 with U+FFFD.
#[derive(Clone, Debug, Default)]
pub struct EventRef<'a> {
    pub id: [u8; 16],
    pub ts_us: u64,
    pub event_type: &'a [u8],
    pub campaign: &'a [u8],
    pub click_id: Option<&'a [u8]>,
    pub dims: &'a [(&'a [u8], &'a [u8])],
    pub ip: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub referer: Option<&'a [u8]>,
    pub host: Option<&'a [u8]>,
    pub status: u16,
    pub flags: u32,
    pub value: Option<f64>,
    pub video_event: Option<&'a [u8]>,
    pub watch_time: Option<f64>,
    /// What the banker charged the campaign for this event, in micro-units of its currency
    /// (omitted when nothing was charged).
    pub cost_micros: Option<u64>,
    /// The first-party visitor id (`tracker_userid`): 32 hex characters.
    pub uid: Option<&'a [u8]>,
    /// The User-Agent's browser family ([`crate::useragent::Class::browser`]).
    pub browser: Option<&'a str>,
    /// The User-Agent's OS family ([`crate::useragent::Class::os`]).
    pub os: Option<&'a str>,
    /// The User-Agent's device class ([`crate::useragent::Device::as_str`]).
    pub device: Option<&'a str>,
}

/// Longest byte string [`encode`] writes for one field: longer input is cut (the ring refuses
/// payloads this large anyway; this only keeps MessagePack's u32 lengths exact).
const MAX_FIELD: usize = (u32::MAX / 4) as usize;

/// Writes `bytes` as a MessagePack str, invalid UTF-8 sequences replaced by U+FFFD (one per
/// maximal invalid sequence, as `String::from_utf8_lossy`). Allocates nothing.
fn write_lossy_str(out: &mut Vec<u8>, bytes: &[u8]) {
    const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();
    let bytes = &bytes[..bytes.len().min(MAX_FIELD)];
    // ASCII (nearly every value) is valid UTF-8, and `is_ascii` checks a word at a time.
    if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
        write_str_len(out, bytes.len());
        out.extend_from_slice(bytes);
        return;
    }
    let mut len = 0usize;
    for chunk in bytes.utf8_chunks() {
        len += chunk.valid().len();
        if !chunk.invalid().is_empty() {
            len += REPLACEMENT.len();
        }
    }
    write_str_len(out, len);
    for chunk in bytes.utf8_chunks() {
        out.extend_from_slice(chunk.valid().as_bytes());
        if !chunk.invalid().is_empty() {
            out.extend_from_slice(REPLACEMENT);
        }
    }
}

/// A MessagePack str header for `len` bytes, as `rmp::encode::write_str_len` writes it (the
/// smallest of fixstr, str8, str16, str32), without going through its `Write` plumbing.
/// `len` is at most [`MAX_FIELD`].
#[inline]
fn write_str_len(out: &mut Vec<u8>, len: usize) {
    if len < 32 {
        out.push(0xa0 | len as u8);
    } else if len < 256 {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else if len < 65_536 {
        let l = (len as u16).to_be_bytes();
        out.extend_from_slice(&[0xda, l[0], l[1]]);
    } else {
        let l = (len as u32).to_be_bytes();
        out.extend_from_slice(&[0xdb, l[0], l[1], l[2], l[3]]);
    }
}

/// A key: every key of the schema is a fixstr (under 32 bytes).
#[inline]
fn write_key(out: &mut Vec<u8>, key: &str) {
    write_str_len(out, key.len());
    out.extend_from_slice(key.as_bytes());
}

/// Encodes `ev` as a MessagePack map into `out` (cleared first). Does not allocate when `out`
/// already has the capacity. Keys: v, id (bin 16), ts, type, campaign, click_id, dims, ip, ua,
/// referer, host, status, flags, value, video_event, watch_time, cost_micros, uid, browser, os,
/// device; optional ones are omitted when None/empty.
///
/// Keys are written in that order. Byte strings are written as MessagePack `str` with invalid
/// UTF-8 replaced by U+FFFD; flag bits not in [`flags::NAMES`] are ignored.
pub fn encode(ev: &EventRef<'_>, out: &mut Vec<u8>) {
    use rmp::encode::{write_array_len, write_bin, write_f64, write_map_len, write_uint};
    out.clear();
    let nflags = flags::NAMES
        .iter()
        .filter(|(bit, _)| ev.flags & bit != 0)
        .count();
    let optional = [
        ev.click_id.is_some(),
        !ev.dims.is_empty(),
        ev.ip.is_some(),
        ev.user_agent.is_some(),
        ev.referer.is_some(),
        ev.host.is_some(),
        nflags > 0,
        ev.value.is_some(),
        ev.video_event.is_some(),
        ev.watch_time.is_some(),
        ev.cost_micros.is_some(),
        ev.uid.is_some(),
        ev.browser.is_some(),
        ev.os.is_some(),
        ev.device.is_some(),
    ];
    let nkeys = 6 + optional.iter().filter(|&&b| b).count() as u32;
    let _ = write_map_len(out, nkeys);
    write_key(out, "v");
    let _ = write_uint(out, u64::from(SCHEMA_VERSION));
    write_key(out, "id");
    let _ = write_bin(out, &ev.id);
    write_key(out, "ts");
    let _ = write_uint(out, ev.ts_us);
    write_key(out, "type");
    write_lossy_str(out, ev.event_type);
    write_key(out, "campaign");
    write_lossy_str(out, ev.campaign);
    if let Some(click_id) = ev.click_id {
        write_key(out, "click_id");
        write_lossy_str(out, click_id);
    }
    if !ev.dims.is_empty() {
        write_key(out, "dims");
        let _ = write_map_len(out, ev.dims.len().min(u32::MAX as usize) as u32);
        for (name, value) in ev.dims.iter().take(u32::MAX as usize) {
            write_lossy_str(out, name);
            write_lossy_str(out, value);
        }
    }
    for (key, field) in [
        ("ip", ev.ip),
        ("ua", ev.user_agent),
        ("referer", ev.referer),
        ("host", ev.host),
    ] {
        if let Some(bytes) = field {
            write_key(out, key);
            write_lossy_str(out, bytes);
        }
    }
    write_key(out, "status");
    let _ = write_uint(out, u64::from(ev.status));
    if nflags > 0 {
        write_key(out, "flags");
        let _ = write_array_len(out, nflags as u32);
        for (bit, name) in flags::NAMES {
            if ev.flags & bit != 0 {
                let _ = rmp::encode::write_str(out, name);
            }
        }
    }
    if let Some(value) = ev.value {
        write_key(out, "value");
        let _ = write_f64(out, value);
    }
    if let Some(video_event) = ev.video_event {
        write_key(out, "video_event");
        write_lossy_str(out, video_event);
    }
    if let Some(watch_time) = ev.watch_time {
        write_key(out, "watch_time");
        let _ = write_f64(out, watch_time);
    }
    if let Some(cost) = ev.cost_micros {
        write_key(out, "cost_micros");
        let _ = write_uint(out, cost);
    }
    if let Some(uid) = ev.uid {
        write_key(out, "uid");
        write_lossy_str(out, uid);
    }
    for (key, field) in [
        ("browser", ev.browser),
        ("os", ev.os),
        ("device", ev.device),
    ] {
        if let Some(text) = field {
            write_key(out, key);
            write_lossy_str(out, text.as_bytes());
        }
    }
}

/// An event as the shipper decodes it.
///
/// Serde: `Serialize` writes the file-sink object (see [`Event::to_json_line`]); with a
/// non-human-readable serializer (rmp-serde) the id is 16 bytes and `time` is left out, which
/// gives the schema's MessagePack map. `Deserialize` reads either form (id as 32 hex characters
/// or 16 bytes, dims as a map or, in JSON, an array of pairs), ignores unknown keys (and
/// `time`), and refuses a `v` other than 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub v: u8,
    /// 32 lowercase hex characters in JSON; 16 bytes (bin) in MessagePack.
    pub id: [u8; 16],
    pub ts: u64,
    pub event_type: String,
    pub campaign: String,
    pub click_id: Option<String>,
    pub dims: Vec<(String, String)>,
    pub ip: Option<String>,
    pub ua: Option<String>,
    pub referer: Option<String>,
    pub host: Option<String>,
    pub status: u16,
    pub flags: Vec<String>,
    pub value: Option<f64>,
    pub video_event: Option<String>,
    pub watch_time: Option<f64>,
    /// Micro-units charged by the banker (absent: nothing charged).
    pub cost_micros: Option<u64>,
    /// The first-party visitor id (absent: none, or `tracker_userid` off, or DNT/GPC).
    pub uid: Option<String>,
    /// User-Agent families (absent: not classified).
    pub browser: Option<String>,
    pub os: Option<String>,
    pub device: Option<String>,
}

#[derive(Debug)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Nesting allowed when decoding, counting the event map (the schema needs 2; unknown future
/// keys get room).
const MAX_DEPTH: usize = 32;

/// Decodes one record's payload. Never panics on any input (fuzzed).
///
/// The payload must be exactly one MessagePack map (no trailing bytes) with `v` = 1 and the
/// required keys v, id (bin 16), ts, type, campaign and status; unknown keys are ignored.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    match bytes.first() {
        Some(0x80..=0x8f | 0xde | 0xdf) => {}
        Some(_) => return Err(DecodeError("not a MessagePack map".into())),
        None => return Err(DecodeError("empty payload".into())),
    }
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
    de.set_max_depth(MAX_DEPTH);
    let ev = Event::deserialize(&mut de).map_err(|e| DecodeError(e.to_string()))?;
    let used = de.position();
    if used != bytes.len() as u64 {
        return Err(DecodeError(format!(
            "{} trailing bytes after the event",
            bytes.len() as u64 - used
        )));
    }
    Ok(ev)
}

impl Event {
    /// The id as 32 lowercase hex characters.
    pub fn id_hex(&self) -> String {
        let hex = crate::id::to_hex(&self.id);
        hex.iter().map(|&c| c as char).collect()
    }

    /// The event time (from `ts`) in UTC.
    pub fn time(&self) -> UtcTime {
        UtcTime::from_unix_us(self.ts)
    }

    /// One line of newline-delimited JSON (without the newline): id as hex, dims as an object,
    /// ts as integer microseconds plus `time` as RFC 3339 UTC, absent optionals omitted.
    ///
    /// Appends to `out` (it does not clear it). Keys in order: v, id, time, ts, type, campaign,
    /// click_id, dims (always, `{}` when empty; a repeated name keeps its first value), ip, ua,
    /// referer, host, status, flags (omitted when empty), value, video_event, watch_time,
    /// cost_micros, uid, browser, os, device.
    /// A non-finite value or watch_time is written as null.
    pub fn to_json_line(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail, and every key is a string.
        let _ = serde_json::to_writer(&mut *out, self);
    }
}

/// A UTC calendar time with microseconds (proleptic Gregorian), e.g. for `time` and for
/// date/hour partitions. `Display` gives RFC 3339: `2024-05-01T12:34:56.789012Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
}

impl UtcTime {
    pub fn from_unix_us(ts_us: u64) -> UtcTime {
        let secs = ts_us / 1_000_000;
        let micros = (ts_us % 1_000_000) as u32;
        let days = (secs / 86_400) as i64;
        let sod = (secs % 86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        UtcTime {
            year,
            month,
            day,
            hour: sod / 3600,
            minute: sod / 60 % 60,
            second: sod % 60,
            micros,
        }
    }
}

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.micros
        )
    }
}

/// Days since 1970-01-01 to (year, month, day): Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

// ---- serde ----------------------------------------------------------------------------------

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct Display<T>(T);

impl<T: fmt::Display> Serialize for Display<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Dims as a map, a repeated name keeping its first value.
struct DimsMap<'a>(&'a [(String, String)]);

impl DimsMap<'_> {
    fn unique(&self) -> impl Iterator<Item = &(String, String)> {
        let d = self.0;
        d.iter()
            .enumerate()
            .filter(move |(i, (n, _))| !d[..*i].iter().any(|(m, _)| m == n))
            .map(|(_, p)| p)
    }
}

impl Serialize for DimsMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.unique().count()))?;
        for (n, v) in self.unique() {
            m.serialize_entry(n, v)?;
        }
        m.end()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hr = s.is_human_readable();
        let optional = [
            self.click_id.is_some(),
            self.ip.is_some(),
            self.ua.is_some(),
            self.referer.is_some(),
            self.host.is_some(),
            !self.flags.is_empty(),
            self.value.is_some(),
            self.video_event.is_some(),
            self.watch_time.is_some(),
            self.cost_micros.is_some(),
            self.uid.is_some(),
            self.browser.is_some(),
            self.os.is_some(),
            self.device.is_some(),
        ];
        // v, id, ts, type, campaign, dims, status (+ time in human-readable form).
        let n = 7 + usize::from(hr) + optional.iter().filter(|&&b| b).count();
        let mut m = s.serialize_map(Some(n))?;
        m.serialize_entry("v", &self.v)?;
        if hr {
            let hex = crate::id::to_hex(&self.id);
            m.serialize_entry("id", std::str::from_utf8(&hex).unwrap_or_default())?;
            m.serialize_entry("time", &Display(self.time()))?;
        } else {
            m.serialize_entry("id", &Bytes(&self.id))?;
        }
        m.serialize_entry("ts", &self.ts)?;
        m.serialize_entry("type", &self.event_type)?;
        m.serialize_entry("campaign", &self.campaign)?;
        if let Some(x) = &self.click_id {
            m.serialize_entry("click_id", x)?;
        }
        m.serialize_entry("dims", &DimsMap(&self.dims))?;
        for (key, field) in [
            ("ip", &self.ip),
            ("ua", &self.ua),
            ("referer", &self.referer),
            ("host", &self.host),
        ] {
            if let Some(x) = field {
                m.serialize_entry(key, x)?;
            }
        }
        m.serialize_entry("status", &self.status)?;
        if !self.flags.is_empty() {
            m.serialize_entry("flags", &self.flags)?;
        }
        if let Some(x) = &self.value {
            m.serialize_entry("value", x)?;
        }
        if let Some(x) = &self.video_event {
            m.serialize_entry("video_event", x)?;
        }
        if let Some(x) = &self.watch_time {
            m.serialize_entry("watch_time", x)?;
        }
        if let Some(x) = &self.cost_micros {
            m.serialize_entry("cost_micros", x)?;
        }
        if let Some(x) = &self.uid {
            m.serialize_entry("uid", x)?;
        }
        for (key, field) in [
            ("browser", &self.browser),
            ("os", &self.os),
            ("device", &self.device),
        ] {
            if let Some(x) = field {
                m.serialize_entry(key, x)?;
            }
        }
        m.end()
    }
}

/// The wire form: what `decode` and `Deserialize for Event` read before checks.
#[derive(Deserialize)]
struct Wire {
    v: u64,
    id: IdField,
    ts: u64,
    #[serde(rename = "type")]
    event_type: String,
    campaign: String,
    #[serde(default)]
    click_id: Option<String>,
    #[serde(default)]
    dims: DimsField,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    ua: Option<String>,
    #[serde(default)]
    referer: Option<String>,
    #[serde(default)]
    host: Option<String>,
    status: u16,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    video_event: Option<String>,
    #[serde(default)]
    watch_time: Option<f64>,
    #[serde(default)]
    cost_micros: Option<u64>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    browser: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    device: Option<String>,
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Event, D::Error> {
        let w = Wire::deserialize(d)?;
        if w.v != u64::from(SCHEMA_VERSION) {
            return Err(de::Error::custom(format_args!(
                "unsupported schema version {}",
                w.v
            )));
        }
        Ok(Event {
            v: SCHEMA_VERSION,
            id: w.id.0,
            ts: w.ts,
            event_type: w.event_type,
            campaign: w.campaign,
            click_id: w.click_id,
            dims: w.dims.0,
            ip: w.ip,
            ua: w.ua,
            referer: w.referer,
            host: w.host,
            status: w.status,
            flags: w.flags,
            value: w.value,
            video_event: w.video_event,
            watch_time: w.watch_time,
            cost_micros: w.cost_micros,
            uid: w.uid,
            browser: w.browser,
            os: w.os,
            device: w.device,
        })
    }
}

/// The id: 16 bytes (bin); in human-readable formats also 32 hex characters.
struct IdField([u8; 16]);

impl<'de> Deserialize<'de> for IdField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IdField, D::Error> {
        let hex_ok = d.is_human_readable();
        d.deserialize_any(IdVisitor { hex_ok })
    }
}

struct IdVisitor {
    hex_ok: bool,
}

impl<'de> Visitor<'de> for IdVisitor {
    type Value = IdField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.hex_ok {
            f.write_str("an id: 32 hex characters or 16 bytes")
        } else {
            f.write_str("an id: 16 bytes (bin)")
        }
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<IdField, E> {
        <[u8; 16]>::try_from(v)
            .map(IdField)
            .map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<IdField, E> {
        if !self.hex_ok {
            return Err(E::invalid_type(de::Unexpected::Str(v), &self));
        }
        crate::id::from_hex(v.as_bytes())
            .map(IdField)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdField, A::Error> {
        if !self.hex_ok {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(17, &self));
        }
        Ok(IdField(id))
    }
}

/// Dims: a map of name to value, in map order; in human-readable formats also `[[n, v], ...]`.
#[derive(Default)]
struct DimsField(Vec<(String, String)>);

impl<'de> Deserialize<'de> for DimsField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DimsField, D::Error> {
        let seq_ok = d.is_human_readable();
        d.deserialize_any(DimsVisitor { seq_ok })
    }
}

struct DimsVisitor {
    seq_ok: bool,
}

/// Preallocation cap for collections whose length comes from the input.
const PREALLOC_MAX: usize = 64;

impl<'de> Visitor<'de> for DimsVisitor {
    type Value = DimsField;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dims: a map of strings to strings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DimsField, A::Error> {
        let mut dims = Vec::with_capacity(map.size_hint().unwrap_or(0).min(PREALLOC_MAX));
        while let Some(pair) = map.next_entry::<String, String>()? {
            dims.push(pair);
        }
        Ok(DimsField(dims))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DimsField, A::Error> {
        if !self.seq_ok {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        let mut dims = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(PREALLOC_MAX));
        while let Some(pair) = seq.next_element::<(String, String)>()? {
            dims.push(pair);
        }
        Ok(DimsField(dims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_headers_as_rmp() {
        for len in (0..300).chain([65_535, 65_536, 65_537, 1 << 20, MAX_FIELD]) {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_str_len(&mut ours, len);
            rmp::encode::write_str_len(&mut theirs, len as u32).unwrap();
            assert_eq!(ours, theirs, "len {len}");
        }
        for text in [
            "",
            "v",
            "ascii text",
            "caf\u{e9}",
            &"x".repeat(40),
            &"\u{e9}".repeat(200),
            &"y".repeat(70_000),
        ] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            write_lossy_str(&mut ours, text.as_bytes());
            rmp::encode::write_str(&mut theirs, text).unwrap();
            assert_eq!(ours, theirs);
            ours.clear();
            theirs.clear();
            if text.len() < 32 {
                write_key(&mut ours, text);
                rmp::encode::write_str(&mut theirs, text).unwrap();
                assert_eq!(ours, theirs);
            }
        }
    }

    fn full_ref<'a>(dims: &'a [(&'a [u8], &'a [u8])]) -> EventRef<'a> {
        EventRef {
            id: [
                0x01, 0x8f, 0x3a, 0x4b, 0x5c, 0x6d, 0x71, 0x23, 0x84, 1, 2, 3, 4, 5, 6, 7,
            ],
            ts_us: 1_714_566_896_789_012,
            event_type: b"conversion",
            campaign: b"summer-sale",
            click_id: Some(b"0190abcdef"),
            dims,
            ip: Some(b"192.0.2.0"),
            user_agent: Some(b"Mozilla/5.0"),
            referer: Some(b"https://pub.example/a?x=1"),
            host: Some(b"t.example.com"),
            status: 200,
            flags: flags::TRUNCATED | flags::INVALID_VALUE,
            value: Some(12.5),
            video_event: Some(b"q1"),
            watch_time: Some(7.5),
            cost_micros: Some(250_000),
            uid: Some(b"0123456789abcdef0123456789abcdef"),
            browser: Some("firefox"),
            os: Some("linux"),
            device: Some("desktop"),
        }
    }

    /// The keys of an encoded map, in order.
    struct Keys(Vec<String>);
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                    let mut k = Vec::new();
                    while let Some((key, _)) = m.next_entry::<String, de::IgnoredAny>()? {
                        k.push(key);
                    }
                    Ok(Keys(k))
                }
            }
            d.deserialize_map(V)
        }
    }

    fn keys(bytes: &[u8]) -> Vec<String> {
        rmp_serde::from_slice::<Keys>(bytes).unwrap().0
    }

    #[test]
    fn kinds() {
        for k in Kind::ALL {
            assert_eq!(Kind::of_type(k.name()), k);
            assert!(k.index() < crate::ring::COUNTER_KINDS);
        }
        assert_eq!(Kind::of_type("signup"), Kind::Custom);
        assert_eq!(Kind::of_type("Click"), Kind::Custom);
        assert_eq!(Kind::of_type(""), Kind::Custom);
        assert_eq!(Kind::Video.name(), "video");
    }

    #[test]
    fn full_event_roundtrip() {
        let dims: &[(&[u8], &[u8])] = &[
            (b"publisher", b"a b"),
            (b"placement", b"x+y z"),
            (b"n", b""),
        ];
        let r = full_ref(dims);
        let mut buf = Vec::new();
        encode(&r, &mut buf);
        assert_eq!(
            keys(&buf),
            [
                "v",
                "id",
                "ts",
                "type",
                "campaign",
                "click_id",
                "dims",
                "ip",
                "ua",
                "referer",
                "host",
                "status",
                "flags",
                "value",
                "video_event",
                "watch_time",
                "cost_micros",
                "uid",
                "browser",
                "os",
                "device"
            ]
        );
        let e = decode(&buf).unwrap();
        assert_eq!(e.v, 1);
        assert_eq!(e.id, r.id);
        assert_eq!(e.ts, r.ts_us);
        assert_eq!(e.event_type, "conversion");
        assert_eq!(e.campaign, "summer-sale");
        assert_eq!(e.click_id.as_deref(), Some("0190abcdef"));
        assert_eq!(
            e.dims,
            vec![
                ("publisher".into(), "a b".into()),
                ("placement".into(), "x+y z".into()),
                ("n".into(), "".into())
            ]
        );
        assert_eq!(e.ip.as_deref(), Some("192.0.2.0"));
        assert_eq!(e.ua.as_deref(), Some("Mozilla/5.0"));
        assert_eq!(e.referer.as_deref(), Some("https://pub.example/a?x=1"));
        assert_eq!(e.host.as_deref(), Some("t.example.com"));
        assert_eq!(e.status, 200);
        assert_eq!(e.flags, ["invalid_value", "truncated"]);
        assert_eq!(e.value, Some(12.5));
        assert_eq!(e.video_event.as_deref(), Some("q1"));
        assert_eq!(e.watch_time, Some(7.5));
        assert_eq!(e.cost_micros, Some(250_000));
        assert_eq!(e.uid.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(
            (e.browser.as_deref(), e.os.as_deref(), e.device.as_deref()),
            (Some("firefox"), Some("linux"), Some("desktop"))
        );
        // Serde's MessagePack form of an Event is the same schema.
        let again = rmp_serde::to_vec_named(&e).unwrap();
        assert_eq!(decode(&again).unwrap(), e);
    }

    #[test]
    fn minimal_event_omits_optionals() {
        let r = EventRef {
            id: [7; 16],
            ts_us: 5,
            event_type: b"impression",
            status: 204,
            ..Default::default()
        };
        let mut buf = Vec::new();
        encode(&r, &mut buf);
        assert_eq!(keys(&buf), ["v", "id", "ts", "type", "campaign", "status"]);
        // Exact bytes: fixmap 6, "v" 1, "id" bin8 16, "ts" 5, "type", "campaign" "", "status" 204.
        let mut want = vec![0x86, 0xa1, b'v', 0x01, 0xa2, b'i', b'd', 0xc4, 16];
        want.extend_from_slice(&[7; 16]);
        want.extend_from_slice(&[0xa2, b't', b's', 0x05, 0xa4, b't', b'y', b'p', b'e', 0xaa]);
        want.extend_from_slice(b"impression");
        want.extend_from_slice(&[0xa8]);
        want.extend_from_slice(b"campaign");
        want.extend_from_slice(&[0xa0, 0xa6]);
        want.extend_from_slice(b"status");
        want.extend_from_slice(&[0xcc, 204]);
        assert_eq!(buf, want);
        let e = decode(&buf).unwrap();
        assert_eq!(e.campaign, "");
        assert!(e.dims.is_empty() && e.flags.is_empty());
        assert!(
            e.click_id.is_none()
                && e.ip.is_none()
                && e.ua.is_none()
                && e.referer.is_none()
                && e.host.is_none()
        );
        assert!(
            e.value.is_none()
                && e.video_event.is_none()
                && e.watch_time.is_none()
                && e.uid.is_none()
        );
        assert!(e.browser.is_none() && e.os.is_none() && e.device.is_none());
        // Unknown flag bits are ignored: no flags key.
        encode(
            &EventRef {
                flags: 1 << 31,
                ..r.clone()
            },
            &mut buf,
        );
        assert_eq!(keys(&buf).len(), 6);
        // Some(empty) is present.
        encode(
            &EventRef {
                click_id: Some(b""),
                ..r
            },
            &mut buf,
        );
        assert_eq!(decode(&buf).unwrap().click_id.as_deref(), Some(""));
    }

    #[test]
    fn dnt_flag() {
        assert!(flags::NAMES.contains(&(flags::DNT, "dnt")));
        let r = EventRef {
            flags: flags::DNT | flags::TRUNCATED,
            ..Default::default()
        };
        let mut buf = Vec::new();
        encode(&r, &mut buf);
        assert_eq!(decode(&buf).unwrap().flags, ["truncated", "dnt"]);
    }

    #[test]
    fn invalid_utf8_replaced() {
        let dims: &[(&[u8], &[u8])] = &[
            (b"p\xff", b"\xffok"),
            (b"q", b"caf\xc3\xa9 \xe2\x82 \xf0\x9f\x98\x80\xc3"),
        ];
        let r = EventRef {
            campaign: b"c\x80\x80d",
            user_agent: Some(b"\xed\xa0\x80x"),
            dims,
            ..Default::default()
        };
        let mut buf = Vec::new();
        encode(&r, &mut buf);
        let e = decode(&buf).unwrap();
        assert_eq!(e.campaign, "c\u{fffd}\u{fffd}d");
        assert_eq!(e.dims[0], ("p\u{fffd}".into(), "\u{fffd}ok".into()));
        assert_eq!(e.dims[1].1, "caf\u{e9} \u{fffd} \u{1f600}\u{fffd}");
        assert_eq!(
            e.ua.as_deref(),
            Some(String::from_utf8_lossy(b"\xed\xa0\x80x").as_ref())
        );
        for (_, v) in dims {
            let mut one = Vec::new();
            encode(
                &EventRef {
                    campaign: v,
                    ..Default::default()
                },
                &mut one,
            );
            assert_eq!(decode(&one).unwrap().campaign, String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn long_fields_use_wider_headers() {
        let long = vec![b'x'; 70_000];
        let dims: Vec<(&[u8], &[u8])> = (0..40).map(|_| (&b"d"[..], &long[..300])).collect();
        let r = EventRef {
            referer: Some(&long),
            dims: &dims,
            ts_us: u64::MAX,
            status: u16::MAX,
            ..Default::default()
        };
        let mut buf = Vec::new();
        encode(&r, &mut buf);
        let e = decode(&buf).unwrap();
        assert_eq!(e.referer.unwrap().len(), 70_000);
        assert_eq!(e.dims.len(), 40);
        assert_eq!(e.ts, u64::MAX);
        assert_eq!(e.status, u16::MAX);
    }

    #[test]
    fn encode_reuses_capacity() {
        let dims: &[(&[u8], &[u8])] = &[(b"publisher", b"\xffbad"), (b"n", b"1")];
        let r = full_ref(dims);
        let mut buf = Vec::with_capacity(1024);
        buf.extend_from_slice(b"old contents");
        let ptr = buf.as_ptr();
        encode(&r, &mut buf);
        assert_eq!(buf.as_ptr(), ptr);
        assert_eq!(buf.capacity(), 1024);
        assert!(decode(&buf).is_ok(), "cleared first");
    }

    /// Writes a map with the given (key, raw msgpack value) entries.
    fn map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        rmp::encode::write_map_len(&mut out, entries.len() as u32).unwrap();
        for (k, v) in entries {
            rmp::encode::write_str(&mut out, k).unwrap();
            out.extend_from_slice(v);
        }
        out
    }

    fn val_uint(x: u64) -> Vec<u8> {
        let mut o = Vec::new();
        rmp::encode::write_uint(&mut o, x).unwrap();
        o
    }
    fn val_str(s: &str) -> Vec<u8> {
        let mut o = Vec::new();
        rmp::encode::write_str(&mut o, s).unwrap();
        o
    }
    fn val_bin(b: &[u8]) -> Vec<u8> {
        let mut o = Vec::new();
        rmp::encode::write_bin(&mut o, b).unwrap();
        o
    }

    fn base() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("v", val_uint(1)),
            ("id", val_bin(&[1; 16])),
            ("ts", val_uint(123)),
            ("type", val_str("click")),
            ("campaign", val_str("c")),
            ("status", val_uint(302)),
        ]
    }

    fn with(changes: &[(&'static str, Option<Vec<u8>>)]) -> Vec<u8> {
        let mut m = base();
        for (k, v) in changes {
            m.retain(|(key, _)| key != k);
            if let Some(v) = v {
                m.push((k, v.clone()));
            }
        }
        map(&m)
    }

    fn decode_err(bytes: &[u8]) -> String {
        match decode(bytes) {
            Ok(e) => panic!("accepted: {e:?}"),
            Err(DecodeError(m)) => m,
        }
    }

    #[test]
    fn decode_accepts_unknown_keys_and_nil_optionals() {
        let mut nested = Vec::new();
        rmp::encode::write_map_len(&mut nested, 2).unwrap();
        rmp::encode::write_str(&mut nested, "a").unwrap();
        rmp::encode::write_array_len(&mut nested, 2).unwrap();
        rmp::encode::write_f32(&mut nested, 1.5).unwrap();
        rmp::encode::write_nil(&mut nested).unwrap();
        rmp::encode::write_uint(&mut nested, 9).unwrap();
        rmp::encode::write_bin(&mut nested, b"xyz").unwrap();
        let bytes = with(&[
            ("future_key", Some(nested)),
            ("time", Some(val_str("whatever"))),
            ("click_id", Some(vec![0xc0])),
            ("value", Some(val_uint(3))),
            ("watch_time", Some(vec![0xc0])),
            ("browser", Some(val_str("chrome"))),
            ("device", Some(vec![0xc0])),
        ]);
        let e = decode(&bytes).unwrap();
        assert_eq!(
            (e.browser.as_deref(), e.os.as_deref(), e.device.as_deref()),
            (Some("chrome"), None, None)
        );
        assert_eq!(e.event_type, "click");
        assert_eq!(e.click_id, None);
        assert_eq!(e.value, Some(3.0), "an integer value is a number too");
        assert_eq!(e.watch_time, None);
    }

    #[test]
    fn decode_rejects_bad_events() {
        assert!(decode_err(&[]).contains("empty"));
        assert!(decode_err(&[0x90]).contains("map"));
        assert!(decode_err(&val_str("x")).contains("map"));
        assert!(
            decode_err(&with(&[("v", Some(val_uint(2)))])).contains("unsupported schema version 2")
        );
        assert!(decode_err(&with(&[("v", None)])).contains("`v`"));
        assert!(decode_err(&with(&[("id", None)])).contains("`id`"));
        assert!(decode_err(&with(&[("ts", None)])).contains("`ts`"));
        assert!(decode_err(&with(&[("type", None)])).contains("`type`"));
        assert!(decode_err(&with(&[("campaign", None)])).contains("`campaign`"));
        assert!(decode_err(&with(&[("status", None)])).contains("`status`"));
        assert!(decode_err(&with(&[("id", Some(val_bin(&[1; 15])))])).contains("16 bytes"));
        assert!(decode_err(&with(&[(
            "id",
            Some(val_str("0123456789abcdef0123456789abcdef"))
        )]))
        .contains("16 bytes"));
        decode_err(&with(&[("ts", Some(val_str("1")))]));
        decode_err(&with(&[("ts", Some(vec![0xff]))]));
        decode_err(&with(&[("status", Some(val_uint(70_000)))]));
        decode_err(&with(&[("type", Some(val_uint(1)))]));
        decode_err(&with(&[("dims", Some(val_str("a=b")))]));
        decode_err(&with(&[(
            "dims",
            Some(vec![0x91, 0x92, 0xa1, b'a', 0xa1, b'b']),
        )]));
        decode_err(&with(&[("dims", Some(vec![0x81, 0xa1, b'a', 0x01]))]));
        decode_err(&with(&[("flags", Some(val_str("truncated")))]));
        decode_err(&with(&[("value", Some(val_str("1.5")))]));
        decode_err(&with(&[("campaign", Some(vec![0xa2, 0xff, 0xfe]))]));
        let mut trailing = with(&[]);
        trailing.push(0xc0);
        assert!(decode_err(&trailing).contains("trailing"));
        let truncated = with(&[]);
        for cut in 0..truncated.len() {
            decode_err(&truncated[..cut]);
        }
        // A duplicate key.
        let mut m = base();
        m.push(("ts", val_uint(5)));
        decode_err(&map(&m));
    }

    #[test]
    fn decode_deep_nesting_is_an_error_not_a_crash() {
        let mut bytes = with(&[]);
        bytes[0] += 1; // one more entry
        rmp::encode::write_str(&mut bytes, "deep").unwrap();
        bytes.extend_from_slice(&[0x91; 200_000]);
        bytes.push(0xc0);
        assert!(decode_err(&bytes).contains("depth"));
        // Moderate nesting in an unknown key is fine.
        let mut bytes = with(&[]);
        bytes[0] += 1;
        rmp::encode::write_str(&mut bytes, "nested").unwrap();
        bytes.extend_from_slice(&[0x91; 28]);
        bytes.push(0xc0);
        assert!(decode(&bytes).is_ok());
    }

    #[test]
    fn decode_claimed_huge_lengths() {
        // Claims of 4 G entries or bytes with nothing behind them.
        for tail in [
            &[0xdf, 0xff, 0xff, 0xff, 0xff][..],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0xc6, 0xff, 0xff, 0xff, 0xff],
            &[0xdb, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(decode(tail).is_err());
            let mut bytes = with(&[]);
            bytes[0] += 1;
            rmp::encode::write_str(&mut bytes, "x").unwrap();
            bytes.extend_from_slice(tail);
            assert!(decode(&bytes).is_err());
            let bytes = with(&[("dims", Some(tail.to_vec()))]);
            assert!(decode(&bytes).is_err());
        }
    }

    #[test]
    fn json_line() {
        let dims: &[(&[u8], &[u8])] = &[(b"publisher", b"a \"b\""), (b"n", b"1"), (b"n", b"2")];
        let mut buf = Vec::new();
        encode(&full_ref(dims), &mut buf);
        let e = decode(&buf).unwrap();
        let mut line = b"prefix ".to_vec();
        e.to_json_line(&mut line);
        let line = String::from_utf8(line).unwrap();
        assert_eq!(
            line,
            concat!(
                "prefix ",
                r#"{"v":1,"id":"018f3a4b5c6d71238401020304050607","time":"2024-05-01T12:34:56.789012Z","ts":1714566896789012,"#,
                r#""type":"conversion","campaign":"summer-sale","click_id":"0190abcdef","dims":{"publisher":"a \"b\"","n":"1"},"#,
                r#""ip":"192.0.2.0","ua":"Mozilla/5.0","referer":"https://pub.example/a?x=1","host":"t.example.com","status":200,"#,
                r#""flags":["invalid_value","truncated"],"value":12.5,"video_event":"q1","watch_time":7.5,"cost_micros":250000,"#,
                r#""uid":"0123456789abcdef0123456789abcdef","browser":"firefox","os":"linux","device":"desktop"}"#
            )
        );
        assert!(!line.contains('\n'));
        // And back.
        let back: Event = serde_json::from_str(&line["prefix ".len()..]).unwrap();
        let mut want = e.clone();
        want.dims.pop(); // the repeated name kept its first value
        assert_eq!(back, want);

        let minimal = Event {
            v: 1,
            id: [0xab; 16],
            ts: 0,
            event_type: "impression".into(),
            campaign: "".into(),
            click_id: None,
            dims: vec![],
            ip: None,
            ua: None,
            referer: None,
            host: None,
            status: 200,
            flags: vec![],
            value: None,
            video_event: None,
            watch_time: None,
            cost_micros: None,
            uid: None,
            browser: None,
            os: None,
            device: None,
        };
        let mut line = Vec::new();
        minimal.to_json_line(&mut line);
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            r#"{"v":1,"id":"abababababababababababababababab","time":"1970-01-01T00:00:00.000000Z","ts":0,"type":"impression","campaign":"","dims":{},"status":200}"#
        );
        assert_eq!(serde_json::from_slice::<Event>(&line).unwrap(), minimal);
        assert_eq!(minimal.id_hex(), "abababababababababababababababab");
        // JSON dims as pairs, id as uppercase hex.
        let alt = r#"{"v":1,"id":"ABABABABABABABABABABABABABABABAB","ts":0,"type":"impression","campaign":"","dims":[["a","b"]],"status":200}"#;
        let alt: Event = serde_json::from_str(alt).unwrap();
        assert_eq!(alt.dims, vec![("a".to_string(), "b".to_string())]);
        assert!(serde_json::from_str::<Event>(r#"{"v":2,"id":"abababababababababababababababab","ts":0,"type":"i","campaign":"","status":200}"#).is_err());
    }

    #[test]
    fn utc_times() {
        let t = |us: u64| UtcTime::from_unix_us(us).to_string();
        assert_eq!(t(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(t(1), "1970-01-01T00:00:00.000001Z");
        assert_eq!(t(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(t(951_868_799_999_999), "2000-02-29T23:59:59.999999Z");
        assert_eq!(t(1_735_689_599_999_999), "2024-12-31T23:59:59.999999Z");
        assert_eq!(t(1_735_689_600_000_000), "2025-01-01T00:00:00.000000Z");
        assert_eq!(t(4_107_542_400_000_000), "2100-03-01T00:00:00.000000Z");
        assert_eq!(t(253_402_300_799_999_999), "9999-12-31T23:59:59.999999Z");
        let _ = t(u64::MAX); // far future: no panic
                             // Against a day-by-day walk of the calendar.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..200_000u64 {
            let u = UtcTime::from_unix_us(days * 86_400_000_000 + 3_723_000_004);
            assert_eq!(
                (u.year, u.month, u.day, u.hour, u.minute, u.second, u.micros),
                (y, m, d, 1, 2, 3, 4)
            );
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ][m as usize - 1];
            d += 1;
            if d > len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }
}
