//! Property and robustness tests over pseudo-random inputs for the pure functions the module and
//! the shipper run on untrusted data: event decoding, URL templates, request input, campaigns.
//! Deterministic (fixed seeds), so failures reproduce.

use tracker_core::campaign::parse_file;
use tracker_core::event::{decode, encode, EventRef};
use tracker_core::input::{apply_ip_mode, parse_number, percent_decode, valid_campaign_id, IpMode};
use tracker_core::landing::{expand, Template};
use tracker_core::record::{encode as encode_record, RecordView};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, max: usize, alphabet: &[u8]) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n)
            .map(|_| {
                if alphabet.is_empty() {
                    self.next() as u8
                } else {
                    alphabet[self.below(alphabet.len())]
                }
            })
            .collect()
    }
}

fn sample_events(rng: &mut Rng, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let alphabet: &[u8] = b"ab \xff\xc3\xa9%{}\x00";
    for _ in 0..n {
        let strs: Vec<Vec<u8>> = (0..12).map(|_| rng.bytes(20, alphabet)).collect();
        let dims: Vec<(&[u8], &[u8])> = (0..rng.below(4))
            .map(|i| (&strs[i][..], &strs[i + 4][..]))
            .collect();
        let opt = |rng: &mut Rng, s: &[u8]| -> Option<Vec<u8>> {
            (rng.next() & 1 == 0).then(|| s.to_vec())
        };
        let click = opt(rng, &strs[8]);
        let ip = opt(rng, &strs[9]);
        let video = opt(rng, &strs[10]);
        let ev = EventRef {
            id: rng.next().to_be_bytes().repeat(2).try_into().unwrap(),
            ts_us: rng.next() >> rng.below(64),
            event_type: &strs[0],
            campaign: &strs[1],
            click_id: click.as_deref(),
            dims: &dims,
            ip: ip.as_deref(),
            user_agent: (rng.next() & 1 == 0).then_some(&strs[11][..]),
            referer: None,
            host: Some(b"h"),
            status: rng.next() as u16,
            flags: rng.next() as u32,
            value: (rng.next() & 1 == 0).then(|| f64::from_bits(rng.next())),
            video_event: video.as_deref(),
            watch_time: (rng.next() & 1 == 0).then_some(1.5),
            cost_micros: (rng.next() & 1 == 0).then(|| rng.next()),
            uid: (rng.next() & 1 == 0).then_some(&strs[1][..]),
            browser: (rng.next() & 1 == 0).then_some("chrome"),
            os: (rng.next() & 1 == 0).then_some("android"),
            device: (rng.next() & 1 == 0).then_some("mobile"),
        };
        let mut buf = Vec::new();
        encode(&ev, &mut buf);
        let e = decode(&buf).expect("an encoded event decodes");
        assert_eq!(e.campaign, String::from_utf8_lossy(&strs[1]));
        assert_eq!(e.dims.len(), dims.len());
        let mut line = Vec::new();
        e.to_json_line(&mut line);
        serde_json::from_slice::<serde_json::Value>(&line).expect("valid JSON");
        out.push(buf);
    }
    out
}

#[test]
fn decode_never_panics() {
    let mut rng = Rng(0x5EED_0001);
    let samples = sample_events(&mut rng, 300);
    // Mutations of valid events: byte flips, truncations, insertions, splices.
    for round in 0..200_000 {
        let mut b = samples[round % samples.len()].clone();
        match rng.below(4) {
            0 => {
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(b.len());
                    b[at] = rng.next() as u8;
                }
            }
            1 => b.truncate(rng.below(b.len())),
            2 => {
                let at = rng.below(b.len() + 1);
                let ins = rng.bytes(8, &[]);
                b.splice(at..at, ins);
            }
            _ => {
                let other = &samples[rng.below(samples.len())];
                let at = rng.below(b.len());
                let from = rng.below(other.len());
                b.truncate(at);
                b.extend_from_slice(&other[from..]);
            }
        }
        let _ = decode(&b);
    }
    // Pure noise, mostly starting with a map marker.
    for _ in 0..200_000 {
        let mut b = rng.bytes(64, &[]);
        if !b.is_empty() && rng.next() & 3 != 0 {
            b[0] = [0x80 | (rng.below(16) as u8), 0xde, 0xdf][rng.below(3)];
        }
        let _ = decode(&b);
    }
}

#[test]
fn templates_never_panic_and_expansions_stay_in_place() {
    let mut rng = Rng(0x5EED_0002);
    let alphabet: &[u8] = b"htps:/{}.ab@\\?#%[]1 dim.click_idcampaign\xff";
    let mut accepted = 0;
    for _ in 0..200_000 {
        let mut url = if rng.next() & 1 == 0 {
            b"https://a.example/".to_vec()
        } else {
            Vec::new()
        };
        url.extend(rng.bytes(40, alphabet));
        let value = rng.bytes(12, &[]);
        let dims: &[(&[u8], &[u8])] = &[(b"a", &value), (b"x", b"/")];
        let mut out = Vec::new();
        expand(&url, &value, &value, dims, &mut out);
        if let Ok(s) = std::str::from_utf8(&url) {
            if let Ok(t) = Template::parse(s) {
                accepted += 1;
                assert_eq!(t.as_str(), s);
                // The expansion is again a valid template with the same delimiters.
                let o =
                    std::str::from_utf8(&out).expect("expansion of a checked template is UTF-8");
                let again = Template::parse(o);
                assert!(again.is_ok() || o.len() > 2048, "{s:?} -> {o:?}: {again:?}");
                for c in ['/', '?', '#', '@', ':'] {
                    assert_eq!(o.matches(c).count(), s.matches(c).count(), "{s:?} -> {o:?}");
                }
            }
        }
    }
    assert!(accepted > 1000, "only {accepted} accepted");
}

#[test]
fn input_functions_never_panic() {
    let mut rng = Rng(0x5EED_0003);
    for _ in 0..200_000 {
        let b = rng.bytes(24, b"%+0aF9gz.:-_ \xff1234567890[]fe");
        let mut out = Vec::new();
        percent_decode(&b, &mut out);
        assert!(out.len() <= b.len());
        let _ = valid_campaign_id(&b);
        if let Some(v) = parse_number(&b) {
            assert!(v.is_finite());
        }
        for mode in [IpMode::Full, IpMode::Anonymize, IpMode::Off] {
            let _ = apply_ip_mode(mode, &b);
        }
    }
    // Real-looking addresses: anonymized output never contains the last octet / group.
    for _ in 0..20_000 {
        let v4 = std::net::Ipv4Addr::from(rng.next() as u32);
        let a = apply_ip_mode(IpMode::Anonymize, v4.to_string().as_bytes()).unwrap();
        let [x, y, z, _] = v4.octets();
        assert_eq!(a, format!("{x}.{y}.{z}.0"));
        let v6 = std::net::Ipv6Addr::from(((rng.next() as u128) << 64) | rng.next() as u128);
        let a = apply_ip_mode(IpMode::Anonymize, v6.to_string().as_bytes()).unwrap();
        let p: std::net::Ipv6Addr = a.parse().unwrap();
        if v6.to_ipv4_mapped().is_none() {
            assert_eq!(p.segments()[3..], [0; 5]);
            assert_eq!(p.segments()[..3], v6.segments()[..3]);
        }
    }
}

#[test]
fn campaign_files_never_panic() {
    let mut rng = Rng(0x5EED_0004);
    let good = "[\n  {\"id\": \"a\", \"status\": \"active\", \"landing_url\": \"https://a.example.com/{click_id}\"},\n  {\"id\": \"b\", \"status\": \"paused\", \"landing_url\": \"http://b.example.com/?x={dim.p}\", \"daily_budget\": 5, \"publishers\": [\"p1\"]}\n]\n";
    assert_eq!(parse_file(good).unwrap().len(), 2);
    let bytes = good.as_bytes();
    for _ in 0..50_000 {
        let mut b = bytes.to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(b.len());
            b[at] = b"{}[]\",:\n ab\\x"[rng.below(13)];
        }
        if let Ok(text) = std::str::from_utf8(&b) {
            match parse_file(text) {
                Ok(list) => {
                    let mut rec = Vec::new();
                    for c in &list {
                        encode_record(c, 8, &mut rec);
                        assert_eq!(&RecordView::new(&rec).unwrap().to_campaign(), c);
                    }
                }
                Err(e) => assert!(
                    e.line >= 1 && e.line <= text.lines().count().max(1) + 1,
                    "{e:?}"
                ),
            }
        }
    }
}

#[test]
fn large_campaign_file_is_fast_and_lines_are_right() {
    let mut text = String::from("[\n");
    for i in 0..100_000 {
        if i > 0 {
            text.push_str(",\n");
        }
        text.push_str(&format!("  {{\"id\": \"c{i}\", \"status\": \"active\",\n   \"landing_url\": \"https://x.example/{{click_id}}\"}}"));
    }
    text.push_str(
        ",\n  {\"id\": \"c77\", \"status\": \"active\", \"landing_url\": \"https://x/\"}\n]\n",
    );
    let t0 = std::time::Instant::now();
    let e = parse_file(&text).unwrap_err();
    assert_eq!(e.line, 2 + 2 * 100_000, "{e}");
    assert!(e.message.contains("duplicate"));
    assert!(t0.elapsed() < std::time::Duration::from_secs(20));
}
