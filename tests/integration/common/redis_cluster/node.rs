//! The cluster's processes and the one way the harness talks to them:
//! free port pairs (client port P, cluster bus P+10000), spawning a
//! cluster-enabled `redis-server`, and one command over a fresh
//! single-node connection with its reply read as text.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::common::REPLY_TIMEOUT;
use crate::common::process::free_port;

/// The cluster bus listens on the client port plus this offset.
const BUS_OFFSET: u16 = 10000;

/// One `redis-server` child and where it keeps its files.
pub(super) struct ClusterProcess {
    /// Client port; the bus port is `port + 10000`. Kept while the node is
    /// killed so `RedisCluster::restart` brings it back at the same
    /// address, which its peers remember.
    pub(super) port: u16,
    /// The running process; `None` while killed.
    pub(super) child: Option<Child>,
    /// Working directory with `nodes.conf`, the node's cluster identity.
    pub(super) dir: PathBuf,
    /// Its stdout and stderr.
    pub(super) log: PathBuf,
}

/// `count` distinct free client ports below 55535 whose bus ports (+10000)
/// are free too and collide with none of the others.
pub(super) fn cluster_ports(count: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::new();
    for _probe in 0..1000 {
        if ports.len() == count {
            return ports;
        }
        let port = free_port();
        if port >= u16::MAX - BUS_OFFSET {
            continue;
        }
        let bus = port + BUS_OFFSET;
        let clashes = ports
            .iter()
            .any(|&p| p == port || p + BUS_OFFSET == port || p == bus);
        if !clashes && std::net::TcpListener::bind(("127.0.0.1", bus)).is_ok() {
            ports.push(port);
        }
    }
    panic!(
        "found only {} of {count} free port pairs (P, P+10000)",
        ports.len()
    );
}

/// Spawns one cluster-enabled `redis-server`; panics clearly when it is not
/// on PATH.
pub(super) fn spawn_node(port: u16, node_timeout_ms: u32, dir: &Path, log: &Path) -> Child {
    let spawn = || -> std::io::Result<Child> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file"])
            .arg(dir.join("nodes.conf"))
            .args(["--cluster-node-timeout", &node_timeout_ms.to_string()])
            .args(["--cluster-replica-validity-factor", "0"])
            .args(["--save", "", "--appendonly", "no"])
            // Replicas sync at once instead of after the default 5 s
            // wait for more replicas to join the same diskless transfer.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
    };
    match spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not on PATH: this test needs a real Redis Cluster \
             (install it, e.g. `apt-get install redis-server`); refusing to run \
             a Redis test without Redis"
        ),
        Err(e) => panic!("cannot spawn redis-server on port {port}: {e}"),
    }
}

/// One command on a fresh single-node connection to 127.0.0.1:`port`,
/// bounded by the reply timeout; errors (refused, timed out, error reply)
/// come back as text, an error reply as the server wrote it.
pub(super) async fn query(port: u16, args: &[&str]) -> Result<redis::Value, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .map_err(|e| format!("redis client: {e}"))?;
    let run = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async::<redis::Value>(&mut conn).await
    };
    match tokio::time::timeout(REPLY_TIMEOUT, run).await {
        Err(_) => Err(format!("{args:?} timed out after {REPLY_TIMEOUT:?}")),
        Ok(result) => result.map_err(|e| match (e.code(), e.detail()) {
            // A server error as Redis wrote it: `MOVED 3999 127.0.0.1:30002`.
            (Some(code), Some(detail)) => format!("{code} {detail}"),
            _ => e.to_string(),
        }),
    }
}

/// The value of `field:` in the `key:value` text one command returns
/// (`CLUSTER INFO`, `INFO section`).
pub(super) async fn info_field(port: u16, args: &[&str], field: &str) -> Result<String, String> {
    let info = text(&query(port, args).await?);
    info.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_string())
        .ok_or_else(|| format!("no {field} in {args:?} on port {port}"))
}

/// A text reply as a string (bulk, simple or verbatim); anything else in
/// its debug form.
pub(super) fn text(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::Okay => "OK".to_string(),
        other => format!("{other:?}"),
    }
}
