//! One `huddle serve` child process per [`Node`]: started with exactly the
//! flags a test gives it (inherited `HUDDLE_*`/`UPSTASH_*` variables are
//! removed), found by its `listening on` line, signalled, killed on drop;
//! when a test panics, the dropped node prints the tail of its stderr log.
//! Also mints tokens with the binary's own `huddle token` command.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::http_get_at;
use super::process::{TempDir, read_tail, send_signal};

const NODE_START_TIMEOUT: Duration = Duration::from_secs(15);

/// Path of the server binary under test.
pub(crate) fn huddle_bin() -> &'static str {
    env!("CARGO_BIN_EXE_huddle")
}

/// Runs `huddle bench MODE ARGS` (at most `limit`), with no inherited
/// `HUDDLE_JWT_SECRET`; returns the exit success, the report's JSON line
/// (the last line of stdout, when there is one) and stderr.
pub(crate) async fn run_bench(
    mode: &str,
    args: &[&str],
    limit: Duration,
) -> (bool, Option<serde_json::Value>, String) {
    let mut cmd = tokio::process::Command::new(huddle_bin());
    cmd.args(["bench", mode])
        .args(args)
        .env_remove("HUDDLE_JWT_SECRET")
        .kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("bench {mode} finishes within {limit:?}"))
        .unwrap_or_else(|e| panic!("run huddle bench {mode}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = stdout
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).expect("the last stdout line is JSON"));
    (out.status.success(), json, stderr)
}

/// A report's count.
pub(crate) fn count(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
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
    /// The running process; `None` once it has been killed or has exited.
    child: Option<Child>,
    /// The address from the node's `listening on` line.
    pub(crate) addr: SocketAddr,
    /// The `--node-id` it was started with.
    pub(crate) node_id: String,
    /// Holds the node's stdout and stderr logs (see [`STDERR_LOG`]); kept
    /// after a failing test for post-mortem reading.
    dir: TempDir,
}

/// The node's stderr log, inside its temporary directory.
const STDERR_LOG: &str = "stderr.log";

impl Node {
    /// Starts `huddle serve --bind 127.0.0.1:0 [--redis URL] --node-id ID
    /// EXTRA...` and waits (15 s) for its `listening on 127.0.0.1:PORT` line.
    pub(crate) async fn start(redis_url: Option<&str>, node_id: &str, extra_args: &[&str]) -> Node {
        let dir = TempDir::new(&format!("node-{node_id}"));
        let stderr_log = dir.path().join(STDERR_LOG);
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
        read_tail(&self.dir.path().join(STDERR_LOG), max_lines)
    }

    /// The node's process id while it runs (for tools that signal it).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
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
