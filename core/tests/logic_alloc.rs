//! The hot-path functions (event::encode, landing::expand) do not allocate when their output
//! buffer already has the capacity. One test in this binary: the allocation counter is global.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tracker_core::event::{encode, flags, EventRef};
use tracker_core::landing::expand;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn encode_and_expand_do_not_allocate() {
    let dims: &[(&[u8], &[u8])] = &[(b"publisher", b"caf\xc3\xa9 \xff bad"), (b"n", b"1"), (b"p\xfe", b"")];
    let ev = EventRef {
        id: [0x42; 16],
        ts_us: 1_714_566_896_789_012,
        event_type: b"video",
        campaign: b"summer\x80",
        click_id: Some(b"0190abcdef"),
        dims,
        ip: Some(b"192.0.2.0"),
        user_agent: Some(b"Mozilla/5.0 \xc3"),
        referer: Some(b"https://pub.example/"),
        host: Some(b"t.example.com"),
        status: 200,
        flags: flags::TRUNCATED | flags::UNKNOWN_CAMPAIGN,
        value: Some(1.25),
        video_event: Some(b"q3"),
        watch_time: Some(12.0),
        cost_micros: Some(1),
        uid: Some(b"0123456789abcdef0123456789abcdef"),
    };
    let mut event = Vec::with_capacity(4096);
    let mut target = Vec::with_capacity(4096);
    let template = b"https://shop.example.com/x/{campaign}?pub={dim.publisher}&c={click_id}&m={dim.none}#{dim.n}";

    let before = ALLOCS.load(Relaxed);
    for _ in 0..1000 {
        encode(&ev, &mut event);
        target.clear();
        expand(template, b"0190abcdef", b"summer\x80", dims, &mut target);
    }
    let after = ALLOCS.load(Relaxed);
    assert_eq!(after - before, 0, "allocations on the hot path");

    // The results are what they should be.
    let e = tracker_core::event::decode(&event).unwrap();
    assert_eq!(e.campaign, "summer\u{fffd}");
    assert_eq!(
        std::str::from_utf8(&target).unwrap(),
        "https://shop.example.com/x/summer%80?pub=caf%C3%A9%20%FF%20bad&c=0190abcdef&m=#1"
    );
}
