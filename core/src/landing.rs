//! Landing-URL templates with macros expanded at click time: `{click_id}`, `{campaign}` and
//! `{dim.NAME}`. Each value is percent-encoded (RFC 3986 unreserved characters kept) so that it
//! can never change the URL's scheme, host or path.

/// Longest landing URL template accepted, in bytes.
pub const MAX_TEMPLATE_LEN: usize = 2048;

/// A checked template. Checked at load time (campaigns file): absolute `http`/`https` URL with
/// a non-empty host, no macro, whitespace or control character in the scheme or authority,
/// only known macros, balanced braces.
///
/// The rules, in detail:
/// - at most [`MAX_TEMPLATE_LEN`] bytes; no whitespace, no control character and no backslash
///   anywhere;
/// - the scheme is `http` or `https` (any case), followed by `://`;
/// - the authority (up to the first `/`, `?` or `#`) is `host[:port]`: the host is a non-empty
///   name of letters, digits, `-._~` and non-ASCII characters, or a bracketed IPv6 literal; the
///   port is 1 to 5 digits. So no `@` (userinfo), no `{` (macro), no `%`;
/// - after the authority, `{` opens a macro that must be closed by `}`: `{click_id}`,
///   `{campaign}` or `{dim.NAME}` with NAME of `[A-Za-z0-9_]+`; a lone `}` is an error.
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    url: String,
}

#[derive(Debug, PartialEq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(msg.into()))
}

/// A macro, as found between braces.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Macro<'a> {
    ClickId,
    Campaign,
    Dim(&'a [u8]),
}

fn parse_macro(name: &[u8]) -> Option<Macro<'_>> {
    match name {
        b"click_id" => Some(Macro::ClickId),
        b"campaign" => Some(Macro::Campaign),
        _ => {
            let dim = name.strip_prefix(b"dim.")?;
            (!dim.is_empty() && dim.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_'))
                .then_some(Macro::Dim(dim))
        }
    }
}

impl Template {
    pub fn parse(url: &str) -> Result<Template, TemplateError> {
        if url.is_empty() {
            return err("empty URL");
        }
        if url.len() > MAX_TEMPLATE_LEN {
            return err(format!("longer than {MAX_TEMPLATE_LEN} bytes"));
        }
        for (i, c) in url.char_indices() {
            if c.is_control() {
                return err(format!("control character {:?} at byte {i}", c));
            }
            if c.is_whitespace() {
                return err(format!("whitespace at byte {i} (encode it as %20)"));
            }
            if c == '\\' {
                return err(format!("backslash at byte {i}"));
            }
        }
        let Some(sep) = url.find("://") else {
            return err("not an absolute URL: scheme must be http or https, followed by \"://\"");
        };
        let scheme = &url[..sep];
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return err(format!("scheme must be http or https, not {scheme:?}"));
        }
        let rest = &url[sep + 3..];
        let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        check_authority(&rest[..auth_end])?;
        check_macros(&rest.as_bytes()[auth_end..])?;
        Ok(Template {
            url: url.to_owned(),
        })
    }

    /// The template text, as given to [`Template::parse`] (what the campaign table stores).
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// [`expand`] with this template.
    pub fn expand(
        &self,
        click_id: &[u8],
        campaign: &[u8],
        dims: &[(&[u8], &[u8])],
        out: &mut Vec<u8>,
    ) {
        expand(self.url.as_bytes(), click_id, campaign, dims, out)
    }
}

fn check_authority(auth: &str) -> Result<(), TemplateError> {
    if auth.is_empty() {
        return err("empty host");
    }
    for c in auth.chars() {
        match c {
            '{' | '}' => return err("macros are not allowed in the host"),
            '@' => return err("userinfo (\"@\") is not allowed in the host"),
            _ => {}
        }
    }
    let (host, port) = if let Some(v6) = auth.strip_prefix('[') {
        let Some(close) = v6.find(']') else {
            return err("unclosed \"[\" in the host");
        };
        let lit = &v6[..close];
        if lit.is_empty()
            || !lit
                .bytes()
                .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
        {
            return err(format!("invalid IPv6 literal [{lit}] in the host"));
        }
        let after = &v6[close + 1..];
        match after.strip_prefix(':') {
            Some(port) => (None, Some(port)),
            None if after.is_empty() => (None, None),
            None => {
                return err(format!(
                    "invalid characters {after:?} after the IPv6 literal"
                ))
            }
        }
    } else {
        match auth.rfind(':') {
            Some(i) => (Some(&auth[..i]), Some(&auth[i + 1..])),
            None => (Some(auth), None),
        }
    };
    if let Some(host) = host {
        if host.is_empty() {
            return err("empty host");
        }
        if let Some(c) = host
            .chars()
            .find(|&c| !(c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
        {
            return err(format!("invalid character {c:?} in the host"));
        }
    }
    if let Some(port) = port {
        if port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|c| c.is_ascii_digit())
            || port.parse::<u32>().map_or(true, |p| p > 65535)
        {
            return err(format!("invalid port {port:?}"));
        }
    }
    Ok(())
}

fn check_macros(s: &[u8]) -> Result<(), TemplateError> {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'{' => {
                let body = &s[i + 1..];
                let close = body.iter().position(|&c| c == b'}');
                let open = body.iter().position(|&c| c == b'{');
                let Some(close) = close else {
                    return err("unbalanced braces: \"{\" without \"}\"");
                };
                if open.is_some_and(|o| o < close) {
                    return err("unbalanced braces: \"{\" inside a macro");
                }
                let name = &body[..close];
                if parse_macro(name).is_none() {
                    return err(format!(
                        "unknown macro \"{{{}}}\" (known: {{click_id}}, {{campaign}}, {{dim.NAME}})",
                        String::from_utf8_lossy(name)
                    ));
                }
                i += close + 2;
            }
            b'}' => return err("unbalanced braces: \"}\" without \"{\""),
            _ => i += 1,
        }
    }
    Ok(())
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `value` percent-encoded: RFC 3986 unreserved bytes (`A-Za-z0-9-._~`) as they are,
/// every other byte as `%XX` (uppercase hex).
pub fn percent_encode(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX_UPPER[(b >> 4) as usize],
                HEX_UPPER[(b & 15) as usize],
            ]);
        }
    }
}

/// Expands `url` (a template that passed [`Template::parse`], as stored in the campaign table)
/// into `out` (appended). `dims` are (name, value) pairs; a missing dimension expands to "".
///
/// Never panics and allocates only to grow `out`. On an unchecked template, text that is not a
/// known macro (an unknown name, a `{` without `}`) is copied as it is.
pub fn expand(
    url: &[u8],
    click_id: &[u8],
    campaign: &[u8],
    dims: &[(&[u8], &[u8])],
    out: &mut Vec<u8>,
) {
    out.reserve(url.len());
    let mut rest = url;
    // Whether the next macro is in the path (no "?" or "#" met yet in the template).
    let mut in_path = true;
    while !rest.is_empty() {
        let Some(open) = rest.iter().position(|&c| c == b'{') else {
            out.extend_from_slice(rest);
            return;
        };
        in_path = in_path && !rest[..open].iter().any(|&c| c == b'?' || c == b'#');
        out.extend_from_slice(&rest[..open]);
        let after = &rest[open + 1..];
        let found = after
            .iter()
            .position(|&c| c == b'}')
            .and_then(|close| Some((close, parse_macro(&after[..close])?)));
        match found {
            Some((close, m)) => {
                let value: &[u8] = match m {
                    Macro::ClickId => click_id,
                    Macro::Campaign => campaign,
                    Macro::Dim(name) => dims
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or(&[][..], |(_, v)| v),
                };
                // In the path, a value of only dots ("." or "..") would be a dot segment that
                // browsers resolve, leaving the template's path (percent-encoding does not
                // help: "%2E%2E" is a dot segment too): it expands to nothing there.
                if !(in_path && !value.is_empty() && value.iter().all(|&c| c == b'.')) {
                    percent_encode(value, out);
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push(b'{');
                rest = after;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(url: &str) -> String {
        match Template::parse(url) {
            Ok(_) => panic!("{url:?} accepted"),
            Err(TemplateError(m)) => m,
        }
    }

    fn exp(url: &str, click: &[u8], camp: &[u8], dims: &[(&[u8], &[u8])]) -> String {
        let mut out = Vec::new();
        expand(url.as_bytes(), click, camp, dims, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// The scheme, authority and path (up to the first `?` or `#`) of an expanded URL.
    fn prefix(url: &str) -> &str {
        &url[..url.find(['?', '#']).unwrap_or(url.len())]
    }

    #[test]
    fn accepts() {
        for ok in [
            "https://shop.example.com/summer?pub={dim.publisher}&click={click_id}",
            "http://a.example.com",
            "HTTPS://A.EXAMPLE.COM/",
            "HtTp://a:8080/x{campaign}/y#frag{click_id}",
            "https://[2001:db8::1]:443/p",
            "https://[::1]/",
            "https://caf\u{e9}.example/\u{e9}",
            "https://a.example.com?x={dim.A_1}",
            "https://a.example.com/{click_id}{campaign}{dim.x}",
            "https://a.example.com#{campaign}",
            "https://a.example.com/%7Bnot-a-macro%7D",
        ] {
            let t = Template::parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e:?}"));
            assert_eq!(t.as_str(), ok);
        }
    }

    #[test]
    fn rejects() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("ftp://a.example.com/", "scheme must be http or https"),
            ("javascript://a.example.com/%0aalert(1)", "scheme"),
            ("httpx://a/", "scheme"),
            ("//a.example.com/", "scheme"),
            ("a.example.com/", "absolute"),
            ("https:/a.example.com/", "absolute"),
            ("https:///path", "empty host"),
            ("https://", "empty host"),
            ("https://?q", "empty host"),
            (
                "https://{dim.publisher}.example.com/",
                "macros are not allowed in the host",
            ),
            (
                "https://a.example.com{click_id}",
                "macros are not allowed in the host",
            ),
            (
                "https://a.example.com:{dim.port}/",
                "macros are not allowed in the host",
            ),
            ("https://user@a.example.com/", "userinfo"),
            ("https://a.example.com@evil.com/", "userinfo"),
            ("https://a.example.com\\@evil.com/", "backslash"),
            ("https://a.example.com\\evil/", "backslash"),
            ("https://a.example.com/\\evil", "backslash"),
            ("https://a.exa mple.com/", "whitespace"),
            ("https://a.example.com/ x", "whitespace"),
            ("https://a.example.com/\r\nLocation: x", "control character"),
            ("https://a.example.com/\u{0}", "control character"),
            ("https://a.example.com/\u{85}", "control character"),
            ("https://a.example.com/\u{2028}", "whitespace"),
            ("https://a%2Eexample.com/", "invalid character"),
            ("https://a.example.com:/", "invalid port"),
            ("https://a.example.com:99999/", "invalid port"),
            ("https://a.example.com:80a/", "invalid port"),
            ("https://:80/", "empty host"),
            ("https://[::1/", "unclosed"),
            ("https://[::1]x/", "after the IPv6"),
            ("https://[zz]/", "IPv6 literal"),
            (
                "https://a.example.com/?x={bogus}",
                "unknown macro \"{bogus}\"",
            ),
            (
                "https://a.example.com/?x={dim.}",
                "unknown macro \"{dim.}\"",
            ),
            ("https://a.example.com/?x={dim.a-b}", "unknown macro"),
            ("https://a.example.com/?x={}", "unknown macro \"{}\""),
            ("https://a.example.com/?x={CLICK_ID}", "unknown macro"),
            ("https://a.example.com/?x={click_id", "unbalanced"),
            ("https://a.example.com/?x=click_id}", "unbalanced"),
            ("https://a.example.com/?x={{click_id}}", "unbalanced"),
            ("https://a.example.com/?x={a{click_id}", "unbalanced"),
        ];
        for (url, want) in cases {
            let m = parse_err(url);
            assert!(m.contains(want), "{url:?}: {m:?} does not contain {want:?}");
        }
        let long = format!("https://a.example.com/{}", "x".repeat(MAX_TEMPLATE_LEN));
        assert!(parse_err(&long).contains("longer than"));
        let max = format!(
            "https://a.example.com/{}",
            "x".repeat(MAX_TEMPLATE_LEN - 22)
        );
        assert_eq!(max.len(), MAX_TEMPLATE_LEN);
        assert!(Template::parse(&max).is_ok());
    }

    #[test]
    fn expands() {
        let dims: &[(&[u8], &[u8])] = &[(b"publisher", b"a b"), (b"n", b"1")];
        assert_eq!(
            exp("https://shop.example.com/summer?pub={dim.publisher}&click={click_id}&c={campaign}&m={dim.missing}",
                b"0190abcdef", b"summer-sale", dims),
            "https://shop.example.com/summer?pub=a%20b&click=0190abcdef&c=summer-sale&m="
        );
        assert_eq!(
            exp("https://a/{campaign}", b"", b"c.1:x_y-z~", &[]),
            "https://a/c.1%3Ax_y-z~"
        );
        assert_eq!(exp("https://a/", b"x", b"y", dims), "https://a/");
        // Unreserved kept, everything else encoded uppercase.
        let all: Vec<u8> = (0..=255u8).collect();
        let mut out = Vec::new();
        percent_encode(&all, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("%00%01%02"));
        assert!(s.contains("-.%2F0123456789%3A"));
        assert!(s.contains("ABCDEFGHIJKLMNOPQRSTUVWXYZ%5B%5C%5D%5E_%60abc"));
        assert!(s.contains("xyz%7B%7C%7D~%7F%80%81"));
        assert!(s.ends_with("%FE%FF"));
        // First matching dimension wins.
        assert_eq!(
            exp(
                "https://a/?{dim.x}",
                b"",
                b"",
                &[(b"x", b"1"), (b"x", b"2")]
            ),
            "https://a/?1"
        );
        // Appends.
        let mut out = b"pre:".to_vec();
        expand(b"https://a/{click_id}", b"id", b"", &[], &mut out);
        assert_eq!(out, b"pre:https://a/id");
    }

    #[test]
    fn values_cannot_alter_scheme_host_or_path() {
        let templates = [
            "https://shop.example.com/landing?c={click_id}&p={dim.p}",
            "https://shop.example.com/landing/{campaign}/{dim.p}?c={click_id}",
            "https://shop.example.com/landing#{dim.p}",
            "https://shop.example.com/{dim.p}",
        ];
        let evil: &[&[u8]] = &[
            b"\r\nLocation: https://evil.com",
            b"//evil.com",
            b"/../../admin",
            b"@evil.com",
            b"x@evil.com:80",
            b"\\\\evil.com\\x",
            b"%2F%2Fevil.com",
            b"%252F",
            b"?x=1#y",
            b"{click_id}",
            b"\xff\xfe\xc3(\x00",
            b"https://evil.com/",
            b" \t\x0b\x0c",
            "\u{2028}\u{ff0f}evil".as_bytes(),
        ];
        for t in templates {
            Template::parse(t).unwrap();
            let (safe_prefix, _) = t.split_once('{').unwrap();
            for &v in evil {
                let dims: &[(&[u8], &[u8])] = &[(b"p", v)];
                let out = exp(t, v, v, dims);
                assert!(out.starts_with(safe_prefix), "{out}");
                // Values add no delimiter: scheme, host and path keep their shape.
                for c in ['/', '?', '#', ':', '@', '[', ']'] {
                    assert_eq!(
                        out.matches(c).count(),
                        t.matches(c).count(),
                        "{c:?} in {out}"
                    );
                }
                assert_eq!(
                    prefix(&out).matches('/').count(),
                    prefix(t).matches('/').count()
                );
                assert!(out.bytes().all(|c| c.is_ascii_graphic()), "{out:?}");
                assert!(
                    !out.contains(['\\', '@', '\r', '\n', ' ', '{', '}']),
                    "{out}"
                );
                // Each expanded value is only unreserved characters and %XX escapes.
                let again = Template::parse(&out);
                assert!(again.is_ok(), "{out}: {again:?}");
                assert_eq!(out.matches('?').count(), t.matches('?').count(), "{out}");
                assert_eq!(out.matches('#').count(), t.matches('#').count(), "{out}");
            }
        }
        assert_eq!(
            exp("https://a/?x={dim.p}", b"", b"", &[(b"p", b"%2F")]),
            "https://a/?x=%252F"
        );
        assert_eq!(
            exp("https://a/?x={dim.p}", b"", b"", &[(b"p", b"\xff")]),
            "https://a/?x=%FF"
        );
        assert_eq!(
            exp("https://a/?x={click_id}", b"\r\n", b"", &[]),
            "https://a/?x=%0D%0A"
        );
    }

    #[test]
    fn dot_values_never_make_dot_segments_in_the_path() {
        let t = "https://s.example/p/{dim.a}/x/{campaign}{dim.b}/y?q={dim.a}#{dim.b}";
        let d: &[(&[u8], &[u8])] = &[(b"a", b".."), (b"b", b".")];
        assert_eq!(exp(t, b"", b"..", d), "https://s.example/p//x//y?q=..#.");
        let d: &[(&[u8], &[u8])] = &[(b"a", b"..x"), (b"b", b"../")];
        assert_eq!(
            exp(t, b"", b"c", d),
            "https://s.example/p/..x/x/c..%2F/y?q=..x#..%2F"
        );
        let d: &[(&[u8], &[u8])] = &[(b"a", b"%2e%2e"), (b"b", b"")];
        assert_eq!(
            exp(t, b"", b"c", d),
            "https://s.example/p/%252e%252e/x/c/y?q=%252e%252e#"
        );
    }

    #[test]
    fn expand_unchecked_templates_never_panics() {
        for url in [
            &b"{"[..],
            b"}",
            b"{{",
            b"{click_id",
            b"{dim.}",
            b"{dim.x",
            b"}{",
            b"{unknown}{campaign}",
            b"",
            b"\xff{\xff}",
        ] {
            let mut out = Vec::new();
            expand(url, b"c", b"k", &[(b"x", b"v")], &mut out);
        }
        let mut out = Vec::new();
        expand(b"a{b}{campaign}{", b"", b"k", &[], &mut out);
        assert_eq!(out, b"a{b}k{");
        // Pseudo-random bytes.
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            let mut url = Vec::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                url.push(b"{}abc.dimclick_id:/%\xff"[(x % 22) as usize]);
            }
            let mut out = Vec::new();
            expand(&url, b"id", b"c", &[(b"a", b"/")], &mut out);
            if let Ok(s) = std::str::from_utf8(&url) {
                let _ = Template::parse(s);
            }
        }
    }
}
