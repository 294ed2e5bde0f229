//! Bot and prefetch classification (`tracker_bots`): pure, no allocation.
//!
//! A User-Agent is a bot when it is empty or contains, ASCII case-insensitively, one of
//! [`BOT_MARKERS`]. The list is deliberately short and generic: `bot`, `crawler`, `spider`
//! and `slurp` catch most crawlers that announce themselves (Googlebot, bingbot, AhrefsBot,
//! Baiduspider, Yahoo! Slurp...); the rest names common tools, headless browsers and link
//! previewers that do not. A client that claims to be a browser is not detected: this is a
//! flag for honest automation, not fraud detection.
//!
//! A request is a prefetch when it carries `Purpose: prefetch`, `Sec-Purpose: prefetch`
//! (also `prefetch;prerender`), `X-Moz: prefetch` or `X-Purpose: preview`.

/// Markers of automated clients in a User-Agent, lowercase, matched as substrings.
pub const BOT_MARKERS: &[&[u8]] = &[
    b"bot",
    b"crawler",
    b"crawling",
    b"spider",
    b"slurp",
    b"curl/",
    b"wget/",
    b"python-requests",
    b"python-urllib",
    b"go-http-client",
    b"java/",
    b"okhttp",
    b"libwww-perl",
    b"headlesschrome",
    b"phantomjs",
    b"lighthouse",
    b"facebookexternalhit",
    b"feedfetcher",
    b"mediapartners-google",
    b"apis-google",
    b"google-read-aloud",
    b"bingpreview",
];

/// Whether `haystack` contains `needle` (lowercase ASCII), ignoring ASCII case.
fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack.len() >= needle.len()
            && haystack.windows(needle.len()).any(|w| {
                w.iter()
                    .zip(needle)
                    .all(|(a, b)| a.to_ascii_lowercase() == *b)
            })
}

/// Whether a User-Agent (None when the header is absent) is a crawler or other bot.
pub fn is_bot(user_agent: Option<&[u8]>) -> bool {
    let ua = user_agent.unwrap_or(&[]);
    if ua.iter().all(|c| c.is_ascii_whitespace()) {
        return true;
    }
    BOT_MARKERS.iter().any(|m| contains_ci(ua, m))
}

/// Whether a request header (name, value) marks the request as a prefetch or preview.
pub fn is_prefetch_header(name: &[u8], value: &[u8]) -> bool {
    let value = value.trim_ascii();
    if name.eq_ignore_ascii_case(b"purpose")
        || name.eq_ignore_ascii_case(b"sec-purpose")
        || name.eq_ignore_ascii_case(b"x-moz")
    {
        // `prefetch`, or a list starting with it (`prefetch;prerender`).
        value.len() >= 8
            && value[..8].eq_ignore_ascii_case(b"prefetch")
            && matches!(value.get(8), None | Some(b';' | b',' | b' ' | b'\t'))
    } else if name.eq_ignore_ascii_case(b"x-purpose") {
        value.eq_ignore_ascii_case(b"preview")
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bots() {
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 (compatible; Yahoo! Slurp; http://help.yahoo.com/help/us/ysearch/slurp)",
            "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
            "curl/8.5.0",
            "Wget/1.21.4",
            "python-requests/2.31.0",
            "Go-http-client/1.1",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Linux; Android 7.0; Moto G (4)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0 Mobile Safari/537.36 Chrome-Lighthouse",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Twitterbot/1.0",
            "",
            "   ",
        ] {
            assert!(is_bot(Some(ua.as_bytes())), "{ua}");
        }
        assert!(is_bot(None));
    }

    #[test]
    fn browsers() {
        for ua in [
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_2) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Safari/605.1.15",
            "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
        ] {
            assert!(!is_bot(Some(ua.as_bytes())), "{ua}");
        }
    }

    #[test]
    fn prefetch() {
        assert!(is_prefetch_header(b"Purpose", b"prefetch"));
        assert!(is_prefetch_header(b"sec-purpose", b"prefetch"));
        assert!(is_prefetch_header(b"Sec-Purpose", b"prefetch;prerender"));
        assert!(is_prefetch_header(b"Sec-Purpose", b" Prefetch "));
        assert!(is_prefetch_header(b"X-Moz", b"prefetch"));
        assert!(is_prefetch_header(b"X-Purpose", b"preview"));
        assert!(!is_prefetch_header(b"Purpose", b"prefetcher"));
        assert!(!is_prefetch_header(b"Purpose", b""));
        assert!(!is_prefetch_header(b"X-Purpose", b"prefetch"));
        assert!(!is_prefetch_header(b"Referer", b"prefetch"));
    }
}
