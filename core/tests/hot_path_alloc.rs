//! The request-input functions the module calls per request (ArgIndex, client_ip,
//! percent_decode into a buffer with room) allocate nothing. Allocations are counted per
//! thread (the test harness's own thread allocates while a test runs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tracker_core::input::{client_ip, percent_decode, valid_campaign_id, ArgIndex, IpMode, IP_TEXT_MAX};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn request_input_does_not_allocate() {
    let many: Vec<u8> = (0..100).map(|i| format!("p{i}={i}&")).collect::<String>().into_bytes();
    let args: &[&[u8]] = &[b"cid=summer-sale&pub=site12&plc=top&n=1000123", b"CID=a%20b&pub=x+y", b"", &many];
    let addrs: &[&[u8]] = &[b"192.0.2.33", b"2001:db8:1:2:3:4:5:6", b"::ffff:192.0.2.33", b"[fe80::1%eth0]", b"bad"];
    let mut text = Vec::with_capacity(4096);
    let mut ip = [0u8; IP_TEXT_MAX];
    let mut seen = 0usize;
    // The module draws the secret at configuration time, before any request.
    let _ = tracker_core::privacy::master_secret();
    let mut visitors = tracker_core::privacy::VisitorIds::new(1, 2);

    let before = allocs();
    for _ in 0..1000 {
        for a in args {
            text.clear();
            let ix = ArgIndex::new(a);
            for name in [&b"cid"[..], b"pub", b"plc", b"click_id", b"p99"] {
                let v = ix.get(name).unwrap_or(&[]);
                percent_decode(v, &mut text);
            }
            seen += usize::from(valid_campaign_id(&text));
        }
        for a in addrs {
            for mode in [IpMode::Full, IpMode::Anonymize, IpMode::Off, IpMode::Hash] {
                seen += client_ip(mode, a, &mut ip).map_or(0, <[u8]>::len);
            }
            let key = tracker_core::privacy::DayKey::at(1_714_566_896_000_000);
            seen += tracker_core::privacy::hash_ip(&key, a, &mut ip).map_or(0, <[u8]>::len);
        }
        seen += usize::from(tracker_core::privacy::is_opt_out_header(b"Sec-GPC", b"1"));
        seen += tracker_core::privacy::cookie_value(b"a=1; tid=0123456789abcdef0123456789abcdef", b"tid").map_or(0, <[u8]>::len);
        seen += usize::from(tracker_core::privacy::valid_visitor_id(&visitors.next_hex()));
    }
    let after = allocs();
    assert_eq!(after - before, 0, "allocations on the request path");
    assert!(seen > 0);

    // And the results are the expected ones.
    let ix = ArgIndex::new(args[0]);
    assert_eq!(ix.get(b"cid"), Some(&b"summer-sale"[..]));
    assert_eq!(ix.get(b"click_id"), None);
    assert_eq!(ArgIndex::new(&many).get(b"p99"), Some(&b"99"[..]));
    assert_eq!(client_ip(IpMode::Anonymize, b"192.0.2.33", &mut ip), Some(&b"192.0.2.0"[..]));
}
