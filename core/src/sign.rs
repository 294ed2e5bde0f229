//! Signed tracking URLs (`tracker_secret`, `tracker_signed`): the key file, the canonical
//! string, HMAC-SHA256 signing and its constant-time check. The algorithm is in
//! `docs/signing.md`; the worked example there is [`tests::documented_example`].
//!
//! The signature covers a canonical string:
//!
//! ```text
//! v1\n<campaign id>\n<expiry, unix seconds>\n<name>=<value>\n ... (each signed dimension, in order)
//! ```
//!
//! and travels as the URL arguments `exp=<unix seconds>`, `kid=<key name>` and
//! `sig=<base64url without padding of the 32-byte MAC>`.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The fewest bytes of key material a key may have.
pub const MIN_KEY_LEN: usize = 32;
/// Bytes of a signature (an HMAC-SHA256 output).
pub const MAC_LEN: usize = 32;
/// Characters of a signature in base64url without padding.
pub const SIG_LEN: usize = 43;
/// Longest key name.
pub const MAX_KEY_NAME: usize = 64;
/// Most digits of an expiry time (u64 seconds).
const MAX_EXP_DIGITS: usize = 19;

/// One named key of a key file.
#[derive(Clone)]
pub struct Key {
    pub name: String,
    secret: Vec<u8>,
}

impl Key {
    pub fn new(name: &str, secret: &[u8]) -> Key {
        Key {
            name: name.to_string(),
            secret: secret.to_vec(),
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "Key({:?}, {} bytes)", self.name, self.secret.len())
    }
}

/// The keys of a key file, in file order: the last one is the newest (signs); any of them
/// verifies.
#[derive(Clone, Debug)]
pub struct Keys {
    keys: Vec<Key>,
}

/// A key file error: the 1-based line (0 for the file as a whole) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFileError {
    pub line: usize,
    pub msg: String,
}

impl std::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "line {}: {}", self.line, self.msg)
        }
    }
}

/// Decodes base64 in the standard or the URL-safe alphabet, padded or not.
fn decode_key(text: &str) -> Option<Vec<u8>> {
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&alphabet::STANDARD, cfg)
        .decode(text)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, cfg).decode(text))
        .ok()
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_KEY_NAME
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Keys {
    /// Parses a key file: one key per line, `NAME BASE64`; blank lines and lines starting
    /// with `#` are ignored. Names are 1-64 characters of `[A-Za-z0-9_.-]`, unique; keys have
    /// at least [`MIN_KEY_LEN`] bytes. At least one key.
    pub fn parse(text: &str) -> Result<Keys, KeyFileError> {
        let mut keys: Vec<(Key, usize)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |msg: String| Err(KeyFileError { line: n, msg });
            let mut words = line.split_ascii_whitespace();
            let (Some(name), Some(b64), None) = (words.next(), words.next(), words.next()) else {
                return err("expected \"NAME BASE64KEY\"".into());
            };
            if !valid_key_name(name) {
                return err(format!("invalid key name \"{name}\", it must be 1-{MAX_KEY_NAME} characters of [A-Za-z0-9_.-]"));
            }
            if let Some((_, first)) = keys.iter().find(|(k, _)| k.name == name) {
                return err(format!(
                    "duplicate key name \"{name}\" (first on line {first})"
                ));
            }
            let Some(secret) = decode_key(b64) else {
                return err(format!("the key \"{name}\" is not valid base64"));
            };
            if secret.len() < MIN_KEY_LEN {
                return err(format!(
                    "the key \"{name}\" has {} bytes, at least {MIN_KEY_LEN} are needed",
                    secret.len()
                ));
            }
            keys.push((
                Key {
                    name: name.to_string(),
                    secret,
                },
                n,
            ));
        }
        if keys.is_empty() {
            return Err(KeyFileError {
                line: 0,
                msg: "no key in the file".into(),
            });
        }
        Ok(Keys {
            keys: keys.into_iter().map(|(k, _)| k).collect(),
        })
    }

    /// Reads and parses a key file; errors name the file and the line.
    pub fn load(path: &std::path::Path) -> Result<Keys, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text =
            String::from_utf8(text).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
        Keys::parse(&text).map_err(|e| match e.line {
            0 => format!("{}: {}", path.display(), e.msg),
            n => format!("{}:{n}: {}", path.display(), e.msg),
        })
    }

    /// From keys in order (the last is the newest). None when empty.
    pub fn from_keys(keys: Vec<Key>) -> Option<Keys> {
        (!keys.is_empty()).then_some(Keys { keys })
    }

    /// The signing key: the last of the file.
    pub fn newest(&self) -> &Key {
        self.keys.last().expect("Keys holds at least one key")
    }

    /// The key named `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Key> {
        self.keys.iter().find(|k| k.name.as_bytes() == name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.name.as_str())
    }
}

/// The decimal text of `v` in `buf`.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// Feeds the canonical string to `f`, piece by piece.
fn feed(campaign: &[u8], exp: u64, dims: &[(&[u8], &[u8])], mut f: impl FnMut(&[u8])) {
    let mut buf = [0u8; 20];
    f(b"v1\n");
    f(campaign);
    f(b"\n");
    f(decimal(exp, &mut buf));
    f(b"\n");
    for (name, value) in dims {
        f(name);
        f(b"=");
        f(value);
        f(b"\n");
    }
}

/// The canonical string the signature covers.
pub fn canonical(campaign: &[u8], exp: u64, dims: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    feed(campaign, exp, dims, |b| out.extend_from_slice(b));
    out
}

fn hmac_of(key: &Key, campaign: &[u8], exp: u64, dims: &[(&[u8], &[u8])]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(&key.secret).expect("HMAC takes keys of any length");
    feed(campaign, exp, dims, |b| mac.update(b));
    mac
}

/// Whether the values can be signed: the campaign id and the dimension values hold no line
/// feed (the separator of the canonical string, which would make it ambiguous).
pub fn signable(campaign: &[u8], dims: &[(&[u8], &[u8])]) -> bool {
    !campaign.contains(&b'\n')
        && dims
            .iter()
            .all(|(n, v)| !n.contains(&b'\n') && !v.contains(&b'\n'))
}

/// The 32-byte MAC. The values must be [`signable`] for it to mean anything.
pub fn mac(key: &Key, campaign: &[u8], exp: u64, dims: &[(&[u8], &[u8])]) -> [u8; MAC_LEN] {
    hmac_of(key, campaign, exp, dims)
        .finalize()
        .into_bytes()
        .into()
}

/// The `sig` argument: base64url without padding of the MAC; None when the values are not
/// [`signable`].
pub fn signature(key: &Key, campaign: &[u8], exp: u64, dims: &[(&[u8], &[u8])]) -> Option<String> {
    signable(campaign, dims).then(|| URL_SAFE_NO_PAD.encode(mac(key, campaign, exp, dims)))
}

/// Why a request's signature is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// `exp`, `kid` or `sig` is absent or empty.
    Missing,
    /// `exp` is not 1-19 digits without a leading zero.
    BadExpiry,
    /// `exp` is in the past (or now).
    Expired,
    /// `kid` names no key of the key file.
    UnknownKey,
    /// `sig` is not 43 characters of base64url, or not the MAC, or a signed value holds a
    /// line feed (never signable).
    BadSignature,
}

impl Invalid {
    pub fn name(self) -> &'static str {
        match self {
            Invalid::Missing => "missing",
            Invalid::BadExpiry => "bad_expiry",
            Invalid::Expired => "expired",
            Invalid::UnknownKey => "unknown_key",
            Invalid::BadSignature => "bad_signature",
        }
    }
}

/// `exp` as the request carries it: 1-19 ASCII digits, no leading zero (so that the text is
/// exactly the decimal in the canonical string).
pub fn parse_exp(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > MAX_EXP_DIGITS || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if text.len() > 1 && text[0] == b'0' {
        return None;
    }
    text.iter().try_fold(0u64, |v, &c| {
        v.checked_mul(10)?.checked_add(u64::from(c - b'0'))
    })
}

/// Checks a request's `exp`, `kid` and `sig` (raw argument values; None when absent) against
/// the campaign id and signed dimensions it carries, at `now` (unix seconds). The MAC is
/// compared in constant time. Never panics, whatever the input.
pub fn verify(
    keys: &Keys,
    campaign: &[u8],
    dims: &[(&[u8], &[u8])],
    exp: Option<&[u8]>,
    kid: Option<&[u8]>,
    sig: Option<&[u8]>,
    now: u64,
) -> Result<(), Invalid> {
    fn present(v: Option<&[u8]>) -> Option<&[u8]> {
        v.filter(|v| !v.is_empty())
    }
    let (Some(exp), Some(kid), Some(sig)) = (present(exp), present(kid), present(sig)) else {
        return Err(Invalid::Missing);
    };
    let exp = parse_exp(exp).ok_or(Invalid::BadExpiry)?;
    if exp <= now {
        return Err(Invalid::Expired);
    }
    let key = keys.get(kid).ok_or(Invalid::UnknownKey)?;
    if sig.len() != SIG_LEN || !signable(campaign, dims) {
        return Err(Invalid::BadSignature);
    }
    let mut raw = [0u8; 33];
    let n = URL_SAFE_NO_PAD
        .decode_slice(sig, &mut raw)
        .map_err(|_| Invalid::BadSignature)?;
    if n != MAC_LEN {
        return Err(Invalid::BadSignature);
    }
    hmac_of(key, campaign, exp, dims)
        .verify_slice(&raw[..n])
        .map_err(|_| Invalid::BadSignature)
}

/// Appends `exp`, `kid` and `sig` (signed with `key`) to a URL's query string, before any
/// `#fragment`. None when the values are not [`signable`].
pub fn sign_url(
    base: &str,
    key: &Key,
    campaign: &[u8],
    exp: u64,
    dims: &[(&[u8], &[u8])],
) -> Option<String> {
    let sig = signature(key, campaign, exp, dims)?;
    let (url, fragment) = match base.find('#') {
        Some(i) => base.split_at(i),
        None => (base, ""),
    };
    let sep = match url.find('?') {
        None => "?",
        Some(_) if url.ends_with('?') || url.ends_with('&') => "",
        Some(_) => "&",
    };
    Some(format!(
        "{url}{sep}exp={exp}&kid={}&sig={sig}{fragment}",
        key.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of docs/signing.md: the bytes 0, 1, ..., 31.
    const DOC_KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const DOC_SIG: &str = "BwDHcQGmKFq0bpKk5ZxezlsgJfMkKqxB-YCrdG4szW4";

    fn doc_keys() -> Keys {
        Keys::parse(&format!("# the example key\n2026-01 {DOC_KEY_B64}\n")).unwrap()
    }

    const DIMS: &[(&[u8], &[u8])] = &[(b"publisher", b"news"), (b"placement", b"top banner")];

    #[test]
    fn documented_example() {
        let keys = doc_keys();
        assert_eq!(
            canonical(b"summer-sale", 1767225600, DIMS),
            b"v1\nsummer-sale\n1767225600\npublisher=news\nplacement=top banner\n"
        );
        let sig = signature(keys.newest(), b"summer-sale", 1767225600, DIMS).unwrap();
        assert_eq!(sig, DOC_SIG);
        assert_eq!(sig.len(), SIG_LEN);
        assert_eq!(
            sign_url("https://t.example.com/c?cid=summer-sale&pub=news&pl=top+banner", keys.newest(), b"summer-sale", 1767225600, DIMS).unwrap(),
            format!("https://t.example.com/c?cid=summer-sale&pub=news&pl=top+banner&exp=1767225600&kid=2026-01&sig={DOC_SIG}")
        );
        let ok = verify(
            &keys,
            b"summer-sale",
            DIMS,
            Some(b"1767225600"),
            Some(b"2026-01"),
            Some(sig.as_bytes()),
            1767225599,
        );
        assert_eq!(ok, Ok(()));
    }

    #[test]
    fn docs_show_the_tested_values() {
        let doc = include_str!("../../docs/signing.md");
        assert!(doc.contains(DOC_SIG) && doc.contains(DOC_KEY_B64));
        // the example key file of the docs parses
        let start = doc.find("# tracker-keys").unwrap();
        let block = &doc[start..start + doc[start..].find("```").unwrap()];
        assert_eq!(Keys::parse(block).unwrap().newest().name, "2026-01");
        let canon = canonical(b"summer-sale", 1767225600, DIMS);
        assert!(doc.contains(&format!("canonical string ({} bytes)", canon.len())));
    }

    fn check(
        keys: &Keys,
        campaign: &[u8],
        dims: &[(&[u8], &[u8])],
        exp: &[u8],
        kid: &[u8],
        sig: &[u8],
        now: u64,
    ) -> Result<(), Invalid> {
        verify(keys, campaign, dims, Some(exp), Some(kid), Some(sig), now)
    }

    #[test]
    fn tampering_is_refused() {
        let keys = doc_keys();
        let sig = signature(keys.newest(), b"summer-sale", 2000, DIMS).unwrap();
        let sig = sig.as_bytes();
        assert_eq!(
            check(&keys, b"summer-sale", DIMS, b"2000", b"2026-01", sig, 1000),
            Ok(())
        );
        // campaign
        assert_eq!(
            check(&keys, b"summer-salf", DIMS, b"2000", b"2026-01", sig, 1000),
            Err(Invalid::BadSignature)
        );
        // a dimension's value, its name, their order, one left out
        let other: &[(&[u8], &[u8])] = &[(b"publisher", b"newz"), (b"placement", b"top banner")];
        assert_eq!(
            check(&keys, b"summer-sale", other, b"2000", b"2026-01", sig, 1000),
            Err(Invalid::BadSignature)
        );
        let renamed: &[(&[u8], &[u8])] = &[(b"publishes", b"news"), (b"placement", b"top banner")];
        assert_eq!(
            check(
                &keys,
                b"summer-sale",
                renamed,
                b"2000",
                b"2026-01",
                sig,
                1000
            ),
            Err(Invalid::BadSignature)
        );
        let swapped: &[(&[u8], &[u8])] = &[DIMS[1], DIMS[0]];
        assert_eq!(
            check(
                &keys,
                b"summer-sale",
                swapped,
                b"2000",
                b"2026-01",
                sig,
                1000
            ),
            Err(Invalid::BadSignature)
        );
        assert_eq!(
            check(
                &keys,
                b"summer-sale",
                &DIMS[..1],
                b"2000",
                b"2026-01",
                sig,
                1000
            ),
            Err(Invalid::BadSignature)
        );
        // a value moved across the separator
        let moved: &[(&[u8], &[u8])] = &[(b"publisher", b"news\nplacement=top banner")];
        assert_eq!(
            canonical(b"summer-sale", 2000, moved),
            canonical(b"summer-sale", 2000, DIMS)
        );
        assert_eq!(
            check(&keys, b"summer-sale", moved, b"2000", b"2026-01", sig, 1000),
            Err(Invalid::BadSignature)
        );
        assert_eq!(
            signature(keys.newest(), b"summer-sale", 2000, moved),
            None,
            "a line feed is never signed"
        );
        assert_eq!(signature(keys.newest(), b"summer\nsale", 2000, &[]), None);
        // expiry moved later
        assert_eq!(
            check(&keys, b"summer-sale", DIMS, b"2001", b"2026-01", sig, 1000),
            Err(Invalid::BadSignature)
        );
        // one character of the signature
        let mut bad = sig.to_vec();
        bad[10] = if bad[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            check(&keys, b"summer-sale", DIMS, b"2000", b"2026-01", &bad, 1000),
            Err(Invalid::BadSignature)
        );
    }

    #[test]
    fn wrong_key_is_refused() {
        let keys = Keys::parse(&format!(
            "a {}\nb {}\n",
            URL_SAFE_NO_PAD.encode([7u8; 32]),
            URL_SAFE_NO_PAD.encode([9u8; 32])
        ))
        .unwrap();
        let other = Key::new("b", &[8u8; 32]);
        let sig = signature(&other, b"c", 2000, &[]).unwrap();
        assert_eq!(
            check(&keys, b"c", &[], b"2000", b"b", sig.as_bytes(), 1000),
            Err(Invalid::BadSignature)
        );
        // signed with a, claimed as b
        let sig = signature(keys.get(b"a").unwrap(), b"c", 2000, &[]).unwrap();
        assert_eq!(
            check(&keys, b"c", &[], b"2000", b"b", sig.as_bytes(), 1000),
            Err(Invalid::BadSignature)
        );
        assert_eq!(
            check(&keys, b"c", &[], b"2000", b"a", sig.as_bytes(), 1000),
            Ok(())
        );
        assert_eq!(
            check(&keys, b"c", &[], b"2000", b"zz", sig.as_bytes(), 1000),
            Err(Invalid::UnknownKey)
        );
    }

    #[test]
    fn expiry() {
        let keys = doc_keys();
        let sig = signature(keys.newest(), b"c", 2000, &[]).unwrap();
        let sig = sig.as_bytes();
        assert_eq!(
            check(&keys, b"c", &[], b"2000", b"2026-01", sig, 1999),
            Ok(())
        );
        assert_eq!(
            check(&keys, b"c", &[], b"2000", b"2026-01", sig, 2000),
            Err(Invalid::Expired)
        );
        assert_eq!(
            check(&keys, b"c", &[], b"2000", b"2026-01", sig, 5000),
            Err(Invalid::Expired)
        );
        for bad in [
            &b"02000"[..],
            b"-2000",
            b"+2000",
            b"2000.0",
            b"2e3",
            b" 2000",
            b"99999999999999999999",
            b"18446744073709551616",
        ] {
            assert_eq!(
                check(&keys, b"c", &[], bad, b"2026-01", sig, 1000),
                Err(Invalid::BadExpiry),
                "{bad:?}"
            );
        }
        assert_eq!(parse_exp(b"18446744073709551615"), None, "20 digits");
        assert_eq!(parse_exp(b"9999999999999999999"), Some(9999999999999999999));
        assert_eq!(parse_exp(b"0"), Some(0));
    }

    #[test]
    fn rotation_accepts_every_listed_key_and_signs_with_the_last() {
        let old = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let new = URL_SAFE_NO_PAD.encode([2u8; 40]);
        let before = Keys::parse(&format!("old {old}\n")).unwrap();
        let after = Keys::parse(&format!("old {old}\n\n# rotated\nnew {new}\n")).unwrap();
        assert_eq!(after.newest().name, "new");
        assert_eq!(after.names().collect::<Vec<_>>(), ["old", "new"]);
        let old_sig = signature(before.newest(), b"c", 2000, DIMS).unwrap();
        assert_eq!(
            check(
                &after,
                b"c",
                DIMS,
                b"2000",
                b"old",
                old_sig.as_bytes(),
                1000
            ),
            Ok(())
        );
        let new_sig = signature(after.newest(), b"c", 2000, DIMS).unwrap();
        assert_ne!(old_sig, new_sig);
        assert_eq!(
            check(
                &after,
                b"c",
                DIMS,
                b"2000",
                b"new",
                new_sig.as_bytes(),
                1000
            ),
            Ok(())
        );
        // the old key is gone after the next rotation
        assert_eq!(
            check(
                &before,
                b"c",
                DIMS,
                b"2000",
                b"new",
                new_sig.as_bytes(),
                1000
            ),
            Err(Invalid::UnknownKey)
        );
    }

    #[test]
    fn malformed_signatures_never_panic() {
        let keys = doc_keys();
        let good = signature(keys.newest(), b"c", 2000, &[]).unwrap();
        let g = good.as_bytes();
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            b"x".to_vec(),
            g[..42].to_vec(),
            [g, b"A"].concat(),
            [g, b"="].concat(),
            URL_SAFE_NO_PAD.encode([0u8; 31]).into_bytes(),
            URL_SAFE_NO_PAD.encode([0u8; 33]).into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode(mac(keys.newest(), b"c", 2000, &[]))
                .into_bytes(),
            vec![b'%'; 43],
            vec![0xff; 43],
            vec![b'A'; 43],
            vec![b'_'; 43],
            vec![b'/'; 43],
            vec![b'='; 43],
            b"A".repeat(10_000),
        ];
        // the last character carries 2 unused bits: a non-canonical encoding of the same MAC
        const URL_ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut noncanon = g.to_vec();
        let idx = URL_ALPHABET
            .iter()
            .position(|&c| c == noncanon[42])
            .unwrap();
        assert_eq!(idx & 3, 0);
        noncanon[42] = URL_ALPHABET[idx | 1];
        cases.push(noncanon);
        for c in &cases {
            let r = check(&keys, b"c", &[], b"2000", b"2026-01", c, 1000);
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(c));
        }
        for i in 0..good.len() {
            let _ = check(&keys, b"c", &[], b"2000", b"2026-01", &g[..i], 1000);
        }
        assert_eq!(
            verify(&keys, b"c", &[], None, Some(b"2026-01"), Some(g), 1000),
            Err(Invalid::Missing)
        );
        assert_eq!(
            verify(&keys, b"c", &[], Some(b"2000"), None, Some(g), 1000),
            Err(Invalid::Missing)
        );
        assert_eq!(
            verify(
                &keys,
                b"c",
                &[],
                Some(b"2000"),
                Some(b"2026-01"),
                None,
                1000
            ),
            Err(Invalid::Missing)
        );
        assert_eq!(
            verify(&keys, b"c", &[], Some(b""), Some(b"2026-01"), Some(g), 1000),
            Err(Invalid::Missing)
        );
        assert_eq!(
            check(&keys, b"c", &[], b"2000", b"2026-01", g, 1000),
            Ok(())
        );
    }

    /// Random bytes in every argument, and random edits of a valid signed request: never a
    /// panic, never accepted unless the values are exactly the signed ones.
    #[test]
    fn random_input_never_panics() {
        let keys = doc_keys();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let good = signature(keys.newest(), b"c", 2000, DIMS).unwrap();
        for _ in 0..20_000 {
            let mut field = |max: u64, from: &[u8]| -> Vec<u8> {
                let mut v = from.to_vec();
                for _ in 0..next() % 3 {
                    let n = v.len() as u64 + 1;
                    match next() % 3 {
                        0 if !v.is_empty() => {
                            let i = (next() % (n - 1)) as usize;
                            v[i] = next() as u8;
                        }
                        1 => v.insert((next() % n) as usize, next() as u8),
                        _ if !v.is_empty() => v.truncate((next() % n) as usize),
                        _ => {}
                    }
                }
                v.truncate(max as usize);
                v
            };
            let sig = field(64, good.as_bytes());
            let exp = field(24, b"2000");
            let kid = field(16, b"2026-01");
            let camp = field(8, b"c");
            let r = verify(&keys, &camp, DIMS, Some(&exp), Some(&kid), Some(&sig), 1000);
            if r.is_ok() {
                assert_eq!(
                    (&sig[..], &exp[..], &kid[..], &camp[..]),
                    (good.as_bytes(), &b"2000"[..], &b"2026-01"[..], &b"c"[..])
                );
            }
        }
    }

    #[test]
    fn key_file_errors() {
        let k32 = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
        let k31 = base64::engine::general_purpose::STANDARD.encode([5u8; 31]);
        let e = |t: &str| Keys::parse(t).unwrap_err();
        assert_eq!(e("").line, 0);
        assert_eq!(e("# only a comment\n\n").line, 0);
        assert_eq!(
            e(&format!("a {k32}\nb not*base64\n")),
            KeyFileError {
                line: 2,
                msg: "the key \"b\" is not valid base64".into()
            }
        );
        assert_eq!(
            e(&format!("a {k31}\n")),
            KeyFileError {
                line: 1,
                msg: "the key \"a\" has 31 bytes, at least 32 are needed".into()
            }
        );
        assert_eq!(
            e(&format!("a {k32}\n\na {k32}\n")),
            KeyFileError {
                line: 3,
                msg: "duplicate key name \"a\" (first on line 1)".into()
            }
        );
        assert_eq!(e("lonely\n").line, 1);
        assert_eq!(e(&format!("a {k32} extra\n")).line, 1);
        assert_eq!(e(&format!("b/d {k32}\n")).line, 1);
        // either alphabet, padded or not; comments, blank lines, CRLF, indentation
        let url = URL_SAFE_NO_PAD.encode([0xfbu8; 48]);
        let keys = Keys::parse(&format!("# keys\r\n\r\n  a\t{k32}\r\nb {url}\n")).unwrap();
        assert_eq!(keys.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(format!("{:?}", keys.newest()), "Key(\"b\", 48 bytes)");
    }

    #[test]
    fn load_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        std::fs::write(&p, "# c\nk short\n").unwrap();
        let e = Keys::load(&p).unwrap_err();
        assert!(e.starts_with(&format!("{}:2: ", p.display())), "{e}");
        std::fs::write(&p, "").unwrap();
        assert_eq!(
            Keys::load(&p).unwrap_err(),
            format!("{}: no key in the file", p.display())
        );
        assert!(Keys::load(&dir.path().join("absent"))
            .unwrap_err()
            .starts_with("cannot read"));
    }

    #[test]
    fn sign_url_joins_the_query() {
        let k = Key::new("k", &[3u8; 32]);
        let s = signature(&k, b"c", 5, &[]).unwrap();
        assert_eq!(
            sign_url("https://t/c", &k, b"c", 5, &[]).unwrap(),
            format!("https://t/c?exp=5&kid=k&sig={s}")
        );
        assert_eq!(
            sign_url("https://t/c?", &k, b"c", 5, &[]).unwrap(),
            format!("https://t/c?exp=5&kid=k&sig={s}")
        );
        assert_eq!(
            sign_url("https://t/c?cid=c&", &k, b"c", 5, &[]).unwrap(),
            format!("https://t/c?cid=c&exp=5&kid=k&sig={s}")
        );
        assert_eq!(
            sign_url("https://t/c?cid=c#x", &k, b"c", 5, &[]).unwrap(),
            format!("https://t/c?cid=c&exp=5&kid=k&sig={s}#x")
        );
    }
}
