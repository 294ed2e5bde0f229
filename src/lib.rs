//! ngx_http_tracker_module: ad and event tracking locations inside nginx.
//!
//! A thin FFI skin over `tracker-core`: directives and configuration (`config`), the campaign
//! store in a shared zone (`campaigns`), the content handlers (`handler` for tracking, `admin`
//! for the campaign API, `stats` for counters and the dashboard), the responses (`response`),
//! the `$tracker_*` variables (`variables`), per-worker state (`worker`) and the state file
//! that keeps the campaign accounts across restarts (`state`).
//! The directive reference is `docs/directives.md`.

mod admin;
mod admin_io;
mod campaigns;
mod config;
mod dedup;
mod handler;
mod journal;
mod response;
mod state;
mod stats;
mod variables;
mod worker;

use core::ptr::addr_of;

use ngx::core::Status;
use ngx::ffi::{ngx_conf_t, ngx_http_module_t, ngx_int_t, ngx_module_t, NGX_HTTP_MODULE};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf};

pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module object is a static that nginx only writes while loading the
        // configuration (index fields), before any request is handled.
        unsafe { &*addr_of!(ngx_http_tracker_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        variables::add(cf).into()
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        match config::check_main(cf) {
            Ok(()) => Status::NGX_OK.into(),
            Err(()) => Status::NGX_ERROR.into(),
        }
    }
}

/// Merges location configurations; defaults need `cf` to compile `$arg_*` values, which the
/// `Merge` trait does not give, hence a plain callback.
unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    prev: *mut core::ffi::c_void,
    conf: *mut core::ffi::c_void,
) -> *mut core::ffi::c_char {
    // SAFETY: nginx passes this module's location confs.
    unsafe { config::merge_loc_conf(cf, prev.cast(), conf.cast()) }
}

/// In the master, once the configuration is complete (the `user` directive is known): hands
/// the ring and state files to the worker user and group, as nginx does with its temp paths.
unsafe extern "C" fn init_module(cycle: *mut ngx::ffi::ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx passes the cycle being initialized, valid for this call.
    match unsafe { cycle.as_ref() } {
        Some(c) => config::give_files_to_workers(c).into(),
        None => Status::NGX_OK.into(),
    }
}

/// In each worker: worker 0 starts the state file's periodic msync (`tracker_state sync=`).
unsafe extern "C" fn init_process(cycle: *mut ngx::ffi::ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx passes the worker's cycle; ngx_worker is set before init_process.
    if let Some(mcf) = unsafe { cycle.as_ref() }.and_then(Module::main_conf) {
        state::start_sync(mcf, unsafe { ngx::ffi::ngx_worker });
    }
    Status::NGX_OK.into()
}

// SAFETY: MainConf is the type create_main_conf allocates for this module.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = config::MainConf;
}

// SAFETY: LocConf is the type create_loc_conf allocates for this module.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = config::LocConf;
}

static NGX_HTTP_TRACKER_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(merge_loc_conf),
};

ngx::ngx_modules!(ngx_http_tracker_module);

#[used]
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_tracker_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(NGX_HTTP_TRACKER_MODULE_CTX) as _,
    // SAFETY: taking the address of the static command table; nginx reads it at load time.
    commands: unsafe { &raw mut config::COMMANDS[0] },
    type_: NGX_HTTP_MODULE as _,
    init_module: Some(init_module),
    init_process: Some(init_process),
    ..ngx_module_t::default()
};
