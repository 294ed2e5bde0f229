//! The event schema (version 1) and its MessagePack encoding. See `docs/event-schema.md`.
//!
//! The module encodes an [`EventRef`] (borrowed request data) with [`encode`] into a reused
//! buffer, then copies the bytes into the ring. The shipper decodes with [`decode`] into an
//! owned [`Event`], which serializes to JSON for the file sink.

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
    pub const ALL: [Kind; 5] = [Kind::Impression, Kind::Click, Kind::Conversion, Kind::Video, Kind::Custom];
    /// The index of this kind's counters in the ring header.
    pub fn index(self) -> usize { self as usize }
    /// The `type` string of the built-in kinds ("impression", ...); "custom" for Custom.
    pub fn name(self) -> &'static str { unimplemented!() }
    /// Maps a `type` string to its kind: unknown names are Custom.
    pub fn of_type(event_type: &str) -> Kind { unimplemented!() }
}

/// Flags: why an event is special. Stored as an array of strings under key `flags`
/// (absent when empty). Bit values are internal; names are the schema.
pub mod flags {
    pub const UNKNOWN_CAMPAIGN: u32 = 1 << 0;  // "unknown_campaign": no campaign with that id
    pub const INVALID_CAMPAIGN: u32 = 1 << 1;  // "invalid_campaign": missing id or bad charset/length
    pub const INACTIVE_CAMPAIGN: u32 = 1 << 2; // "inactive_campaign": campaign paused or ended
    pub const INVALID_VALUE: u32 = 1 << 3;     // "invalid_value": conversion value / watch time not a number
    pub const INVALID_VIDEO_EVENT: u32 = 1 << 4; // "invalid_video_event": not start|q1|mid|q3|complete
    pub const TRUNCATED: u32 = 1 << 5;         // "truncated": a field was cut to its length limit
    /// (bit, name) pairs in schema order.
    pub const NAMES: &[(u32, &str)] = &[
        (UNKNOWN_CAMPAIGN, "unknown_campaign"),
        (INVALID_CAMPAIGN, "invalid_campaign"),
        (INACTIVE_CAMPAIGN, "inactive_campaign"),
        (INVALID_VALUE, "invalid_value"),
        (INVALID_VIDEO_EVENT, "invalid_video_event"),
        (TRUNCATED, "truncated"),
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
}

/// Encodes `ev` as a MessagePack map into `out` (cleared first). Does not allocate when `out`
/// already has the capacity. Keys: v, id (bin 16), ts, type, campaign, click_id, dims, ip, ua,
/// referer, host, status, flags, value, video_event, watch_time; optional ones are omitted when None/empty.
pub fn encode(ev: &EventRef<'_>, out: &mut Vec<u8>) { unimplemented!() }

/// An event as the shipper decodes it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub v: u8,
    /// 32 lowercase hex characters in JSON; 16 bytes (bin) in MessagePack.
    pub id: [u8; 16],
    pub ts: u64,
    #[serde(rename = "type")]
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
}

#[derive(Debug)]
pub struct DecodeError(pub String);

/// Decodes one record's payload. Never panics on any input (fuzzed).
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> { unimplemented!() }

impl Event {
    /// The id as 32 lowercase hex characters.
    pub fn id_hex(&self) -> String { unimplemented!() }
    /// One line of newline-delimited JSON (without the newline): id as hex, dims as an object,
    /// ts as integer microseconds plus `time` as RFC 3339 UTC, absent optionals omitted.
    pub fn to_json_line(&self, out: &mut Vec<u8>) { unimplemented!() }
}
