//! The work of an admin change (the zone's lock, the journal's write and fdatasync) off the
//! worker's event loop, in nginx's thread pool `default` (`thread_pool default ...;` in the
//! main context sizes it; nginx creates it in each worker). The request is answered from the
//! task's completion handler, on the event loop, once the work is done.
//!
//! The request waits the nginx way: `r->main->count` is raised (the handler returns
//! `NGX_DONE`) and `r->main->blocked` keeps nginx from freeing it while the task runs, even
//! if the client goes away. Without thread support in nginx (or when the task cannot be
//! posted), the work runs inline: correct, but it blocks the event loop for the fdatasync.

use ngx::ffi::{ngx_conf_t, ngx_http_request_t, ngx_int_t};

/// The work, run in a pool thread: it must not touch the request or nginx's memory pools.
pub type Job<T> = Box<dyn FnOnce() -> T + Send>;
/// The answer, on the event loop, from the job's result: returns the code to finalize with.
pub type Finish<T> = Box<dyn FnOnce(&mut ngx_http_request_t, T) -> ngx_int_t>;

/// The thread pool of this configuration (none: work runs inline).
pub struct Pool(#[cfg(ngx_feature = "threads")] *mut ngx::ffi::ngx_thread_pool_t);

impl Default for Pool {
    fn default() -> Self {
        Pool(
            #[cfg(ngx_feature = "threads")]
            core::ptr::null_mut(),
        )
    }
}

impl Pool {
    /// Declares (or finds) the pool `default`, at configuration.
    ///
    /// # Safety
    /// `cf` is the configuration being parsed.
    pub unsafe fn add(cf: *mut ngx_conf_t) -> Pool {
        #[cfg(ngx_feature = "threads")]
        {
            // SAFETY: cf is valid; a null name is the pool "default".
            Pool(unsafe { ngx::ffi::ngx_thread_pool_add(cf, core::ptr::null_mut()) })
        }
        #[cfg(not(ngx_feature = "threads"))]
        {
            let _ = cf;
            Pool()
        }
    }
}

/// Runs `job` off the event loop, then `finish` on it, and finalizes the request with
/// `finish`'s code. Returns what the caller returns from its content handler (or finalizes
/// with from a body handler): `NGX_DONE` when the job was posted, `finish`'s code when it
/// ran inline.
///
/// # Safety
/// `r` is a live request in its content handler or body handler.
pub unsafe fn run<T: Send + 'static>(
    pool: &Pool,
    r: &mut ngx_http_request_t,
    job: Job<T>,
    finish: Finish<T>,
) -> ngx_int_t {
    #[cfg(ngx_feature = "threads")]
    // SAFETY: see the function's contract.
    let (job, finish) = match unsafe { threaded::post(pool.0, r, job, finish) } {
        Ok(()) => return ngx::ffi::NGX_DONE as ngx_int_t,
        Err(back) => back,
    };
    #[cfg(not(ngx_feature = "threads"))]
    let _ = pool;
    finish(r, job())
}

#[cfg(ngx_feature = "threads")]
mod threaded {
    use core::ffi::c_void;
    use core::mem::offset_of;

    use ngx::ffi::{
        ngx_event_t, ngx_http_finalize_request, ngx_http_request_t, ngx_http_run_posted_requests,
        ngx_int_t, ngx_log_t, ngx_thread_pool_t, ngx_thread_task_alloc, ngx_thread_task_post,
        ngx_thread_task_t, NGX_OK,
    };

    use super::{Finish, Job};

    /// What the pool task carries (boxed; the task's ctx holds the pointer). The pool thread
    /// touches `job` and `result` only; the event loop the rest, after the thread is done.
    struct Slot<T> {
        job: Option<Job<T>>,
        finish: Finish<T>,
        result: Option<T>,
    }

    /// Posts the job; gives it back when it cannot be posted (run it inline then).
    ///
    /// # Safety
    /// `r` is a live request; `pool` is null or this cycle's thread pool.
    pub(super) unsafe fn post<T: Send + 'static>(
        pool: *mut ngx_thread_pool_t,
        r: &mut ngx_http_request_t,
        job: Job<T>,
        finish: Finish<T>,
    ) -> Result<(), (Job<T>, Finish<T>)> {
        if pool.is_null() {
            return Err((job, finish));
        }
        // SAFETY: the request's pool lives until the request is freed, after completion.
        let t = unsafe { ngx_thread_task_alloc(r.pool, core::mem::size_of::<*mut Slot<T>>()) };
        if t.is_null() {
            return Err((job, finish));
        }
        let slot = Box::into_raw(Box::new(Slot {
            job: Some(job),
            finish,
            result: None,
        }));
        // SAFETY: t is a fresh task whose ctx has room for a pointer; r is live. Once
        // posted, the slot belongs to the task until `done`.
        unsafe {
            (*t).ctx.cast::<*mut Slot<T>>().write(slot);
            (*t).handler = Some(in_thread::<T>);
            (*t).event.data = (r as *mut ngx_http_request_t).cast();
            (*t).event.handler = Some(done::<T>);
            if ngx_thread_task_post(pool, t) != NGX_OK as ngx_int_t {
                let slot = Box::from_raw(slot);
                return match slot.job {
                    Some(job) => Err((job, slot.finish)),
                    None => Ok(()), // cannot happen: only the pool thread takes the job
                };
            }
            let main = &mut *r.main;
            main.set_blocked(main.blocked() + 1);
            main.set_count(main.count() + 1);
            r.set_aio(1);
        }
        Ok(())
    }

    /// In a pool thread: runs the job.
    unsafe extern "C" fn in_thread<T>(data: *mut c_void, _log: *mut ngx_log_t) {
        // SAFETY: data is the task's ctx, which holds our Slot; the event loop does not touch
        // it until the completion event, which comes after this returns.
        let slot = unsafe { &mut **data.cast::<*mut Slot<T>>() };
        if let Some(job) = slot.job.take() {
            slot.result = Some(job());
        }
    }

    /// On the event loop, once the job ran: answers and finalizes the request.
    unsafe extern "C" fn done<T>(ev: *mut ngx_event_t) {
        // SAFETY: ev is the `event` of a task we posted (container_of gives the task); its
        // data is the request, kept alive by `blocked` and the count taken in `post`.
        unsafe {
            let t = ev
                .cast::<u8>()
                .sub(offset_of!(ngx_thread_task_t, event))
                .cast::<ngx_thread_task_t>();
            let slot = Box::from_raw(*(*t).ctx.cast::<*mut Slot<T>>());
            let r = &mut *(*ev).data.cast::<ngx_http_request_t>();
            let main = &mut *r.main;
            main.set_blocked(main.blocked() - 1);
            r.set_aio(0);
            let c = r.connection;
            let Slot { finish, result, .. } = *slot;
            let rc = match result {
                Some(result) => finish(r, result),
                None => ngx::ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t,
            };
            ngx_http_finalize_request(r, rc);
            ngx_http_run_posted_requests(c);
        }
    }
}
