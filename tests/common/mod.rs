//! Black-box harness for Huddle's integration tests.
//!
//! Everything here talks to the real `huddle` binary over its public
//! interfaces only: a child process started with `huddle serve`, its
//! WebSocket protocol (`PROTOCOL.md`) and its HTTP endpoints. Redis is a real
//! `redis-server` child process on a free port with its own temporary
//! directory; a test that needs Redis panics when `redis-server` is missing,
//! it never falls back to anything else.
//!
//! Every wait has a timeout, so no test can hang:
//! - node start-up (the `listening on` line): 15 s,
//! - Redis start-up (answers `PING`): 5 s,
//! - a request's reply: 5 s,
//! - events and close frames: the timeout the caller passes.
//!
//! Child processes are killed when their handle drops. When a test panics,
//! the dropped [`Node`]s print the tail of their stderr log so the failure
//! report shows what the server was doing.

// Each test crate uses a different subset of the harness.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a request may wait for its reply.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// A generous wait for an event that must arrive.
pub(crate) const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to watch for an event that must NOT arrive.
pub(crate) const QUIET: Duration = Duration::from_millis(400);
/// Rate-limit flags for tests that send faster than the default 20/s.
pub(crate) const FAST: &[&str] = &["--rate-limit", "10000", "--rate-burst", "20000"];

/// Heartbeats, node expiry and the janitor in fractions of a second, for
/// tests about dead nodes and their users.
pub(crate) const FAST_JANITOR: &[&str] = &[
    "--heartbeat-interval",
    "200ms",
    "--node-timeout",
    "1s",
    "--janitor-interval",
    "200ms",
];

const NODE_START_TIMEOUT: Duration = Duration::from_secs(15);
const REDIS_START_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Temporary directories
// ---------------------------------------------------------------------------

/// A unique directory under the system temp dir, removed on drop unless the
/// test is panicking (then it is kept for post-mortem reading).
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub(crate) fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "huddle-test-{label}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Finds a port that is free right now (bind port 0, read it, release it).
pub(crate) fn free_port() -> u16 {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local_addr of probe listener")
        .port()
}

fn read_tail(path: &Path, max_lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(max_lines);
            lines[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// A private `redis-server` child process, killed on drop.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Append-only file on (`appendfsync always`): acknowledged writes
    /// survive a kill, and [`RedisServer::restart`] reloads them.
    aof: bool,
    log: PathBuf,
    // Declared last so it is removed after the child is gone.
    dir: TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    ///
    /// Panics with a clear message when `redis-server` is not on PATH: a
    /// test that needs Redis must never pass without it.
    pub(crate) async fn start() -> RedisServer {
        Self::start_with(false).await
    }

    /// Like [`RedisServer::start`], with the append-only file on when `aof`.
    pub(crate) async fn start_with(aof: bool) -> RedisServer {
        let mut failures = Vec::new();
        // The free port may be taken between probing and binding: retry.
        for _attempt in 0..3 {
            let port = free_port();
            let dir = TempDir::new("redis");
            let log = dir.path().join("redis.log");
            let child = match spawn_redis(port, aof, dir.path(), &log) {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "redis-server is not on PATH: this test needs a real Redis \
                     (install it, e.g. `apt-get install redis-server`); refusing to \
                     run a Redis test without Redis"
                ),
                Err(e) => panic!("cannot spawn redis-server: {e}"),
            };
            let mut server = RedisServer {
                child: Some(child),
                port,
                aof,
                log,
                dir,
            };
            if server.wait_ready().await {
                return server;
            }
            failures.push(format!(
                "port {port}: {}",
                read_tail(&server.log, 20).replace('\n', "\n    ")
            ));
            // Dropping `server` kills the child before the next attempt.
        }
        panic!(
            "redis-server did not answer PING within {REDIS_START_TIMEOUT:?} (3 attempts):\n{}",
            failures.join("\n")
        );
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + REDIS_START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_status)) = child.try_wait()
            {
                return false;
            }
            if ping_redis(self.port).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        false
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Starts Redis again on the same port and directory after
    /// [`RedisServer::kill`]; with AOF on it reloads every acknowledged write.
    pub(crate) async fn restart(&mut self) {
        assert!(self.child.is_none(), "kill Redis before restarting it");
        let child = spawn_redis(self.port, self.aof, self.dir.path(), &self.log)
            .unwrap_or_else(|e| panic!("cannot restart redis-server: {e}"));
        self.child = Some(child);
        assert!(
            self.wait_ready().await,
            "redis-server did not come back:\n{}",
            read_tail(&self.log, 20)
        );
    }

    /// Kills Redis (SIGKILL) and waits for it: a store outage.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes Redis (SIGSTOP): it keeps its sockets but answers nothing.
    pub(crate) fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws Redis after [`RedisServer::pause`] (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        send_signal(child.id(), signal);
    }

    /// Runs one command on this Redis (e.g. `CLIENT KILL TYPE pubsub`).
    pub(crate) async fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).expect("redis client for the test");
        let run = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            let mut cmd = redis::cmd(args[0]);
            for arg in &args[1..] {
                cmd.arg(*arg);
            }
            cmd.query_async::<redis::Value>(&mut conn).await
        };
        tokio::time::timeout(REPLY_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| panic!("redis command {args:?} timed out"))
            .unwrap_or_else(|e| panic!("redis command {args:?} failed: {e}"))
    }
}

/// Sends a signal by name (`TERM`, `STOP`, `CONT`) with the `kill` utility
/// (the tests may not use `unsafe` libc calls).
fn spawn_redis(port: u16, aof: bool, dir: &Path, log: &Path) -> std::io::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
    ]);
    if aof {
        cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        cmd.args(["--appendonly", "no"]);
    }
    cmd.arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
}

pub(crate) fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap_or_else(|e| panic!("cannot run `kill -{signal} {pid}`: {e}"));
    assert!(status.success(), "`kill -{signal} {pid}` failed: {status}");
}

async fn ping_redis(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Some(true))
    )
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Huddle nodes
// ---------------------------------------------------------------------------

/// Path of the server binary under test.
pub(crate) fn huddle_bin() -> &'static str {
    env!("CARGO_BIN_EXE_huddle")
}

/// Removes the server's configuration variables (`HUDDLE_*`, `UPSTASH_*`)
/// inherited from the environment, so a node runs with exactly the flags a
/// test gives it (a memory-engine test must not pick up a Redis URL).
fn scrub_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("HUDDLE_") || name.starts_with("UPSTASH_") {
            cmd.env_remove(&key);
        }
    }
}

/// One `huddle serve` child process on 127.0.0.1 port 0, killed on drop.
pub(crate) struct Node {
    child: Option<Child>,
    /// The address from the node's `listening on` line.
    pub(crate) addr: SocketAddr,
    /// The `--node-id` it was started with.
    pub(crate) node_id: String,
    stderr_log: PathBuf,
    dir: TempDir,
}

impl Node {
    /// Starts `huddle serve --bind 127.0.0.1:0 [--redis URL] --node-id ID
    /// EXTRA...` and waits (15 s) for its `listening on 127.0.0.1:PORT` line.
    pub(crate) async fn start(redis_url: Option<&str>, node_id: &str, extra_args: &[&str]) -> Node {
        let dir = TempDir::new(&format!("node-{node_id}"));
        let stderr_log = dir.path().join("stderr.log");
        let stderr = File::create(&stderr_log).expect("create node stderr log");

        let mut cmd = Command::new(huddle_bin());
        scrub_env(&mut cmd);
        cmd.args(["serve", "--bind", "127.0.0.1:0"]);
        if let Some(url) = redis_url {
            cmd.args(["--redis", url]);
        }
        cmd.args(["--node-id", node_id]);
        cmd.args(extra_args);
        // Plain logs: they are printed in failure reports.
        cmd.env("NO_COLOR", "1");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", huddle_bin()));

        // A thread owns stdout for the child's whole life: it reports the
        // `listening on` line, then keeps draining so the child never blocks.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
        let stdout_log = dir.path().join("stdout.log");
        std::thread::spawn(move || {
            let mut copy = File::create(&stdout_log).ok();
            let mut reader = BufReader::new(stdout);
            let mut reported = false;
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) => break,
                    Ok(_) => {
                        if let Some(file) = copy.as_mut() {
                            let _ = std::io::Write::write_all(file, line.as_bytes());
                        }
                        if !reported && let Some(rest) = line.trim().strip_prefix("listening on ") {
                            let _ = tx.send(Ok(rest.trim().to_string()));
                            reported = true;
                        }
                    }
                    Err(e) => {
                        if !reported {
                            let _ = tx.send(Err(format!("reading stdout: {e}")));
                            reported = true;
                        }
                        break;
                    }
                }
            }
            if !reported {
                let _ = tx.send(Err(
                    "stdout closed before the `listening on` line (did the node exit?)".into(),
                ));
            }
        });

        let waited = tokio::task::spawn_blocking(move || rx.recv_timeout(NODE_START_TIMEOUT))
            .await
            .expect("join stdout waiter");
        let failure = match waited {
            Ok(Ok(text)) => match text.parse::<SocketAddr>() {
                Ok(addr) => {
                    return Node {
                        child: Some(child),
                        addr,
                        node_id: node_id.to_string(),
                        stderr_log,
                        dir,
                    };
                }
                Err(e) => format!("`listening on {text}` is not a socket address: {e}"),
            },
            Ok(Err(e)) => e,
            Err(_) => format!("no `listening on` line within {NODE_START_TIMEOUT:?}"),
        };
        let _ = child.kill();
        let status = child.wait().ok();
        panic!(
            "node {node_id} failed to start: {failure}; exit status {status:?}\n\
             --- stderr of {node_id} ---\n{}\n--- end ---",
            read_tail(&stderr_log, 80)
        );
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The node's stderr log so far (its last `max_lines` lines).
    pub(crate) fn log_tail(&self, max_lines: usize) -> String {
        read_tail(&self.stderr_log, max_lines)
    }

    /// Asks the node to shut down (SIGTERM); see [`Node::wait_exit`].
    pub(crate) fn terminate(&self) {
        let child = self.child.as_ref().expect("node is running");
        send_signal(child.id(), "TERM");
    }

    /// Waits up to `timeout` for the node to exit on its own; `None` if it
    /// is still running then.
    pub(crate) async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the node (SIGKILL) and waits for it to exit.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A plain HTTP/1.1 GET on the node's port: (status, body).
    pub(crate) async fn http_get(&self, path: &str) -> (u16, String) {
        http_get_at(&self.addr.to_string(), path).await
    }
}

/// A plain HTTP/1.1 GET to `addr` (`host:port`): (status, body), chunked
/// bodies decoded. Panics when nothing HTTP comes back in time.
pub(crate) async fn http_get_at(addr: &str, path: &str) -> (u16, String) {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(REPLY_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path} at {addr}: no answer within {REPLY_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("GET {path} at {addr}: {e}"));
    parse_http_response(&raw).unwrap_or_else(|| {
        panic!(
            "GET {path} at {addr}: unparsable response {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
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

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- stderr of node {} ({}), last 60 lines ---\n{}\n--- end of {} ---",
                self.node_id,
                self.addr,
                self.log_tail(60),
                self.node_id
            );
        }
        self.kill();
    }
}

/// Mints an HS256 token with the server's own `huddle token` command.
pub(crate) fn mint_token(secret: &str, sub: &str, name: &str) -> String {
    let mut cmd = Command::new(huddle_bin());
    scrub_env(&mut cmd);
    let out = cmd
        .args([
            "token", "--secret", secret, "--sub", sub, "--name", name, "--ttl", "1h",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `huddle token`: {e}"));
    assert!(
        out.status.success(),
        "`huddle token` failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        token.split('.').count(),
        3,
        "`huddle token` should print a JWT (three dot-separated parts), got {stdout:?}"
    );
    token
}

// ---------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the background reader saw on the socket.
#[derive(Debug, Clone)]
pub(crate) enum Incoming {
    /// A text frame holding a JSON object.
    Frame(Value),
    /// A text frame that is not a JSON object (a server bug).
    BadText(String),
    /// A binary frame (the protocol never sends one).
    Binary(Vec<u8>),
    /// A close frame and its code (`None` for a close frame without code).
    Close(Option<u16>),
    /// The stream ended or failed; no more frames will come.
    Gone(String),
}

/// A protocol client. A background task reads every frame into an unbounded
/// channel, so the server never sees this client as a slow reader; frames
/// read while waiting for something else are queued in arrival order.
pub(crate) struct Client {
    sink: SplitSink<WsStream, Message>,
    rx: mpsc::UnboundedReceiver<Incoming>,
    /// Frames received but not consumed yet, in arrival order.
    queue: VecDeque<Incoming>,
    next_id: u64,
    reader: JoinHandle<()>,
    /// `data.user` of the successful `hello` reply.
    pub(crate) user: Option<Value>,
    /// For assertion messages: who this client is and where it connected.
    pub(crate) label: String,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Opens a WebSocket to the node's `/ws`.
    pub(crate) async fn connect(node: &Node) -> Client {
        Client::connect_url(&node.ws_url(), &node.node_id).await
    }

    pub(crate) async fn connect_url(url: &str, label: &str) -> Client {
        let connected = tokio::time::timeout(REPLY_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("WebSocket connect to {url}: timed out"))
            .unwrap_or_else(|e| panic!("WebSocket connect to {url}: {e}"));
        let (sink, mut stream) = connected.0.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let incoming = match item {
                    Ok(Message::Text(text)) => match serde_json::from_str::<Value>(&text) {
                        Ok(v) if v.is_object() => Incoming::Frame(v),
                        _ => Incoming::BadText(text.to_string()),
                    },
                    Ok(Message::Binary(bytes)) => Incoming::Binary(bytes.to_vec()),
                    Ok(Message::Close(frame)) => Incoming::Close(frame.map(|f| u16::from(f.code))),
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Incoming::Gone(e.to_string()));
                        return;
                    }
                };
                if tx.send(incoming).is_err() {
                    return;
                }
            }
            let _ = tx.send(Incoming::Gone("stream ended".into()));
        });
        Client {
            sink,
            rx,
            queue: VecDeque::new(),
            next_id: 1,
            reader,
            user: None,
            label: format!("client@{label}"),
        }
    }

    // -- raw frames ---------------------------------------------------------

    pub(crate) async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        let sent = tokio::time::timeout(REPLY_TIMEOUT, self.sink.send(Message::text(text))).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{}: sending a text frame failed: {e}", self.label),
            Err(_) => panic!("{}: sending a text frame timed out", self.label),
        }
    }

    /// Like [`Client::send_text`] but returns the error instead of
    /// panicking (the server may already have closed the socket).
    pub(crate) async fn try_send_text(&mut self, text: impl Into<String>) -> Result<(), String> {
        let text: String = text.into();
        match tokio::time::timeout(REPLY_TIMEOUT, self.sink.send(Message::text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    pub(crate) async fn send_json(&mut self, frame: &Value) {
        self.send_text(frame.to_string()).await;
    }

    pub(crate) async fn send_binary(&mut self, bytes: Vec<u8>) {
        let sent =
            tokio::time::timeout(REPLY_TIMEOUT, self.sink.send(Message::binary(bytes))).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{}: sending a binary frame failed: {e}", self.label),
            Err(_) => panic!("{}: sending a binary frame timed out", self.label),
        }
    }

    /// Receives the next item from the socket, or `None` at the deadline.
    async fn recv_until(&mut self, deadline: Instant) -> Option<Incoming> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.rx.recv()).await {
            Ok(Some(item)) => Some(item),
            // The reader task is gone; it always sends `Gone` first.
            Ok(None) => Some(Incoming::Gone("reader finished".into())),
            Err(_) => None,
        }
    }

    fn describe_queue(&self) -> String {
        if self.queue.is_empty() {
            return "(nothing)".into();
        }
        self.queue
            .iter()
            .map(|i| match i {
                Incoming::Frame(v) => brief(v),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join("\n    ")
    }

    /// Panics on a queued or received item that ends the frame stream.
    fn fail_on_end(&self, item: &Incoming, waiting_for: &str) {
        match item {
            Incoming::Close(code) => panic!(
                "{}: connection closed (close code {code:?}) while waiting for {waiting_for}; \
                 queued frames:\n    {}",
                self.label,
                self.describe_queue()
            ),
            Incoming::Gone(why) => panic!(
                "{}: connection lost ({why}) while waiting for {waiting_for}; queued frames:\n    {}",
                self.label,
                self.describe_queue()
            ),
            Incoming::BadText(text) => panic!(
                "{}: server sent a text frame that is not a JSON object: {text:?}",
                self.label
            ),
            Incoming::Binary(bytes) => panic!(
                "{}: server sent a binary frame ({} bytes); the protocol only uses text frames",
                self.label,
                bytes.len()
            ),
            Incoming::Frame(_) => {}
        }
    }

    /// Removes and returns the first frame (JSON object) matching `pred`,
    /// waiting until `timeout`; frames that do not match stay queued in
    /// order. `None` on timeout.
    pub(crate) async fn take_frame(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Option<Value> {
        let position = self
            .queue
            .iter()
            .position(|i| matches!(i, Incoming::Frame(v) if pred(v)));
        if let Some(pos) = position {
            match self.queue.remove(pos) {
                Some(Incoming::Frame(v)) => return Some(v),
                _ => unreachable!("position points at a frame"),
            }
        }
        // Anything that ends the stream must not be silently skipped.
        if let Some(end) = self
            .queue
            .iter()
            .find(|i| !matches!(i, Incoming::Frame(_)))
            .cloned()
        {
            self.fail_on_end(&end, what);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let item = self.recv_until(deadline).await?;
            match item {
                Incoming::Frame(v) if pred(&v) => return Some(v),
                Incoming::Frame(_) => self.queue.push_back(item),
                other => self.fail_on_end(&other, what),
            }
        }
    }

    /// Moves everything already received into the queue without waiting;
    /// returns `Some(close code)` once the connection has ended (`Some(None)`
    /// when it ended without a close code).
    pub(crate) fn closed_with(&mut self) -> Option<Option<u16>> {
        while let Ok(item) = self.rx.try_recv() {
            self.queue.push_back(item);
        }
        self.queue.iter().find_map(|i| match i {
            Incoming::Close(code) => Some(*code),
            Incoming::Gone(_) => Some(None),
            _ => None,
        })
    }

    /// Removes and returns the first already-queued frame matching `pred`
    /// (see [`Client::closed_with`]); never waits.
    pub(crate) fn take_queued(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Option<Value> {
        let pos = self
            .queue
            .iter()
            .position(|i| matches!(i, Incoming::Frame(v) if pred(v)))?;
        match self.queue.remove(pos) {
            Some(Incoming::Frame(v)) => Some(v),
            _ => None,
        }
    }

    /// The next frame of any type (reply, error or event).
    pub(crate) async fn next_frame(&mut self, timeout: Duration) -> Option<Value> {
        self.take_frame("any frame", timeout, |_| true).await
    }

    /// The next frame that is not an event: a `reply` or an `error`.
    /// Events that arrive meanwhile stay queued.
    pub(crate) async fn next_response(&mut self, timeout: Duration) -> Value {
        match self
            .take_frame("a reply or error frame", timeout, |v| v["type"] != "event")
            .await
        {
            Some(v) => v,
            None => panic!(
                "{}: no reply/error frame within {timeout:?}; queued frames:\n    {}",
                self.label,
                self.describe_queue()
            ),
        }
    }

    /// The next `{"type":"error"}` frame (an id-less failure).
    pub(crate) async fn next_error_frame(&mut self, timeout: Duration) -> Value {
        match self
            .take_frame("an error frame", timeout, |v| v["type"] == "error")
            .await
        {
            Some(v) => v,
            None => panic!(
                "{}: no {{\"type\":\"error\"}} frame within {timeout:?}; queued frames:\n    {}",
                self.label,
                self.describe_queue()
            ),
        }
    }

    /// Waits for the close frame and returns its code: `Some(code)`, or
    /// `None` when the connection ended without a close code. Frames that
    /// arrive before it are queued. Panics if the connection stays open.
    pub(crate) async fn wait_close(&mut self, timeout: Duration) -> Option<u16> {
        if let Some(pos) = self
            .queue
            .iter()
            .position(|i| matches!(i, Incoming::Close(_) | Incoming::Gone(_)))
        {
            return match self.queue.remove(pos) {
                Some(Incoming::Close(code)) => code,
                _ => None,
            };
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv_until(deadline).await {
                None => panic!(
                    "{}: connection still open {timeout:?} later, expected a close; frames:\n    {}",
                    self.label,
                    self.describe_queue()
                ),
                Some(Incoming::Close(code)) => return code,
                Some(Incoming::Gone(_)) => return None,
                Some(other) => self.queue.push_back(other),
            }
        }
    }

    // -- requests ----------------------------------------------------------

    /// Sends `req` with a fresh integer `id` and returns the whole reply
    /// frame; other frames seen meanwhile are queued in order.
    pub(crate) async fn request(&mut self, mut req: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        req["id"] = json!(id);
        self.send_json(&req).await;
        self.wait_reply(id, &req).await
    }

    /// Waits for the reply carrying `id` (for a frame sent by hand).
    pub(crate) async fn wait_reply(&mut self, id: u64, req: &Value) -> Value {
        let what = format!("the reply to {}", brief(req));
        let reply = self
            .take_frame(&what, REPLY_TIMEOUT, |v| {
                v["type"] == "reply" && v["id"] == json!(id)
            })
            .await;
        let Some(reply) = reply else {
            panic!(
                "{}: no reply with id {id} within {REPLY_TIMEOUT:?} to {}; frames seen:\n    {}",
                self.label,
                brief(req),
                self.describe_queue()
            );
        };
        assert!(
            reply["ok"].is_boolean(),
            "{}: reply without boolean `ok` to {}: {}",
            self.label,
            brief(req),
            brief(&reply)
        );
        reply
    }

    /// Sends `req`, asserts `ok: true` and returns `data`.
    pub(crate) async fn ok(&mut self, req: Value) -> Value {
        let reply = self.request(req.clone()).await;
        assert_eq!(
            reply["ok"],
            json!(true),
            "{}: expected success for {}, got {}",
            self.label,
            brief(&req),
            brief(&reply)
        );
        assert!(
            reply["data"].is_object(),
            "{}: successful reply without object `data` for {}: {}",
            self.label,
            brief(&req),
            brief(&reply)
        );
        reply["data"].clone()
    }

    /// Sends `req`, asserts `ok: false` and returns the `error` object
    /// (checked to carry a string `code` and `message`).
    pub(crate) async fn err(&mut self, req: Value) -> Value {
        let reply = self.request(req.clone()).await;
        assert_eq!(
            reply["ok"],
            json!(false),
            "{}: expected a failure for {}, got {}",
            self.label,
            brief(&req),
            brief(&reply)
        );
        assert_error_shape(&reply["error"], &reply);
        reply["error"].clone()
    }

    /// Sends `req` and asserts it fails with `code`.
    pub(crate) async fn expect_err(&mut self, req: Value, code: &str) -> Value {
        let error = self.err(req.clone()).await;
        assert_eq!(
            error["code"],
            code,
            "{}: wrong error code for {}: {}",
            self.label,
            brief(&req),
            brief(&error)
        );
        error
    }

    /// `ping` must succeed with a numeric `server_time`.
    pub(crate) async fn ping(&mut self) {
        let data = self.ok(json!({"type": "ping"})).await;
        assert_recent_ms(
            &data["server_time"],
            &format!("{}: ping server_time", self.label),
        );
    }

    // -- session & rooms -----------------------------------------------------

    /// Guest `hello`; returns `data.user` and remembers it.
    pub(crate) async fn hello(&mut self, name: &str) -> Value {
        let data = self.ok(json!({"type": "hello", "name": name})).await;
        self.accept_hello(data, name)
    }

    /// `hello` with a token; returns `data.user`.
    pub(crate) async fn hello_token(&mut self, token: &str, name: &str) -> Value {
        let data = self
            .ok(json!({"type": "hello", "token": token, "name": name}))
            .await;
        self.accept_hello(data, name)
    }

    fn accept_hello(&mut self, data: Value, name: &str) -> Value {
        let user = data["user"].clone();
        assert!(
            user["id"].as_str().is_some_and(|s| !s.is_empty()),
            "{}: hello reply without user.id: {data}",
            self.label
        );
        assert!(
            data["session"].is_string(),
            "{}: hello reply without session: {data}",
            self.label
        );
        assert!(
            data["node"].is_string(),
            "{}: hello reply without node: {data}",
            self.label
        );
        assert_recent_ms(
            &data["server_time"],
            &format!("{}: hello server_time", self.label),
        );
        self.label = format!("{name}{}", self.label.trim_start_matches("client"));
        self.user = Some(user.clone());
        user
    }

    pub(crate) fn user_id(&self) -> String {
        self.user
            .as_ref()
            .and_then(|u| u["id"].as_str())
            .unwrap_or_else(|| panic!("{}: no hello yet", self.label))
            .to_string()
    }

    /// `room.create` with `name` plus `extra` fields; returns the room.
    pub(crate) async fn create_room(&mut self, name: &str, extra: Value) -> Value {
        let mut req = json!({"type": "room.create", "name": name});
        if let Value::Object(fields) = extra {
            for (k, v) in fields {
                req[k] = v;
            }
        }
        let data = self.ok(req).await;
        let room = data["room"].clone();
        assert!(
            room["id"].is_string() && room["code"].is_string(),
            "{}: room.create reply without room id/code: {data}",
            self.label
        );
        room
    }

    /// `room.join` by id; returns `data`.
    pub(crate) async fn join(&mut self, room: &str) -> Value {
        self.ok(json!({"type": "room.join", "room": room})).await
    }

    /// `room.join` by code; returns `data`.
    pub(crate) async fn join_code(&mut self, code: &str) -> Value {
        self.ok(json!({"type": "room.join", "code": code})).await
    }

    /// `room.join` by id with `since`; returns `data`.
    pub(crate) async fn join_since(&mut self, room: &str, since: u64) -> Value {
        self.ok(json!({"type": "room.join", "room": room, "since": since}))
            .await
    }

    /// `room.get`; returns the room object.
    pub(crate) async fn room_get(&mut self, room: &str) -> Value {
        self.ok(json!({"type": "room.get", "room": room})).await["room"].clone()
    }

    /// A text `message.send`; returns the message.
    pub(crate) async fn send_message(&mut self, room: &str, content: &str) -> Value {
        let data = self
            .ok(json!({"type": "message.send", "room": room, "content": content}))
            .await;
        let message = data["message"].clone();
        assert!(
            message["id"].is_string() && message["seq"].is_u64(),
            "{}: message.send reply without message id/seq: {data}",
            self.label
        );
        message
    }

    /// `message.history`; returns `data` (`messages`, `has_more`).
    pub(crate) async fn history(
        &mut self,
        room: &str,
        before: Option<u64>,
        limit: Option<u64>,
    ) -> Value {
        let mut req = json!({"type": "message.history", "room": room});
        if let Some(before) = before {
            req["before"] = json!(before);
        }
        if let Some(limit) = limit {
            req["limit"] = json!(limit);
        }
        let data = self.ok(req).await;
        assert!(
            data["messages"].is_array() && data["has_more"].is_boolean(),
            "{}: history reply without messages/has_more: {data}",
            self.label
        );
        data
    }

    /// All of a room's messages (up to 100) via `message.history`.
    pub(crate) async fn all_messages(&mut self, room: &str) -> Vec<Value> {
        let data = self.history(room, None, Some(100)).await;
        data["messages"].as_array().cloned().unwrap_or_default()
    }

    // -- events ------------------------------------------------------------

    /// The next event frame, or `None` at the timeout. Replies and error
    /// frames that arrive meanwhile stay queued.
    pub(crate) async fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        self.take_frame("an event", timeout, |v| v["type"] == "event")
            .await
    }

    /// Consumes events until one matches `pred` and returns it. Events that
    /// do not match are discarded (listed in the panic message on timeout).
    pub(crate) async fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(ev) if pred(&ev) => return ev,
                Some(ev) => skipped.push(brief(&ev)),
                None => panic!(
                    "{}: no event matching `{what}` within {timeout:?}; skipped events:\n    {}",
                    self.label,
                    if skipped.is_empty() {
                        "(none)".to_string()
                    } else {
                        skipped.join("\n    ")
                    }
                ),
            }
        }
    }

    /// The next durable `message.*` event of `room` (ephemeral events such
    /// as `participant.*` and `typing` are skipped).
    pub(crate) async fn next_message_event(&mut self, room: &str) -> Value {
        self.wait_event(
            &format!("a message.* event of room {room}"),
            EVENT_TIMEOUT,
            |e| {
                e["room"] == room
                    && e["event"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("message."))
            },
        )
        .await
    }

    /// Asserts that no event at all arrives within `duration`.
    pub(crate) async fn expect_no_event(&mut self, duration: Duration) {
        if let Some(ev) = self.next_event(duration).await {
            panic!(
                "{}: expected no event for {duration:?}, got {ev}",
                self.label
            );
        }
    }

    /// Asserts that no `message.*` event arrives within `duration`
    /// (ephemeral events are ignored).
    pub(crate) async fn expect_no_message_event(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                None => return,
                Some(ev) if is_message_event(&ev) => panic!(
                    "{}: expected no message event for {duration:?}, got {ev}",
                    self.label
                ),
                Some(_) => {}
            }
        }
    }

    /// Discards the events that arrive within `duration` and returns them.
    pub(crate) async fn drain_events(&mut self, duration: Duration) -> Vec<Value> {
        let deadline = Instant::now() + duration;
        let mut drained = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(ev) => drained.push(ev),
                None => return drained,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Raw WebSocket client
// ---------------------------------------------------------------------------

/// A minimal hand-made WebSocket client over a plain TCP stream, for tests
/// about clients that misbehave at the transport level: it never reads
/// unless asked and never answers pings (tungstenite would answer them by
/// itself, and fail on the pending pong once the server has hung up, hiding
/// the close frame that is already in the socket buffer).
pub(crate) struct RawClient {
    stream: TcpStream,
    /// Bytes read from the socket but not parsed into frames yet.
    buf: Vec<u8>,
}

/// Opcodes of RFC 6455.
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// One masked, final client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

impl RawClient {
    /// Connects to the node's `/ws`; `recv_buffer` sets SO_RCVBUF (small
    /// values make the server's outbound queue fill quickly).
    pub(crate) async fn connect(node: &Node, recv_buffer: Option<u32>) -> RawClient {
        RawClient::connect_with(node, recv_buffer, None).await
    }

    /// Like `connect`, and sends `early` as a text frame in the same write
    /// as the upgrade request, before the server has answered it.
    pub(crate) async fn connect_with(
        node: &Node,
        recv_buffer: Option<u32>,
        early: Option<&str>,
    ) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("tcp socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let mut stream = tokio::time::timeout(REPLY_TIMEOUT, socket.connect(node.addr))
            .await
            .expect("tcp connect in time")
            .expect("tcp connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            node.addr
        );
        let mut first = request.into_bytes();
        if let Some(text) = early {
            first.extend_from_slice(&client_frame(OP_TEXT, text.as_bytes()));
        }
        stream.write_all(&first).await.expect("send handshake");
        let mut buf = Vec::new();
        let handshake = async {
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return end;
                }
                let mut chunk = [0u8; 1024];
                let n = stream.read(&mut chunk).await.expect("read handshake");
                assert!(n > 0, "connection closed during the WebSocket handshake");
                buf.extend_from_slice(&chunk[..n]);
            }
        };
        let end = tokio::time::timeout(REPLY_TIMEOUT, handshake)
            .await
            .expect("handshake answer in time");
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "WebSocket upgrade refused: {head}"
        );
        buf.drain(..end + 4);
        RawClient { stream, buf }
    }

    /// Sends one masked text frame.
    pub(crate) async fn send_text(&mut self, text: &str) {
        self.send_frame(OP_TEXT, text.as_bytes()).await;
    }

    /// Writes bytes as they are (a hand-made frame, valid or not).
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(REPLY_TIMEOUT, self.stream.write_all(bytes))
            .await
            .expect("raw send in time")
            .expect("raw send");
    }

    /// Sends one masked frame with any opcode.
    pub(crate) async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let frame = client_frame(opcode, payload);
        tokio::time::timeout(REPLY_TIMEOUT, self.stream.write_all(&frame))
            .await
            .expect("raw send in time")
            .expect("raw send");
    }

    /// Parses one complete frame from the buffer: (opcode, payload).
    fn parse_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        let mask_at = at;
        if masked {
            at += 4;
        }
        if b.len() < at + len {
            return None;
        }
        let mut payload = b[at..at + len].to_vec();
        if masked {
            let mask = [b[mask_at], b[mask_at + 1], b[mask_at + 2], b[mask_at + 3]];
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
        }
        self.buf.drain(..at + len);
        Some((opcode, payload))
    }

    /// The next frame, `Ok(None)` at the deadline, `Err(why)` when the
    /// connection ended without a close frame.
    pub(crate) async fn next_frame(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<(u8, Vec<u8>)>, String> {
        loop {
            if let Some(frame) = self.parse_frame() {
                return Ok(Some(frame));
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err("connection ended without a close frame".into()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// Sends `req` with `id` and reads until its reply (skipping other frames).
    pub(crate) async fn call(&mut self, mut req: Value, id: u64) -> Value {
        req["id"] = json!(id);
        self.send_text(&req.to_string()).await;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            match self.next_frame(deadline).await {
                Ok(Some((OP_TEXT, payload))) => {
                    let v: Value = serde_json::from_slice(&payload).expect("JSON text frame");
                    if v["type"] == "reply" && v["id"] == id {
                        return v;
                    }
                }
                Ok(Some((OP_CLOSE, payload))) => {
                    panic!("raw client: closed ({payload:?}) while waiting for reply {id}")
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("raw client: no reply {id} within {REPLY_TIMEOUT:?}"),
                Err(why) => panic!("raw client: {why} while waiting for reply {id}"),
            }
        }
    }

    /// Reads whatever is left until the connection ends or `timeout`:
    /// (`message.created` events read, close code if a close frame came,
    /// how it ended or `None` if it is still open then).
    pub(crate) async fn read_to_end(
        &mut self,
        timeout: Duration,
    ) -> (usize, Option<u16>, Option<String>) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = 0;
        loop {
            match self.next_frame(deadline).await {
                Ok(None) => return (events, None, None),
                Err(why) => return (events, None, Some(why)),
                Ok(Some((OP_CLOSE, payload))) => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return (events, code, Some("close frame".into()));
                }
                Ok(Some((OP_TEXT, payload))) => {
                    if String::from_utf8_lossy(&payload).contains("\"message.created\"") {
                        events += 1;
                    }
                }
                Ok(Some(_)) => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers for assertions
// ---------------------------------------------------------------------------

/// A JSON value as text, cut to 400 characters for assertion messages
/// (requests in these tests can be tens of kilobytes).
pub(crate) fn brief(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 400 {
        return text;
    }
    let head: String = text.chars().take(400).collect();
    format!("{head}… ({} bytes)", text.len())
}

/// `true` for `message.created` / `message.updated` / `message.deleted`.
pub(crate) fn is_message_event(ev: &Value) -> bool {
    ev["type"] == "event"
        && ev["event"]
            .as_str()
            .is_some_and(|s| s.starts_with("message."))
}

/// An error object must carry string `code` and `message`, and the code
/// must be one of the protocol's complete set.
pub(crate) fn assert_error_shape(error: &Value, frame: &Value) {
    const CODES: &[&str] = &[
        "bad_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "conflict",
        "rate_limited",
        "too_large",
        "unavailable",
        "internal",
    ];
    let code = error["code"].as_str().unwrap_or_else(|| {
        panic!("error without string `code`: {frame}");
    });
    assert!(
        CODES.contains(&code),
        "error code {code:?} is not in the protocol's set: {frame}"
    );
    assert!(
        error["message"].is_string(),
        "error without string `message`: {frame}"
    );
}

/// Asserts that `v` is a Unix time in milliseconds within a minute of now.
pub(crate) fn assert_recent_ms(v: &Value, what: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let ms = v
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: expected Unix milliseconds, got {v}"));
    assert!(
        ms.abs_diff(now) < 60_000,
        "{what}: {ms} is not Unix milliseconds near now ({now})"
    );
}

/// `v[key]` as a string (panics with context when absent).
pub(crate) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("expected string field `{key}` in {v}"))
}

/// `v["seq"]` (panics with context when absent).
pub(crate) fn seq(v: &Value) -> u64 {
    v["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("expected integer `seq` in {v}"))
}

/// The `id`s of a JSON array of objects.
pub(crate) fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {list}"))
        .iter()
        .map(|v| s(v, "id").to_string())
        .collect()
}

/// The `seq`s of a JSON array of messages.
pub(crate) fn seqs(list: &[Value]) -> Vec<u64> {
    list.iter().map(seq).collect()
}

/// Asserts that `seqs` increase by exactly 1 at every step.
pub(crate) fn assert_consecutive(seqs: &[u64], context: &str) {
    for pair in seqs.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "{context}: seq must increase by exactly 1, got {seqs:?}"
        );
    }
}

/// A random-enough unique string for names and client message ids.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
