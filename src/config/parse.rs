//! Parsers for flag values (durations, IP blocks) and the URL helpers of
//! the configuration (`--web-servers` entries, Upstash settings).

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Why `url` cannot be a `--web-servers` entry, if it cannot. The entry is
/// copied into the page's CSP header and compared by the page with
/// `?server=`, so only a plain `ws://` or `wss://` URL passes: a host
/// (name, IPv4 or bracketed IPv6), an optional port, a path, and nothing
/// that could end a CSP source (`;`, `,`, quotes, spaces) or hide a
/// different server (user info, query, fragment).
pub(super) fn check_web_server(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or("is not a ws:// or wss:// URL")?;
    let (authority, path) = rest
        .find('/')
        .map(|at| rest.split_at(at))
        .ok_or("has no path")?;
    let (host, port) = match authority.rfind(':') {
        Some(at) if !authority.ends_with(']') => (&authority[..at], Some(&authority[at + 1..])),
        _ => (authority, None),
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    if !host_ok {
        return Err("has no valid host");
    }
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err("has no valid port");
    }
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~/%!$&()*+=:@".contains(&b));
    if !path_ok {
        return Err("has a query, fragment or character not allowed in its path");
    }
    Ok(())
}

/// Turns the old server's Upstash settings into a Redis URL: a REST URL
/// (`https://HOST`) becomes `rediss://default:TOKEN@HOST:6379`; a Redis URL
/// without a password gets the token as the `default` user's password.
pub fn upstash_to_redis(url: &str, token: Option<&str>) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => ("rediss", rest.trim_end_matches('/')),
        Some(("http", rest)) => ("redis", rest.trim_end_matches('/')),
        Some((scheme, rest)) => (scheme, rest),
        None => ("rediss", url),
    };
    let host_has_port = |hostpart: &str| {
        hostpart
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    };
    let mut rest = rest.to_owned();
    if (scheme == "rediss" || scheme == "redis") && url.starts_with("http") && !host_has_port(&rest)
    {
        rest.push_str(":6379");
    }
    match token {
        Some(t) if !t.is_empty() && !rest.contains('@') => {
            format!("{scheme}://default:{}@{rest}", percent_encode_userinfo(t))
        }
        _ => format!("{scheme}://{rest}"),
    }
}

/// What may stay unescaped in URL user info: RFC 3986's unreserved
/// characters. Everything else (`/`, `+`, `=`, `@`, `:` …) is escaped.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent_encode_userinfo(s: &str) -> String {
    utf8_percent_encode(s, USERINFO).to_string()
}

/// Parses an IP address or CIDR block (`10.0.0.0/8`, `::1`); a bare
/// address is a block of one.
pub fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is not an IP address or CIDR block like 10.0.0.0/8"))
}

/// Parses a duration flag: `30d`, `15m`, `5s`, `250ms`, `24h` or any other
/// humantime duration (`1h 30m`, `2min`); a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_with_bare_unit(text, 1000)
}

/// Parses a duration flag whose bare numbers are milliseconds
/// (`--redis-timeout-ms 500`); `2s` and other humantime forms work too.
pub fn parse_millis(text: &str) -> Result<Duration, String> {
    parse_with_bare_unit(text, 1)
}

/// A bare number times `bare_unit_ms`, else a humantime duration. The
/// result is whole milliseconds and at most `u64::MAX` of them, as every
/// duration has always been (Redis TTLs and deadlines are milliseconds).
fn parse_with_bare_unit(text: &str, bare_unit_ms: u64) -> Result<Duration, String> {
    let text = text.trim();
    let too_long = || format!("{text:?} is too long");
    if let Some(n) = whole_number(text) {
        let ms = n
            .and_then(|n| n.checked_mul(bare_unit_ms))
            .ok_or_else(too_long)?;
        return Ok(Duration::from_millis(ms));
    }
    // humantime counts nanoseconds in a u64 and so refuses `Nms` past 584
    // years, which the millisecond count here has always accepted.
    if let Some(n) = text.strip_suffix("ms").and_then(whole_number) {
        return n.map(Duration::from_millis).ok_or_else(too_long);
    }
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 30d, 15m, 5s or 250ms ({e})"))?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{text:?} is finer than a millisecond"));
    }
    if duration.as_millis() > u128::from(u64::MAX) {
        return Err(too_long());
    }
    Ok(duration)
}

/// `Some` if `text` is digits (with an optional `+`, which the integer
/// flags have always taken): the number, or `None` past `u64::MAX`.
fn whole_number(text: &str) -> Option<Option<u64>> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())
}
