//! The content handler of tracker locations: gather the event from the request, look the
//! campaign up, write the event into the ring, answer. It never blocks and never waits.

use core::ops::Range;
use core::ptr;

use ngx::ffi::{
    ngx_http_complex_value, ngx_http_complex_value_t, ngx_http_discard_request_body,
    ngx_http_request_t, ngx_int_t, ngx_pcalloc, ngx_pnalloc, ngx_str_t, NGX_DECLINED, NGX_ERROR,
    NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_NOT_ALLOWED, NGX_HTTP_NOT_FOUND, NGX_HTTP_POST,
    NGX_HTTP_SERVICE_UNAVAILABLE, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf};
use tracker_core::event::{self, flags, EventRef, Kind};
use tracker_core::input::{apply_ip_mode, parse_number, percent_decode, valid_campaign_id};
use tracker_core::ring::WriteError;
use tracker_core::{id, landing};

use crate::campaigns::Found;
use crate::config::{LocConf, MainConf, Response, RingFull, Tracker, Unknown, MAX_DIMENSIONS};
use crate::variables::{self, Ctx};
use crate::worker::{self, Worker};
use crate::{response, Module};

/// Longest stored value of a dimension, click id, video event or number, after decoding.
const MAX_VALUE: usize = 1024;
const MAX_USER_AGENT: usize = 512;
const MAX_REFERER: usize = 2048;
const MAX_HOST: usize = 255;
const VIDEO_EVENTS: [&[u8]; 5] = [b"start", b"q1", b"mid", b"q3", b"complete"];

/// The location content handler.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx passes a live request.
    let r = unsafe { &mut *r };
    let (Some(lcf), Some(mcf)) = (Module::location_conf(r), Module::main_conf(r)) else {
        return NGX_ERROR as ngx_int_t;
    };
    let Some(tracker) = lcf.tracker.as_ref() else {
        return NGX_DECLINED as ngx_int_t;
    };
    if r.method & (NGX_HTTP_GET | NGX_HTTP_HEAD | NGX_HTTP_POST) as usize == 0 {
        return NGX_HTTP_NOT_ALLOWED as ngx_int_t;
    }
    // SAFETY: r is live; postback bodies are read and dropped, never parsed.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    // SAFETY: ngx_pid is set once per process before requests are handled.
    let pid = unsafe { ngx::ffi::ngx_pid } as u32;
    let mut w = worker::take(pid);
    // SAFETY: r is live for the whole call.
    let rc = unsafe { track(r, lcf, mcf, tracker, &mut w, pid) };
    worker::give_back(w);
    rc
}

/// Evaluates a complex value (e.g. `$arg_cid`); empty when it cannot.
///
/// # Safety
/// `r` is live; `cv` was compiled for this configuration.
unsafe fn complex<'r>(r: &'r mut ngx_http_request_t, cv: *mut ngx_http_complex_value_t) -> &'r [u8] {
    let mut s = ngx_str_t { len: 0, data: ptr::null_mut() };
    // SAFETY: r and cv are valid; the result lives in the request pool or request buffers.
    if cv.is_null() || unsafe { ngx_http_complex_value(r, cv, &mut s) } != NGX_OK as ngx_int_t || s.len == 0 {
        return &[];
    }
    // SAFETY: nginx returned `len` readable bytes at `data`.
    unsafe { core::slice::from_raw_parts(s.data, s.len) }
}

/// Percent-decodes `raw` onto `text`, cut to `max` bytes (flagging the cut), and returns
/// where it landed.
fn push_decoded(text: &mut Vec<u8>, raw: &[u8], max: usize, event_flags: &mut u32) -> Range<usize> {
    let start = text.len();
    percent_decode(raw, text);
    if text.len() - start > max {
        text.truncate(start + max);
        *event_flags |= flags::TRUNCATED;
    }
    start..text.len()
}

/// A request header's bytes, cut to `max` (flagging the cut).
fn header<'r>(_r: &'r ngx_http_request_t, h: *mut ngx::ffi::ngx_table_elt_t, max: usize, event_flags: &mut u32) -> Option<&'r [u8]> {
    // SAFETY: header pointers in headers_in are null or point to list elements that live as
    // long as the request `_r`, which the returned lifetime is tied to.
    let h = unsafe { h.as_ref() }?;
    let v = h.value.as_bytes();
    if v.len() > max {
        *event_flags |= flags::TRUNCATED;
    }
    (!v.is_empty()).then(|| &v[..v.len().min(max)])
}

fn now_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Copies bytes into the request pool (for values that outlive this call).
///
/// # Safety
/// `r` is live.
unsafe fn pool_str(r: &mut ngx_http_request_t, b: &[u8]) -> ngx_str_t {
    if b.is_empty() {
        return ngx_str_t { len: 0, data: ptr::null_mut() };
    }
    // SAFETY: allocating b.len() bytes from the request pool.
    let data = unsafe { ngx_pnalloc(r.pool, b.len()) }.cast::<u8>();
    if data.is_null() {
        return ngx_str_t { len: 0, data: ptr::null_mut() };
    }
    // SAFETY: data has b.len() bytes.
    unsafe { ptr::copy_nonoverlapping(b.as_ptr(), data, b.len()) };
    ngx_str_t { len: b.len(), data }
}

/// # Safety
/// `r` is live.
unsafe fn track(
    r: &mut ngx_http_request_t,
    lcf: &LocConf,
    mcf: &MainConf,
    tracker: &Tracker,
    w: &mut Worker,
    pid: u32,
) -> ngx_int_t {
    let kind = tracker.kind;
    let mut event_flags = 0u32;
    w.text.clear();

    // The campaign.
    // SAFETY (all `complex` calls): r is live, the values were compiled for this location.
    let cid = push_decoded(&mut w.text, unsafe { complex(r, lcf.campaign_id) }, MAX_VALUE, &mut event_flags);
    let found = if !valid_campaign_id(&w.text[cid.clone()]) {
        event_flags |= flags::INVALID_CAMPAIGN;
        Found::Unknown
    } else {
        match &mcf.campaigns {
            Some(store) => store.lookup(&w.text[cid.clone()], &mut w.landing),
            None => Found::Unknown,
        }
    };
    match found {
        Found::Active => {}
        Found::Inactive => event_flags |= flags::INACTIVE_CAMPAIGN,
        Found::Unknown if event_flags & flags::INVALID_CAMPAIGN == 0 => event_flags |= flags::UNKNOWN_CAMPAIGN,
        Found::Unknown => {}
    }
    let campaign_ok = found == Found::Active;
    // An invalid id is not stored: it is whatever a client sent.
    let cid = if event_flags & flags::INVALID_CAMPAIGN != 0 { cid.start..cid.start } else { cid };

    // The click id: a click's own id, or the one the request carries.
    let now = now_us();
    let event_id = w.ids.next(now);
    let event_hex = id::to_hex(&event_id);
    let click = if kind == Kind::Click {
        None
    } else {
        let raw = unsafe { complex(r, lcf.click_id) };
        Some(push_decoded(&mut w.text, raw, 128, &mut event_flags))
    };

    // Numbers and the video event.
    let mut value = None;
    if matches!(kind, Kind::Conversion | Kind::Custom) {
        let at = push_decoded(&mut w.text, unsafe { complex(r, lcf.value) }, 64, &mut event_flags);
        if !at.is_empty() {
            value = parse_number(&w.text[at]);
            if value.is_none() {
                event_flags |= flags::INVALID_VALUE;
            }
        }
    }
    let (mut video_event, mut watch_time) = (None, None);
    if kind == Kind::Video {
        let at = push_decoded(&mut w.text, unsafe { complex(r, lcf.video_event) }, 16, &mut event_flags);
        if VIDEO_EVENTS.contains(&&w.text[at.clone()]) {
            video_event = Some(at);
        } else {
            event_flags |= flags::INVALID_VIDEO_EVENT;
        }
        let at = push_decoded(&mut w.text, unsafe { complex(r, lcf.watch_time) }, 64, &mut event_flags);
        if !at.is_empty() {
            watch_time = parse_number(&w.text[at]);
            if watch_time.is_none() {
                event_flags |= flags::INVALID_VALUE;
            }
        }
    }

    // Dimensions.
    let dim_conf = lcf.dimensions.as_deref().unwrap_or(&[]);
    let mut dim_at: [Range<usize>; MAX_DIMENSIONS] = Default::default();
    for (d, at) in dim_conf.iter().zip(dim_at.iter_mut()) {
        *at = push_decoded(&mut w.text, unsafe { complex(r, d.value) }, MAX_VALUE, &mut event_flags);
    }

    // Client and request facts.
    // SAFETY: the connection of a live request is live.
    let addr = unsafe { (*r.connection).addr_text.as_bytes() };
    let ip = apply_ip_mode(lcf.ip.unwrap_or(tracker_core::input::IpMode::Anonymize), addr);
    let user_agent = header(r, r.headers_in.user_agent, MAX_USER_AGENT, &mut event_flags);
    let referer = header(r, r.headers_in.referer, MAX_REFERER, &mut event_flags);
    let host = r.headers_in.server.as_bytes();
    if host.len() > MAX_HOST {
        event_flags |= flags::TRUNCATED;
    }
    let host = (!host.is_empty()).then(|| &host[..host.len().min(MAX_HOST)]);

    // The answer.
    let text = &w.text;
    let mut dims: [(&[u8], &[u8]); MAX_DIMENSIONS] = [(&[], &[]); MAX_DIMENSIONS];
    for ((d, at), slot) in dim_conf.iter().zip(dim_at.iter()).zip(dims.iter_mut()) {
        *slot = (&d.name, &text[at.clone()]);
    }
    let dims = &dims[..dim_conf.len()];
    let click_id: &[u8] = match &click {
        None => &event_hex,
        Some(at) => &text[at.clone()],
    };
    let campaign = &text[cid];
    w.target.clear();
    let status: u16 = match tracker.response {
        Response::Gif => 200,
        Response::Empty => 204,
        Response::Redirect => {
            let fallback = lcf.fallback_url.as_deref().unwrap_or(&[]);
            let template: &[u8] = if campaign_ok { &w.landing } else { fallback };
            if template.is_empty() {
                404
            } else {
                landing::expand(template, click_id, campaign, dims, &mut w.target);
                302
            }
        }
    };

    // The event.
    let store = campaign_ok || lcf.unknown_campaign != Some(Unknown::Count);
    if let Some(ring) = &mcf.ring {
        let ring = ring.ring();
        if store {
            let ev = EventRef {
                id: event_id,
                ts_us: now,
                event_type: &tracker.event_type,
                campaign,
                click_id: (!click_id.is_empty()).then_some(click_id),
                dims,
                ip: ip.as_deref().map(str::as_bytes),
                user_agent,
                referer,
                host,
                status,
                flags: event_flags,
                value,
                video_event: video_event.map(|at| &text[at]),
                watch_time,
                cost_micros: None,
            };
            event::encode(&ev, &mut w.event);
            if let Err(WriteError::Full) = ring.write(kind.index(), &w.event, pid) {
                if lcf.ring_full == Some(RingFull::Unavailable) {
                    // SAFETY: r is live and in its content handler.
                    return unsafe { response::error(r, NGX_HTTP_SERVICE_UNAVAILABLE as ngx_int_t) };
                }
            }
        } else {
            ring.count_rejected(kind.index());
        }
    }

    // What the $tracker_* variables show.
    // SAFETY: a zeroed Ctx from the request pool; its strings are copied into the pool.
    unsafe {
        let c = ngx_pcalloc(r.pool, core::mem::size_of::<Ctx>()).cast::<Ctx>();
        if !c.is_null() {
            (*c).event_id = event_hex;
            (*c).campaign = pool_str(r, campaign);
            (*c).click_id = if click.is_none() {
                ngx_str_t { len: 32, data: (*c).event_id.as_mut_ptr() }
            } else {
                pool_str(r, click_id)
            };
            variables::set_ctx(r, c);
        }
    }

    // SAFETY: r is live and in its content handler.
    unsafe {
        match status {
            200 => response::gif(r),
            204 => response::empty(r),
            302 => response::redirect(r, &w.target),
            _ => response::error(r, NGX_HTTP_NOT_FOUND as ngx_int_t),
        }
    }
}
