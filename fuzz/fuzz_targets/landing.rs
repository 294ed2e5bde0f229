//! Landing-URL templates: Template::parse on arbitrary text, then expand with arbitrary values.
//! The expansion must keep the template's scheme and authority (host[:port]) exactly: no value
//! can add a delimiter before the first macro's path/query, and the text before the first
//! macro is the template's.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tracker_core::landing::Template;

/// Scheme and authority: the text up to the first `/`, `?` or `#` after "://".
fn origin(url: &[u8]) -> &[u8] {
    let sep = url.windows(3).position(|w| w == b"://").expect("template has ://") + 3;
    let end = url[sep..].iter().position(|c| matches!(c, b'/' | b'?' | b'#')).map_or(url.len(), |e| sep + e);
    &url[..end]
}

fuzz_target!(|data: &[u8]| {
    // Layout: template \0 click_id \0 campaign \0 (name \0 value \0)*
    let mut parts = data.split(|&b| b == 0);
    let Some(tpl) = parts.next() else { return };
    let Ok(tpl) = std::str::from_utf8(tpl) else { return };
    let Ok(t) = Template::parse(tpl) else { return };
    let click = parts.next().unwrap_or(b"");
    let campaign = parts.next().unwrap_or(b"");
    let rest: Vec<&[u8]> = parts.collect();
    let dims: Vec<(&[u8], &[u8])> = rest.chunks(2).map(|c| (c[0], *c.get(1).unwrap_or(&&b""[..]))).collect();
    let mut out = Vec::new();
    t.expand(click, campaign, &dims, &mut out);
    let tb = tpl.as_bytes();
    let o = origin(tb);
    assert!(out.starts_with(o), "origin changed: {:?} -> {:?}", tpl, String::from_utf8_lossy(&out));
    // The byte after the origin is the template's too (or both end there).
    assert_eq!(out.get(o.len()), tb.get(o.len()), "authority extended: {:?} -> {:?}", tpl, String::from_utf8_lossy(&out));
    // Never a control byte, space, DEL or backslash (values are percent-encoded; the template's
    // own text may hold non-ASCII characters, which it copies as they are).
    assert!(out.iter().all(|&c| c > 0x20 && c != 0x7f && c != b'\\'), "bad byte in {:?}", String::from_utf8_lossy(&out));
    // The expansion is again a valid template, with the same origin.
    let again = std::str::from_utf8(&out).expect("a UTF-8 template expands to UTF-8");
    if again.len() <= tracker_core::landing::MAX_TEMPLATE_LEN {
        // Braces from the template text are macros again only if the expansion kept them,
        // which it does not (they are replaced): parse may refuse unknown leftovers, so only
        // check the origin when it parses.
        if let Ok(t2) = Template::parse(again) {
            assert_eq!(origin(t2.as_str().as_bytes()), o);
        }
    }
});
