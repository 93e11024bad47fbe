//! The gateway: HTTP and WebSocket on one port.
//!
//! `serve` accepts TCP connections and serves HTTP/1.1 with hyper:
//! `GET /ws` upgrades to WebSocket (each socket becomes a `connection::run`
//! task), `GET /healthz`, `GET /readyz` and `GET /metrics` answer operators.
//! The gateway is the only layer that knows WebSocket types.
//!
//! `Gateway::build` makes the node: the hub (this node's local fan-out)
//! first, then the app, which hands the hub to the bus as its event sink.
//!
//! Shutdown: when the `shutdown` future resolves the node reports not ready
//! (`/readyz` 503), refuses new WebSocket upgrades (503), asks every
//! WebSocket to close with 1012 and waits for them up to `--shutdown-grace`,
//! while it goes on accepting and answering HTTP (`/healthz`, `/readyz`,
//! `/metrics`), so balancers and probes see a node that says it is going
//! rather than refused connections. Then it stops accepting and lets HTTP
//! requests in flight finish within what is left of the grace. Hyper does
//! not track upgraded connections, so the sockets are tracked here with a
//! `TaskTracker`.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::config::Config;
use crate::error::BuildError;
use crate::metrics::Metrics;

pub mod connection;
pub mod hub;
pub mod queue;
mod rest;
mod web;
pub mod wire;

pub use hub::Hub;

type Body = Full<Bytes>;

/// tungstenite's read buffer per connection. Client frames are mostly a
/// few hundred bytes; the buffer grows to fit a longer one and is given
/// back once that message is read (`wire::Socket::shrink`).
const READ_BUFFER_BYTES: usize = 512;

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Every connection closed within the grace period.
    pub clean: bool,
    /// WebSocket connections still open when the grace period ended.
    pub remaining: usize,
    /// How long draining took.
    pub took: Duration,
}

/// A node: its app and the hub its connections receive room events
/// through. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    /// Services, store, bus, config, metrics.
    app: App,
    /// The local fan-out, which the bus delivers to.
    hub: Arc<Hub>,
    /// Turns to run a request (`--max-inflight-requests`), shared by every
    /// connection of the node.
    admission: Arc<tokio::sync::Semaphore>,
}

impl Gateway {
    /// Builds a node from its configuration.
    pub async fn build(config: Config) -> Result<Gateway, BuildError> {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(metrics.clone(), config.redis_timeout);
        let admission = Arc::new(tokio::sync::Semaphore::new(config.max_inflight_requests));
        let app = App::build(config, metrics, hub.clone()).await?;
        Ok(Gateway {
            app,
            hub,
            admission,
        })
    }

    /// The node's app.
    pub(crate) fn app(&self) -> &App {
        &self.app
    }

    /// Turns to run a request.
    pub(crate) fn admission(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.admission
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.app.node_id()
    }

    /// The node's local fan-out.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

struct Shared {
    /// The node: its app and hub.
    gateway: Gateway,
    sockets: TaskTracker,
    close_sockets: CancellationToken,
    /// HTTP connections (an upgraded one ends its HTTP part at the upgrade).
    http: TaskTracker,
    stop_http: CancellationToken,
    next_id: AtomicU64,
}

/// Serves HTTP and WebSocket on `listener` until `shutdown` resolves, then
/// drains. The listener keeps accepting while the node drains: probes and
/// scrapes are answered (`/readyz` with 503) until `serve` returns, and only
/// new WebSocket upgrades are refused.
pub async fn serve(
    gateway: Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> DrainReport {
    let app = gateway.app().clone();
    let shared = Arc::new(Shared {
        gateway,
        sockets: TaskTracker::new(),
        close_sockets: CancellationToken::new(),
        http: TaskTracker::new(),
        stop_http: CancellationToken::new(),
        next_id: AtomicU64::new(1),
    });
    let (started, deadline, sockets_done) = {
        let accepting = accept(&shared, &listener);
        tokio::pin!(accepting);
        tokio::select! {
            never = &mut accepting => match never {},
            _ = shutdown => {}
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + app.config().shutdown_grace;
        // Still accepting: probes are answered while the sockets close.
        let sockets_done = tokio::select! {
            never = &mut accepting => match never {},
            done = drain_sockets(&app, &shared, deadline) => done,
        };
        (started, deadline, sockets_done)
    };
    drop(listener);
    let http_done = stop_http(&shared, deadline).await;
    app.stop();
    DrainReport {
        clean: http_done && sockets_done,
        remaining: shared.sockets.len(),
        took: started.elapsed(),
    }
}

/// Accepts connections and serves HTTP on each, for as long as it is
/// polled.
async fn accept(shared: &Arc<Shared>, listener: &TcpListener) -> Infallible {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let stop = shared.stop_http.clone();
        let svc_shared = shared.clone();
        let svc = service_fn(move |req| {
            let shared = svc_shared.clone();
            async move { Ok::<_, Infallible>(route(&shared, req, peer).await) }
        });
        let conn = http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(tcp), svc)
            .with_upgrades();
        shared.http.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
}

/// The first part of a drain: the node says it is not ready, every
/// WebSocket is asked to close (1012, spread over `--drain-window`), and
/// they are waited for until `deadline`. Whether they all closed.
async fn drain_sockets(app: &App, shared: &Shared, deadline: tokio::time::Instant) -> bool {
    app.set_draining();
    tracing::info!(
        sockets = shared.sockets.len(),
        grace_ms = app.config().shutdown_grace.as_millis() as u64,
        "draining"
    );
    shared.close_sockets.cancel();
    shared.sockets.close();
    let progress = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            tracing::info!(sockets = shared.sockets.len(), "draining");
        }
    };
    tokio::select! {
        never = progress => match never {},
        done = tokio::time::timeout_at(deadline, shared.sockets.wait()) => done.is_ok(),
    }
}

/// The last part of a drain, once nothing is accepted any more: HTTP
/// connections finish the request in flight and close, until `deadline`.
/// Whether they all did.
async fn stop_http(shared: &Shared, deadline: tokio::time::Instant) -> bool {
    shared.stop_http.cancel();
    shared.http.close();
    tokio::time::timeout_at(deadline, shared.http.wait())
        .await
        .is_ok()
}

pub(super) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).expect(
        "HTTP bodies are plain structs of strings, numbers and lists: they always serialize",
    );
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

async fn route(shared: &Shared, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let app = shared.gateway.app();
    let path = req.uri().path();
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
    }
    match path {
        "/ws" => upgrade(shared, req, peer),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            let report = app.readiness().await;
            let status = if report.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &report)
        }
        p if p.starts_with("/api/rooms/") => rest::rest_history(app, &req).await,
        "/metrics" => {
            let mut res = text(StatusCode::OK, app.render_metrics());
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            res
        }
        other => web::asset(other, &app.config().web_servers)
            .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n")),
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is
/// case-insensitive, RFC 9110 §11.1).
pub(super) fn bearer_token<B>(req: &Request<B>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The client's address: the peer, unless the peer is a trusted proxy
/// (`--trusted-proxies`); then the first `X-Forwarded-For` hop, from the
/// right, that is not a trusted proxy. A hop that is not an address ends
/// the walk (nothing left of it can be believed): the peer is used then.
fn client_address<B>(req: &Request<B>, peer: IpAddr, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer.to_canonical();
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<Option<IpAddr>> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(|hop| parse_hop(hop.trim()))
        .collect();
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => return *ip,
            None => return peer,
        }
    }
    // Every hop is a trusted proxy: the leftmost is as far as it goes.
    hops.first().copied().flatten().unwrap_or(peer)
}

/// One `X-Forwarded-For` hop: an address, possibly with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// Whether a browser page from this `Origin` may open a socket. Clients
/// that send no `Origin` (not browsers) may. A page from an origin listed in
/// `--allowed-origins` (or `*`) may. A same-origin page may: its origin is
/// `http` or `https`, its host and port are the request's `Host` (default
/// ports filled in), and, when a balancer says how the request came
/// (`X-Forwarded-Proto`), its scheme is that one. With `--allowed-hosts`,
/// a browser's request must also name one of those hosts: a page on a
/// domain that was pointed at this node (DNS rebinding) is refused even
/// though it looks same-origin to the browser.
fn origin_allowed<B>(req: &Request<B>, origins: &[String], hosts: &[String]) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !hosts.is_empty() {
        let name = split_host(host).0;
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            return false;
        }
    }
    if origins
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some((scheme, origin_host)) = origin.split_once("://") else {
        return false;
    };
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    if let Some(proto) = req
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        && !proto.eq_ignore_ascii_case(&scheme)
    {
        return false;
    }
    let (origin_name, origin_port) = split_host(origin_host);
    let (name, port) = split_host(host);
    origin_name.eq_ignore_ascii_case(name)
        && origin_port.unwrap_or(default_port) == port.unwrap_or(default_port)
}

/// `host[:port]` (or `[v6]:port`) split into name and port.
fn split_host(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((name, tail)) => (name, tail.strip_prefix(':')),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (host, None),
    }
}

fn header_has_token<B>(req: &Request<B>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Why a request is not a WebSocket opening handshake (RFC 6455 §4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotHandshake {
    /// Only a GET upgrades.
    Method,
    /// HTTP/1.0 cannot upgrade.
    Version,
    /// No Host header.
    Host,
    /// No `Connection: Upgrade` / `Upgrade: websocket`.
    Upgrade,
    /// Not WebSocket version 13.
    WsVersion,
    /// No `Sec-WebSocket-Key`.
    Key,
}

impl NotHandshake {
    /// The answer to such a request.
    fn response(self) -> Response<Body> {
        let (status, why) = match self {
            NotHandshake::Method => (
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade is a GET\n",
            ),
            NotHandshake::Version => (
                StatusCode::BAD_REQUEST,
                "a WebSocket upgrade needs HTTP/1.1\n",
            ),
            NotHandshake::Host => (StatusCode::BAD_REQUEST, "missing Host\n"),
            NotHandshake::Upgrade => (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n"),
            NotHandshake::WsVersion => {
                (StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n")
            }
            NotHandshake::Key => (StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n"),
        };
        let mut res = text(status, why);
        if self == NotHandshake::WsVersion {
            res.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        res
    }
}

/// Checks that a request is a WebSocket opening handshake: a GET over
/// HTTP/1.1 or later with Host, `Connection: Upgrade`, `Upgrade: websocket`,
/// version 13 and a key. Returns the key.
fn handshake_key<B>(req: &Request<B>) -> Result<HeaderValue, NotHandshake> {
    if req.method() != Method::GET {
        return Err(NotHandshake::Method);
    }
    if req.version() < http::Version::HTTP_11 {
        return Err(NotHandshake::Version);
    }
    if req.headers().get(header::HOST).is_none() {
        return Err(NotHandshake::Host);
    }
    if !header_has_token(req, header::CONNECTION, "upgrade")
        || !header_has_token(req, header::UPGRADE, "websocket")
    {
        return Err(NotHandshake::Upgrade);
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err(NotHandshake::WsVersion);
    }
    req.headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or(NotHandshake::Key)
}

fn upgrade(shared: &Shared, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let app = shared.gateway.app();
    let key = match handshake_key(&req) {
        Ok(key) => key,
        Err(not) => return not.response(),
    };
    let config = app.config();
    if !origin_allowed(&req, &config.allowed_origins, &config.allowed_hosts) {
        return text(
            StatusCode::FORBIDDEN,
            "this origin may not open a socket here\n",
        );
    }
    if app.is_draining() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "node is draining\n");
    }
    let Some(slot) = app.claim_connection() else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "node is at its connection limit\n",
        );
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_frame_bytes))
        .max_frame_size(Some(config.max_frame_bytes))
        // A small read buffer keeps idle connections cheap. tungstenite
        // only reads: the connection writes its frames itself (`wire`).
        .read_buffer_size(READ_BUFFER_BYTES);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let address = client_address(&req, peer.ip(), &config.trusted_proxies);
    let gateway = shared.gateway.clone();
    let stop = shared.close_sockets.clone();
    let task = async move {
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => {
                let client = connection::Client { id, peer, address };
                Box::pin(connection::run(gateway, upgraded, ws_config, client, stop)).await
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    };
    shared.sockets.spawn(task);
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake() -> http::request::Builder {
        Request::get("/ws")
            .header(header::HOST, "chat.example:8080")
            .header(header::CONNECTION, "keep-alive, Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==")
    }

    fn refusal(req: Request<()>) -> StatusCode {
        handshake_key(&req)
            .expect_err("refused")
            .response()
            .status()
    }

    #[test]
    fn a_proper_handshake_passes() {
        let req = handshake().body(()).expect("request");
        assert_eq!(
            handshake_key(&req).expect("accepted"),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
    }

    #[test]
    fn head_http10_and_hostless_requests_do_not_upgrade() {
        let head = handshake().method(Method::HEAD).body(()).expect("request");
        assert_eq!(refusal(head), StatusCode::METHOD_NOT_ALLOWED);
        let old = handshake()
            .version(http::Version::HTTP_10)
            .body(())
            .expect("request");
        assert_eq!(refusal(old), StatusCode::BAD_REQUEST);
        let mut hostless = handshake().body(()).expect("request");
        hostless.headers_mut().remove(header::HOST);
        assert_eq!(refusal(hostless), StatusCode::BAD_REQUEST);
        let mut keyless = handshake().body(()).expect("request");
        keyless.headers_mut().remove(header::SEC_WEBSOCKET_KEY);
        assert_eq!(refusal(keyless), StatusCode::BAD_REQUEST);
        let mut v8 = handshake().body(()).expect("request");
        v8.headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(refusal(v8), StatusCode::UPGRADE_REQUIRED);
    }

    #[test]
    fn the_client_address_believes_only_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec![
            "10.0.0.0/8".parse().expect("net"),
            "127.0.0.1/32".parse().expect("net"),
        ];
        let xff = |value: &str| {
            Request::get("/ws")
                .header("x-forwarded-for", value)
                .body(())
                .expect("request")
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let proxy = ip("10.1.2.3");
        // Not from a trusted proxy: the header is ignored.
        assert_eq!(
            client_address(&xff("198.51.100.1"), ip("203.0.113.9"), &trusted),
            ip("203.0.113.9")
        );
        // Through trusted proxies: the first untrusted hop from the right;
        // what the client wrote further left is not believed.
        assert_eq!(
            client_address(&xff("1.1.1.1, 198.51.100.1, 10.0.0.2"), proxy, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_address(&xff("198.51.100.1:4711"), proxy, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_address(&xff("[2001:db8::1]:80"), proxy, &trusted),
            ip("2001:db8::1")
        );
        // Garbage on the right ends the walk: the proxy itself.
        assert_eq!(
            client_address(&xff("198.51.100.1, unknown"), proxy, &trusted),
            proxy
        );
        // No header at all: the proxy.
        let bare = Request::get("/ws").body(()).expect("request");
        assert_eq!(client_address(&bare, proxy, &trusted), proxy);
        // Nothing trusted: always the peer.
        assert_eq!(client_address(&xff("198.51.100.1"), proxy, &[]), proxy);
    }

    fn from_origin(origin: &str, host: &str, proto: Option<&str>) -> Request<()> {
        let mut req = Request::get("/ws")
            .header(header::ORIGIN, origin)
            .header(header::HOST, host);
        if let Some(proto) = proto {
            req = req.header("x-forwarded-proto", proto);
        }
        req.body(()).expect("request")
    }

    #[test]
    fn same_origin_compares_scheme_host_and_port() {
        let ok = |origin, host, proto| origin_allowed(&from_origin(origin, host, proto), &[], &[]);
        assert!(ok("http://chat.example:8080", "chat.example:8080", None));
        assert!(ok("https://chat.example", "chat.example", None));
        assert!(ok(
            "https://chat.example",
            "chat.example:443",
            Some("https")
        ));
        assert!(ok("http://Chat.Example", "chat.example:80", None));
        assert!(ok("http://[::1]:8080", "[::1]:8080", None));
        // Another port, another host, another scheme than the balancer says.
        assert!(!ok("http://chat.example:8081", "chat.example:8080", None));
        assert!(!ok("http://evil.example:8080", "chat.example:8080", None));
        assert!(!ok("http://chat.example", "chat.example", Some("https")));
        assert!(!ok("https://chat.example", "chat.example", Some("http")));
        assert!(!ok("https://chat.example", "chat.example:80", None));
        // Not a web origin at all.
        assert!(!ok("null", "chat.example", None));
        assert!(!ok("file://chat.example", "chat.example", None));
        // No Origin: not a browser.
        let bare = Request::get("/ws").body(()).expect("request");
        assert!(origin_allowed(&bare, &[], &["chat.example".into()]));
    }

    #[test]
    fn allowed_origins_and_hosts() {
        let origins = vec!["https://app.example".to_owned()];
        let hosts = vec!["chat.example".to_owned()];
        let req = from_origin("https://app.example", "chat.example", None);
        assert!(origin_allowed(&req, &origins, &hosts));
        assert!(origin_allowed(&req, &["*".to_owned()], &[]));
        // DNS rebinding: the page's host and Host agree, but it is not ours.
        let rebound = from_origin("http://rebind.example:8080", "rebind.example:8080", None);
        assert!(
            origin_allowed(&rebound, &[], &[]),
            "same-origin without --allowed-hosts"
        );
        assert!(!origin_allowed(&rebound, &[], &hosts));
        assert!(!origin_allowed(&rebound, &["*".to_owned()], &hosts));
        let ours = from_origin("http://chat.example:8080", "chat.example:8080", None);
        assert!(origin_allowed(&ours, &[], &hosts));
    }

    #[test]
    fn bearer_is_case_insensitive() {
        let with = |value: &str| {
            Request::get("/")
                .header(header::AUTHORIZATION, value)
                .body(())
                .expect("request")
        };
        for value in ["Bearer abc", "bearer abc", "BEARER  abc ", "  Bearer abc"] {
            assert_eq!(bearer_token(&with(value)), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearer", "Bearer   ", "Bearerabc"] {
            assert_eq!(bearer_token(&with(value)), None, "{value:?}");
        }
        let none = Request::get("/").body(()).expect("request");
        assert_eq!(bearer_token(&none), None);
    }
}
