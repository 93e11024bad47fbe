//! The web chat client, served by every node at `GET /`.
//!
//! Its files live in `web/` and are embedded in the binary at build time
//! (no build step at run time). `ASSETS` maps each URL path to its bytes
//! and content type.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// (URL path, content type, bytes) of every embedded file.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "/huddle-client.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/huddle-client.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_bytes!("../../web/favicon.svg"),
    ),
];

/// The page's Content-Security-Policy: its own scripts and styles only (no
/// inline code, so injected markup cannot run), sockets to its own host
/// (`'self'` covers `ws(s)://` of the same host; `ws:`/`wss:` allow the
/// documented `?server=` override), images from anywhere over http(s)
/// because image messages link to them.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' http: https: data:; connect-src 'self' ws: wss:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The embedded file at `path`, if any (`/` is `/index.html`).
pub(crate) fn asset(path: &str) -> Option<Response<Full<Bytes>>> {
    let path = if path == "/" { "/index.html" } else { path };
    let (_, content_type, bytes) = ASSETS.iter().find(|(p, _, _)| *p == path)?;
    let mut res = Response::new(Full::new(Bytes::from_static(bytes)));
    *res.status_mut() = StatusCode::OK;
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    Some(res)
}
