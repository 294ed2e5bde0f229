//! Per-worker state: the event-id generator and buffers reused across requests, so the
//! request path allocates nothing once they have grown to their working size.

use std::cell::RefCell;

use tracker_core::id::{os_random_u64, IdGenerator};

pub struct Worker {
    pid: u32,
    pub ids: IdGenerator,
    /// The encoded event.
    pub event: Vec<u8>,
    /// Decoded request values (campaign id, click id, dimensions...), addressed by ranges.
    pub text: Vec<u8>,
    /// The campaign's landing URL as found in the store.
    pub landing: Vec<u8>,
    /// The campaign's fallback URL (empty when it has none).
    pub fallback: Vec<u8>,
    /// The expanded redirect target.
    pub target: Vec<u8>,
    /// Visitor ids for `tracker_userid` (random key per worker).
    pub visitors: tracker_core::privacy::VisitorIds,
    /// The `Set-Cookie` value being built.
    pub cookie: Vec<u8>,
    /// User-Agent classes of recently seen User-Agents (browser, OS, device, crawler).
    pub user_agents: tracker_core::useragent::Cache,
}

impl Worker {
    fn new(pid: u32) -> Worker {
        Worker {
            pid,
            ids: IdGenerator::new(os_random_u64() ^ u64::from(pid).rotate_left(32)),
            event: Vec::with_capacity(4096),
            text: Vec::with_capacity(4096),
            landing: Vec::with_capacity(1024),
            fallback: Vec::with_capacity(1024),
            target: Vec::with_capacity(2048),
            visitors: tracker_core::privacy::VisitorIds::new(os_random_u64(), os_random_u64()),
            cookie: Vec::with_capacity(256),
            user_agents: tracker_core::useragent::Cache::with_seed(1024, os_random_u64()),
        }
    }
}

thread_local! {
    // nginx workers run requests on one thread; the state is created lazily in each worker
    // (a copy inherited from the master across fork is detected by its pid and replaced).
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// Runs `f` with this worker's state, in place (nothing is moved per request).
///
/// Should `f` ever re-enter (a handler run from inside another's response), the inner call
/// gets a fresh temporary state (its own id generator with a random seed: ids stay unique).
pub fn with<R>(pid: u32, f: impl FnOnce(&mut Worker) -> R) -> R {
    WORKER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            if !matches!(&*slot, Some(w) if w.pid == pid) {
                *slot = Some(Worker::new(pid));
            }
            match slot.as_mut() {
                Some(w) => f(w),
                None => f(&mut Worker::new(pid)),
            }
        }
        Err(_) => f(&mut Worker::new(pid)),
    })
}
