//! What the module calls per request allocates nothing: the request-input functions (ArgIndex,
//! client_ip, percent_decode into a buffer with room), and event::encode and landing::expand
//! when their output buffer has the capacity. Allocations are counted per
//! thread (the test harness's own thread allocates while a test runs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tracker_core::event::{encode, flags, EventRef};
use tracker_core::input::{
    client_ip, percent_decode, valid_campaign_id, ArgIndex, IpMode, IP_TEXT_MAX,
};
use tracker_core::landing::expand;

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
    let many: Vec<u8> = (0..100)
        .map(|i| format!("p{i}={i}&"))
        .collect::<String>()
        .into_bytes();
    let args: &[&[u8]] = &[
        b"cid=summer-sale&pub=site12&plc=top&n=1000123",
        b"CID=a%20b&pub=x+y",
        b"",
        &many,
    ];
    let addrs: &[&[u8]] = &[
        b"192.0.2.33",
        b"2001:db8:1:2:3:4:5:6",
        b"::ffff:192.0.2.33",
        b"[fe80::1%eth0]",
        b"bad",
    ];
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
        seen += tracker_core::privacy::cookie_value(
            b"a=1; tid=0123456789abcdef0123456789abcdef",
            b"tid",
        )
        .map_or(0, <[u8]>::len);
        seen += usize::from(tracker_core::privacy::valid_visitor_id(
            &visitors.next_hex(),
        ));
    }
    let after = allocs();
    assert_eq!(after - before, 0, "allocations on the request path");
    assert!(seen > 0);

    // And the results are the expected ones.
    let ix = ArgIndex::new(args[0]);
    assert_eq!(ix.get(b"cid"), Some(&b"summer-sale"[..]));
    assert_eq!(ix.get(b"click_id"), None);
    assert_eq!(ArgIndex::new(&many).get(b"p99"), Some(&b"99"[..]));
    assert_eq!(
        client_ip(IpMode::Anonymize, b"192.0.2.33", &mut ip),
        Some(&b"192.0.2.0"[..])
    );
}

#[test]
fn encode_and_expand_do_not_allocate() {
    let dims: &[(&[u8], &[u8])] = &[
        (b"publisher", b"caf\xc3\xa9 \xff bad"),
        (b"n", b"1"),
        (b"p\xfe", b""),
    ];
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
        browser: Some("chrome"),
        os: Some("android"),
        device: Some("mobile"),
    };
    let mut event = Vec::with_capacity(4096);
    let mut target = Vec::with_capacity(4096);
    let template = b"https://shop.example.com/x/{campaign}?pub={dim.publisher}&c={click_id}&m={dim.none}#{dim.n}";

    let before = allocs();
    for _ in 0..1000 {
        encode(&ev, &mut event);
        target.clear();
        expand(template, b"0190abcdef", b"summer\x80", dims, &mut target);
    }
    let after = allocs();
    assert_eq!(after - before, 0, "allocations on the hot path");

    // The results are what they should be.
    let e = tracker_core::event::decode(&event).unwrap();
    assert_eq!(e.campaign, "summer\u{fffd}");
    assert_eq!(
        std::str::from_utf8(&target).unwrap(),
        "https://shop.example.com/x/summer%80?pub=caf%C3%A9%20%FF%20bad&c=0190abcdef&m=#1"
    );
}

#[test]
fn user_agent_cache_hit_does_not_allocate() {
    let uas: Vec<&[u8]> = include_str!("data/user_agents.txt")
        .lines()
        .map(str::as_bytes)
        .collect();
    // A seed under which these User-Agents fill distinct slots (a slot collision would be a
    // miss, which runs the parser, which may allocate).
    let mut seed = 0;
    let mut cache = loop {
        let mut cache = tracker_core::useragent::Cache::with_seed(1024, seed);
        for ua in &uas {
            let _ = cache.classify(ua); // fills the slots (allocates)
        }
        for ua in &uas {
            let _ = cache.classify(ua);
        }
        if cache.stats().1 == uas.len() as u64 {
            break cache;
        }
        seed += 1;
    };
    let (_, misses) = cache.stats();
    let before = allocs();
    let mut bots = 0usize;
    for _ in 0..100 {
        for ua in &uas {
            bots += usize::from(cache.classify(ua).crawler);
        }
    }
    let after = allocs();
    assert_eq!(after - before, 0, "allocations on a cache hit");
    assert!(bots > 0);
    assert_eq!(cache.stats().1, misses, "all hits");
}
