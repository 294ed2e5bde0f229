//! Request input: percent-decoding of argument values, IP anonymization, campaign id checks,
//! numbers. Pure functions, fuzzed.

/// Maximum campaign id length in bytes.
pub const MAX_CAMPAIGN_ID: usize = 64;

/// A campaign id is 1..=64 bytes of `[A-Za-z0-9_.:-]`.
pub fn valid_campaign_id(id: &[u8]) -> bool { unimplemented!() }

/// Percent-decodes an argument value (`%XX`, and `+` as space) into `out` (appended).
/// Invalid escapes are kept literally. The result may be invalid UTF-8.
pub fn percent_decode(value: &[u8], out: &mut Vec<u8>) { unimplemented!() }

/// How the client IP is stored (`tracker_ip`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpMode { Full, Anonymize, Off }

/// Applies `mode` to a textual client address (as nginx's `$remote_addr`): Full keeps it,
/// Anonymize zeroes IPv4 to /24 and IPv6 to /48 (canonical text, e.g. "192.0.2.0", "2001:db8:1::"),
/// Off gives None. Unparsable text gives None with Anonymize (never stored unmasked).
pub fn apply_ip_mode(mode: IpMode, addr: &[u8]) -> Option<String> { unimplemented!() }

/// Parses a decimal number (e.g. "12.50", "3") for conversion values and watch time.
/// None for empty, non-finite, or non-numeric input.
pub fn parse_number(s: &[u8]) -> Option<f64> { unimplemented!() }
