//! `tracker_admin`: the campaign REST API on the shared zone (see `docs/admin-api.md`).

use ngx::ffi::{ngx_http_request_t, ngx_int_t, NGX_HTTP_NOT_IMPLEMENTED};

/// The content handler of a `tracker_admin` location.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls the content handler with a live request.
    let Some(r) = (unsafe { r.as_mut() }) else { return ngx::ffi::NGX_ERROR as ngx_int_t };
    // SAFETY: r is live and in its content handler.
    unsafe { crate::response::error(r, NGX_HTTP_NOT_IMPLEMENTED as ngx_int_t) }
}
