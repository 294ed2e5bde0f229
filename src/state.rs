//! `tracker_state PATH [SIZE] [sync=TIME]`: the state file that keeps the campaign accounts
//! across restarts and binary upgrades (`tracker_core::state`; `docs/stats.md`). This file:
//! the directive, handing the file to the worker user, the periodic msync, and the prune a
//! start alone with the file does.

use core::ffi::{c_char, c_void};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ngx::core::NGX_CONF_OK;
use ngx::ffi::{ngx_command_t, ngx_conf_t, ngx_str_t, NGX_LOG_ERR, NGX_LOG_WARN};
use ngx::ngx_conf_log_error;
use tracker_core::state::{Kind, Opened, StateFile};

use crate::config::{args, fail, text, MainConf};

/// The default size: 16 MiB, about 87,000 accounts.
pub const DEFAULT_SIZE: u64 = 16 << 20;

/// The configured state file.
pub struct State {
    pub file: StateFile,
    pub path: PathBuf,
    /// `sync=`: how often a worker msyncs the file (0: never, the kernel's writeback only).
    pub sync_secs: u64,
}

fn parse_sync(s: &ngx_str_t) -> Result<u64, String> {
    let Some(t) = s.as_bytes().strip_prefix(b"sync=") else {
        return Err(format!(
            "invalid parameter \"{}\" in \"tracker_state\" directive, it must be a size or \"sync=TIME\"",
            text(s)
        ));
    };
    if t == b"off" {
        return Ok(0);
    }
    let mut copy = ngx_str_t {
        len: t.len(),
        data: t.as_ptr().cast_mut(),
    };
    // SAFETY: ngx_parse_time only reads `len` bytes of the string.
    let secs = unsafe { ngx::ffi::ngx_parse_time(&mut copy, 1) };
    if secs <= 0 || secs > 3600 {
        return Err(format!(
            "invalid sync interval \"{}\" in \"tracker_state\" directive, it must be \"off\" or a time from 1s to 1h",
            String::from_utf8_lossy(t)
        ));
    }
    Ok(secs as u64)
}

pub unsafe extern "C" fn set_state(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes this module's main conf (NGX_HTTP_MAIN_CONF_OFFSET).
    let mcf = unsafe { &mut *conf.cast::<MainConf>() };
    // SAFETY: cf is the configuration nginx passes to a directive handler.
    let a = unsafe { args(cf) };
    if mcf.state.is_some() {
        return fail(cf, "\"tracker_state\" directive is duplicate");
    }
    let path = PathBuf::from(text(&a[1]));
    if !path.is_absolute() {
        return fail(
            cf,
            &format!(
                "\"tracker_state\" path \"{}\" must be absolute",
                path.display()
            ),
        );
    }
    let (mut size, mut sync_secs) = (DEFAULT_SIZE, 10);
    for p in &a[2..] {
        if p.as_bytes().starts_with(b"sync=") {
            match parse_sync(p) {
                Ok(s) => sync_secs = s,
                Err(e) => return fail(cf, &e),
            }
            continue;
        }
        let min = Kind::Accounts.min_size();
        match std::str::from_utf8(p.as_bytes())
            .ok()
            .and_then(tracker_core::limits::parse_size)
        {
            Some(n) if n >= min => size = n,
            _ => {
                return fail(
                    cf,
                    &format!(
                        "invalid size \"{}\" in \"tracker_state\" directive, it must be a size of at least {}k",
                        text(p),
                        min.div_ceil(1024)
                    ),
                )
            }
        }
    }
    match StateFile::open_or_create(&path, size) {
        Ok((file, opened)) => {
            log_opened(cf, "tracker_state", &path, &opened);
            mcf.state = Some(State {
                file,
                path,
                sync_secs,
            });
            NGX_CONF_OK
        }
        Err(e) => fail(
            cf,
            &format!("\"tracker_state\" \"{}\": {}", path.display(), e),
        ),
    }
}

/// Logs what opening a state file found, when it is worth saying: a size kept (`[warn]`), a
/// file moved aside (`[error]`, naming both paths).
pub fn log_opened(cf: *mut ngx_conf_t, directive: &str, path: &Path, opened: &Opened) {
    match opened {
        Opened::KeptOtherSize(n) => {
            ngx_conf_log_error!(
                NGX_LOG_WARN, cf,
                "\"{}\" \"{}\" holds {} entries, not the number this size gives: keeping it as it is (a state file is never resized)",
                directive, path.display(), n
            );
        }
        Opened::MovedAside { to, why } => {
            ngx_conf_log_error!(
                NGX_LOG_ERR, cf,
                "\"{}\" \"{}\" is not a valid state file ({}): moved aside to \"{}\", a new one started empty; docs/stats.md (what survives what) says how to restore the counters",
                directive, path.display(), why, to.display()
            );
        }
        Opened::Created | Opened::Reused => {}
    }
}

/// In worker 0 (of each master): msyncs the state file (and the duplicates file) every `sync=` seconds from a thread of
/// its own, so that a power loss takes at most that much of the counters' changes (the
/// kernel's own writeback bounds it otherwise, about 30 s by default). The thread only calls
/// msync on a mapping that lives as long as the process.
pub fn start_sync(mcf: &MainConf, worker: usize) {
    let Some(state) = mcf.state.as_ref() else {
        return;
    };
    if worker != 0 || state.sync_secs == 0 {
        return;
    }
    let every = Duration::from_secs(state.sync_secs);
    let mut handles = vec![state.file.sync_handle()];
    handles.extend(
        mcf.duplicates
            .as_ref()
            .and_then(|d| d.file())
            .map(|f| f.sync_handle()),
    );
    // The thread must never take nginx's signals (they would not wake the event loop): it is
    // created with every signal blocked (it inherits the mask), then the mask is restored.
    // SAFETY: sigfillset and pthread_sigmask only write the sets we pass.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let _ = std::thread::Builder::new()
            .name("tracker-msync".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                for h in &handles {
                    let _ = h.sync();
                }
            });
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
    }
}
