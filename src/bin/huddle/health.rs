//! `huddle health`: a minimal HTTP/1.1 GET for container health checks, so
//! images need no curl. Plain `http://` only (health endpoints are local).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GETs `url` and returns the HTTP status.
pub(crate) async fn check(url: &str, timeout: Duration) -> Result<u16, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err("the URL has no host".into());
    }
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let exchange = async {
        let mut stream = TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let mut head = [0u8; 64];
        let mut len = 0;
        while len < head.len() {
            let n = stream
                .read(&mut head[len..])
                .await
                .map_err(|e| format!("cannot read: {e}"))?;
            if n == 0 {
                break;
            }
            len += n;
            if head[..len].contains(&b'\n') {
                break;
            }
        }
        parse_status(&head[..len])
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

fn parse_status(head: &[u8]) -> Result<u16, String> {
    let line = String::from_utf8_lossy(head);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|s| s.parse().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => Ok(code),
        _ => Err(format!("not an HTTP answer: {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Ok(200));
        assert_eq!(parse_status(b"HTTP/1.0 503 Service Unavailable"), Ok(503));
        assert!(parse_status(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_status(b"").is_err());
    }

    #[tokio::test]
    async fn refuses_other_schemes_and_unreachable_hosts() {
        assert!(check("https://x/", Duration::from_secs(1)).await.is_err());
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = free.local_addr().expect("addr").port();
        drop(free);
        let url = format!("http://127.0.0.1:{port}/readyz");
        assert!(check(&url, Duration::from_secs(1)).await.is_err());
    }
}
