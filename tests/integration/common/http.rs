//! Plain HTTP/1.1 GETs over a raw TCP stream, for the nodes' endpoints,
//! nginx and the TLS test: the status and the (de-chunked) body, with a
//! timeout so no test hangs on a silent peer.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::REPLY_TIMEOUT;

/// A plain HTTP/1.1 GET to `addr` (`host:port`): (status, body), chunked
/// bodies decoded. Panics when nothing HTTP comes back in time.
pub(crate) async fn http_get_at(addr: &str, path: &str) -> (u16, String) {
    try_http_get_at(addr, path, "")
        .await
        .unwrap_or_else(|why| panic!("GET {path} at {addr}: {why}"))
}

/// Like [`http_get_at`] with `headers` (each ending in `\r\n`) added to
/// the request, reporting a refused connection or a silent peer instead of
/// panicking: for nodes that may be on their way out.
pub(crate) async fn try_http_get_at(
    addr: &str,
    path: &str,
    headers: &str,
) -> Result<(u16, String), String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n{headers}\r\n"
    );
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(REPLY_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {REPLY_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    parse_http_response(&raw)
        .ok_or_else(|| format!("unparsable response {:?}", String::from_utf8_lossy(&raw)))
}

fn parse_http_response(raw: &[u8]) -> Option<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}
