//! The answers of tracker locations: the 1x1 GIF, a 302 to the landing URL, or 204. All carry
//! headers that forbid caching, so every view or click reaches the tracker.

use core::ptr;

use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_http_output_filter, ngx_http_request_t, ngx_http_send_header,
    ngx_int_t, ngx_list_push, ngx_pcalloc, ngx_pnalloc, ngx_str_t, ngx_table_elt_t, NGX_ERROR,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_OK,
};

/// The smallest transparent GIF: a 1x1 image whose only pixel is the transparent color.
pub static GIF: [u8; 43] = [
    b'G', b'I', b'F', b'8', b'9', b'a', // signature and version
    0x01, 0x00, 0x01, 0x00, // width 1, height 1
    0x80, 0x01, 0x00, // a 2-color global table, background #1, no aspect ratio
    0x00, 0x00, 0x00, 0xff, 0xff, 0xff, // colors #0 black, #1 white
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x01, 0x00, // graphic control: #1 is transparent
    0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, // image at 0,0 size 1x1
    0x02, 0x02, 0x4c, 0x01, 0x00, // LZW data: clear, pixel 1, end
    0x3b, // trailer
];

fn ngx_str(s: &'static [u8]) -> ngx_str_t {
    ngx_str_t {
        len: s.len(),
        data: s.as_ptr().cast_mut(),
    }
}

/// Adds an output header.
///
/// # Safety
/// `r` is a live request; `value` outlives the response (static or request pool memory).
pub(crate) unsafe fn add_header(
    r: &mut ngx_http_request_t,
    key: &'static [u8],
    value: ngx_str_t,
) -> Option<*mut ngx_table_elt_t> {
    // SAFETY: headers_out.headers is an initialized list of ngx_table_elt_t.
    let h = unsafe { ngx_list_push(&mut r.headers_out.headers) }.cast::<ngx_table_elt_t>();
    if h.is_null() {
        return None;
    }
    // SAFETY: h points to a fresh list element; zeroing gives null `next`/`lowcase_key`.
    unsafe {
        ptr::write_bytes(h, 0, 1);
        (*h).hash = 1;
        (*h).key = ngx_str(key);
        (*h).value = value;
    }
    Some(h)
}

/// # Safety
/// `r` is a live request.
unsafe fn no_cache(r: &mut ngx_http_request_t) -> bool {
    // SAFETY: static values outlive every request.
    unsafe {
        add_header(
            r,
            b"Cache-Control",
            ngx_str(b"no-store, no-cache, must-revalidate, max-age=0"),
        )
        .is_some()
            && add_header(r, b"Pragma", ngx_str(b"no-cache")).is_some()
            && add_header(r, b"Expires", ngx_str(b"Thu, 01 Jan 1970 00:00:00 GMT")).is_some()
    }
}

/// Sends the headers of a bodyless answer.
///
/// # Safety
/// `r` is a live request in its content handler.
unsafe fn header_only(r: &mut ngx_http_request_t, status: usize) -> ngx_int_t {
    r.headers_out.status = status;
    r.headers_out.content_length_n = 0;
    r.set_header_only(1);
    // SAFETY: r is live; send_header copies the headers out.
    unsafe { ngx_http_send_header(r) }
}

/// 200 with the GIF.
///
/// # Safety
/// `r` is a live request in its content handler.
pub unsafe fn gif(r: &mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    if !unsafe { no_cache(r) } {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    r.headers_out.status = 200;
    r.headers_out.content_length_n = GIF.len() as i64;
    r.headers_out.content_type = ngx_str(b"image/gif");
    r.headers_out.content_type_len = r.headers_out.content_type.len;
    r.headers_out.content_type_lowcase = ptr::null_mut();
    // SAFETY: r is live.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || r.header_only() != 0 {
        return rc;
    }
    // SAFETY: a zeroed buffer from the request pool, pointing at the static GIF (read-only:
    // `memory` tells nginx not to write into it).
    let b = unsafe { ngx_pcalloc(r.pool, core::mem::size_of::<ngx_buf_t>()) }.cast::<ngx_buf_t>();
    if b.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: b is a valid, zeroed ngx_buf_t.
    unsafe {
        (*b).pos = GIF.as_ptr().cast_mut();
        (*b).last = (*b).pos.add(GIF.len());
        (*b).set_memory(1);
        (*b).set_last_buf(if ptr::eq(r, r.main) { 1 } else { 0 });
        (*b).set_last_in_chain(1);
    }
    let mut out = ngx_chain_t {
        buf: b,
        next: ptr::null_mut(),
    };
    // SAFETY: the chain link may live on the stack: filters copy links they keep.
    unsafe { ngx_http_output_filter(r, &mut out) }
}

/// 302 to `url`, copied into the request pool.
///
/// # Safety
/// `r` is a live request in its content handler.
pub unsafe fn redirect(r: &mut ngx_http_request_t, url: &[u8]) -> ngx_int_t {
    // SAFETY: pool allocation of url.len() bytes for the header value.
    let data = unsafe { ngx_pnalloc(r.pool, url.len()) }.cast::<u8>();
    if data.is_null() {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    // SAFETY: data has url.len() bytes.
    unsafe { ptr::copy_nonoverlapping(url.as_ptr(), data, url.len()) };
    // SAFETY: r is live; the value lives in the request pool.
    unsafe {
        if !no_cache(r) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        let Some(h) = add_header(
            r,
            b"Location",
            ngx_str_t {
                len: url.len(),
                data,
            },
        ) else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        r.headers_out.location = h;
        header_only(r, 302)
    }
}

/// 204 No Content.
///
/// # Safety
/// `r` is a live request in its content handler.
pub unsafe fn empty(r: &mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: r is live.
    unsafe {
        if !no_cache(r) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        header_only(r, 204)
    }
}

/// An error status (404, 503) answered by nginx's error page, with the no-cache headers so that
/// no browser or proxy answers the next request for the tracker.
///
/// # Safety
/// `r` is a live request in its content handler.
pub unsafe fn error(r: &mut ngx_http_request_t, status: ngx_int_t) -> ngx_int_t {
    // SAFETY: r is live.
    if !unsafe { no_cache(r) } {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    status
}

/// An answer with a body (the admin API's JSON): `status`, `Content-Type: content_type`,
/// `Cache-Control: no-store`, the `extra` headers, and `body` (all copied into the request
/// pool). An empty body is sent as a header-only answer (204, 405 without a body).
///
/// # Safety
/// `r` is a live request in its content handler or its request body handler.
pub unsafe fn with_body(
    r: &mut ngx_http_request_t,
    status: usize,
    content_type: &'static [u8],
    extra: &[(&'static [u8], &[u8])],
    body: &[u8],
) -> ngx_int_t {
    for (key, value) in extra {
        // SAFETY: r is live; the value is copied into its pool, which outlives the response.
        let added = unsafe {
            let data = ngx_pnalloc(r.pool, value.len().max(1)).cast::<u8>();
            !data.is_null() && {
                ptr::copy_nonoverlapping(value.as_ptr(), data, value.len());
                add_header(
                    r,
                    key,
                    ngx_str_t {
                        len: value.len(),
                        data,
                    },
                )
                .is_some()
            }
        };
        if !added {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
    }
    // SAFETY: r is live; a static value outlives every request.
    if unsafe { add_header(r, b"Cache-Control", ngx_str(b"no-store")) }.is_none() {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    r.headers_out.content_type = ngx_str(content_type);
    r.headers_out.content_type_len = r.headers_out.content_type.len;
    r.headers_out.content_type_lowcase = ptr::null_mut();
    if body.is_empty() {
        // SAFETY: r is live and in its content (or body) handler.
        return unsafe { header_only(r, status) };
    }
    r.headers_out.status = status;
    r.headers_out.content_length_n = body.len() as i64;
    // SAFETY: r is live.
    let rc = unsafe { ngx_http_send_header(r) };
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || r.header_only() != 0 {
        return rc;
    }
    // SAFETY: a temporary buffer of body.len() bytes from the request pool.
    let b = unsafe { ngx::ffi::ngx_create_temp_buf(r.pool, body.len()) };
    if b.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: b holds body.len() writable bytes from `pos`.
    unsafe {
        ptr::copy_nonoverlapping(body.as_ptr(), (*b).pos, body.len());
        (*b).last = (*b).pos.add(body.len());
        (*b).set_last_buf(if ptr::eq(r, r.main) { 1 } else { 0 });
        (*b).set_last_in_chain(1);
    }
    let mut out = ngx_chain_t {
        buf: b,
        next: ptr::null_mut(),
    };
    // SAFETY: the chain link may live on the stack: filters copy links they keep.
    unsafe { ngx_http_output_filter(r, &mut out) }
}
