//! `$tracker_event_id`, `$tracker_campaign` and `$tracker_click_id`: what the tracker recorded
//! for this request, for `log_format` and other modules. Empty (not found) before the tracker
//! handler ran or in locations without `tracker`.

use core::ptr;

use ngx::core::Status;
use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t,
    ngx_str_t, ngx_uint_t, NGX_HTTP_VAR_NOCACHEABLE,
};
use ngx::ngx_string;

/// What the handler leaves in the request for the variables (request pool memory).
#[repr(C)]
pub struct Ctx {
    pub event_id: [u8; 32],
    pub campaign: ngx_str_t,
    pub click_id: ngx_str_t,
}

const EVENT_ID: usize = 0;
const CAMPAIGN: usize = 1;
const CLICK_ID: usize = 2;

/// Registers the variables (preconfiguration).
///
/// # Safety
/// `cf` is the configuration being parsed.
pub unsafe fn add(cf: *mut ngx_conf_t) -> Status {
    let vars = [
        (ngx_string!("tracker_event_id"), EVENT_ID),
        (ngx_string!("tracker_campaign"), CAMPAIGN),
        (ngx_string!("tracker_click_id"), CLICK_ID),
    ];
    for (mut name, which) in vars {
        // SAFETY: cf is valid; nginx copies the name.
        let v =
            unsafe { ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as ngx_uint_t) };
        if v.is_null() {
            return Status::NGX_ERROR;
        }
        // SAFETY: v is the variable nginx just added.
        unsafe {
            (*v).get_handler = Some(get);
            (*v).data = which;
        }
    }
    Status::NGX_OK
}

/// The tracker's context of a request, if the handler ran.
///
/// # Safety
/// `r` is a live request.
pub unsafe fn ctx(r: &ngx_http_request_t) -> Option<&Ctx> {
    let index = <crate::Module as ngx::http::HttpModule>::module().ctx_index;
    // SAFETY: r.ctx has one slot per http module; ours holds a Ctx or null.
    unsafe { (*r.ctx.add(index)).cast::<Ctx>().as_ref() }
}

/// Stores the context in the request.
///
/// # Safety
/// `r` is a live request and `c` lives in its pool.
pub unsafe fn set_ctx(r: &mut ngx_http_request_t, c: *mut Ctx) {
    let index = <crate::Module as ngx::http::HttpModule>::module().ctx_index;
    // SAFETY: see ctx().
    unsafe { *r.ctx.add(index) = c.cast() };
}

unsafe extern "C" fn get(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    data: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes a live request and a value to fill.
    let (r, v) = unsafe { (&*r, &mut *v) };
    // SAFETY: r is live.
    let value = unsafe { ctx(r) }.map(|c| match data {
        EVENT_ID => ngx_str_t {
            len: 32,
            data: c.event_id.as_ptr().cast_mut(),
        },
        CAMPAIGN => c.campaign,
        _ => c.click_id,
    });
    match value {
        Some(s) if s.len > 0 => {
            v.set_len(s.len as u32);
            v.set_valid(1);
            v.set_no_cacheable(0);
            v.set_not_found(0);
            v.data = s.data;
        }
        _ => {
            v.set_not_found(1);
            v.data = ptr::null_mut();
        }
    }
    Status::NGX_OK.into()
}
