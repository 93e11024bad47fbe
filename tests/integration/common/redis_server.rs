//! A private `redis-server` child process per test, on a free port with its
//! own temporary directory: started, killed, frozen, restarted, and asked
//! one command. A test that needs Redis panics when `redis-server` is
//! missing; it never falls back to anything else.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::REPLY_TIMEOUT;
use super::process::{TempDir, free_port, read_tail, send_signal};

const REDIS_START_TIMEOUT: Duration = Duration::from_secs(5);

/// A private `redis-server` child process, killed on drop.
pub(crate) struct RedisServer {
    /// The running process; `None` between [`RedisServer::kill`] and
    /// [`RedisServer::restart`].
    child: Option<Child>,
    /// The port it listens on, kept across a restart so the nodes'
    /// configured URL stays valid.
    port: u16,
    /// Append-only file on (`appendfsync always`): acknowledged writes
    /// survive a kill, and [`RedisServer::restart`] reloads them.
    aof: bool,
    /// Its stdout and stderr, for start-up failure reports.
    log: PathBuf,
    /// Its working directory (the AOF lives here). Declared last so it is
    /// removed after the child is gone.
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

    /// Starts a second `redis-server` replicating this one and waits until
    /// this one counts it as an online replica.
    pub(crate) async fn start_replica(&self) -> RedisServer {
        let replica = RedisServer::start().await;
        let port = self.port.to_string();
        replica.command(&["REPLICAOF", "127.0.0.1", &port]).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let info = match self.command(&["INFO", "replication"]).await {
                redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                redis::Value::VerbatimString { text, .. } => text,
                other => format!("{other:?}"),
            };
            if info.contains("connected_slaves:1") && info.contains("state=online") {
                return replica;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the replica on {} never came online:\n{info}",
                replica.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
