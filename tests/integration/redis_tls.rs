//! Redis over TLS, and the old server's Upstash settings.
//!
//! - Two nodes on a `redis-server` that only speaks TLS (`--port 0
//!   --tls-port P`, a certificate made with the `openssl` CLI for this run)
//!   given `--redis rediss://127.0.0.1:P/#insecure` (`#insecure`: the test's
//!   CA is not in the nodes' root store) serve a room end to end: state is
//!   written to that Redis and events cross from one node to the other over
//!   TLS pub/sub.
//! - A node configured only by `UPSTASH_REDIS_URL` and `UPSTASH_REDIS_TOKEN`
//!   (no `--redis`, no `HUDDLE_*`) authenticates with the token to a Redis
//!   that requires a password, plain and over TLS.
//!
//! Without `openssl` or without TLS support in `redis-server` these tests
//! fail with a message saying so; they never fall back to plain Redis.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// A TLS certificate and a redis-server speaking TLS only
// ---------------------------------------------------------------------------

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the `openssl` CLI ({e}): this test makes its TLS certificate with it. \
                 Install it (Debian: apt-get install openssl); refusing to test TLS without TLS."
            )
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it (P-256 keys).
fn make_certificates(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write the certificate extensions");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=huddle test CA",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-nodes"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(dir, &csr);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// A private `redis-server`, killed on drop: TLS-only when `tls`, with a
/// password when `password` is given.
struct SecureRedis {
    child: std::process::Child,
    port: u16,
    tls: bool,
    password: Option<String>,
    log: PathBuf,
    dir: TempDir,
}

impl SecureRedis {
    async fn start(tls: bool, password: Option<&str>) -> SecureRedis {
        let dir = TempDir::new(if tls { "redis-tls" } else { "redis-auth" });
        if tls {
            make_certificates(dir.path());
        }
        let port = free_port();
        let log = dir.path().join("redis.log");
        let out = std::fs::File::create(&log).expect("create the redis log");
        let err = out.try_clone().expect("clone the log handle");
        let mut cmd = std::process::Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        cmd.arg("--dir").arg(dir.path());
        if tls {
            cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(dir.path().join("server.crt"))
                .arg("--tls-key-file")
                .arg(dir.path().join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.path().join("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &port.to_string()]);
        }
        if let Some(password) = password {
            cmd.args(["--requirepass", password]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): this test needs a real Redis \
                     (apt-get install redis-server)"
                )
            });
        let mut redis = SecureRedis {
            child,
            port,
            tls,
            password: password.map(str::to_owned),
            log,
            dir,
        };
        redis.wait_ready().await;
        redis
    }

    /// Runs `redis-cli` against this server (TLS and password as needed):
    /// (success, output). The test itself speaks to Redis through the CLI,
    /// so only the node under test depends on the crate's TLS stack.
    async fn cli_raw(&self, auth: bool, args: &[&str]) -> (bool, String) {
        let mut cmd = tokio::process::Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.tls {
            cmd.args(["--tls", "--insecure"]);
        }
        if auth && let Some(password) = &self.password {
            cmd.args(["--user", "default", "--pass", password, "--no-auth-warning"]);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(REPLY_TIMEOUT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("redis-cli {args:?} timed out"))
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-cli ({e}): the test reads what the node wrote with it \
                     (Debian: apt-get install redis-tools)"
                )
            });
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text.trim().to_string())
    }

    /// A command with the password: its output, which must not be an error.
    async fn cli(&self, args: &[&str]) -> String {
        let (ok, text) = self.cli_raw(true, args).await;
        assert!(
            ok && !text.starts_with("ERR") && !text.starts_with("NOAUTH"),
            "redis-cli {args:?} failed: {text}"
        );
        text
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                if self.tls && (log.contains("tls") || log.contains("Bad directive")) {
                    panic!(
                        "redis-server refused the TLS options ({status}): it was built without \
                         TLS support (BUILD_TLS=yes). Debian's redis-server has it. Log:\n{log}"
                    );
                }
                panic!("redis-server exited ({status}) at start:\n{log}");
            }
            let (_, text) = self.cli_raw(true, &["PING"]).await;
            if text == "PONG" {
                return;
            }
            last = text;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "redis-server (tls: {}) did not answer PING within 10 s: {last}\n{}",
            self.tls,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for SecureRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- redis log ({}) ---\n{}",
                self.dir.path().display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// A node started with exactly the environment a test gives it
// ---------------------------------------------------------------------------

/// `huddle serve` on 127.0.0.1:0 with `env` as its only configuration
/// variables (every inherited `HUDDLE_*` and `UPSTASH_*` is removed first).
struct EnvNode {
    child: tokio::process::Child,
    addr: String,
    stderr_log: PathBuf,
    _dir: TempDir,
}

impl EnvNode {
    async fn start(node_id: &str, env: &[(&str, &str)]) -> EnvNode {
        let dir = TempDir::new(&format!("env-node-{node_id}"));
        let stderr_log = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_log).expect("create the node's log");
        let mut cmd = tokio::process::Command::new(huddle_bin());
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("HUDDLE_") || name.starts_with("UPSTASH_") {
                cmd.env_remove(&key);
            }
        }
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--node-id", node_id])
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", huddle_bin()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(15), lines.next_line()).await;
        let addr = match first {
            Ok(Ok(Some(line))) if line.starts_with("listening on ") => {
                line["listening on ".len()..].trim().to_string()
            }
            other => {
                let _ = child.start_kill();
                panic!(
                    "node {node_id} did not print `listening on` ({other:?}):\n{}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                );
            }
        };
        // Keep draining stdout so the node never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        EnvNode {
            child,
            addr,
            stderr_log,
            _dir: dir,
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// GET /readyz: (status, JSON body).
    async fn readyz(&self) -> (u16, Value) {
        let (status, body) = http_get_at(&self.addr, "/readyz").await;
        let report = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/readyz is not JSON ({e}): {body}"));
        (status, report)
    }
}

impl Drop for EnvNode {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "--- node at {} ---\n{}",
                self.addr,
                std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
            );
        }
    }
}

/// Waits (bounded) for /readyz to say ready on the Redis engine.
async fn assert_ready_on_redis(what: &str, readyz: impl AsyncFn() -> (u16, Value)) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, report) = readyz().await;
        if status == 200 {
            assert_eq!(report["engine"], "redis", "{what}: {report}");
            assert_eq!(report["ready"], json!(true), "{what}: {report}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: /readyz still {status} after 10 s: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A guest creates a room and sends a message; the room and the message are
/// in `redis` (under the default `huddle:` prefix).
async fn room_round_trip(url: &str, redis: &SecureRedis) {
    let mut client = Client::connect_url(url, "env-node").await;
    client.hello("Ann").await;
    let room = client.create_room("secure", json!({})).await;
    let room_id = s(&room, "id");
    let message = client.send_message(room_id, "stored in Redis").await;
    let key = format!("huddle:room_messages:{{{room_id}}}");
    let score = redis.cli(&["ZSCORE", &key, s(&message, "id")]).await;
    assert_eq!(
        score,
        seq(&message).to_string(),
        "message {} should be in {key} on the test's Redis at its seq",
        s(&message, "id")
    );
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_a_room_over_a_tls_only_redis() {
    let _heavy = heavy(module_path!()).await;
    let redis = SecureRedis::start(true, None).await;
    // The port speaks TLS only: a plain-text PING gets no PONG.
    let plain = async {
        let mut stream = TcpStream::connect(("127.0.0.1", redis.port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = stream.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"+PONG"))
    };
    let plain_pong = tokio::time::timeout(Duration::from_secs(3), plain).await;
    assert!(
        !matches!(plain_pong, Ok(Some(true))),
        "the test Redis answers plain text: the test would not prove TLS"
    );

    let url = format!("rediss://127.0.0.1:{}/#insecure", redis.port);
    let a = Node::start(Some(&url), "tls-a", FAST).await;
    let b = Node::start(Some(&url), "tls-b", FAST).await;
    for node in [&a, &b] {
        assert_ready_on_redis(&node.node_id, || async {
            let (status, body) = node.http_get("/readyz").await;
            let report: Value = serde_json::from_str(&body).expect("readyz JSON");
            (status, report)
        })
        .await;
    }

    // A room across the two nodes: events cross over TLS pub/sub.
    let mut ann = Client::connect(&a).await;
    ann.hello("Ann").await;
    let room = ann.create_room("over tls", json!({})).await;
    let room_id = s(&room, "id").to_string();
    let mut bob = Client::connect(&b).await;
    bob.hello("Bob").await;
    bob.join(&room_id).await;
    let sent = ann.send_message(&room_id, "hello over TLS").await;
    let got = bob.next_message_event(&room_id).await;
    assert_eq!(got["event"], "message.created", "{got}");
    assert_eq!(got["message"]["id"], sent["id"], "{got}");
    let reply = bob.send_message(&room_id, "and back").await;
    let back = ann
        .wait_event("Bob's message", EVENT_TIMEOUT, |e| {
            e["event"] == "message.created" && e["message"]["id"] == reply["id"]
        })
        .await;
    assert_eq!(seq(&back), seq(&reply));

    // And it is all in the TLS Redis.
    let key = format!("huddle:room:{{{room_id}}}");
    assert_eq!(
        redis.cli(&["EXISTS", &key]).await,
        "1",
        "{key} should be in the TLS Redis"
    );
    let history = ann.all_messages(&room_id).await;
    assert!(
        history.iter().any(|m| m["id"] == sent["id"])
            && history.iter().any(|m| m["id"] == reply["id"]),
        "history: {history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstash_variables_alone_point_a_node_at_a_password_protected_redis() {
    let _heavy = heavy(module_path!()).await;
    let token = "upstash-token/with+odd=chars";
    let redis = SecureRedis::start(false, Some(token)).await;
    // The token is needed: without it the server refuses commands.
    let (_, refused) = redis.cli_raw(false, &["SET", "k", "v"]).await;
    assert!(
        refused.contains("NOAUTH"),
        "Redis accepted a command without the token: {refused}"
    );

    let url = format!("redis://127.0.0.1:{}", redis.port);
    let node = EnvNode::start(
        "upstash",
        &[("UPSTASH_REDIS_URL", &url), ("UPSTASH_REDIS_TOKEN", token)],
    )
    .await;
    assert_ready_on_redis("node on UPSTASH_* only", || node.readyz()).await;
    room_round_trip(&node.ws_url(), &redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstash_variables_reach_a_tls_redis_with_a_token() {
    let _heavy = heavy(module_path!()).await;
    let token = "tls-token";
    let redis = SecureRedis::start(true, Some(token)).await;
    let url = format!("rediss://127.0.0.1:{}/#insecure", redis.port);
    let node = EnvNode::start(
        "upstash-tls",
        &[("UPSTASH_REDIS_URL", &url), ("UPSTASH_REDIS_TOKEN", token)],
    )
    .await;
    assert_ready_on_redis("node on UPSTASH_* over TLS", || node.readyz()).await;
    room_round_trip(&node.ws_url(), &redis).await;
}
