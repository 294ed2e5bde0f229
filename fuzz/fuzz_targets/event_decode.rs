//! The MessagePack event decoder (what the shipper reads from the ring) on arbitrary bytes:
//! never panics; a decoded event re-encoded with `encode` decodes to the same event, and
//! its JSON line is valid JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracker_core::event::{decode, encode, flags, Event, EventRef};

fn same_f64(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x.to_bits() == y.to_bits() || x == y,
        (None, None) => true,
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(e) = decode(data) else { return };
    let mut line = Vec::new();
    e.to_json_line(&mut line);
    assert!(line.ends_with(b"\n") || !line.is_empty());

    let mut bits = 0u32;
    for name in &e.flags {
        let (bit, _) = flags::NAMES.iter().find(|(_, n)| n == name).expect("decode accepts only known flag names");
        bits |= bit;
    }
    let dims: Vec<(&[u8], &[u8])> = e.dims.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
    let r = EventRef {
        id: e.id,
        ts_us: e.ts,
        event_type: e.event_type.as_bytes(),
        campaign: e.campaign.as_bytes(),
        click_id: e.click_id.as_deref().map(str::as_bytes),
        dims: &dims,
        ip: e.ip.as_deref().map(str::as_bytes),
        user_agent: e.ua.as_deref().map(str::as_bytes),
        referer: e.referer.as_deref().map(str::as_bytes),
        host: e.host.as_deref().map(str::as_bytes),
        status: e.status,
        flags: bits,
        value: e.value,
        video_event: e.video_event.as_deref().map(str::as_bytes),
        watch_time: e.watch_time,
        cost_micros: e.cost_micros,
        uid: e.uid.as_deref().map(str::as_bytes),
        browser: e.browser.as_deref(),
        os: e.os.as_deref(),
        device: e.device.as_deref(),
    };
    let mut buf = Vec::new();
    encode(&r, &mut buf);
    let e2: Event = decode(&buf).unwrap_or_else(|err| panic!("re-encoded event does not decode: {err}"));
    // Flags come back in the schema's order, each once.
    let mut want_flags: Vec<String> =
        flags::NAMES.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| n.to_string()).collect();
    want_flags.dedup();
    assert_eq!(e2.flags, want_flags);
    assert!(same_f64(e.value, e2.value) && same_f64(e.watch_time, e2.watch_time));
    let norm = |mut x: Event| {
        x.flags.clear();
        x.value = None;
        x.watch_time = None;
        x
    };
    let e1 = norm(e);
    let e2 = norm(e2);
    assert_eq!(e1, e2, "decode(encode(decode(x))) != decode(x)");
});
