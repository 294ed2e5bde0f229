//! Signed URLs against a fixed key file: verify never panics on arbitrary exp/kid/sig,
//! campaign and dimensions; a signature made for arbitrary (signable) inputs verifies, and
//! any change of the campaign or expiry makes it fail.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracker_core::sign::{parse_exp, signature, verify, Keys};

const KEYS: &str = "k1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
                    k2 fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210\n";

fuzz_target!(|data: &[u8]| {
    let keys = match Keys::parse(KEYS) {
        Ok(k) => k,
        Err(e) => panic!("fixed key file refused: {e}"),
    };
    // The key file parser on the same bytes: never panics; an error names a line of the text.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = Keys::parse(text) {
            assert!(e.line <= text.lines().count(), "{e}");
        }
    }
    // Layout: campaign \0 exp \0 kid \0 sig \0 (name \0 value \0)*
    let mut parts = data.split(|&b| b == 0);
    let campaign = parts.next().unwrap_or(b"");
    let exp = parts.next();
    let kid = parts.next();
    let sig = parts.next();
    let rest: Vec<&[u8]> = parts.collect();
    let dims: Vec<(&[u8], &[u8])> = rest.chunks(2).map(|c| (c[0], *c.get(1).unwrap_or(&&b""[..]))).collect();
    let now = 1_700_000_000u64;
    let r = verify(&keys, campaign, &dims, exp, kid, sig, now);
    // Whatever it says, the name of the reason is there.
    if let Err(e) = r {
        let _ = e.name();
    }
    // Sign these inputs with the newest key and check it verifies.
    let e = exp.and_then(parse_exp).map_or(now + 3600, |e| e.max(now + 1));
    let key = keys.newest();
    if let Some(s) = signature(key, campaign, e, &dims) {
        let es = e.to_string();
        let name = key.name.as_bytes();
        assert_eq!(verify(&keys, campaign, &dims, Some(es.as_bytes()), Some(name), Some(s.as_bytes()), now), Ok(()));
        // Expired at now == exp.
        assert!(verify(&keys, campaign, &dims, Some(es.as_bytes()), Some(name), Some(s.as_bytes()), e).is_err());
        // Another campaign id does not verify.
        let mut other = campaign.to_vec();
        other.push(b'x');
        assert!(verify(&keys, &other, &dims, Some(es.as_bytes()), Some(name), Some(s.as_bytes()), now).is_err());
        // A flipped signature character does not verify.
        let mut bad = s.into_bytes();
        bad[0] = if bad[0] == b'A' { b'B' } else { b'A' };
        assert!(verify(&keys, campaign, &dims, Some(es.as_bytes()), Some(name), Some(&bad), now).is_err());
    }
});
