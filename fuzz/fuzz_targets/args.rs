//! Request input: ArgIndex (and arg_value), percent_decode, client_ip in every mode,
//! valid_campaign_id and parse_number never panic, and their results are bounded: an argument
//! value is a part of the query string, a decoded value is never longer than the raw one, an
//! anonymized address fits its buffer and is a parsable address. The query limits
//! (`limits::check_query`) agree with `limits::count_args` and the length, and the
//! `tracker_limits` parameter parser never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracker_core::limits::{self, Limits, Reason};
use tracker_core::input::{arg_value, client_ip, parse_number, percent_decode, valid_campaign_id, ArgIndex, IpMode, IP_TEXT_MAX};

const NAMES: &[&[u8]] = &[b"cid", b"c", b"click_id", b"d1", b"d20", b"pub", b"sig", b"exp", b"kid", b"value", b"", b"a"];

fuzz_target!(|data: &[u8]| {
    // Layout: query string \0 address (or the whole input as both).
    let (args, addr) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let ix = ArgIndex::new(args);
    let range = args.as_ptr_range();
    let mut names: Vec<&[u8]> = NAMES.to_vec();
    // Names taken from the query itself, so that long and repeated names are looked up too.
    names.extend(args.split(|&c| c == b'&').filter_map(|p| p.split(|&c| c == b'=').next()).take(64));
    let mut out = Vec::new();
    for name in names {
        let v = ix.get(name);
        assert_eq!(v, arg_value(args, name), "ArgIndex differs from arg_value for {name:?}");
        if let Some(v) = v {
            let r = v.as_ptr_range();
            assert!(range.start <= r.start && r.end <= range.end, "value outside the query string");
            out.clear();
            percent_decode(v, &mut out);
            assert!(out.len() <= v.len());
            if valid_campaign_id(&out) {
                assert!(!out.is_empty() && out.len() <= 64);
            }
            let _ = parse_number(&out);
        }
    }
    out.clear();
    percent_decode(args, &mut out);
    assert!(out.len() <= args.len());

    // The query limits, with limits taken from the input's first bytes.
    let l = Limits {
        query: data.first().map_or(4096, |&b| usize::from(b) * 16),
        args: data.get(1).map_or(64, |&b| usize::from(b)),
        ..Limits::default()
    };
    let n = limits::count_args(args);
    match limits::check_query(args, &l) {
        Ok(()) => assert!(args.len() <= l.query && n <= l.args),
        Err(Reason::QueryTooLong) => assert!(args.len() > l.query),
        Err(Reason::TooManyArgs) => assert!(args.len() <= l.query && n > l.args),
        Err(other) => panic!("check_query gave {other:?}"),
    }
    if let Ok(text) = std::str::from_utf8(args) {
        let params: Vec<&str> = text.split(' ').collect();
        if let Ok(p) = limits::parse(&params) {
            assert!(p.query > 0 && p.args > 0 && p.value > 0 && p.body > 0);
        }
    }

    for mode in [IpMode::Full, IpMode::Anonymize, IpMode::Off, IpMode::Hash] {
        let mut buf = [0u8; IP_TEXT_MAX];
        let r = client_ip(mode, addr, &mut buf).map(<[u8]>::to_vec);
        match mode {
            IpMode::Off => assert!(r.is_none()),
            IpMode::Full => assert_eq!(r.as_deref(), (!addr.is_empty()).then_some(addr)),
            IpMode::Anonymize => {
                if let Some(ip) = r {
                    assert!(ip.len() <= IP_TEXT_MAX);
                    let s = std::str::from_utf8(&ip).expect("anonymized address is ASCII");
                    assert!(s.parse::<std::net::IpAddr>().is_ok(), "anonymized {addr:?} to unparsable {s:?}");
                }
            }
            IpMode::Hash => {
                if let Some(h) = r {
                    assert!(h.len() <= IP_TEXT_MAX);
                }
            }
        }
    }
});
