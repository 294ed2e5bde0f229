//! A campaign lookup (what the module does per request: pin, find, read the record, charge,
//! unpin) allocates nothing. Allocations are counted per thread.

mod store_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use store_common::{campaign, TestZone};
use tracker_core::event::Kind;

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

// SAFETY: forwards to the system allocator, counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: allocated by System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_lookup_and_charge_allocate_nothing() {
    let tz = TestZone::new(1 << 20);
    let list: Vec<_> = (0..50).map(|i| campaign(&format!("c{i}"), 1)).collect();
    tz.write(|w| w.upsert(&list)).unwrap();
    let zone = tz.zone();
    let reader = tz.reader(1);
    let mut landing = Vec::with_capacity(256);
    let mut found = 0;
    let before = allocs();
    for i in 0..10_000 {
        let id = [b'c', b'0' + (i % 10) as u8];
        let hit = zone.lookup(reader, &id, |r| {
            landing.clear();
            landing.extend_from_slice(r.landing_url());
            r.pricing()
        });
        if let Some((_, account)) = hit {
            account.reject(Kind::Click);
            found += 1;
        }
        assert!(zone.lookup(reader, b"absent", |_| ()).is_none());
    }
    assert_eq!(allocs() - before, 0);
    assert_eq!(found, 10_000);
}

#[test]
fn with_accounts_in_a_state_file_a_lookup_and_charge_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) =
        tracker_core::state::StateFile::open_or_create(&dir.path().join("s"), 1 << 20).unwrap();
    let tz = TestZone::new(1 << 20);
    let zone = tz.zone().with_accounts(state.table(), state.file_id());
    let list: Vec<_> = (0..50).map(|i| campaign(&format!("c{i}"), 1)).collect();
    tz.lock();
    tz.writer_on(zone).upsert(&list).unwrap();
    tz.unlock();
    let reader = tz.reader(2);
    let caps = tracker_core::campaign::Caps::default();
    let mut found = 0;
    let before = allocs();
    for i in 0..10_000 {
        let id = [b'c', b'0' + (i % 10) as u8];
        if let Some((_, account)) = zone.lookup(reader, &id, |r| r.pricing()) {
            account.charge(&caps, Kind::Click, 10, 20_000);
            found += 1;
        }
        assert!(zone.lookup(reader, b"absent", |_| ()).is_none());
    }
    assert_eq!(allocs() - before, 0);
    assert_eq!(found, 10_000);
    let i = state.table().find(b"c3").unwrap();
    let clicks = state
        .table()
        .account(i)
        .unwrap()
        .clicks
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(clicks, 1_000, "the charges went to the state file");
}
