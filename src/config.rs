//! Directives: the one command table, the configuration structs and their handlers.
//! Every bad value fails `nginx -t` with a message naming the directive (nginx adds file:line).

use core::ffi::{c_char, c_void};
use core::{mem, ptr};
use std::path::PathBuf;

use ngx::core::{Status, NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value_t, ngx_str_t, ngx_uint_t, NGX_CONF_TAKE1, NGX_CONF_TAKE12,
    NGX_CONF_TAKE123, NGX_CONF_TAKE2, NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF, NGX_LOG_EMERG,
    NGX_LOG_NOTICE,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::{ngx_conf_log_error, ngx_string};
use tracker_core::event::Kind;
use tracker_core::input::IpMode;
use tracker_core::ring::{Opened, RingFile};

use crate::{campaigns, handler, Module};

/// Most dimensions one location records (`tracker_dimension`).
pub const MAX_DIMENSIONS: usize = 32;

/// http-level configuration: the ring and the campaign store.
#[derive(Default)]
pub struct MainConf {
    pub ring: Option<RingFile>,
    pub campaigns: Option<campaigns::Store>,
    /// Where the first `tracker` location was declared, to report a missing `tracker_ring`.
    pub first_use: Option<String>,
    /// Where `tracker_admin` or `tracker_stats` is first used: `tracker_campaigns` is required.
    pub needs_campaigns: Option<String>,
    /// `tracker_secret`: the keys of signed URLs.
    pub secret: Option<tracker_core::sign::Keys>,
    /// `tracker_duplicates_zone`: the recently-seen set.
    pub duplicates: Option<crate::dedup::DedupZone>,
    /// Where `tracker_duplicates` is first turned on: `tracker_duplicates_zone` is required.
    pub needs_duplicates: Option<String>,
    /// nginx's thread pool `default`, where the admin API makes its changes durable.
    pub admin_pool: crate::admin_io::Pool,
    /// `tracker_state`: the file the campaign accounts live in (else the campaign zone).
    pub state: Option<crate::state::State>,
}

/// `tracker_signed`: what a location does with a request without a valid signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signed {
    Off,
    /// Refuse: 403, or the GIF without an event for pixels.
    On,
    /// Store the event with the `unsigned` flag.
    Flag,
}

/// `tracker_bots`: what a location does with a bot or prefetch request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bots {
    /// Do not classify.
    Off,
    /// Store the event with the `bot` / `prefetch` flag, not charged.
    Flag,
    /// Store nothing; count it as rejected and answer as usual.
    Count,
}

/// `tracker_invalid`: what a location does with a request over its limits or with invalid input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Store nothing; count it per reason; answer 400 (the GIF for pixels).
    Reject,
    /// Store the event with a flag (`invalid_campaign`, `invalid_value`, `truncated`...),
    /// values cut to the limit; the query string limits still refuse.
    Flag,
}

/// `tracker_duplicates`: what a location does with an event seen again within the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duplicates {
    Off,
    /// Store it with the `duplicate` flag, not charged.
    Flag,
    /// Store nothing; count it (`duplicates` in the stats) and answer as usual.
    Count,
}

/// What a tracker location answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    Gif,
    Redirect,
    Empty,
}

/// The event a tracker location records.
pub struct Tracker {
    pub kind: Kind,
    pub event_type: Vec<u8>,
    pub response: Response,
}

/// `tracker_unknown_campaign`: what a pixel does with an event whose campaign is unknown,
/// invalid or inactive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    Store,
    Count,
}

/// `tracker_ring_full`: the answer when the ring has no room for the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingFull {
    Serve,
    Unavailable,
}

pub struct Dimension {
    pub name: Vec<u8>,
    pub value: *mut ngx_http_complex_value_t,
    /// `tracker_dimension NAME VALUE personal`: left out of DNT/GPC requests' events.
    pub personal: bool,
}

/// Location-level configuration (also merged down from http and server levels).
pub struct LocConf {
    pub tracker: Option<Tracker>,
    pub campaign_id: *mut ngx_http_complex_value_t,
    pub click_id: *mut ngx_http_complex_value_t,
    pub value: *mut ngx_http_complex_value_t,
    pub video_event: *mut ngx_http_complex_value_t,
    pub watch_time: *mut ngx_http_complex_value_t,
    /// None: not set at this level (inherited as a whole, like `add_header`).
    pub dimensions: Option<Vec<Dimension>>,
    pub ip: Option<IpMode>,
    /// `tracker_respect_dnt` (merged default: on).
    pub respect_dnt: Option<bool>,
    /// `tracker_userid` (merged default: off).
    pub userid: Option<bool>,
    /// `tracker_userid_name`, `_domain` (Some(empty): none), `_path`, `_expires` (Some(None): off).
    pub userid_name: Option<Vec<u8>>,
    pub userid_domain: Option<Vec<u8>>,
    pub userid_path: Option<Vec<u8>>,
    pub userid_expires: Option<Option<u64>>,
    /// After merging, with `tracker_userid on`: the cookie, and `$https` to add `Secure`.
    pub userid_cookie: Option<tracker_core::privacy::CookieSpec>,
    pub https: *mut ngx_http_complex_value_t,
    /// Some(empty) is `tracker_fallback_url off`.
    pub fallback_url: Option<Vec<u8>>,
    pub unknown_campaign: Option<Unknown>,
    pub ring_full: Option<RingFull>,
    /// `tracker_signed`.
    pub signed: Option<Signed>,
    /// `tracker_bots`.
    pub bots: Option<Bots>,
    /// `tracker_limits` (merged: inherited whole, else the defaults).
    pub limits: Option<tracker_core::limits::Limits>,
    /// `tracker_invalid` (merged default: reject).
    pub invalid: Option<Invalid>,
    /// `tracker_duplicates` and its `window=` in seconds (None: the zone's).
    pub duplicates: Option<(Duplicates, Option<u32>)>,
    /// `tracker_duplicates_key`.
    pub duplicates_key: *mut ngx_http_complex_value_t,
    /// `tracker_signed_dimensions`: the names, None when not set at this level.
    pub signed_dimensions: Option<Vec<Vec<u8>>>,
    /// After merging: the index in `dimensions` of each signed dimension, in order.
    pub signed_index: Vec<usize>,
    /// `tracker_admin` (Some(test clock allowed)).
    pub admin: Option<bool>,
    /// `tracker_admin_token`: None not set here, Some(empty) `off`.
    pub admin_token: Option<Vec<u8>>,
    /// `tracker_stats`.
    pub stats: bool,
}

impl Default for LocConf {
    fn default() -> Self {
        LocConf {
            tracker: None,
            campaign_id: ptr::null_mut(),
            click_id: ptr::null_mut(),
            value: ptr::null_mut(),
            video_event: ptr::null_mut(),
            watch_time: ptr::null_mut(),
            dimensions: None,
            ip: None,
            respect_dnt: None,
            userid: None,
            userid_name: None,
            userid_domain: None,
            userid_path: None,
            userid_expires: None,
            userid_cookie: None,
            https: ptr::null_mut(),
            fallback_url: None,
            unknown_campaign: None,
            ring_full: None,
            signed: None,
            bots: None,
            limits: None,
            invalid: None,
            duplicates: None,
            duplicates_key: ptr::null_mut(),
            signed_dimensions: None,
            signed_index: Vec::new(),
            admin: None,
            admin_token: None,
            stats: false,
        }
    }
}

const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

const fn command(
    name: ngx_str_t,
    type_: u32,
    set: unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char,
    conf: usize,
) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: type_ as ngx_uint_t,
        set: Some(set),
        conf,
        offset: 0,
        post: ptr::null_mut(),
    }
}

pub static mut COMMANDS: [ngx_command_t; 33] = [
    command(
        ngx_string!("tracker_ring"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE2,
        set_ring,
        NGX_HTTP_MAIN_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_campaigns"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE2,
        set_campaigns,
        NGX_HTTP_MAIN_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_state"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE123,
        crate::state::set_state,
        NGX_HTTP_MAIN_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker"),
        NGX_HTTP_LOC_CONF | NGX_CONF_TAKE12,
        set_tracker,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_campaign_id"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_campaign_id,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_dimension"),
        ANY_LEVEL | ngx::ffi::NGX_CONF_TAKE23,
        set_dimension,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_ip"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_ip,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_respect_dnt"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_respect_dnt,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_userid"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_userid,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_userid_name"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_userid_name,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_userid_domain"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_userid_domain,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_userid_path"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_userid_path,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_userid_expires"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_userid_expires,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_click_id"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_click_id,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_value"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_value,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_video_event"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_video_event,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_watch_time"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_watch_time,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_fallback_url"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_fallback_url,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_unknown_campaign"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_unknown_campaign,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_ring_full"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_ring_full,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_admin"),
        NGX_HTTP_LOC_CONF | ngx::ffi::NGX_CONF_NOARGS | NGX_CONF_TAKE1,
        set_admin,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_admin_token"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_admin_token,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_stats"),
        NGX_HTTP_LOC_CONF | ngx::ffi::NGX_CONF_NOARGS,
        set_stats,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_secret"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE1,
        set_secret,
        NGX_HTTP_MAIN_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_signed"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_signed,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_signed_dimensions"),
        ANY_LEVEL | ngx::ffi::NGX_CONF_1MORE,
        set_signed_dimensions,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_bots"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_bots,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_limits"),
        ANY_LEVEL | ngx::ffi::NGX_CONF_1MORE,
        set_limits,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_invalid"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_invalid,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_duplicates_zone"),
        NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE12,
        set_duplicates_zone,
        NGX_HTTP_MAIN_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_duplicates"),
        ANY_LEVEL | NGX_CONF_TAKE12,
        set_duplicates,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    command(
        ngx_string!("tracker_duplicates_key"),
        ANY_LEVEL | NGX_CONF_TAKE1,
        set_duplicates_key,
        NGX_HTTP_LOC_CONF_OFFSET,
    ),
    ngx_command_t::empty(),
];

/// The directive's arguments (0 is its name).
///
/// # Safety
/// `cf` is the configuration nginx passes to a directive handler.
pub(crate) unsafe fn args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: nginx sets `cf.args` to the array of the directive's words before calling it.
    unsafe { (*(*cf).args).as_slice() }
}

fn bytes(s: &ngx_str_t) -> &[u8] {
    s.as_bytes()
}

pub(crate) fn text(s: &ngx_str_t) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

pub(crate) fn fail(cf: *mut ngx_conf_t, msg: &str) -> *mut c_char {
    ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", msg);
    NGX_CONF_ERROR
}

/// Parses a size ("64m", "1g"; `tracker_core::limits::parse_size`), zero refused.
fn parse_size(s: &ngx_str_t) -> Option<u64> {
    let text = std::str::from_utf8(s.as_bytes()).ok()?;
    tracker_core::limits::parse_size(text).filter(|&n| n > 0)
}

unsafe extern "C" fn set_ring(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's main conf (NGX_HTTP_MAIN_CONF_OFFSET).
    let mcf = unsafe { &mut *conf.cast::<MainConf>() };
    let a = unsafe { args(cf) };
    if mcf.ring.is_some() {
        return fail(cf, "\"tracker_ring\" directive is duplicate");
    }
    let path = PathBuf::from(text(&a[1]));
    if !path.is_absolute() {
        return fail(
            cf,
            &format!(
                "\"tracker_ring\" path \"{}\" must be absolute",
                path.display()
            ),
        );
    }
    let Some(size) = parse_size(&a[2]) else {
        return fail(
            cf,
            &format!(
                "invalid ring size \"{}\" in \"tracker_ring\" directive",
                text(&a[2])
            ),
        );
    };
    if size < tracker_core::ring::MIN_DATA_SIZE {
        return fail(
            cf,
            &format!(
                "ring size \"{}\" in \"tracker_ring\" directive is too small, the minimum is {}k",
                text(&a[2]),
                tracker_core::ring::MIN_DATA_SIZE / 1024
            ),
        );
    }
    match RingFile::open_or_create(&path, size) {
        Ok((ring, opened)) => {
            if let Opened::KeptOtherSize(kept) = opened {
                ngx::ngx_conf_log_error!(
                    ngx::ffi::NGX_LOG_WARN, cf,
                    "\"tracker_ring\" \"{}\" holds unread events or is open in another process (the running nginx, the shipper): keeping its size of {} bytes until it is empty and closed",
                    path.display(), kept
                );
            }
            mcf.ring = Some(ring);
            NGX_CONF_OK
        }
        Err(e) => fail(
            cf,
            &format!("\"tracker_ring\" \"{}\": {}", path.display(), e),
        ),
    }
}

unsafe extern "C" fn set_campaigns(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's main conf (NGX_HTTP_MAIN_CONF_OFFSET).
    let mcf = unsafe { &mut *conf.cast::<MainConf>() };
    let a = unsafe { args(cf) };
    if mcf.campaigns.is_some() {
        return fail(cf, "\"tracker_campaigns\" directive is duplicate");
    }
    let path = text(&a[1]);
    let zone = bytes(&a[2]);
    let Some(spec) = zone.strip_prefix(b"zone=") else {
        return fail(cf, &format!("invalid parameter \"{}\" in \"tracker_campaigns\" directive, it must be \"zone=NAME:SIZE\"", text(&a[2])));
    };
    let Some(colon) = spec.iter().rposition(|&c| c == b':') else {
        return fail(cf, &format!("invalid zone \"{}\" in \"tracker_campaigns\" directive, it must be \"zone=NAME:SIZE\"", text(&a[2])));
    };
    let (name, size) = (&spec[..colon], &spec[colon + 1..]);
    let size_str = ngx_str_t {
        len: size.len(),
        data: size.as_ptr() as *mut u8,
    };
    let Some(size) = parse_size(&size_str).filter(|&s| s >= 8 * 4096) else {
        return fail(
            cf,
            &format!(
                "invalid zone size \"{}\" in \"tracker_campaigns\" directive, the minimum is 32k",
                String::from_utf8_lossy(size)
            ),
        );
    };
    if name.is_empty() {
        return fail(cf, "empty zone name in \"tracker_campaigns\" directive");
    }
    match campaigns::Store::configure(cf, &path, name, size as usize) {
        Ok(store) => {
            mcf.campaigns.insert(store).attach();
            NGX_CONF_OK
        }
        Err(msg) => fail(cf, &format!("\"tracker_campaigns\" \"{path}\": {msg}")),
    }
}

unsafe extern "C" fn set_tracker(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf (NGX_HTTP_LOC_CONF_OFFSET).
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    if lcf.tracker.is_some() {
        return fail(cf, "\"tracker\" directive is duplicate");
    }
    let event_type = bytes(&a[1]).to_vec();
    if event_type.is_empty()
        || event_type.len() > 64
        || !event_type
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
    {
        return fail(cf, &format!("invalid event type \"{}\" in \"tracker\" directive, it must be 1-64 characters of [A-Za-z0-9_-]", text(&a[1])));
    }
    let kind = Kind::of_type(&String::from_utf8_lossy(&event_type));
    let mut response = match kind {
        Kind::Click => Response::Redirect,
        _ => Response::Gif,
    };
    if a.len() == 3 {
        response = match bytes(&a[2]) {
            b"response=gif" => Response::Gif,
            b"response=redirect" => Response::Redirect,
            b"response=empty" => Response::Empty,
            _ => {
                return fail(cf, &format!(
                    "invalid parameter \"{}\" in \"tracker\" directive, it must be \"response=gif\", \"response=redirect\" or \"response=empty\"",
                    text(&a[2])
                ))
            }
        };
    }
    lcf.tracker = Some(Tracker {
        kind,
        event_type,
        response,
    });

    // SAFETY: the http core module's location configuration exists in every location context.
    let clcf = unsafe { NgxHttpCoreModule::location_conf_mut(&*cf) };
    let Some(clcf) = clcf else {
        return NGX_CONF_ERROR;
    };
    clcf.handler = Some(handler::handler);

    // SAFETY: `cf` is valid; main conf exists for every http context.
    if let Some(mcf) = Module::main_conf_mut(unsafe { &*cf }) {
        if mcf.first_use.is_none() {
            // SAFETY: conf_file and its name are set while a file is parsed.
            let (file, line) = unsafe { ((*(*cf).conf_file).file.name, (*(*cf).conf_file).line) };
            mcf.first_use = Some(format!("{}:{}", text(&file), line));
        }
    }
    NGX_CONF_OK
}

/// Makes the location's content handler `h`, once; records the first use of the module.
fn set_handler(
    cf: *mut ngx_conf_t,
    h: unsafe extern "C" fn(*mut ngx::ffi::ngx_http_request_t) -> ngx::ffi::ngx_int_t,
) -> *mut c_char {
    // SAFETY: the http core module's location configuration exists in every location context.
    let clcf = unsafe { NgxHttpCoreModule::location_conf_mut(&*cf) };
    let Some(clcf) = clcf else {
        return NGX_CONF_ERROR;
    };
    if clcf.handler.is_some() {
        return fail(cf, "the location already has a content handler (\"tracker\", \"tracker_admin\" and \"tracker_stats\" cannot share one)");
    }
    clcf.handler = Some(h);
    // SAFETY: `cf` is valid; main conf exists for every http context.
    if let Some(mcf) = Module::main_conf_mut(unsafe { &*cf }) {
        if mcf.needs_campaigns.is_none() {
            // SAFETY: conf_file and its name are set while a file is parsed.
            let (file, line) = unsafe { ((*(*cf).conf_file).file.name, (*(*cf).conf_file).line) };
            mcf.needs_campaigns = Some(format!("{}:{}", text(&file), line));
        }
    }
    NGX_CONF_OK
}

unsafe extern "C" fn set_admin(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf (NGX_HTTP_LOC_CONF_OFFSET).
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    if lcf.admin.is_some() {
        return fail(cf, "\"tracker_admin\" directive is duplicate");
    }
    let test_clock = match a.get(1).map(bytes) {
        None => false,
        Some(b"test_clock") => true,
        Some(_) => {
            return fail(cf, &format!("invalid parameter \"{}\" in \"tracker_admin\" directive, it must be \"test_clock\"", text(&a[1])))
        }
    };
    lcf.admin = Some(test_clock);
    // SAFETY: `cf` is valid; main conf exists for every http context.
    if let Some(mcf) = Module::main_conf_mut(unsafe { &*cf }) {
        // SAFETY: cf is the configuration being parsed (thread pools are declared now and
        // created by nginx in each worker).
        mcf.admin_pool = unsafe { crate::admin_io::Pool::add(cf) };
    }
    set_handler(cf, crate::admin::handler)
}

unsafe extern "C" fn set_admin_token(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf (NGX_HTTP_LOC_CONF_OFFSET).
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    if lcf.admin_token.is_some() {
        return fail(cf, "\"tracker_admin_token\" directive is duplicate");
    }
    let t = bytes(&a[1]);
    if t == b"off" {
        lcf.admin_token = Some(Vec::new());
        return NGX_CONF_OK;
    }
    if t.len() < 16 || !t.iter().all(|c| c.is_ascii_graphic()) {
        return fail(cf, "\"tracker_admin_token\" must be at least 16 printable characters without spaces (or \"off\")");
    }
    lcf.admin_token = Some(t.to_vec());
    NGX_CONF_OK
}

unsafe extern "C" fn set_stats(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf (NGX_HTTP_LOC_CONF_OFFSET).
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    if lcf.stats {
        return fail(cf, "\"tracker_stats\" directive is duplicate");
    }
    lcf.stats = true;
    set_handler(cf, crate::stats::handler)
}

/// Compiles a directive argument into a complex value (variables and text).
///
/// # Safety
/// `cf` is the configuration being parsed; `value` lives as long as the configuration.
pub unsafe fn compile(
    cf: *mut ngx_conf_t,
    value: *mut ngx_str_t,
) -> Option<*mut ngx_http_complex_value_t> {
    // SAFETY: allocating a zeroed complex value from the configuration pool.
    let cv =
        unsafe { ngx::ffi::ngx_pcalloc((*cf).pool, mem::size_of::<ngx_http_complex_value_t>()) }
            .cast::<ngx_http_complex_value_t>();
    if cv.is_null() {
        return None;
    }
    // SAFETY: a zeroed ccv is the documented initial state.
    let mut ccv: ngx_http_compile_complex_value_t = unsafe { mem::zeroed() };
    ccv.cf = cf;
    ccv.value = value;
    ccv.complex_value = cv;
    // SAFETY: ccv is fully initialized; nginx logs its own error on failure.
    (unsafe { ngx_http_compile_complex_value(&mut ccv) } == 0).then_some(cv)
}

unsafe fn set_cv(
    cf: *mut ngx_conf_t,
    slot: &mut *mut ngx_http_complex_value_t,
    name: &str,
) -> *mut c_char {
    if !slot.is_null() {
        return fail(cf, &format!("\"{name}\" directive is duplicate"));
    }
    // SAFETY: args live in the configuration pool for the configuration's lifetime.
    let value: &mut ngx_str_t = unsafe { &mut (*(*cf).args).as_slice_mut()[1] };
    if value.len == 0 {
        return fail(cf, &format!("empty value in \"{name}\" directive"));
    }
    // SAFETY: see above.
    match unsafe { compile(cf, value) } {
        Some(cv) => {
            *slot = cv;
            NGX_CONF_OK
        }
        None => NGX_CONF_ERROR,
    }
}

macro_rules! cv_setter {
    ($fn:ident, $field:ident, $name:literal) => {
        unsafe extern "C" fn $fn(
            cf: *mut ngx_conf_t,
            _cmd: *mut ngx_command_t,
            conf: *mut c_void,
        ) -> *mut c_char {
            // SAFETY: nginx passes this module's location conf (NGX_HTTP_LOC_CONF_OFFSET).
            let lcf = unsafe { &mut *conf.cast::<LocConf>() };
            // SAFETY: called from a directive handler.
            unsafe { set_cv(cf, &mut lcf.$field, $name) }
        }
    };
}

cv_setter!(set_campaign_id, campaign_id, "tracker_campaign_id");
cv_setter!(set_click_id, click_id, "tracker_click_id");
cv_setter!(set_value, value, "tracker_value");
cv_setter!(set_video_event, video_event, "tracker_video_event");
cv_setter!(set_watch_time, watch_time, "tracker_watch_time");
cv_setter!(set_duplicates_key, duplicates_key, "tracker_duplicates_key");

unsafe extern "C" fn set_dimension(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf (NGX_HTTP_LOC_CONF_OFFSET).
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    let name = bytes(&a[1]).to_vec();
    if name.is_empty()
        || name.len() > 64
        || !name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
    {
        return fail(cf, &format!("invalid dimension name \"{}\" in \"tracker_dimension\" directive, it must be 1-64 characters of [A-Za-z0-9_]", text(&a[1])));
    }
    let dims = lcf.dimensions.get_or_insert_with(Vec::new);
    if dims.iter().any(|d| d.name == name) {
        return fail(
            cf,
            &format!(
                "duplicate dimension \"{}\" in \"tracker_dimension\" directive",
                text(&a[1])
            ),
        );
    }
    if dims.len() >= MAX_DIMENSIONS {
        return fail(cf, &format!("too many dimensions in \"tracker_dimension\" directive, the maximum is {MAX_DIMENSIONS}"));
    }
    let personal = match a.get(3).map(bytes) {
        None => false,
        Some(b"personal") => true,
        Some(_) => {
            return fail(cf, &format!("invalid parameter \"{}\" in \"tracker_dimension\" directive, it must be \"personal\"", text(&a[3])))
        }
    };
    // SAFETY: args live in the configuration pool.
    let value: &mut ngx_str_t = unsafe { &mut (*(*cf).args).as_slice_mut()[2] };
    // SAFETY: called from a directive handler.
    match unsafe { compile(cf, value) } {
        Some(cv) => {
            dims.push(Dimension {
                name,
                value: cv,
                personal,
            });
            NGX_CONF_OK
        }
        None => NGX_CONF_ERROR,
    }
}

/// The value of a directive that takes one of a few words: `choices` maps each word to its
/// value; anything else fails with the message nginx's own modules give
/// (`it must be "a", "b" or "c"`).
fn choose<T: Copy>(
    cf: *mut ngx_conf_t,
    value: &ngx_str_t,
    directive: &str,
    choices: &[(&str, T)],
) -> Result<T, *mut c_char> {
    if let Some(&(_, v)) = choices.iter().find(|(w, _)| w.as_bytes() == bytes(value)) {
        return Ok(v);
    }
    let words: Vec<String> = choices.iter().map(|(w, _)| format!("\"{w}\"")).collect();
    let list = match words.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(fail(
        cf,
        &format!(
            "invalid value \"{}\" in \"{directive}\" directive, it must be {list}",
            text(value)
        ),
    ))
}

/// A location directive that takes one word (`tracker_bots flag`): refuses a second one at the
/// same level, and stores the word's value in `Some`.
macro_rules! word_setter {
    ($fn:ident, $field:ident, $name:literal, [$(($word:literal, $value:expr)),+ $(,)?]) => {
        unsafe extern "C" fn $fn(cf: *mut ngx_conf_t, _cmd: *mut ngx_command_t, conf: *mut c_void) -> *mut c_char {
            // SAFETY: nginx passes this module's location conf (NGX_HTTP_LOC_CONF_OFFSET).
            let lcf = unsafe { &mut *conf.cast::<LocConf>() };
            // SAFETY: called from a directive handler.
            let a = unsafe { args(cf) };
            if lcf.$field.is_some() {
                return fail(cf, concat!("\"", $name, "\" directive is duplicate"));
            }
            match choose(cf, &a[1], $name, &[$(($word, $value)),+]) {
                Ok(v) => {
                    lcf.$field = Some(v);
                    NGX_CONF_OK
                }
                Err(e) => e,
            }
        }
    };
}

word_setter!(
    set_userid,
    userid,
    "tracker_userid",
    [("on", true), ("off", false)]
);
word_setter!(
    set_respect_dnt,
    respect_dnt,
    "tracker_respect_dnt",
    [("on", true), ("off", false)]
);
word_setter!(
    set_unknown_campaign,
    unknown_campaign,
    "tracker_unknown_campaign",
    [("store", Unknown::Store), ("count", Unknown::Count)]
);
word_setter!(
    set_ring_full,
    ring_full,
    "tracker_ring_full",
    [("serve", RingFull::Serve), ("503", RingFull::Unavailable)]
);
word_setter!(
    set_signed,
    signed,
    "tracker_signed",
    [
        ("on", Signed::On),
        ("off", Signed::Off),
        ("flag", Signed::Flag)
    ]
);
word_setter!(
    set_bots,
    bots,
    "tracker_bots",
    [
        ("flag", Bots::Flag),
        ("count", Bots::Count),
        ("off", Bots::Off)
    ]
);
word_setter!(
    set_invalid,
    invalid,
    "tracker_invalid",
    [("reject", Invalid::Reject), ("flag", Invalid::Flag)]
);

unsafe extern "C" fn set_ip(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf.
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    if lcf.ip.is_some() {
        return fail(cf, "\"tracker_ip\" directive is duplicate");
    }
    let choices = [
        ("full", IpMode::Full),
        ("anonymize", IpMode::Anonymize),
        ("hash", IpMode::Hash),
        ("off", IpMode::Off),
    ];
    let mode = match choose(cf, &a[1], "tracker_ip", &choices) {
        Ok(m) => m,
        Err(e) => return e,
    };
    if mode == IpMode::Hash {
        // Drawn here, in the master while it loads the configuration: the workers inherit
        // it by fork and hash alike; it lives as long as the module stays loaded.
        tracker_core::privacy::master_secret();
    }
    lcf.ip = Some(mode);
    NGX_CONF_OK
}

/// Cookie attribute text: printable ASCII without spaces, `;` or `,`.
fn cookie_safe(v: &[u8]) -> bool {
    !v.is_empty()
        && v.iter()
            .all(|&c| c.is_ascii_graphic() && c != b';' && c != b',')
}

unsafe extern "C" fn set_userid_name(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf.
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    if lcf.userid_name.is_some() {
        return fail(cf, "\"tracker_userid_name\" directive is duplicate");
    }
    let v = bytes(&a[1]);
    if v.is_empty()
        || v.len() > 64
        || !v
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
    {
        return fail(cf, &format!("invalid cookie name \"{}\" in \"tracker_userid_name\" directive, it must be 1-64 characters of [A-Za-z0-9_-]", text(&a[1])));
    }
    lcf.userid_name = Some(v.to_vec());
    NGX_CONF_OK
}

unsafe extern "C" fn set_userid_domain(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf.
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    if lcf.userid_domain.is_some() {
        return fail(cf, "\"tracker_userid_domain\" directive is duplicate");
    }
    let v = bytes(&a[1]);
    if v == b"none" {
        lcf.userid_domain = Some(Vec::new());
        return NGX_CONF_OK;
    }
    if !cookie_safe(v)
        || !v
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'-')
    {
        return fail(
            cf,
            &format!(
                "invalid domain \"{}\" in \"tracker_userid_domain\" directive",
                text(&a[1])
            ),
        );
    }
    lcf.userid_domain = Some(v.to_vec());
    NGX_CONF_OK
}

unsafe extern "C" fn set_userid_path(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf.
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    if lcf.userid_path.is_some() {
        return fail(cf, "\"tracker_userid_path\" directive is duplicate");
    }
    let v = bytes(&a[1]);
    if !v.starts_with(b"/") || !cookie_safe(v) {
        return fail(cf, &format!("invalid path \"{}\" in \"tracker_userid_path\" directive, it must start with \"/\" and have no spaces, \";\" or \",\"", text(&a[1])));
    }
    lcf.userid_path = Some(v.to_vec());
    NGX_CONF_OK
}

unsafe extern "C" fn set_userid_expires(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf.
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    if lcf.userid_expires.is_some() {
        return fail(cf, "\"tracker_userid_expires\" directive is duplicate");
    }
    if bytes(&a[1]) == b"off" {
        lcf.userid_expires = Some(None);
        return NGX_CONF_OK;
    }
    let mut copy = a[1];
    // SAFETY: ngx_parse_time only reads `len` bytes of the string.
    let secs = unsafe { ngx::ffi::ngx_parse_time(&mut copy, 1) };
    if secs <= 0 {
        return fail(cf, &format!("invalid time \"{}\" in \"tracker_userid_expires\" directive, it must be a time like \"365d\" or \"off\"", text(&a[1])));
    }
    lcf.userid_expires = Some(Some(secs as u64));
    NGX_CONF_OK
}

unsafe extern "C" fn set_fallback_url(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf.
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    if lcf.fallback_url.is_some() {
        return fail(cf, "\"tracker_fallback_url\" directive is duplicate");
    }
    let url = bytes(&a[1]);
    if url == b"off" {
        lcf.fallback_url = Some(Vec::new());
        return NGX_CONF_OK;
    }
    let s = String::from_utf8_lossy(url);
    if let Err(e) = tracker_core::landing::Template::parse(&s) {
        return fail(
            cf,
            &format!(
                "invalid URL \"{s}\" in \"tracker_fallback_url\" directive: {}",
                e.0
            ),
        );
    }
    lcf.fallback_url = Some(url.to_vec());
    NGX_CONF_OK
}

unsafe extern "C" fn set_secret(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's main conf (NGX_HTTP_MAIN_CONF_OFFSET).
    let mcf = unsafe { &mut *conf.cast::<MainConf>() };
    let a = unsafe { args(cf) };
    if mcf.secret.is_some() {
        return fail(cf, "\"tracker_secret\" directive is duplicate");
    }
    let path = PathBuf::from(text(&a[1]));
    match tracker_core::sign::Keys::load(&path) {
        Ok(keys) => {
            mcf.secret = Some(keys);
            NGX_CONF_OK
        }
        Err(e) => fail(cf, &format!("\"tracker_secret\" {e}")),
    }
}

unsafe extern "C" fn set_limits(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf.
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    if lcf.limits.is_some() {
        return fail(cf, "\"tracker_limits\" directive is duplicate");
    }
    let params: Vec<String> = a[1..].iter().map(text).collect();
    let params: Vec<&str> = params.iter().map(String::as_str).collect();
    match tracker_core::limits::parse(&params) {
        Ok(l) => lcf.limits = Some(l),
        Err(e) => return fail(cf, &format!("\"tracker_limits\" directive: {e}")),
    }
    NGX_CONF_OK
}

/// A `window=TIME` parameter: seconds, 1s to 7d.
fn window_param(s: &ngx_str_t, directive: &str) -> Result<u32, String> {
    let Some(t) = s.as_bytes().strip_prefix(b"window=") else {
        return Err(format!(
            "invalid parameter \"{}\" in \"{directive}\" directive, it must be \"window=TIME\"",
            text(s)
        ));
    };
    let mut copy = ngx_str_t {
        len: t.len(),
        data: t.as_ptr().cast_mut(),
    };
    // SAFETY: ngx_parse_time only reads `len` bytes of the string.
    let secs = unsafe { ngx::ffi::ngx_parse_time(&mut copy, 1) };
    if secs <= 0 || !tracker_core::dedup::valid_window(secs as u64) {
        return Err(format!(
            "invalid window \"{}\" in \"{directive}\" directive, it must be a time from 1s to 7d",
            String::from_utf8_lossy(t)
        ));
    }
    Ok(secs as u32)
}

unsafe extern "C" fn set_duplicates_zone(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's main conf (NGX_HTTP_MAIN_CONF_OFFSET).
    let mcf = unsafe { &mut *conf.cast::<MainConf>() };
    let a = unsafe { args(cf) };
    if mcf.duplicates.is_some() {
        return fail(cf, "\"tracker_duplicates_zone\" directive is duplicate");
    }
    let Some(size) = parse_size(&a[1]) else {
        return fail(
            cf,
            &format!(
                "invalid size \"{}\" in \"tracker_duplicates_zone\" directive",
                text(&a[1])
            ),
        );
    };
    let window = match a.get(2).map(|w| window_param(w, "tracker_duplicates_zone")) {
        None => 3600,
        Some(Ok(w)) => w,
        Some(Err(e)) => return fail(cf, &e),
    };
    match crate::dedup::DedupZone::add(cf, size as usize, window) {
        Ok(z) => {
            mcf.duplicates = Some(z);
            NGX_CONF_OK
        }
        Err(e) => fail(cf, &format!("\"tracker_duplicates_zone\": {e}")),
    }
}

unsafe extern "C" fn set_duplicates(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf.
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    if lcf.duplicates.is_some() {
        return fail(cf, "\"tracker_duplicates\" directive is duplicate");
    }
    let mode = match choose(
        cf,
        &a[1],
        "tracker_duplicates",
        &[
            ("flag", Duplicates::Flag),
            ("count", Duplicates::Count),
            ("off", Duplicates::Off),
        ],
    ) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let window = match a.get(2).map(|w| window_param(w, "tracker_duplicates")) {
        None => None,
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => return fail(cf, &e),
    };
    lcf.duplicates = Some((mode, window));
    if mode != Duplicates::Off {
        // SAFETY: cf is valid while parsing.
        let cf_ref = unsafe { &*cf };
        if let Some(mcf) = Module::main_conf_mut(cf_ref) {
            if mcf.needs_duplicates.is_none() {
                // SAFETY: conf_file and its name are set while a file is parsed.
                let (file, line) =
                    unsafe { ((*(*cf).conf_file).file.name, (*(*cf).conf_file).line) };
                mcf.needs_duplicates = Some(format!("{}:{}", text(&file), line));
            }
        }
    }
    NGX_CONF_OK
}

unsafe extern "C" fn set_signed_dimensions(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's location conf.
    let lcf = unsafe { &mut *conf.cast::<LocConf>() };
    let a = unsafe { args(cf) };
    if lcf.signed_dimensions.is_some() {
        return fail(cf, "\"tracker_signed_dimensions\" directive is duplicate");
    }
    let mut names: Vec<Vec<u8>> = Vec::new();
    for arg in &a[1..] {
        let name = bytes(arg).to_vec();
        if name.is_empty()
            || name.len() > 64
            || !name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            return fail(
                cf,
                &format!(
                    "invalid dimension name \"{}\" in \"tracker_signed_dimensions\" directive",
                    text(arg)
                ),
            );
        }
        if names.contains(&name) {
            return fail(
                cf,
                &format!(
                    "duplicate dimension \"{}\" in \"tracker_signed_dimensions\" directive",
                    text(arg)
                ),
            );
        }
        names.push(name);
    }
    lcf.signed_dimensions = Some(names);
    NGX_CONF_OK
}

/// Merges `tracker_signed` and `tracker_signed_dimensions`; a tracker location that checks
/// signatures needs `tracker_secret` and its signed dimensions among its dimensions.
fn merge_signed(
    cf: *mut ngx_conf_t,
    prev: &LocConf,
    conf: &mut LocConf,
) -> Result<(), *mut c_char> {
    conf.signed = conf.signed.or(prev.signed).or(Some(Signed::Off));
    if conf.signed_dimensions.is_none() {
        conf.signed_dimensions = Some(prev.signed_dimensions.clone().unwrap_or_default());
    }
    if conf.tracker.is_none() || conf.signed == Some(Signed::Off) {
        return Ok(());
    }
    // SAFETY: `cf` is valid during the merge; the main conf exists in every http context.
    let has_secret = Module::main_conf_mut(unsafe { &*cf }).is_some_and(|m| m.secret.is_some());
    if !has_secret {
        return Err(fail(cf, "\"tracker_signed\" is on or flag in a tracker location but no \"tracker_secret\" is configured in the http block"));
    }
    let dims = conf.dimensions.as_deref().unwrap_or(&[]);
    let mut index = Vec::new();
    for name in conf.signed_dimensions.as_deref().unwrap_or(&[]) {
        match dims.iter().position(|d| &d.name == name) {
            Some(i) => index.push(i),
            None => {
                return Err(fail(cf, &format!(
                    "\"tracker_signed_dimensions\" names \"{}\", which is not a \"tracker_dimension\" of the location",
                    String::from_utf8_lossy(name)
                )))
            }
        }
    }
    conf.signed_index = index;
    Ok(())
}

/// Compiles a default like `$arg_cid` for a location that set nothing.
unsafe fn default_cv(cf: *mut ngx_conf_t, text: &'static [u8]) -> *mut ngx_http_complex_value_t {
    // SAFETY: allocate the string in the configuration pool so nginx may keep pointers to it.
    let s = unsafe { ngx::ffi::ngx_pnalloc((*cf).pool, text.len()) }.cast::<u8>();
    if s.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `s` has room for `text.len()` bytes.
    unsafe { ptr::copy_nonoverlapping(text.as_ptr(), s, text.len()) };
    // SAFETY: the pool outlives the configuration; compile reads `len` bytes.
    let value = unsafe { ngx::ffi::ngx_palloc((*cf).pool, mem::size_of::<ngx_str_t>()) }
        .cast::<ngx_str_t>();
    if value.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: value points to pool memory for one ngx_str_t.
    unsafe {
        value.write(ngx_str_t {
            len: text.len(),
            data: s,
        })
    };
    // SAFETY: called during configuration merge with a valid cf.
    unsafe { compile(cf, value) }.unwrap_or(ptr::null_mut())
}

macro_rules! merge_cv {
    ($cf:expr, $conf:expr, $prev:expr, $field:ident, $default:literal) => {
        if $conf.$field.is_null() {
            $conf.$field = if $prev.$field.is_null() {
                // SAFETY: merge runs with a valid cf.
                unsafe { default_cv($cf, $default) }
            } else {
                $prev.$field
            };
            if $conf.$field.is_null() {
                return NGX_CONF_ERROR;
            }
        }
    };
}

/// Merges a location's settings with the enclosing level; unset values get their defaults.
///
/// # Safety
/// Called by nginx with this module's location confs.
pub unsafe fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    prev: *mut LocConf,
    conf: *mut LocConf,
) -> *mut c_char {
    // SAFETY: nginx passes two distinct, valid location confs of this module.
    let (prev, conf) = unsafe { (&mut *prev, &mut *conf) };
    if conf.admin_token.is_none() {
        conf.admin_token = prev.admin_token.clone();
    }
    merge_cv!(cf, conf, prev, campaign_id, b"$arg_cid");
    merge_cv!(cf, conf, prev, click_id, b"$arg_click_id");
    merge_cv!(cf, conf, prev, value, b"$arg_value");
    merge_cv!(cf, conf, prev, video_event, b"$arg_event");
    merge_cv!(cf, conf, prev, watch_time, b"$arg_watch_time");
    if conf.dimensions.is_none() {
        conf.dimensions = Some(
            prev.dimensions
                .as_ref()
                .map(|d| {
                    d.iter()
                        .map(|d| Dimension {
                            name: d.name.clone(),
                            value: d.value,
                            personal: d.personal,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        );
    }
    conf.ip = conf.ip.or(prev.ip).or(Some(IpMode::Anonymize));
    conf.respect_dnt = conf.respect_dnt.or(prev.respect_dnt).or(Some(true));
    conf.userid = conf.userid.or(prev.userid).or(Some(false));
    conf.userid_name = conf
        .userid_name
        .take()
        .or_else(|| prev.userid_name.clone())
        .or_else(|| Some(b"tid".to_vec()));
    conf.userid_domain = conf
        .userid_domain
        .take()
        .or_else(|| prev.userid_domain.clone())
        .or_else(|| Some(Vec::new()));
    conf.userid_path = conf
        .userid_path
        .take()
        .or_else(|| prev.userid_path.clone())
        .or_else(|| Some(b"/".to_vec()));
    conf.userid_expires = conf
        .userid_expires
        .or(prev.userid_expires)
        .or(Some(Some(365 * 86_400)));
    if conf.userid == Some(true) {
        conf.userid_cookie = Some(tracker_core::privacy::CookieSpec {
            name: conf.userid_name.clone().unwrap_or_default(),
            domain: conf.userid_domain.clone().unwrap_or_default(),
            path: conf.userid_path.clone().unwrap_or_default(),
            max_age: conf.userid_expires.flatten(),
        });
        // SAFETY: merge runs with a valid cf.
        conf.https = unsafe { default_cv(cf, b"$https") };
        if conf.https.is_null() {
            return NGX_CONF_ERROR;
        }
    }
    if conf.fallback_url.is_none() {
        conf.fallback_url = Some(prev.fallback_url.clone().unwrap_or_default());
    }
    conf.unknown_campaign = conf
        .unknown_campaign
        .or(prev.unknown_campaign)
        .or(Some(Unknown::Store));
    conf.ring_full = conf.ring_full.or(prev.ring_full).or(Some(RingFull::Serve));
    conf.bots = conf.bots.or(prev.bots).or(Some(Bots::Flag));
    conf.limits = conf
        .limits
        .or(prev.limits)
        .or(Some(tracker_core::limits::Limits::default()));
    conf.invalid = conf.invalid.or(prev.invalid).or(Some(Invalid::Reject));
    conf.duplicates = conf
        .duplicates
        .or(prev.duplicates)
        .or(Some((Duplicates::Off, None)));
    if conf.duplicates_key.is_null() {
        conf.duplicates_key = prev.duplicates_key;
    }
    if let Err(e) = merge_signed(cf, prev, conf) {
        return e;
    }
    NGX_CONF_OK
}

/// After the http block: a tracker location needs a ring.
///
/// # Safety
/// Called by nginx in postconfiguration with a valid cf.
pub unsafe fn check_main(cf: *mut ngx_conf_t) -> Result<(), ()> {
    // SAFETY: cf is valid during postconfiguration.
    let Some(mcf) = Module::main_conf_mut(unsafe { &*cf }) else {
        return Err(());
    };
    if let (None, Some(at)) = (&mcf.ring, &mcf.first_use) {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"tracker\" is used at {at} but no \"tracker_ring\" is configured in the http block"
        );
        return Err(());
    }
    if let (None, Some(at)) = (&mcf.duplicates, &mcf.needs_duplicates) {
        ngx_conf_log_error!(
            NGX_LOG_EMERG, cf,
            "\"tracker_duplicates\" is used at {at} but no \"tracker_duplicates_zone\" is configured in the http block"
        );
        return Err(());
    }
    if let (Some(state), Some(dups)) = (&mcf.state, &mut mcf.duplicates) {
        let mut path = state.path.clone().into_os_string();
        path.push(".duplicates");
        let path = PathBuf::from(path);
        match dups.use_file(&path) {
            Ok(opened) => crate::state::log_opened(cf, "tracker_duplicates_zone", &path, &opened),
            Err(e) => {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "\"tracker_duplicates_zone\" with \"tracker_state\": \"{}\": {}",
                    path.display(),
                    e
                );
                return Err(());
            }
        }
    }
    match (&mcf.state, &mut mcf.campaigns) {
        (Some(state), Some(store)) => store.keep_accounts_in(&state.file),
        (None, Some(store)) => {
            ngx_conf_log_error!(
            NGX_LOG_NOTICE, cf,
            "\"tracker_campaigns\" \"{}\": the campaigns' counters (spend, caps) live in the shared zone and will not survive a restart; set \"tracker_state\" to keep them in a file",
            store.path()
        );
        }
        _ => {}
    }
    if let (None, Some(at)) = (&mcf.campaigns, &mcf.needs_campaigns) {
        ngx_conf_log_error!(
            NGX_LOG_EMERG, cf,
            "\"tracker_admin\" or \"tracker_stats\" is used at {at} but no \"tracker_campaigns\" is configured in the http block"
        );
        return Err(());
    }
    Ok(())
}

/// `init_module`: when the master runs as root, gives the ring file and the state file
/// (`tracker_state`) to the workers' user and
/// group (the `user` directive; nginx's default `nobody` and its group otherwise) so that a
/// shipper in that group can open it. As `ngx_create_paths` does: only when the user is set
/// and the owner differs.
pub fn give_files_to_workers(cycle: &ngx::ffi::ngx_cycle_t) -> Status {
    use ngx::core::{CoreModuleMainConf, NgxCoreModule};
    let Some(mcf) = crate::Module::main_conf(cycle) else {
        return Status::NGX_OK;
    };
    let Some(ccf) = NgxCoreModule::main_conf(cycle) else {
        return Status::NGX_OK;
    };
    // `user` unset is NGX_CONF_UNSET_UINT cast to ngx_uid_t (all ones), as nginx compares it.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || ccf.user == ngx::ffi::ngx_uid_t::MAX {
        return Status::NGX_OK;
    }
    let files = [
        (
            "tracker_ring",
            "ring",
            mcf.ring.as_ref().map(|r| r.give_to(ccf.user, ccf.group)),
        ),
        (
            "tracker_state",
            "state",
            mcf.state
                .as_ref()
                .map(|s| s.file.give_to(ccf.user, ccf.group)),
        ),
        (
            "tracker_duplicates_zone",
            "duplicates",
            mcf.duplicates
                .as_ref()
                .and_then(|d| d.file())
                .map(|f| f.give_to(ccf.user, ccf.group)),
        ),
    ];
    for (directive, what, r) in files {
        if let Some(Err(e)) = r {
            ngx::ngx_log_error!(
                ngx::ffi::NGX_LOG_EMERG,
                cycle.log,
                "\"{}\": cannot give the {} file to the worker user {}:{}: {}",
                directive,
                what,
                ccf.user,
                ccf.group,
                e
            );
            return Status::NGX_ERROR;
        }
    }
    Status::NGX_OK
}
