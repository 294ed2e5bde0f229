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
    /// The expanded redirect target.
    pub target: Vec<u8>,
}

thread_local! {
    // nginx workers run requests on one thread; the state is created lazily in each worker
    // (a copy inherited from the master across fork is detected by its pid and replaced).
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// Takes the worker state out for one request; give it back with [`give_back`].
pub fn take(pid: u32) -> Worker {
    let cached = WORKER.with(|w| w.borrow_mut().take());
    match cached {
        Some(w) if w.pid == pid => w,
        _ => Worker {
            pid,
            ids: IdGenerator::new(os_random_u64() ^ u64::from(pid).rotate_left(32)),
            event: Vec::with_capacity(4096),
            text: Vec::with_capacity(4096),
            landing: Vec::with_capacity(1024),
            target: Vec::with_capacity(2048),
        },
    }
}

pub fn give_back(w: Worker) {
    WORKER.with(|slot| *slot.borrow_mut() = Some(w));
}
