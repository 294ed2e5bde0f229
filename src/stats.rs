//! `tracker_stats`: per-campaign and module-wide counters as JSON, Prometheus text or a live
//! HTML dashboard (see `docs/stats.md`).
//!
//! Everything is read at request time: the campaign counters from the shared zone (the
//! banker's accounts, in pages, under the zone's mutex that only admin writers also take; the
//! tracking path never does) and the module-wide counters from the ring header (atomics). The
//! dashboard is a static page (`src/dashboard.html`) that fetches the JSON every second.

use core::fmt::Write as _;

use ngx::ffi::{
    ngx_http_discard_request_body, ngx_http_request_t, ngx_int_t, NGX_ERROR, NGX_HTTP_GET,
    NGX_HTTP_HEAD, NGX_OK,
};
use ngx::http::HttpModuleMainConf;
use serde_json::{json, Map, Value};
use tracker_core::banker::Counters;
use tracker_core::campaign::Status as CampaignStatus;
use tracker_core::event::Kind;
use tracker_core::input::{percent_decode, ArgIndex};
use tracker_core::limits::Reason;
use tracker_core::ring::{RingStats, COUNTER_KINDS};

use crate::campaigns::Store;
use crate::Module;

/// The dashboard, served as is by `?format=html`.
static DASHBOARD: &str = include_str!("dashboard.html");

/// Campaigns per JSON answer: default and most (`?limit=`).
pub const JSON_DEFAULT_LIMIT: usize = 100;
pub const JSON_MAX_LIMIT: usize = 1000;
/// Campaigns per Prometheus answer: default and most (`?limit=`). About 1 KB of text each.
pub const PROMETHEUS_DEFAULT_LIMIT: usize = 10_000;
pub const PROMETHEUS_MAX_LIMIT: usize = 100_000;
/// Campaigns read from the zone per lock hold (the zone's mutex is released between pages,
/// so an admin write waits for at most one page).
const PAGE: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Prometheus,
    Html,
}

#[derive(Debug)]
struct Query {
    format: Format,
    /// None: the format's default.
    limit: Option<usize>,
    cursor: usize,
    campaign: Option<String>,
}

/// The query string's `format`, `limit`, `cursor` and `campaign`.
fn parse_query(raw: &[u8]) -> Result<Query, String> {
    let args = ArgIndex::new(raw);
    let decoded = |name: &[u8]| {
        args.get(name).map(|v| {
            let mut out = Vec::new();
            percent_decode(v, &mut out);
            String::from_utf8_lossy(&out).into_owned()
        })
    };
    let format = match decoded(b"format").as_deref() {
        None | Some("") | Some("json") => Format::Json,
        Some("prometheus") => Format::Prometheus,
        Some("html") => Format::Html,
        Some(other) => {
            return Err(format!(
                "unknown format \"{}\": it must be json, prometheus or html",
                clip(other)
            ))
        }
    };
    let number = |name: &str, v: Option<String>| -> Result<Option<usize>, String> {
        match v {
            None => Ok(None),
            Some(s) if !s.is_empty() && s.len() <= 19 && s.bytes().all(|c| c.is_ascii_digit()) => s
                .parse()
                .map(Some)
                .map_err(|_| format!("invalid {name} \"{}\"", clip(&s))),
            Some(s) => Err(format!(
                "invalid {name} \"{}\": it must be a non-negative integer",
                clip(&s)
            )),
        }
    };
    let limit = number("limit", decoded(b"limit"))?;
    let cursor = number("cursor", decoded(b"cursor"))?.unwrap_or(0);
    let campaign = decoded(b"campaign").filter(|c| !c.is_empty());
    Ok(Query {
        format,
        limit,
        cursor,
        campaign,
    })
}

/// At most 64 characters of a client's value, for an error message.
fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The limit a format uses: the default when none is given, at most the format's maximum.
fn effective_limit(format: Format, asked: Option<usize>) -> usize {
    let (default, max) = match format {
        Format::Prometheus => (PROMETHEUS_DEFAULT_LIMIT, PROMETHEUS_MAX_LIMIT),
        _ => (JSON_DEFAULT_LIMIT, JSON_MAX_LIMIT),
    };
    asked.unwrap_or(default).min(max)
}

/// One campaign's line of the stats.
struct Row {
    id: String,
    status: CampaignStatus,
    c: Counters,
}

/// What an answer reports, read from the zone and the ring.
struct Snapshot {
    time_us: u64,
    count: u64,
    zone_size: usize,
    zone_free: usize,
    generation: u64,
    ring: Option<RingStats>,
    rows: Vec<Row>,
    limit: usize,
    cursor: usize,
    next: Option<usize>,
}

/// The name of counter slot `i` of the ring header: the kind's, or `slotN` for the slots no
/// kind uses (reported only when not zero, as `tracker-shipper stats` does).
fn slot_name(i: usize) -> Option<&'static str> {
    Kind::ALL.iter().find(|k| k.index() == i).map(|k| k.name())
}

const SLOT_NAMES: [&str; COUNTER_KINDS] = [
    "slot0", "slot1", "slot2", "slot3", "slot4", "slot5", "slot6", "slot7",
];

/// `(type, value)` for the named slots, and the others when they are not zero.
fn per_type(a: &[u64; COUNTER_KINDS]) -> impl Iterator<Item = (&'static str, u64)> + '_ {
    (0..COUNTER_KINDS).filter_map(move |i| match slot_name(i) {
        Some(n) => Some((n, a[i])),
        None if a[i] != 0 => Some((SLOT_NAMES[i], a[i])),
        None => None,
    })
}

fn ring_used(s: &RingStats) -> u64 {
    s.producer_pos
        .saturating_sub(s.consumer_pos)
        .min(s.data_size)
}

fn fill_ratio(s: &RingStats) -> f64 {
    if s.data_size == 0 {
        0.0
    } else {
        ring_used(s) as f64 / s.data_size as f64
    }
}

fn micros(v: u64) -> f64 {
    v as f64 / 1e6
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Reads what the answer needs. Err(404 message) for an unknown `?campaign=`.
fn snapshot(store: &Store, ring: Option<RingStats>, q: &Query) -> Result<Snapshot, String> {
    let limit = effective_limit(q.format, q.limit);
    let mut rows = Vec::new();
    let mut next = None;
    if let Some(id) = &q.campaign {
        match store.get(id) {
            Some((c, counters)) => rows.push(Row {
                id: c.id,
                status: c.status,
                c: counters,
            }),
            None => return Err(format!("no campaign \"{}\"", clip(id))),
        }
    } else if limit > 0 {
        let mut from = q.cursor;
        loop {
            let want = (limit - rows.len()).min(PAGE);
            let (page, more) = store.page_counters(from, want);
            rows.extend(
                page.into_iter()
                    .map(|(id, status, c)| Row { id, status, c }),
            );
            match more {
                Some(at) if rows.len() < limit => from = at,
                Some(at) => {
                    next = Some(at);
                    break;
                }
                None => break,
            }
        }
    }
    let (count, zone_size, generation) = store.summary();
    Ok(Snapshot {
        time_us: now_us(),
        count,
        zone_size,
        zone_free: store.zone_free_bytes(),
        generation,
        ring,
        rows,
        limit,
        cursor: q.cursor,
        next,
    })
}

fn counters_json(a: &[u64; COUNTER_KINDS]) -> Value {
    let mut m = Map::new();
    for (name, v) in per_type(a) {
        m.insert(name.into(), v.into());
    }
    m.insert("total".into(), a.iter().sum::<u64>().into());
    Value::Object(m)
}

fn row_json(r: &Row) -> Value {
    let c = &r.c;
    json!({
        "id": r.id,
        "status": r.status.name(),
        "impressions": c.impressions,
        "clicks": c.clicks,
        "conversions": c.conversions,
        "video_completes": c.video_completes,
        "spend": micros(c.spend_micros),
        "spend_micros": c.spend_micros,
        "spend_today": micros(c.spend_today_micros),
        "spend_today_micros": c.spend_today_micros,
        "impressions_today": c.impressions_today,
        "clicks_today": c.clicks_today,
        "over_budget": c.over_budget,
        "rejected": c.rejected,
        "value": micros(c.value_micros),
        "value_micros": c.value_micros,
    })
}

/// Requests refused as invalid, by reason name (every reason, zeros included).
fn invalid_json(r: &RingStats) -> Value {
    Value::Object(
        Reason::ALL
            .iter()
            .map(|re| (re.name().to_string(), json!(r.invalid[re.index()])))
            .collect(),
    )
}

fn render_json(s: &Snapshot) -> Vec<u8> {
    let ring = match &s.ring {
        None => Value::Null,
        Some(r) => json!({
            "size": r.data_size,
            "used": ring_used(r),
            "fill_ratio": fill_ratio(r),
            "producer_pos": r.producer_pos,
            "consumer_pos": r.consumer_pos,
            "written": counters_json(&r.written),
            "dropped_full": counters_json(&r.dropped_full),
            "dropped_too_large": counters_json(&r.dropped_too_large),
            "rejected": counters_json(&r.rejected),
            "duplicates": counters_json(&r.duplicates),
            "duplicate_evictions": r.duplicate_evictions,
            "abandoned": r.abandoned,
            "invalid": invalid_json(r),
        }),
    };
    let v = json!({
        "time": s.time_us as f64 / 1e6,
        "campaigns": {
            "count": s.count,
            "limit": s.limit,
            "cursor": s.cursor.to_string(),
            "next": s.next.map(|n| n.to_string()),
            "items": s.rows.iter().map(row_json).collect::<Vec<_>>(),
        },
        "ring": ring,
        "zone": {
            "size": s.zone_size,
            "free": s.zone_free,
            "campaigns": s.count,
            "generation": s.generation,
        },
    });
    let mut out = serde_json::to_vec(&v).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

/// A label value in the text exposition format: `\`, `"` and newlines escaped.
fn escape_label(v: &str, out: &mut String) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl core::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label(v, out);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Per-campaign metric families: name, type, help, value.
type CampaignMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Counters) -> u64,
);
const CAMPAIGN_METRICS: [CampaignMetric; 11] = [
    ("tracker_campaign_impressions_total", "counter", "Impressions of the campaign (every impression event, charged or not).", |c| c.impressions),
    ("tracker_campaign_clicks_total", "counter", "Clicks of the campaign (every click event, charged or not).", |c| c.clicks),
    ("tracker_campaign_conversions_total", "counter", "Conversions of the campaign.", |c| c.conversions),
    ("tracker_campaign_video_completes_total", "counter", "Video complete events of the campaign.", |c| c.video_completes),
    ("tracker_campaign_spend_micros_total", "counter", "Spend charged to the campaign, in millionths of the currency unit.", |c| c.spend_micros),
    ("tracker_campaign_conversion_value_micros_total", "counter", "Sum of the campaign's conversion values, in millionths of the currency unit.", |c| c.value_micros),
    ("tracker_campaign_over_budget_total", "counter", "Events of the campaign refused a charge because a cap was reached.", |c| c.over_budget),
    ("tracker_campaign_rejected_total", "counter", "Events of the campaign while it could not take them (paused, ended, outside its schedule, publisher not allowed).", |c| c.rejected),
    ("tracker_campaign_spend_today_micros", "gauge", "Spend charged to the campaign today (its time zone), in millionths of the currency unit.", |c| c.spend_today_micros),
    ("tracker_campaign_impressions_today", "gauge", "Impressions charged to the campaign today (its time zone).", |c| c.impressions_today),
    ("tracker_campaign_clicks_today", "gauge", "Clicks charged to the campaign today (its time zone).", |c| c.clicks_today),
];

fn render_prometheus(s: &Snapshot) -> Vec<u8> {
    let mut out = String::with_capacity(4096 + s.rows.len() * 1100);
    family(
        &mut out,
        "tracker_campaigns",
        "gauge",
        "Campaigns in the shared zone.",
    );
    sample(&mut out, "tracker_campaigns", &[], s.count);
    family(
        &mut out,
        "tracker_zone_size_bytes",
        "gauge",
        "Size of the campaign zone.",
    );
    sample(&mut out, "tracker_zone_size_bytes", &[], s.zone_size);
    family(
        &mut out,
        "tracker_zone_free_bytes",
        "gauge",
        "Free pages of the campaign zone, in bytes.",
    );
    sample(&mut out, "tracker_zone_free_bytes", &[], s.zone_free);
    family(
        &mut out,
        "tracker_zone_changes_total",
        "counter",
        "Changes made to the campaign zone (its generation).",
    );
    sample(&mut out, "tracker_zone_changes_total", &[], s.generation);
    if let Some(r) = &s.ring {
        family(
            &mut out,
            "tracker_ring_size_bytes",
            "gauge",
            "Data size of the event ring.",
        );
        sample(&mut out, "tracker_ring_size_bytes", &[], r.data_size);
        family(
            &mut out,
            "tracker_ring_used_bytes",
            "gauge",
            "Bytes of the ring holding events not yet shipped.",
        );
        sample(&mut out, "tracker_ring_used_bytes", &[], ring_used(r));
        family(
            &mut out,
            "tracker_ring_fill_ratio",
            "gauge",
            "Fraction of the ring holding events not yet shipped (0 to 1).",
        );
        sample(&mut out, "tracker_ring_fill_ratio", &[], fill_ratio(r));
        family(
            &mut out,
            "tracker_ring_events_written_total",
            "counter",
            "Events written into the ring, by event type.",
        );
        for (t, v) in per_type(&r.written) {
            sample(
                &mut out,
                "tracker_ring_events_written_total",
                &[("type", t)],
                v,
            );
        }
        family(&mut out, "tracker_ring_events_dropped_total", "counter", "Events not written into the ring, by reason (full: no room; too_large: larger than the ring takes) and event type.");
        for (reason, a) in [
            ("full", &r.dropped_full),
            ("too_large", &r.dropped_too_large),
        ] {
            for (t, v) in per_type(a) {
                sample(
                    &mut out,
                    "tracker_ring_events_dropped_total",
                    &[("reason", reason), ("type", t)],
                    v,
                );
            }
        }
        family(&mut out, "tracker_ring_events_rejected_total", "counter", "Events only counted, not stored, on purpose (tracker_unknown_campaign count), by event type.");
        for (t, v) in per_type(&r.rejected) {
            sample(
                &mut out,
                "tracker_ring_events_rejected_total",
                &[("type", t)],
                v,
            );
        }
        family(&mut out, "tracker_ring_events_duplicate_total", "counter", "Duplicates seen within the window (tracker_duplicates), stored flagged or only counted, by event type.");
        for (t, v) in per_type(&r.duplicates) {
            sample(
                &mut out,
                "tracker_ring_events_duplicate_total",
                &[("type", t)],
                v,
            );
        }
        family(&mut out, "tracker_duplicate_evictions_total", "counter", "Entries of the duplicate set pushed out while still in their window: tracker_duplicates_zone is too small.");
        sample(
            &mut out,
            "tracker_duplicate_evictions_total",
            &[],
            r.duplicate_evictions,
        );
        family(&mut out, "tracker_invalid_requests_total", "counter", "Requests refused as invalid (tracker_limits, tracker_invalid reject), never stored, by reason.");
        for re in Reason::ALL {
            sample(
                &mut out,
                "tracker_invalid_requests_total",
                &[("reason", re.name())],
                r.invalid[re.index()],
            );
        }
        family(
            &mut out,
            "tracker_ring_records_abandoned_total",
            "counter",
            "Ring records the shipper skipped because their writer died before committing them.",
        );
        sample(
            &mut out,
            "tracker_ring_records_abandoned_total",
            &[],
            r.abandoned,
        );
    }
    family(
        &mut out,
        "tracker_stats_campaigns_exported",
        "gauge",
        "Campaigns whose metrics this answer holds (see ?limit= and ?cursor=).",
    );
    sample(
        &mut out,
        "tracker_stats_campaigns_exported",
        &[],
        s.rows.len(),
    );
    if let Some(n) = s.next {
        let _ = writeln!(
            out,
            "# tracker: {} of {} campaigns in this answer (limit {}); the next ones: ?format=prometheus&cursor={n}",
            s.rows.len(),
            s.count,
            s.limit
        );
    }
    family(
        &mut out,
        "tracker_campaign_info",
        "gauge",
        "Always 1, for each campaign, with its status.",
    );
    for r in &s.rows {
        sample(
            &mut out,
            "tracker_campaign_info",
            &[("campaign", &r.id), ("status", r.status.name())],
            1,
        );
    }
    for (name, kind, help, get) in CAMPAIGN_METRICS {
        family(&mut out, name, kind, help);
        for r in &s.rows {
            sample(&mut out, name, &[("campaign", &r.id)], get(&r.c));
        }
    }
    out.into_bytes()
}

fn error_json(msg: &str) -> Vec<u8> {
    let mut out = serde_json::to_vec(&json!({ "error": msg })).unwrap_or_default();
    out.push(b'\n');
    out
}

// ---------------------------------------------------------------------------------------------
// The answer
// ---------------------------------------------------------------------------------------------

const JSON_TYPE: &[u8] = b"application/json";
const PROMETHEUS_TYPE: &[u8] = b"text/plain; version=0.0.4; charset=utf-8";
const HTML_TYPE: &[u8] = b"text/html; charset=utf-8";
/// The dashboard needs nothing but its own inline script and style and the JSON of its own
/// location.
const HTML_CSP: &[u8] = b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

enum Body {
    Static(&'static [u8]),
    Owned(Vec<u8>),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Static(b) => b,
            Body::Owned(v) => v,
        }
    }
}

/// Sends a whole answer: status, content type, no-store, nosniff, extra headers, body (none
/// for HEAD), through the module's one body sender.
///
/// # Safety
/// `r` is a live request in its content handler.
unsafe fn send(
    r: &mut ngx_http_request_t,
    status: usize,
    content_type: &'static [u8],
    extra: &[(&'static [u8], &'static [u8])],
    body: Body,
) -> ngx_int_t {
    let mut headers: Vec<(&'static [u8], &[u8])> = vec![(b"X-Content-Type-Options", b"nosniff")];
    headers.extend(extra.iter().map(|&(k, v)| (k, v)));
    // SAFETY: r is live and in its content handler.
    unsafe { crate::response::with_body(r, status, content_type, &headers, body.bytes()) }
}

/// The content handler of a `tracker_stats` location.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls the content handler with a live request.
    let Some(r) = (unsafe { r.as_mut() }) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: r is live; a body is read and dropped, never parsed.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    if r.method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as usize == 0 {
        let body = Body::Owned(error_json(
            "method not allowed: the stats answer GET and HEAD",
        ));
        // SAFETY: r is live and in its content handler.
        return unsafe { send(r, 405, JSON_TYPE, &[(b"Allow", b"GET, HEAD")], body) };
    }
    let raw: &[u8] = if r.args.len == 0 || r.args.data.is_null() {
        &[]
    } else {
        // SAFETY: the query string lies in the request's buffers for its whole life.
        unsafe { core::slice::from_raw_parts(r.args.data, r.args.len) }
    };
    let q = match parse_query(raw) {
        Ok(q) => q,
        // SAFETY: r is live and in its content handler.
        Err(msg) => return unsafe { send(r, 400, JSON_TYPE, &[], Body::Owned(error_json(&msg))) },
    };
    if q.format == Format::Html {
        // SAFETY: r is live and in its content handler.
        return unsafe {
            send(
                r,
                200,
                HTML_TYPE,
                &[(b"Content-Security-Policy", HTML_CSP)],
                Body::Static(DASHBOARD.as_bytes()),
            )
        };
    }
    let Some(mcf) = Module::main_conf(r) else {
        return NGX_ERROR as ngx_int_t;
    };
    let Some(store) = mcf.campaigns.as_ref() else {
        let body = Body::Owned(error_json("no tracker_campaigns zone"));
        // SAFETY: r is live and in its content handler.
        return unsafe { send(r, 500, JSON_TYPE, &[], body) };
    };
    let ring = mcf.ring.as_ref().map(|f| f.ring().stats());
    let snap = match snapshot(store, ring, &q) {
        Ok(s) => s,
        // SAFETY: r is live and in its content handler.
        Err(msg) => return unsafe { send(r, 404, JSON_TYPE, &[], Body::Owned(error_json(&msg))) },
    };
    // SAFETY (both): r is live and in its content handler.
    match q.format {
        Format::Prometheus => unsafe {
            send(
                r,
                200,
                PROMETHEUS_TYPE,
                &[],
                Body::Owned(render_prometheus(&snap)),
            )
        },
        _ => unsafe { send(r, 200, JSON_TYPE, &[], Body::Owned(render_json(&snap))) },
    }
}
