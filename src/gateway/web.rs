//! The web chat client, served by every node at `GET /`.
//!
//! Its files live in `web/` and are embedded in the binary at build time
//! (no build step at run time). `ASSETS` maps each URL path to its bytes
//! and content type.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// (URL path, content type, bytes) of every embedded file.
const ASSETS: &[(&str, &str, &[u8])] = &[];

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
    Some(res)
}
