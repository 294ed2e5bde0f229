//! The content handler of tracker locations: gather the event from the request, look the
//! campaign up, write the event into the ring, answer. It never blocks and never waits.

use core::ops::Range;
use core::ptr;

use ngx::ffi::{
    ngx_http_complex_value, ngx_http_complex_value_t, ngx_http_core_main_conf_t,
    ngx_http_discard_request_body, ngx_http_get_flushed_variable, ngx_http_request_t,
    ngx_http_script_copy_var_code, ngx_http_variable_t, ngx_int_t, ngx_pcalloc, ngx_pnalloc,
    ngx_str_t, ngx_uint_t, NGX_DECLINED, NGX_ERROR, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_NOT_ALLOWED, NGX_HTTP_NOT_FOUND, NGX_HTTP_POST, NGX_HTTP_SERVICE_UNAVAILABLE,
    NGX_HTTP_VAR_PREFIX, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use tracker_core::banker::{self, Charge};
use tracker_core::campaign::Status as CampaignStatus;
use tracker_core::event::{self, flags, EventRef, Kind};
use tracker_core::input::{
    client_ip, parse_number, percent_decode, valid_campaign_id, ArgIndex, IP_TEXT_MAX,
};
use tracker_core::limits::{self, Limits, Reason};
use tracker_core::ring::WriteError;
use tracker_core::sign;
use tracker_core::{bots, id, landing, privacy};

use crate::config::{
    Bots, Duplicates, Invalid, LocConf, MainConf, Response, RingFull, Signed, Tracker, Unknown,
    MAX_DIMENSIONS,
};
use crate::variables::{self, Ctx};
use crate::worker::{self, Worker};
use crate::{response, Module};

/// Longest number (conversion value, watch time) and video event, after decoding.
const MAX_NUMBER: usize = 64;
const MAX_VIDEO_EVENT: usize = 16;
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
    let limits = lcf.limits.unwrap_or_default();
    if r.headers_in.content_length_n > 0 && r.headers_in.content_length_n as u64 > limits.body {
        // SAFETY: r is live and in its content handler; nginx discards the body of an error.
        return unsafe { refuse(r, mcf, tracker, Reason::BodyTooLarge) };
    }
    // SAFETY: r is live; postback bodies are read and dropped, never parsed.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    // SAFETY: ngx_pid is set once per process before requests are handled.
    let pid = unsafe { ngx::ffi::ngx_pid } as u32;
    // SAFETY: r is live for the whole call.
    worker::with(pid, |w| unsafe {
        track(r, lcf, mcf, tracker, &limits, w, pid)
    })
}

/// The index of the variable a complex value consists of, when it is exactly one variable
/// and nothing else (`$arg_cid`, as the defaults and most configurations).
///
/// `ngx_http_compile_complex_value` compiles such a value into the `values` script
/// `[ngx_http_script_copy_var_code, index][NULL]`; its value is that variable's value, which
/// [`conf_value`] then reads directly instead of running the script twice (lengths, then
/// values) and copying the result into the pool. Anything else (text around the variable,
/// several variables, captures) does not match and goes through `ngx_http_complex_value`.
fn single_variable(cv: &ngx_http_complex_value_t) -> Option<ngx_uint_t> {
    let code = cv.values.cast::<usize>().cast_const();
    if code.is_null() {
        return None;
    }
    // SAFETY: a compiled `values` script is a sequence of codes, each starting with its
    // function, ended by a null word: the first word is readable.
    if unsafe { *code } != ngx_http_script_copy_var_code as unsafe extern "C" fn(_) as usize {
        return None;
    }
    // SAFETY: the first code is an ngx_http_script_var_code_t (code, index), followed by the
    // next code or the terminating null word.
    let (index, next) = unsafe { (*code.add(1), *code.add(2)) };
    (next == 0).then_some(index)
}

/// The `get_handler` of nginx's `arg_` prefix variable (`ngx_http_variable_argument`), as
/// an address; 0 if there is none.
fn arg_prefix_handler(cmcf: &ngx_http_core_main_conf_t) -> usize {
    // SAFETY: the core main conf's prefix_variables array holds ngx_http_variable_t elements.
    let prefixes = unsafe { cmcf.prefix_variables.as_slice::<ngx_http_variable_t>() };
    prefixes
        .iter()
        .find(|p| p.name.as_bytes() == b"arg_")
        .and_then(|p| p.get_handler)
        .map_or(0, |f| f as usize)
}

/// For the variable at `index`, the argument name when it is nginx's own `$arg_NAME` (the
/// `arg_` prefix variable, whose value is `ngx_http_arg(r, NAME)`), else None.
///
/// # Safety
/// `index` is a variable index of the configuration `cmcf` belongs to.
unsafe fn arg_variable(
    cmcf: &ngx_http_core_main_conf_t,
    arg_handler: usize,
    index: ngx_uint_t,
) -> Option<&[u8]> {
    // SAFETY: the core main conf's variables array holds ngx_http_variable_t elements.
    let v = unsafe { cmcf.variables.as_slice::<ngx_http_variable_t>() }.get(index)?;
    if v.flags & NGX_HTTP_VAR_PREFIX as ngx_uint_t == 0
        || arg_handler == 0
        || v.get_handler.map(|f| f as usize) != Some(arg_handler)
    {
        return None;
    }
    // Resolved through the "arg_" prefix (not, say, defined by a map): its value is
    // ngx_http_arg(r, name after "arg_").
    v.name
        .as_bytes()
        .strip_prefix(b"arg_")
        .filter(|name| !name.is_empty())
}

/// The request's query string, split at its `&`s on the first `$arg_*` value.
struct Args<'r> {
    raw: &'r [u8],
    index: Option<ArgIndex<'r>>,
    /// See [`arg_prefix_handler`]; None until a value needs it.
    arg_handler: Option<usize>,
}

impl<'r> Args<'r> {
    /// # Safety
    /// `r` is live, and stays so for `'r` (the handler's call).
    unsafe fn of(r: &ngx_http_request_t) -> Args<'r> {
        let raw = if r.args.len == 0 || r.args.data.is_null() {
            &[][..]
        } else {
            // SAFETY: the query string lies in the request's buffers for its whole life.
            unsafe { core::slice::from_raw_parts(r.args.data, r.args.len) }
        };
        Args {
            raw,
            index: None,
            arg_handler: None,
        }
    }

    fn get(&mut self, name: &[u8]) -> Option<&'r [u8]> {
        let raw = self.raw;
        self.index
            .get_or_insert_with(|| ArgIndex::new(raw))
            .get(name)
    }
}

/// Evaluates a configured value (e.g. `$arg_cid`); empty when it is not found or cannot be
/// evaluated. The same value as `ngx_http_complex_value` gives, without its copy.
///
/// # Safety
/// `r` is live; `cv` is null or was compiled for this configuration.
unsafe fn conf_value<'r>(
    r: &mut ngx_http_request_t,
    args: &mut Args<'r>,
    cv: *mut ngx_http_complex_value_t,
) -> &'r [u8] {
    // SAFETY: a non-null cv points to a complex value compiled with the configuration.
    let Some(cv_ref) = (unsafe { cv.as_ref() }) else {
        return &[];
    };
    if let Some(index) = single_variable(cv_ref) {
        let cmcf = NgxHttpCoreModule::main_conf(r);
        let arg = cmcf.and_then(|cmcf| {
            let handler = *args
                .arg_handler
                .get_or_insert_with(|| arg_prefix_handler(cmcf));
            // SAFETY: index comes from this request's configuration.
            unsafe { arg_variable(cmcf, handler, index) }
        });
        if let Some(name) = arg {
            // `$arg_NAME` is `ngx_http_arg(r, NAME)`, which `ArgIndex::get` computes.
            return args.get(name).unwrap_or(&[]);
        }
        // SAFETY: index is a variable index of this configuration; as ngx_http_complex_value
        // does, a non-cacheable value is evaluated afresh.
        let v = unsafe { ngx_http_get_flushed_variable(r, index).as_ref() };
        return match v {
            Some(v) if v.not_found() == 0 && v.len() > 0 && !v.data.is_null() => {
                // SAFETY: a found variable value has `len` readable bytes at `data`, in
                // request or configuration memory.
                unsafe { core::slice::from_raw_parts(v.data, v.len() as usize) }
            }
            _ => &[],
        };
    }
    let mut s = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    // SAFETY: r and cv are valid; the result lives in the request pool or request buffers.
    if unsafe { ngx_http_complex_value(r, cv, &mut s) } != NGX_OK as ngx_int_t || s.len == 0 {
        return &[];
    }
    // SAFETY: nginx returned `len` readable bytes at `data`.
    unsafe { core::slice::from_raw_parts(s.data, s.len) }
}

/// Percent-decodes `raw` onto `text` and returns where it landed. Longer than `max` bytes,
/// it is `too_long` when the location rejects invalid input (`tracker_invalid reject`), and
/// cut to `max` with the `truncated` flag otherwise.
fn push_decoded(
    text: &mut Vec<u8>,
    raw: &[u8],
    max: usize,
    reject: bool,
    too_long: Reason,
    event_flags: &mut u32,
) -> Result<Range<usize>, Reason> {
    let start = text.len();
    percent_decode(raw, text);
    if text.len() - start > max {
        if reject {
            return Err(too_long);
        }
        text.truncate(start + max);
        *event_flags |= flags::TRUNCATED;
    }
    Ok(start..text.len())
}

/// Answers a request refused as invalid: nothing stored, counted per reason; 413 for a body
/// over the limit, the GIF for pixels (pages never break), 400 otherwise.
///
/// # Safety
/// `r` is live and in its content handler.
unsafe fn refuse(
    r: &mut ngx_http_request_t,
    mcf: &MainConf,
    tracker: &Tracker,
    reason: Reason,
) -> ngx_int_t {
    // SAFETY: the connection of a live request and its log are live.
    let log = unsafe { (*r.connection).log };
    ngx::ngx_log_error!(
        ngx::ffi::NGX_LOG_INFO,
        log,
        "tracker: invalid request refused: {}",
        reason.name()
    );
    if let Some(ring) = &mcf.ring {
        ring.ring().count_invalid(reason.index());
    }
    // SAFETY: r is live and in its content handler.
    unsafe {
        match (reason, tracker.response) {
            (Reason::BodyTooLarge, _) => {
                response::error(r, ngx::ffi::NGX_HTTP_REQUEST_ENTITY_TOO_LARGE as ngx_int_t)
            }
            (_, Response::Gif) => response::gif(r),
            _ => response::error(r, ngx::ffi::NGX_HTTP_BAD_REQUEST as ngx_int_t),
        }
    }
}

/// A request header's bytes, cut to `max` (flagging the cut).
fn header<'r>(
    _r: &'r ngx_http_request_t,
    h: *mut ngx::ffi::ngx_table_elt_t,
    max: usize,
    event_flags: &mut u32,
) -> Option<&'r [u8]> {
    // SAFETY: header pointers in headers_in are null or point to list elements that live as
    // long as the request `_r`, which the returned lifetime is tied to.
    let h = unsafe { h.as_ref() }?;
    let v = h.value.as_bytes();
    if v.len() > max {
        *event_flags |= flags::TRUNCATED;
    }
    (!v.is_empty()).then(|| &v[..v.len().min(max)])
}

/// The first `Some` that `f` gives for a request header (name, value), in request order.
fn find_header<'r, T>(
    r: &'r ngx_http_request_t,
    mut f: impl FnMut(&'r [u8], &'r [u8]) -> Option<T>,
) -> Option<T> {
    let mut part: *const ngx::ffi::ngx_list_part_t = &r.headers_in.headers.part;
    // SAFETY: the request's header list is a valid ngx_list_t of ngx_table_elt_t: each part
    // holds `nelts` elements at `elts` and links to the next part or null; they live as long
    // as the request.
    while let Some(p) = unsafe { part.as_ref() } {
        let elts = p.elts.cast::<ngx::ffi::ngx_table_elt_t>();
        for i in 0..p.nelts {
            // SAFETY: i < nelts.
            let h: &'r ngx::ffi::ngx_table_elt_t = unsafe { &*elts.add(i) };
            if let Some(t) = f(h.key.as_bytes(), h.value.as_bytes()) {
                return Some(t);
            }
        }
        part = p.next;
    }
    None
}

/// Whether the request asks not to be tracked: a `DNT: 1` or `Sec-GPC: 1` header.
fn opts_out(r: &ngx_http_request_t) -> bool {
    find_header(r, |k, v| privacy::is_opt_out_header(k, v).then_some(())).is_some()
}

/// Whether the request is a prefetch or preview (`Sec-Purpose: prefetch`...).
fn is_prefetch(r: &ngx_http_request_t) -> bool {
    find_header(r, |k, v| bots::is_prefetch_header(k, v).then_some(())).is_some()
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn request_cookie<'r>(r: &'r ngx_http_request_t, name: &[u8]) -> Option<&'r [u8]> {
    find_header(r, |k, v| {
        if k.eq_ignore_ascii_case(b"cookie") {
            privacy::cookie_value(v, name)
        } else {
            None
        }
    })
}

fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
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
        return ngx_str_t {
            len: 0,
            data: ptr::null_mut(),
        };
    }
    // SAFETY: allocating b.len() bytes from the request pool.
    let data = unsafe { ngx_pnalloc(r.pool, b.len()) }.cast::<u8>();
    if data.is_null() {
        return ngx_str_t {
            len: 0,
            data: ptr::null_mut(),
        };
    }
    // SAFETY: data has b.len() bytes.
    unsafe { ptr::copy_nonoverlapping(b.as_ptr(), data, b.len()) };
    ngx_str_t { len: b.len(), data }
}

/// # Safety
/// `r` is live.
/// Where a click is redirected.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The campaign took the event: its landing URL.
    Landing,
    /// It could not (paused, over budget...) and has a fallback URL.
    CampaignFallback,
    /// Unknown campaign, or no campaign fallback: `tracker_fallback_url` (or 404).
    Location,
}

unsafe fn track(
    r: &mut ngx_http_request_t,
    lcf: &LocConf,
    mcf: &MainConf,
    tracker: &Tracker,
    limits: &Limits,
    w: &mut Worker,
    pid: u32,
) -> ngx_int_t {
    let kind = tracker.kind;
    let mut event_flags = 0u32;
    w.text.clear();
    // SAFETY: r is live for this call, which is as long as `args` and the values from it live.
    let mut args = unsafe { Args::of(r) };
    let reject = lcf.invalid != Some(Invalid::Flag);
    // `?` on a reason: refuse the request (tracker_invalid reject).
    macro_rules! valid {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                // SAFETY: r is live and in its content handler.
                Err(reason) => return unsafe { refuse(r, mcf, tracker, reason) },
            }
        };
    }
    // The query string's own limits, whatever the mode: past them nothing is parsed.
    valid!(limits::check_query(args.raw, limits));

    // The campaign.
    // SAFETY (all `conf_value` calls): r is live, the values were compiled for this location.
    let raw = unsafe { conf_value(r, &mut args, lcf.campaign_id) };
    let cid = valid!(push_decoded(
        &mut w.text,
        raw,
        limits.value,
        reject,
        Reason::InvalidCampaign,
        &mut event_flags
    ));
    if !valid_campaign_id(&w.text[cid.clone()]) {
        if reject {
            valid!(Err(Reason::InvalidCampaign));
        }
        event_flags |= flags::INVALID_CAMPAIGN;
    }
    // An invalid id is not stored: it is whatever a client sent.
    let cid = if event_flags & flags::INVALID_CAMPAIGN != 0 {
        cid.start..cid.start
    } else {
        cid
    };

    // The click id: a click's own id, or the one the request carries.
    let now = now_us();
    let event_id = w.ids.next(now);
    let event_hex = id::to_hex(&event_id);
    let click = if kind == Kind::Click {
        None
    } else {
        let raw = unsafe { conf_value(r, &mut args, lcf.click_id) };
        Some(valid!(push_decoded(
            &mut w.text,
            raw,
            limits::MAX_CLICK_ID,
            reject,
            Reason::InvalidClickId,
            &mut event_flags
        )))
    };

    // Numbers and the video event.
    let mut value = None;
    if matches!(kind, Kind::Conversion | Kind::Custom) {
        let raw = unsafe { conf_value(r, &mut args, lcf.value) };
        let at = valid!(push_decoded(
            &mut w.text,
            raw,
            MAX_NUMBER,
            reject,
            Reason::InvalidValue,
            &mut event_flags
        ));
        if !at.is_empty() {
            value = parse_number(&w.text[at]);
            if value.is_none() {
                if reject {
                    valid!(Err(Reason::InvalidValue));
                }
                event_flags |= flags::INVALID_VALUE;
            }
        }
    }
    let (mut video_event, mut watch_time) = (None, None);
    if kind == Kind::Video {
        let raw = unsafe { conf_value(r, &mut args, lcf.video_event) };
        let at = valid!(push_decoded(
            &mut w.text,
            raw,
            MAX_VIDEO_EVENT,
            reject,
            Reason::InvalidVideoEvent,
            &mut event_flags
        ));
        if VIDEO_EVENTS.contains(&&w.text[at.clone()]) {
            video_event = Some(at);
        } else {
            if reject {
                valid!(Err(Reason::InvalidVideoEvent));
            }
            event_flags |= flags::INVALID_VIDEO_EVENT;
        }
        let raw = unsafe { conf_value(r, &mut args, lcf.watch_time) };
        let at = valid!(push_decoded(
            &mut w.text,
            raw,
            MAX_NUMBER,
            reject,
            Reason::InvalidValue,
            &mut event_flags
        ));
        if !at.is_empty() {
            watch_time = parse_number(&w.text[at]);
            if watch_time.is_none() {
                if reject {
                    valid!(Err(Reason::InvalidValue));
                }
                event_flags |= flags::INVALID_VALUE;
            }
        }
    }

    // Dimensions.
    let dim_conf = lcf.dimensions.as_deref().unwrap_or(&[]);
    let mut dim_at: [Range<usize>; MAX_DIMENSIONS] = Default::default();
    for (d, at) in dim_conf.iter().zip(dim_at.iter_mut()) {
        let raw = unsafe { conf_value(r, &mut args, d.value) };
        *at = valid!(push_decoded(
            &mut w.text,
            raw,
            limits.value,
            reject,
            Reason::ValueTooLong,
            &mut event_flags
        ));
    }

    // The signature (`tracker_signed`), before the campaign is charged: `on` refuses a request
    // without a valid one (403; pixels the GIF) and stores nothing, `flag` flags the event.
    if let (Some(mode @ (Signed::On | Signed::Flag)), Some(keys)) =
        (lcf.signed, mcf.secret.as_ref())
    {
        let mut signed: [(&[u8], &[u8]); MAX_DIMENSIONS] = [(&[], &[]); MAX_DIMENSIONS];
        for (slot, &i) in signed.iter_mut().zip(lcf.signed_index.iter()) {
            if let (Some(d), Some(at)) = (dim_conf.get(i), dim_at.get(i)) {
                *slot = (&d.name, &w.text[at.clone()]);
            }
        }
        let signed = &signed[..lcf.signed_index.len().min(MAX_DIMENSIONS)];
        let (exp, kid, sig) = (args.get(b"exp"), args.get(b"kid"), args.get(b"sig"));
        if let Err(why) = sign::verify(
            keys,
            &w.text[cid.clone()],
            signed,
            exp,
            kid,
            sig,
            now / 1_000_000,
        ) {
            if mode == Signed::Flag {
                event_flags |= flags::UNSIGNED;
            } else {
                // SAFETY: the connection of a live request and its log are live.
                let log = unsafe { (*r.connection).log };
                ngx::ngx_log_error!(
                    ngx::ffi::NGX_LOG_INFO,
                    log,
                    "tracker: signature refused: {}",
                    why.name()
                );
                if let Some(ring) = &mcf.ring {
                    ring.ring().count_rejected(kind.index());
                }
                // SAFETY: r is live and in its content handler.
                return unsafe {
                    match tracker.response {
                        Response::Gif => response::gif(r),
                        _ => response::error(r, ngx::ffi::NGX_HTTP_FORBIDDEN as ngx_int_t),
                    }
                };
            }
        }
    }

    // The User-Agent's class (browser, OS and device families, crawler), from the worker's
    // cache. Conversions are server-to-server postbacks, whose clients are tools: not
    // classified. Bots and prefetches (`tracker_bots`): flagged, never charged; with `count`
    // not stored.
    let mut ua_class = None;
    if kind != Kind::Conversion {
        // SAFETY: a non-null user_agent points to a header element of the live request.
        let ua =
            unsafe { r.headers_in.user_agent.as_ref() }.map_or(&[][..], |h| h.value.as_bytes());
        ua_class = Some(*w.user_agents.classify(ua));
    }
    let bots_mode = lcf.bots.unwrap_or(Bots::Flag);
    if bots_mode != Bots::Off && kind != Kind::Conversion {
        if ua_class.is_some_and(|c| c.crawler) {
            event_flags |= flags::BOT;
        }
        if is_prefetch(r) {
            event_flags |= flags::PREFETCH;
        }
    }
    let automated = event_flags & (flags::BOT | flags::PREFETCH) != 0;

    // Duplicates (`tracker_duplicates`): seen within the window, under the event type, the
    // campaign and a key: `tracker_duplicates_key`, else a conversion's click id, else the client
    // address and the dimensions. Flagged (or only counted) and never charged.
    let mut duplicate = None;
    if let (Some((mode @ (Duplicates::Flag | Duplicates::Count), window)), Some(zone)) =
        (lcf.duplicates, &mcf.duplicates)
    {
        if event_flags & flags::INVALID_CAMPAIGN == 0 {
            // SAFETY: r is live; the key was compiled for this location.
            let own_key = (!lcf.duplicates_key.is_null())
                .then(|| unsafe { conf_value(r, &mut args, lcf.duplicates_key) });
            // SAFETY: the connection of a live request is live.
            let addr = unsafe { (*r.connection).addr_text.as_bytes() };
            let mut parts: [&[u8]; MAX_DIMENSIONS + 3] = [&[]; MAX_DIMENSIONS + 3];
            parts[0] = &tracker.event_type;
            parts[1] = &w.text[cid.clone()];
            let n = match (own_key, &click) {
                (Some(k), _) => {
                    parts[2] = k;
                    3
                }
                (None, Some(at)) if kind == Kind::Conversion => {
                    parts[2] = &w.text[at.clone()];
                    3
                }
                _ => {
                    parts[2] = addr;
                    for (p, at) in parts[3..]
                        .iter_mut()
                        .zip(dim_at.iter().take(dim_conf.len()))
                    {
                        *p = &w.text[at.clone()];
                    }
                    3 + dim_conf.len().min(MAX_DIMENSIONS)
                }
            };
            // Nothing to key on (an empty key, a conversion without a click id): not checked.
            if !parts[2].is_empty() {
                let now_s = mcf
                    .campaigns
                    .as_ref()
                    .map_or(now / 1_000_000, |c| c.now().max(0) as u64);
                let seen = zone.hash(&parts[..n]).zip(zone.seen());
                if let Some((hash, seen)) = seen {
                    match seen.check_and_insert(hash, now_s, window.unwrap_or(zone.window_s())) {
                        tracker_core::dedup::Outcome::Duplicate => {
                            event_flags |= flags::DUPLICATE;
                            duplicate = Some(mode);
                            if let Some(ring) = &mcf.ring {
                                ring.ring().count_duplicate(kind.index());
                            }
                        }
                        tracker_core::dedup::Outcome::First { evicted: true } => {
                            if let Some(ring) = &mcf.ring {
                                ring.ring().count_duplicate_eviction();
                            }
                        }
                        tracker_core::dedup::Outcome::First { evicted: false } => {}
                    }
                }
            }
        }
    }
    // Bots, prefetches and duplicates are not charged.
    let uncharged = automated || duplicate.is_some();

    // The campaign, and the banker: is it taking events, and what does this one cost.
    let mut hit = None;
    if event_flags & flags::INVALID_CAMPAIGN == 0 {
        if let Some(store) = &mcf.campaigns {
            let publisher = dim_conf
                .iter()
                .zip(dim_at.iter())
                .find(|(d, _)| d.name == b"publisher")
                .map(|(_, at)| &w.text[at.clone()]);
            let now_s = store.now();
            hit = store
                .lookup_full(
                    &w.text[cid.clone()],
                    now_s,
                    publisher,
                    &mut w.landing,
                    &mut w.fallback,
                )
                .map(|h| (h, now_s));
        }
    }
    let mut cost_micros = None;
    // Where a click goes: the landing URL, the campaign's fallback, or the location's.
    let mut target = Target::Location;
    let campaign_ok = match &hit {
        None => {
            if event_flags & flags::INVALID_CAMPAIGN == 0 {
                event_flags |= flags::UNKNOWN_CAMPAIGN;
            }
            false
        }
        Some((h, now_s)) => {
            let refused = if h.status != CampaignStatus::Active {
                flags::INACTIVE_CAMPAIGN
            } else if !h.in_schedule {
                flags::OUTSIDE_SCHEDULE
            } else if !h.publisher_allowed {
                flags::PUBLISHER_NOT_ALLOWED
            } else {
                0
            };
            if refused != 0 {
                h.account.reject(kind);
                event_flags |= refused;
            } else if uncharged {
                // Not charged, counted as rejected; a click still goes to the landing URL.
                h.account.reject(kind);
                target = Target::Landing;
            } else {
                let cost = banker::cost_of(&h.pricing, kind, value);
                match h.account.charge(
                    &h.caps,
                    kind,
                    cost,
                    banker::day_of(*now_s, h.utc_offset_minutes),
                ) {
                    Charge::Charged(c) => {
                        cost_micros = (c > 0).then_some(c);
                        target = Target::Landing;
                    }
                    Charge::OverBudget => event_flags |= flags::OVER_BUDGET,
                }
            }
            if target != Target::Landing && h.has_fallback {
                target = Target::CampaignFallback;
            }
            if let Some(v) = value.filter(|_| kind == Kind::Conversion && !uncharged) {
                h.account.count_value(v);
            }
            if !uncharged
                && video_event
                    .as_ref()
                    .is_some_and(|at| &w.text[at.clone()] == b"complete")
            {
                h.account.count_video_complete();
            }
            h.status == CampaignStatus::Active
        }
    };

    // Client and request facts.
    // SAFETY: the connection of a live request is live.
    let addr = unsafe { (*r.connection).addr_text.as_bytes() };
    // DNT / GPC: the event is kept (counted, billed) without what could identify the person.
    let dnt = lcf.respect_dnt != Some(false) && opts_out(r);
    if dnt {
        event_flags |= flags::DNT;
    }
    let mut ip_buf = [0u8; IP_TEXT_MAX];
    let ip = match lcf.ip.unwrap_or(tracker_core::input::IpMode::Anonymize) {
        _ if dnt => None,
        tracker_core::input::IpMode::Hash => {
            privacy::hash_ip(&privacy::DayKey::at(now), addr, &mut ip_buf)
        }
        mode => client_ip(mode, addr, &mut ip_buf),
    };
    let user_agent = if dnt {
        None
    } else {
        header(r, r.headers_in.user_agent, MAX_USER_AGENT, &mut event_flags)
    };
    // The visitor id (`tracker_userid`): never read nor set for DNT/GPC requests.
    let mut uid_buf = [0u8; 32];
    let mut new_uid = false;
    let uid_spec = lcf
        .userid_cookie
        .as_ref()
        .filter(|_| lcf.userid == Some(true) && !dnt);
    if let Some(spec) = uid_spec {
        match request_cookie(r, &spec.name) {
            Some(v) if privacy::valid_visitor_id(v) => uid_buf.copy_from_slice(v),
            _ => {
                uid_buf = w.visitors.next_hex();
                new_uid = true;
            }
        }
    }
    let uid = uid_spec.map(|_| &uid_buf[..]);
    let referer = header(r, r.headers_in.referer, MAX_REFERER, &mut event_flags);
    let host = r.headers_in.server.as_bytes();
    if host.len() > MAX_HOST {
        event_flags |= flags::TRUNCATED;
    }
    let host = (!host.is_empty()).then(|| &host[..host.len().min(MAX_HOST)]);

    // The answer.
    let text = &w.text;
    let mut dims: [(&[u8], &[u8]); MAX_DIMENSIONS] = [(&[], &[]); MAX_DIMENSIONS];
    let mut ndims = 0;
    for (d, at) in dim_conf.iter().zip(dim_at.iter()) {
        if dnt && d.personal {
            continue;
        }
        dims[ndims] = (&d.name, &text[at.clone()]);
        ndims += 1;
    }
    let dims = &dims[..ndims];
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
            let template: &[u8] = match target {
                Target::Landing => &w.landing,
                Target::CampaignFallback => &w.fallback,
                Target::Location => lcf.fallback_url.as_deref().unwrap_or(&[]),
            };
            if template.is_empty() {
                404
            } else {
                landing::expand(template, click_id, campaign, dims, &mut w.target);
                302
            }
        }
    };

    // The event.
    // A duplicate with `tracker_duplicates count` is counted as a duplicate only.
    let counted_duplicate = duplicate == Some(Duplicates::Count);
    let store = (campaign_ok || lcf.unknown_campaign != Some(Unknown::Count))
        && !(automated && bots_mode == Bots::Count)
        && !counted_duplicate;
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
                ip,
                user_agent,
                referer,
                host,
                status,
                flags: event_flags,
                value,
                video_event: video_event.map(|at| &text[at]),
                watch_time,
                cost_micros,
                uid,
                browser: ua_class.map(|c| c.browser),
                os: ua_class.map(|c| c.os),
                device: ua_class.map(|c| c.device.as_str()),
            };
            event::encode(&ev, &mut w.event);
            if let Err(WriteError::Full) = ring.write(kind.index(), &w.event, pid) {
                if lcf.ring_full == Some(RingFull::Unavailable) {
                    // SAFETY: r is live and in its content handler.
                    return unsafe {
                        response::error(r, NGX_HTTP_SERVICE_UNAVAILABLE as ngx_int_t)
                    };
                }
            }
        } else if !counted_duplicate {
            ring.count_rejected(kind.index());
        }
    }

    // A new visitor id: its cookie.
    if let Some(spec) = uid_spec.filter(|_| new_uid) {
        // SAFETY: r is live; `https` was compiled with the location (`$https`).
        let secure = unsafe { conf_value(r, &mut args, lcf.https) } == b"on";
        privacy::set_cookie(spec, &uid_buf, now / 1_000_000, secure, &mut w.cookie);
        // SAFETY: r is live; the value is copied into the request pool, which outlives the
        // response headers.
        unsafe {
            let v = pool_str(r, &w.cookie);
            if !v.data.is_null() {
                let _ = response::add_header(r, b"Set-Cookie", v);
            }
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
                ngx_str_t {
                    len: 32,
                    data: (*c).event_id.as_mut_ptr(),
                }
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
