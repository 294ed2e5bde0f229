//! `tracker_admin`: the campaign REST API on the shared zone (see `docs/admin-api.md`).
//!
//! Routes, on the part of the URI after the location's name:
//! - empty or `/`: `GET` lists the campaigns (paged), `POST` upserts a JSON array of them;
//! - `/ID`: `GET`, `PUT` (upsert one campaign), `DELETE`;
//! - `/_clock`, only with `tracker_admin test_clock`: `GET`, and `PUT {"offset_seconds": N}`
//!   which moves the campaigns' clock (tests of schedules and day rollover).
//!
//! A request is first checked for access (the bearer token of `tracker_admin_token`, or a
//! loopback client when no token is configured), then routed. `PUT` and `POST` read their body
//! with `ngx_http_read_client_request_body` (in memory or in nginx's temporary file) and answer
//! from the body handler. Bodies are validated with `tracker_core::campaign::parse_object`
//! before anything changes; a change goes into the zone all or nothing and its record is
//! appended to the campaign journal under the same lock (`Store::upsert_logged`,
//! `crate::journal`), then made durable (fdatasync) before the answer. A change (`PUT`,
//! `DELETE`, bulk `POST`: parsing, the zone's lock, the journal) runs in nginx's thread pool
//! (`crate::admin_io`), off the worker's event loop; the answer is sent from the event loop
//! once it is done. Every answer is JSON with `Cache-Control: no-store`.

use std::collections::HashMap;
use std::fmt;

use ngx::ffi::{
    ngx_connection_t, ngx_http_discard_request_body, ngx_http_finalize_request,
    ngx_http_read_client_request_body, ngx_http_request_t, ngx_int_t, ngx_log_t, ngx_table_elt_t,
    NGX_DECLINED, NGX_DONE, NGX_ERROR, NGX_HTTP_DELETE, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_POST,
    NGX_HTTP_PUT, NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_ERR, NGX_LOG_INFO, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_log_error;
use serde::de::{Deserializer as _, SeqAccess, Visitor};
use serde_json::{json, Map, Value};
use tracker_core::banker::Counters;
use tracker_core::campaign::{self, Campaign};
use tracker_core::input::valid_campaign_id;
use tracker_core::journal::{self, Appended};

use crate::admin_io;
use crate::campaigns::{Store, StoreError};
use crate::config::LocConf;
use crate::{response, Module};

/// Largest body of a bulk `POST` (nginx's `client_max_body_size` applies first).
const MAX_BULK_BODY: u64 = 64 << 20;
/// Largest body of a `PUT` of one campaign.
const MAX_ONE_BODY: u64 = 1 << 20;
/// Largest body of a `PUT` of the test clock.
const MAX_CLOCK_BODY: u64 = 4096;
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// The test clock's resource (so `_clock` is not a campaign id the API can reach).
const CLOCK: &[u8] = b"_clock";
/// The test clock moves at most this far (100 years).
const MAX_CLOCK_OFFSET: i64 = 100 * 366 * 86_400;

/// What the URI names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route<'a> {
    List,
    One(&'a [u8]),
    Clock,
    Nothing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
    Other,
}

/// An answer: status, extra headers and a JSON body (empty: no body).
struct Answer {
    status: usize,
    headers: Vec<(&'static [u8], Vec<u8>)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: usize, v: &Value) -> Answer {
        let mut body = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
        body.push(b'\n');
        Answer {
            status,
            headers: Vec::new(),
            body,
        }
    }

    fn error(status: usize, msg: impl fmt::Display) -> Answer {
        Answer::json(status, &json!({ "error": msg.to_string() }))
    }

    fn empty(status: usize) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, key: &'static [u8], value: impl Into<Vec<u8>>) -> Answer {
        self.headers.push((key, value.into()));
        self
    }
}

/// The outcome of a request: an answer now, or a change to make off the event loop.
enum Reply {
    Now(Answer),
    Change(Change),
}

impl From<Answer> for Reply {
    fn from(a: Answer) -> Reply {
        Reply::Now(a)
    }
}

/// A change, with what it needs to run in a pool thread (no reference to the request).
struct Change {
    store: StoreRef,
    kind: ChangeKind,
    body: Vec<u8>,
}

enum ChangeKind {
    Put(Vec<u8>),
    Delete(Vec<u8>),
    Bulk,
}

/// The store of this configuration, for a pool thread.
struct StoreRef(*const Store);

// SAFETY: the Store lives in the http main conf of the cycle, which outlives every request of
// it; a request whose change runs in the pool stays alive (blocked) until the change is done.
// What the thread calls takes the zone's mutex (shared memory) or reads immutable fields.
unsafe impl Send for StoreRef {}

/// What a change gives the event loop: the answer and a line for the request's log.
struct Outcome {
    answer: Answer,
    log: Option<(usize, String)>,
}

impl From<Answer> for Outcome {
    fn from(answer: Answer) -> Outcome {
        Outcome { answer, log: None }
    }
}

impl Change {
    /// In a pool thread (or inline): parses, changes the zone and the journal, makes the
    /// record durable.
    fn run(self) -> Outcome {
        // SAFETY: see StoreRef.
        let store = unsafe { &*self.store.0 };
        match self.kind {
            ChangeKind::Put(id) => put_one(store, &id, &self.body),
            ChangeKind::Delete(id) => delete_one(store, &id),
            ChangeKind::Bulk => bulk(store, &self.body),
        }
    }
}

/// What one request asks, as far as the URI and method say.
struct Ask<'a> {
    route: Route<'a>,
    method: Method,
    test_clock: bool,
}

impl Ask<'_> {
    /// The largest body this request may carry, when it is one that has a body to read.
    fn body_limit(&self) -> Option<u64> {
        match (self.route, self.method) {
            (Route::List, Method::Post) => Some(MAX_BULK_BODY),
            (Route::One(_), Method::Put) => Some(MAX_ONE_BODY),
            (Route::Clock, Method::Put) if self.test_clock => Some(MAX_CLOCK_BODY),
            _ => None,
        }
    }
}

/// The request's URI and method, routed (the route borrows the URI).
fn ask<'r>(r: &'r ngx_http_request_t, test_clock: bool) -> Ask<'r> {
    let name = NgxHttpCoreModule::location_conf(r).map_or(&[][..], |clcf| clcf.name.as_bytes());
    let m = r.method as u32;
    let method = if m & NGX_HTTP_GET != 0 {
        Method::Get
    } else if m & NGX_HTTP_HEAD != 0 {
        Method::Head
    } else if m & NGX_HTTP_PUT != 0 {
        Method::Put
    } else if m & NGX_HTTP_POST != 0 {
        Method::Post
    } else if m & NGX_HTTP_DELETE != 0 {
        Method::Delete
    } else {
        Method::Other
    };
    Ask {
        route: route(r.uri.as_bytes(), name),
        method,
        test_clock,
    }
}

/// Routes on the URI after the location's name: `` and `/` are the list, `/ID` (or `ID`
/// after a name ending in `/`) one campaign, with at most one trailing `/`.
fn route<'a>(uri: &'a [u8], name: &[u8]) -> Route<'a> {
    let Some(rest) = uri.strip_prefix(name) else {
        return Route::Nothing;
    };
    if rest.is_empty() || rest == b"/" {
        return Route::List;
    }
    let seg = match rest.strip_prefix(b"/") {
        Some(seg) => seg,
        None if name.ends_with(b"/") => rest,
        None => return Route::Nothing,
    };
    let seg = seg.strip_suffix(b"/").unwrap_or(seg);
    if seg.is_empty() || seg.contains(&b'/') {
        Route::Nothing
    } else if seg == CLOCK {
        Route::Clock
    } else {
        Route::One(seg)
    }
}

/// A request header's value (None when absent).
///
/// # Safety
/// `h` is null or a header of a live request that outlives `'r`.
unsafe fn header_value<'r>(h: *mut ngx_table_elt_t) -> Option<&'r [u8]> {
    // SAFETY: see the function's contract.
    unsafe { h.as_ref() }.map(|h| h.value.as_bytes())
}

/// `a == b` in time that depends on the lengths only, never on where they differ.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = given.len() ^ expected.len();
    for (i, &g) in given.iter().enumerate() {
        // `i < expected.len()` depends on the lengths only (the token's length is no secret).
        let e = if i < expected.len() { expected[i] } else { 0 };
        diff |= usize::from(g ^ e);
    }
    core::hint::black_box(diff) == 0
}

/// The token of `Authorization: Bearer TOKEN` (the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at(value.iter().position(|&c| c == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Whether the client is on a loopback address: 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104.
///
/// # Safety
/// `c` is the connection of a live request.
unsafe fn from_loopback(c: &ngx_connection_t) -> bool {
    let sa = c.sockaddr;
    if sa.is_null() {
        return false;
    }
    let len = c.socklen as usize;
    // SAFETY: nginx keeps the peer's sockaddr of `socklen` bytes with the connection; the
    // family says which struct it is, and the lengths are checked before each cast.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET if len >= core::mem::size_of::<libc::sockaddr_in>() => {
                let sin = &*sa.cast::<libc::sockaddr_in>();
                u32::from_be(sin.sin_addr.s_addr) >> 24 == 127
            }
            libc::AF_INET6 if len >= core::mem::size_of::<libc::sockaddr_in6>() => {
                let sin6 = &*sa.cast::<libc::sockaddr_in6>();
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            _ => false,
        }
    }
}

/// The access check: the bearer token when one is configured, else a loopback client.
///
/// # Safety
/// `r` is a live request.
unsafe fn refused(r: &ngx_http_request_t, lcf: &LocConf) -> Option<Answer> {
    match lcf.admin_token.as_deref() {
        Some(token) if !token.is_empty() => {
            // SAFETY: headers_in of a live request.
            let given = unsafe { header_value(r.headers_in.authorization) }.and_then(bearer);
            match given {
                Some(g) if constant_time_eq(g, token) => None,
                Some(_) => Some(
                    Answer::error(
                        401,
                        "the bearer token is not the one of tracker_admin_token",
                    )
                    .header(
                        b"WWW-Authenticate",
                        &b"Bearer realm=\"tracker_admin\", error=\"invalid_token\""[..],
                    ),
                ),
                None => Some(
                    Answer::error(
                        401,
                        "this API needs \"Authorization: Bearer TOKEN\" (tracker_admin_token)",
                    )
                    .header(b"WWW-Authenticate", &b"Bearer realm=\"tracker_admin\""[..]),
                ),
            }
        }
        _ => {
            // SAFETY: the connection of a live request is live.
            let local =
                unsafe { r.connection.as_ref() }.is_some_and(|c| unsafe { from_loopback(c) });
            (!local).then(|| {
                Answer::error(403, "without tracker_admin_token the API only answers clients on loopback addresses")
            })
        }
    }
}

/// 415 when the request says its body is something else than JSON.
///
/// # Safety
/// `r` is a live request.
unsafe fn not_json(r: &ngx_http_request_t) -> Option<Answer> {
    // SAFETY: headers_in of a live request.
    let ct = unsafe { header_value(r.headers_in.content_type) }?;
    let media = ct
        .split(|&c| c == b';')
        .next()
        .unwrap_or(b"")
        .trim_ascii()
        .to_ascii_lowercase();
    if media == b"application/json" || media.ends_with(b"+json") {
        return None;
    }
    Some(Answer::error(
        415,
        format!(
            "Content-Type \"{}\" is not JSON: send application/json",
            String::from_utf8_lossy(ct)
        ),
    ))
}

/// The content handler of a `tracker_admin` location.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls the content handler with a live request.
    let Some(r) = (unsafe { r.as_mut() }) else {
        return NGX_ERROR as ngx_int_t;
    };
    let Some(lcf) = Module::location_conf(r) else {
        return NGX_ERROR as ngx_int_t;
    };
    let Some(test_clock) = lcf.admin else {
        return NGX_DECLINED as ngx_int_t;
    };

    // SAFETY: r is live for the whole call.
    let look = unsafe { first_look(r, lcf, test_clock) };
    if let Ok(true) = look {
        // SAFETY: r is live; nginx calls body_handler once the body is read (maybe at once).
        let rc = unsafe { ngx_http_read_client_request_body(r, Some(body_handler)) };
        if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
            return rc;
        }
        return NGX_DONE as ngx_int_t;
    }
    // SAFETY: r is live; a body this API does not read is dropped.
    let rc = unsafe { ngx_http_discard_request_body(r) };
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    let reply = match look {
        Err(a) => Reply::Now(a),
        // SAFETY: r is live.
        Ok(_) => unsafe { answer(r, test_clock, Vec::new()) },
    };
    // SAFETY: r is live and in its content handler.
    unsafe { reply_to(r, reply) }
}

/// Sends the answer now, or runs the change in the thread pool and answers when it is done
/// (then returns `NGX_DONE`).
///
/// # Safety
/// `r` is a live request in its content handler or body handler.
unsafe fn reply_to(r: &mut ngx_http_request_t, reply: Reply) -> ngx_int_t {
    let change = match reply {
        // SAFETY: see the function's contract.
        Reply::Now(a) => return unsafe { send(r, a) },
        Reply::Change(c) => c,
    };
    let Some(pool) = Module::main_conf(r).map(|m| &m.admin_pool) else {
        return NGX_ERROR as ngx_int_t;
    };
    let job: admin_io::Job<Outcome> = Box::new(move || change.run());
    let finish: admin_io::Finish<Outcome> = Box::new(|r, outcome| {
        if let Some((level, line)) = outcome.log {
            // SAFETY: the connection of a live request and its log are live.
            let log = unsafe { (*r.connection).log };
            ngx_log_error!(level, log, "tracker_admin: {}", line);
        }
        // SAFETY: admin_io calls this with the live request, on the event loop.
        unsafe { send(r, outcome.answer) }
    });
    // SAFETY: see the function's contract.
    unsafe { admin_io::run(pool, r, job, finish) }
}

/// What can be decided before reading a body: an answer at once (access refused, a body that
/// is not JSON or too large), or whether the request has a body to read.
///
/// # Safety
/// `r` is a live request.
unsafe fn first_look(
    r: &ngx_http_request_t,
    lcf: &LocConf,
    test_clock: bool,
) -> Result<bool, Answer> {
    // SAFETY: see the function's contract.
    unsafe {
        if let Some(no) = refused(r, lcf) {
            return Err(no);
        }
        let Some(limit) = ask(r, test_clock).body_limit() else {
            return Ok(false);
        };
        if let Some(no) = not_json(r) {
            return Err(no);
        }
        let declared = r.headers_in.content_length_n;
        if declared > 0 && declared as u64 > limit {
            return Err(too_large(limit));
        }
    }
    Ok(true)
}

/// Called by nginx once the request body is read: answers and finalizes the request.
unsafe extern "C" fn body_handler(r: *mut ngx_http_request_t) {
    // SAFETY: nginx passes the request whose body was read; it is live.
    let Some(req) = (unsafe { r.as_mut() }) else {
        return;
    };
    let rc = match Module::location_conf(req) {
        Some(lcf) => {
            let test_clock = lcf.admin.unwrap_or(false);
            let limit = ask(req, test_clock).body_limit().unwrap_or(MAX_ONE_BODY);
            // SAFETY: req is live; its body has been read.
            let reply = match unsafe { read_body(req, limit) } {
                // SAFETY: req is live.
                Ok(body) => unsafe { answer(req, test_clock, body) },
                Err(a) => Reply::Now(a),
            };
            // SAFETY: req is live, in its body handler.
            unsafe { reply_to(req, reply) }
        }
        None => NGX_ERROR as ngx_int_t,
    };
    // SAFETY: the body handler ends the request it was called for.
    unsafe { ngx_http_finalize_request(r, rc) };
}

fn too_large(limit: u64) -> Answer {
    Answer::error(
        413,
        format!("the body is larger than the API takes here ({limit} bytes)"),
    )
}

/// The request body: nginx's buffers in memory, or its temporary file.
///
/// # Safety
/// `r` is a live request whose body has been read.
unsafe fn read_body(r: &ngx_http_request_t, limit: u64) -> Result<Vec<u8>, Answer> {
    // SAFETY: request_body is null or nginx's body structure for this request.
    let Some(rb) = (unsafe { r.request_body.as_ref() }) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<u8> = Vec::new();
    let mut cl = rb.bufs;
    // SAFETY: the chain links and their buffers belong to the request body, alive with the
    // request.
    while let Some(link) = unsafe { cl.as_ref() } {
        // SAFETY: as above.
        if let Some(b) = unsafe { link.buf.as_ref() } {
            if b.in_file() != 0 && !b.file.is_null() {
                let len = u64::try_from(b.file_last - b.file_pos).unwrap_or(0);
                if out.len() as u64 + len > limit {
                    return Err(too_large(limit));
                }
                let start = out.len();
                out.resize(start + len as usize, 0);
                // SAFETY: a file buffer points at the body's temporary file, open until the
                // request ends.
                let fd = unsafe { (*b.file).fd };
                if let Err(e) = read_at(fd, &mut out[start..], b.file_pos) {
                    return Err(Answer::error(
                        500,
                        format!("cannot read the request body's temporary file: {e}"),
                    ));
                }
            } else if !b.pos.is_null() && b.last > b.pos {
                // SAFETY: [pos, last) are the buffer's bytes.
                let bytes = unsafe {
                    core::slice::from_raw_parts(b.pos, b.last.offset_from(b.pos) as usize)
                };
                if (out.len() + bytes.len()) as u64 > limit {
                    return Err(too_large(limit));
                }
                out.extend_from_slice(bytes);
            }
        }
        cl = link.next;
    }
    Ok(out)
}

/// Fills `buf` from `fd` at `offset`.
fn read_at(fd: i32, buf: &mut [u8], offset: i64) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is writable memory of `rest.len()` bytes.
        let n = unsafe {
            libc::pread(
                fd,
                rest.as_mut_ptr().cast(),
                rest.len(),
                offset + done as i64,
            )
        };
        match n {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file is shorter than the body",
                ))
            }
            n if n > 0 => done += n as usize,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Sends an answer.
///
/// # Safety
/// `r` is a live request in its content handler or body handler.
unsafe fn send(r: &mut ngx_http_request_t, a: Answer) -> ngx_int_t {
    let headers: Vec<(&'static [u8], &[u8])> =
        a.headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    // SAFETY: see the function's contract.
    unsafe { response::with_body(r, a.status, b"application/json", &headers, &a.body) }
}

/// The answer to a request that passed the access check (`body`: empty when it has none).
///
/// # Safety
/// `r` is a live request.
unsafe fn answer(r: &ngx_http_request_t, test_clock: bool, body: Vec<u8>) -> Reply {
    let Some(store) = Module::main_conf(r).and_then(|m| m.campaigns.as_ref()) else {
        return Answer::error(500, "no tracker_campaigns zone").into();
    };
    let a = ask(r, test_clock);
    // SAFETY: the connection of a live request and its log are live.
    let log = unsafe { (*r.connection).log };
    let args = r.args.as_bytes();
    let allow = |methods: &'static str| {
        Answer::error(405, format!("method not allowed here: {methods}")).header(b"Allow", methods)
    };
    let change = |kind, body| {
        Reply::Change(Change {
            store: StoreRef(store),
            kind,
            body,
        })
    };
    let now = match (a.route, a.method) {
        (Route::List, Method::Post) => return change(ChangeKind::Bulk, body),
        (Route::One(id), Method::Put) => return change(ChangeKind::Put(id.to_vec()), body),
        (Route::One(id), Method::Delete) => {
            return change(ChangeKind::Delete(id.to_vec()), Vec::new())
        }
        (Route::Nothing, _) => Answer::error(404, "no such resource: the API has the list (the location) and one campaign (the location/ID)"),
        (Route::Clock, _) if !a.test_clock => Answer::error(404, "the test clock is not enabled (\"tracker_admin test_clock;\")"),
        (Route::List, Method::Get | Method::Head) => list(store, args),
        (Route::List, _) => allow("GET, HEAD, POST"),
        (Route::One(id), Method::Get | Method::Head) => get_one(store, id),
        (Route::One(_), _) => allow("GET, HEAD, PUT, DELETE"),
        (Route::Clock, Method::Get | Method::Head) => clock(store),
        (Route::Clock, Method::Put) => set_clock(store, &body, log),
        (Route::Clock, _) => allow("GET, HEAD, PUT"),
    };
    Reply::Now(now)
}

/// A campaign in the file's form, with its counters.
fn with_counters(c: &Campaign, counters: &Counters) -> Value {
    let mut v = c.to_json();
    if let Value::Object(m) = &mut v {
        m.insert(
            "counters".into(),
            serde_json::to_value(counters).unwrap_or(Value::Null),
        );
    }
    v
}

/// `name=value` pairs of a query string (not decoded: the API's values are digits).
fn query(args: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    args.split(|&c| c == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.iter().position(|&c| c == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &[][..]),
        })
}

fn whole_number(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn list(store: &Store, args: &[u8]) -> Answer {
    let (mut limit, mut from) = (DEFAULT_LIMIT, 0);
    for (k, v) in query(args) {
        match k {
            b"limit" => match whole_number(v) {
                Some(n) if n > 0 => limit = n.min(MAX_LIMIT),
                _ => {
                    return Answer::error(
                        400,
                        format!("limit: must be a whole number from 1 to {MAX_LIMIT}"),
                    )
                }
            },
            b"cursor" => {
                match whole_number(v) {
                    Some(n) => from = n,
                    None => return Answer::error(
                        400,
                        "cursor: not a cursor of this API (pass the \"next\" of the previous page)",
                    ),
                }
            }
            _ => {}
        }
    }
    let (page, next) = store.page(from, limit);
    let (count, _, _) = store.summary();
    let campaigns: Vec<Value> = page.iter().map(|(c, k)| with_counters(c, k)).collect();
    Answer::json(
        200,
        &json!({ "campaigns": campaigns, "next": next.map(|n| n.to_string()), "count": count }),
    )
}

fn get_one(store: &Store, id: &[u8]) -> Answer {
    let found = std::str::from_utf8(id)
        .ok()
        .filter(|_| valid_campaign_id(id))
        .and_then(|id| store.get(id));
    match found {
        Some((c, k)) => Answer::json(200, &with_counters(&c, &k)),
        None => no_campaign(id),
    }
}

fn no_campaign(id: &[u8]) -> Answer {
    Answer::error(
        404,
        format!("no campaign \"{}\"", String::from_utf8_lossy(id)),
    )
}

fn full(store: &Store) -> Answer {
    let (count, size, _) = store.summary();
    Answer::error(507, format!(
        "the campaign zone is full: no room for this change in its {size} bytes ({count} campaigns); nothing was changed. Make the zone larger (tracker_campaigns ... zone=NAME:SIZE) and reload"
    ))
}

fn store_error(store: &Store, e: StoreError) -> Answer {
    match e {
        StoreError::Full => full(store),
        StoreError::NotReady => Answer::error(500, "the campaign zone is not initialized"),
    }
}

/// The journal of the store's campaigns file.
fn journal_of(store: &Store) -> String {
    journal::journal_path(std::path::Path::new(store.path()))
        .to_string_lossy()
        .into_owned()
}

/// The outcome of a change made in the zone: its record made durable, then `answer`; or a
/// 500 if appending or syncing failed (the change is live, not durable).
fn durable(
    store: &Store,
    appended: std::io::Result<Appended>,
    what: String,
    answer: Answer,
) -> Outcome {
    let journal = journal_of(store);
    match appended.and_then(|a| a.make_durable()) {
        Ok(()) => {
            crate::journal::compact_when_due(store);
            Outcome {
                answer,
                log: Some((
                    NGX_LOG_INFO as usize,
                    format!("{what}; durable in \"{journal}\""),
                )),
            }
        }
        Err(e) => {
            let msg = format!(
                "{what} in the shared zone (every worker sees it), but writing it to the journal \"{journal}\" failed: {e}; the next reload or restart will undo the change (the worker user must be able to write the campaigns file's directory)"
            );
            Outcome {
                answer: Answer::error(500, &msg),
                log: Some((NGX_LOG_ERR as usize, msg)),
            }
        }
    }
}

/// The body as JSON, or a 400 that says why not.
fn parse_json(body: &[u8]) -> Result<Value, Answer> {
    if body.trim_ascii().is_empty() {
        return Err(Answer::error(
            400,
            "the body is empty: send a JSON campaign object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| Answer::error(400, format!("invalid JSON: {e}")))
}

fn put_one(store: &Store, id: &[u8], body: &[u8]) -> Outcome {
    let Some(id) = std::str::from_utf8(id)
        .ok()
        .filter(|_| valid_campaign_id(id))
    else {
        return Answer::error(
            400,
            format!(
                "invalid id \"{}\": must be 1-64 characters of [A-Za-z0-9_.:-]",
                String::from_utf8_lossy(id)
            ),
        )
        .into();
    };
    let what = format!("campaign \"{id}\"");
    match put_parse(id, &what, body) {
        Ok(c) => put_apply(store, c, what),
        Err(a) => a.into(),
    }
}

/// The campaign of a `PUT` body.
fn put_parse(id: &str, what: &str, body: &[u8]) -> Result<Campaign, Answer> {
    let mut obj = match parse_json(body)? {
        Value::Object(m) => m,
        _ => {
            return Err(Answer::error(
                400,
                format!("{what}: the body must be a JSON object (one campaign)"),
            ))
        }
    };
    match obj.get("id") {
        None => {
            obj.insert("id".into(), Value::String(id.into()));
        }
        Some(Value::String(s)) if s == id => {}
        Some(other) => {
            return Err(Answer::error(400, format!("{what}: id: {other} in the body is not the id of the URL (leave it out or make it \"{id}\")")))
        }
    }
    campaign::parse_object(&obj, what).map_err(|e| Answer::error(400, e))
}

/// Upserts one campaign and appends its record.
fn put_apply(store: &Store, c: Campaign, what: String) -> Outcome {
    let mut record = Vec::new();
    journal::encode_upsert(core::slice::from_ref(&c), &mut record);
    let path = store.path();
    let (created, appended) = match store.upsert_logged(core::slice::from_ref(&c), || {
        crate::journal::append(path, &record)
    }) {
        Ok((n, appended)) => (n > 0, appended),
        Err(e) => return store_error(store, e).into(),
    };
    let what = format!("{what} {}", if created { "created" } else { "updated" });
    let v = match store.get(&c.id) {
        Some((c, k)) => with_counters(&c, &k),
        None => c.to_json(),
    };
    let answer = Answer::json(if created { 201 } else { 200 }, &v);
    durable(store, appended, what, answer)
}

fn delete_one(store: &Store, id: &[u8]) -> Outcome {
    let Some(id_text) = std::str::from_utf8(id)
        .ok()
        .filter(|_| valid_campaign_id(id))
    else {
        return no_campaign(id).into();
    };
    let mut record = Vec::new();
    journal::encode_delete(&[id_text], &mut record);
    let path = store.path();
    match store.delete_logged(id_text, || crate::journal::append(path, &record)) {
        Ok(Some(appended)) => durable(
            store,
            appended,
            format!("campaign \"{id_text}\" deleted"),
            Answer::empty(204),
        ),
        Ok(None) => no_campaign(id).into(),
        Err(e) => store_error(store, e).into(),
    }
}

/// Reads a JSON array of campaign objects one element at a time (a bulk body can hold a
/// million: only the parsed campaigns are kept, never the whole JSON tree). A validation
/// error is kept in `error` (serde would add a position to it).
struct BulkVisitor<'e> {
    error: &'e mut Option<String>,
}

impl<'de> Visitor<'de> for BulkVisitor<'_> {
    type Value = Vec<Campaign>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of campaign objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Campaign>, A::Error> {
        let mut list = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut fail = |msg: String| -> A::Error {
            *self.error = Some(msg);
            serde::de::Error::custom("invalid campaign")
        };
        let mut n = 0;
        while let Some(v) = seq.next_element::<Value>()? {
            n += 1;
            let Value::Object(obj) = v else {
                return Err(fail(format!("object {n}: not a JSON object")));
            };
            let c = campaign::parse_object(&obj, &format!("object {n}")).map_err(&mut fail)?;
            if let Some(first) = seen.insert(c.id.clone(), n) {
                return Err(fail(format!(
                    "campaign \"{}\": duplicate id (objects {first} and {n})",
                    c.id
                )));
            }
            list.push(c);
        }
        Ok(list)
    }
}

fn bulk(store: &Store, body: &[u8]) -> Outcome {
    let list = match bulk_parse(body) {
        Ok(list) => list,
        Err(a) => return a.into(),
    };
    if list.is_empty() {
        return Answer::json(200, &json!({ "created": 0, "updated": 0 })).into();
    }
    // One record for the whole list: one durable write, all or nothing at replay.
    let mut record = Vec::new();
    journal::encode_upsert(&list, &mut record);
    let path = store.path();
    let (created, appended) =
        match store.upsert_logged(&list, || crate::journal::append(path, &record)) {
            Ok(x) => x,
            Err(e) => return store_error(store, e).into(),
        };
    let updated = list.len() - created;
    durable(
        store,
        appended,
        format!("bulk upsert: {created} campaigns created, {updated} updated"),
        Answer::json(200, &json!({ "created": created, "updated": updated })),
    )
}

/// The campaigns of a bulk `POST` body.
fn bulk_parse(body: &[u8]) -> Result<Vec<Campaign>, Answer> {
    match body.trim_ascii_start().first() {
        Some(b'[') => {}
        None => {
            return Err(Answer::error(
                400,
                "the body is empty: send a JSON array of campaign objects",
            ))
        }
        Some(_) => {
            return Err(Answer::error(
                400,
                "the body must be a JSON array of campaign objects",
            ))
        }
    }
    let mut error = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de
        .deserialize_seq(BulkVisitor { error: &mut error })
        .and_then(|list| de.end().map(|()| list));
    match (parsed, error) {
        (_, Some(msg)) => Err(Answer::error(400, msg)),
        (Err(e), None) => Err(Answer::error(400, format!("invalid JSON: {e}"))),
        (Ok(list), None) => Ok(list),
    }
}

fn clock(store: &Store) -> Answer {
    let now = store.now();
    Answer::json(
        200,
        &json!({
            "offset_seconds": store.clock_offset(),
            "now": campaign::rfc3339(now),
            "now_unix": now,
        }),
    )
}

fn set_clock(store: &Store, body: &[u8], log: *mut ngx_log_t) -> Answer {
    let obj: Map<String, Value> = match parse_json(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => {
            return Answer::error(
                400,
                "the body must be a JSON object {\"offset_seconds\": N}",
            )
        }
        Err(a) => return a,
    };
    if let Some(k) = obj.keys().find(|k| k.as_str() != "offset_seconds") {
        return Answer::error(
            400,
            format!("unknown field {k:?}: the body is {{\"offset_seconds\": N}}"),
        );
    }
    let Some(off) = obj
        .get("offset_seconds")
        .and_then(Value::as_i64)
        .filter(|o| o.abs() <= MAX_CLOCK_OFFSET)
    else {
        return Answer::error(400, format!("offset_seconds: must be a whole number of seconds from -{MAX_CLOCK_OFFSET} to {MAX_CLOCK_OFFSET}"));
    };
    store.set_clock_offset(off);
    ngx_log_error!(
        NGX_LOG_INFO,
        log,
        "tracker_admin: test clock offset set to {} seconds",
        off
    );
    clock(store)
}
