//! Hard limits on what a request may carry (`tracker_limits`), and the reasons a request is
//! refused as invalid. A refused request is never stored: it is answered cheaply (400 for
//! clicks and postbacks, the GIF for pixels, 413 for a postback body over the limit) and
//! counted per reason in the ring header (`Ring::count_invalid`).

/// The limits of one location. Each applies to the raw request, before any decoding work
/// beyond what is needed to measure it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest query string, in bytes (`query=`).
    pub query: usize,
    /// Most arguments in the query string (`args=`): `&`-separated parts, empty ones aside.
    pub args: usize,
    /// Longest value of a campaign id, dimension, number or video event after
    /// percent-decoding (`value=`).
    pub value: usize,
    /// Largest request body of a POST (`body=`), by its Content-Length.
    pub body: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            query: 4096,
            args: 64,
            value: 1024,
            body: 64 * 1024,
        }
    }
}

/// Longest click id a conversion may carry (the module's own are 32 hex digits).
pub const MAX_CLICK_ID: usize = 128;

/// Why a request was refused as invalid. The index is its counter slot in the ring header
/// (fewer than `ring::INVALID_REASONS`); the name is its label in stats and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    QueryTooLong,
    TooManyArgs,
    ValueTooLong,
    InvalidCampaign,
    InvalidClickId,
    InvalidValue,
    InvalidVideoEvent,
    BodyTooLarge,
}

impl Reason {
    /// Every reason, in index order.
    pub const ALL: [Reason; 8] = [
        Reason::QueryTooLong,
        Reason::TooManyArgs,
        Reason::ValueTooLong,
        Reason::InvalidCampaign,
        Reason::InvalidClickId,
        Reason::InvalidValue,
        Reason::InvalidVideoEvent,
        Reason::BodyTooLarge,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Reason::QueryTooLong => "query_too_long",
            Reason::TooManyArgs => "too_many_args",
            Reason::ValueTooLong => "value_too_long",
            Reason::InvalidCampaign => "invalid_campaign",
            Reason::InvalidClickId => "invalid_click_id",
            Reason::InvalidValue => "invalid_value",
            Reason::InvalidVideoEvent => "invalid_video_event",
            Reason::BodyTooLarge => "body_too_large",
        }
    }

    /// What the name says, for a log line and the docs.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::QueryTooLong => "query string longer than tracker_limits query=",
            Reason::TooManyArgs => "more arguments than tracker_limits args=",
            Reason::ValueTooLong => "a value longer than tracker_limits value= after decoding",
            Reason::InvalidCampaign => "campaign id missing, too long or not [A-Za-z0-9._-]",
            Reason::InvalidClickId => "click id longer than 128 bytes",
            Reason::InvalidValue => "conversion value or watch time not a decimal number",
            Reason::InvalidVideoEvent => "video event not start|q1|mid|q3|complete",
            Reason::BodyTooLarge => "request body longer than tracker_limits body=",
        }
    }
}

/// Number of arguments in a query string: its `&`-separated parts that are not empty.
pub fn count_args(query: &[u8]) -> usize {
    query
        .split(|&c| c == b'&')
        .filter(|p| !p.is_empty())
        .count()
}

/// The query string's own check: its length, then its argument count (stopping as soon as
/// the limit is passed, so a long run of `&` costs no more than the limit).
pub fn check_query(query: &[u8], limits: &Limits) -> Result<(), Reason> {
    if query.len() > limits.query {
        return Err(Reason::QueryTooLong);
    }
    let mut n = 0usize;
    for part in query.split(|&c| c == b'&') {
        if !part.is_empty() {
            n += 1;
            if n > limits.args {
                return Err(Reason::TooManyArgs);
            }
        }
    }
    Ok(())
}

/// A size with an optional `k`/`K` or `m`/`M` suffix, as nginx writes sizes ("64k").
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, unit) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1024u64),
        b'm' | b'M' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// Largest value each limit accepts (bounds that keep the module's buffers sane).
const MAX_QUERY: u64 = 1024 * 1024;
const MAX_ARGS: u64 = 4096;
const MAX_VALUE: u64 = 64 * 1024;
const MAX_BODY: u64 = 1024 * 1024 * 1024;

/// The parameters of `tracker_limits` (`query=4k args=64 value=1k body=64k`, any subset, in
/// any order) over the defaults. Err says which parameter is wrong and why.
pub fn parse(params: &[&str]) -> Result<Limits, String> {
    let mut l = Limits::default();
    if params.is_empty() {
        return Err("needs at least one of query=, args=, value=, body=".into());
    }
    for p in params {
        let (name, v) = p
            .split_once('=')
            .ok_or_else(|| format!("\"{p}\" is not NAME=SIZE"))?;
        let (max, unit_ok) = match name {
            "query" => (MAX_QUERY, true),
            "args" => (MAX_ARGS, false),
            "value" => (MAX_VALUE, true),
            "body" => (MAX_BODY, true),
            _ => {
                return Err(format!(
                    "unknown parameter \"{name}\" (query=, args=, value=, body=)"
                ))
            }
        };
        let n = if unit_ok {
            parse_size(v)
        } else {
            v.parse::<u64>()
                .ok()
                .filter(|_| v.bytes().all(|c| c.is_ascii_digit()))
        }
        .ok_or_else(|| format!("invalid {name} \"{v}\""))?;
        if n == 0 || n > max {
            return Err(format!("{name}={v} is out of range (1..={max})"));
        }
        match name {
            "query" => l.query = n as usize,
            "args" => l.args = n as usize,
            "value" => l.value = n as usize,
            _ => l.body = n,
        }
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_indexes_and_names_within_the_ring_slots() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(r.index() < crate::ring::INVALID_REASONS);
            assert!(Reason::ALL[..i].iter().all(|o| o.name() != r.name()));
        }
    }

    #[test]
    fn arguments_are_counted_without_empty_parts() {
        assert_eq!(count_args(b""), 0);
        assert_eq!(count_args(b"a=1"), 1);
        assert_eq!(count_args(b"a=1&&b&"), 2);
        assert_eq!(count_args(b"&&&"), 0);
    }

    #[test]
    fn query_checks_length_then_count() {
        let l = Limits {
            query: 10,
            args: 2,
            ..Limits::default()
        };
        assert_eq!(check_query(b"a=1&b=2", &l), Ok(()));
        assert_eq!(check_query(b"a=1&b=2&c", &l), Err(Reason::TooManyArgs));
        assert_eq!(check_query(b"a=1&b=2&&&", &l), Ok(()));
        assert_eq!(check_query(b"a=12345678&", &l), Err(Reason::QueryTooLong));
        assert_eq!(check_query(b"0123456789", &l), Ok(()));
    }

    #[test]
    fn sizes_parse_like_nginx() {
        assert_eq!(parse_size("64k"), Some(65536));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("100"), Some(100));
        for bad in ["", "k", "-1", "1g", "1.5k", " 1", "99999999999999999999"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn directive_parameters() {
        assert_eq!(
            parse(&["query=2k", "args=10"]),
            Ok(Limits {
                query: 2048,
                args: 10,
                ..Limits::default()
            })
        );
        assert_eq!(
            parse(&["body=1m", "value=256"]).map(|l| (l.body, l.value)),
            Ok((1 << 20, 256))
        );
        assert!(parse(&[]).is_err());
        assert!(parse(&["query"]).unwrap_err().contains("NAME=SIZE"));
        assert!(parse(&["queries=1"])
            .unwrap_err()
            .contains("unknown parameter"));
        assert!(parse(&["args=1k"]).unwrap_err().contains("invalid args"));
        assert!(parse(&["value=0"]).unwrap_err().contains("out of range"));
        assert!(parse(&["query=2m"]).unwrap_err().contains("out of range"));
    }
}
