//! The cluster behind a real load balancer: `deploy/local-cluster.sh` starts
//! `redis-server`, three `huddle serve` nodes and a real nginx (configured
//! with `deploy/nginx/huddle-proxy.conf`, the same locations the compose
//! stack uses) on loopback; clients connect through nginx only.
//!
//! - The script starts everything, prints the URL, refuses a second start,
//!   and `stop` stops exactly what it started: a Redis and a node started
//!   beside it by the test keep running.
//! - nginx passes WebSocket upgrades with the client's Host header (a
//!   browser's same-origin page is accepted, a foreign origin is not) and
//!   hides `/metrics`.
//! - A node is killed (SIGKILL) while clients talk through nginx: its clients
//!   see their sockets end, reconnect through nginx (which skips the dead
//!   node), land on the survivors and resume with `room.join` + `since`.
//!   Every client then holds every seq of the room exactly once, in order,
//!   and every acknowledged message is in the room's history.
//! - The metric names the Grafana dashboard, the alerts, the HPA and the
//!   deploy docs use are names a real node exports.
//!
//! nginx must be installed (`nginx` on PATH or `/usr/sbin/nginx`;
//! `scripts/test.sh` installs Debian's `nginx-light`): without it these
//! tests fail, they never pass without the balancer they test.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// How long `local-cluster.sh start` or `stop` may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(40);

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// nginx as the script will find it, or a failure that says what to do.
fn nginx_path() -> PathBuf {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nginx");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let sbin = PathBuf::from("/usr/sbin/nginx");
    if sbin.is_file() {
        return sbin;
    }
    panic!(
        "nginx is not installed (neither `nginx` on PATH nor /usr/sbin/nginx): this test runs \
         a real nginx in front of the nodes and refuses to pass without it. Install it \
         (Debian: `apt-get install nginx-light`; scripts/test.sh does this when it is missing)."
    );
}

/// One line of the script's pid list: `KIND NAME PID START`.
#[derive(Debug, Clone)]
struct Started {
    kind: String,
    name: String,
    pid: u32,
    start: String,
}

/// The start time of a live, non-zombie process, read like the script does.
fn proc_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(") ")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19).map(|s| s.to_string())
}

fn is_running(p: &Started) -> bool {
    proc_start(p.pid).as_deref() == Some(p.start.as_str())
}

/// A cluster started by `deploy/local-cluster.sh` in a private state
/// directory, on free ports; stopped (with the script, then by pid as a last
/// resort) when dropped.
struct LocalCluster {
    port: u16,
    redis_port: u16,
    /// The state directory (`CLUSTER_DIR`).
    dir: TempDir,
    /// What the script said it started, read after `start`.
    started: Vec<Started>,
    /// Whether `stop` still has to run.
    running: bool,
}

impl LocalCluster {
    fn command(dir: &Path, port: u16, redis_port: u16, action: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(repo_path("deploy/local-cluster.sh")).arg(action);
        // Only the settings chosen here reach the script and its nodes.
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("HUDDLE_")
                || name.starts_with("UPSTASH_")
                || name.starts_with("CLUSTER_")
                || name == "NGINX"
            {
                cmd.env_remove(&key);
            }
        }
        cmd.env("HUDDLE_BIN", huddle_bin())
            .env("NGINX_BIN", nginx_path())
            .env("CLUSTER_DIR", dir)
            .env("CLUSTER_PORT", port.to_string())
            .env("CLUSTER_REDIS_PORT", redis_port.to_string())
            .env("CLUSTER_NODES", "3")
            // Fast drains so `stop` is quick; no rate limit in the way.
            .env("HUDDLE_DRAIN_WINDOW", "1s")
            .env("HUDDLE_SHUTDOWN_GRACE", "5s")
            .env("HUDDLE_RATE_LIMIT", "10000")
            .env("HUDDLE_RATE_BURST", "20000")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs the script with `action`: (success, stdout, stderr).
    async fn run(&self, action: &str) -> (bool, String, String) {
        run_script(Self::command(
            self.dir.path(),
            self.port,
            self.redis_port,
            action,
        ))
        .await
    }

    async fn start() -> LocalCluster {
        let nginx = nginx_path();
        let dir = TempDir::new("local-cluster");
        let port = free_port();
        let mut redis_port = free_port();
        while redis_port == port {
            redis_port = free_port();
        }
        let (ok, stdout, stderr) =
            run_script(Self::command(dir.path(), port, redis_port, "start")).await;
        let mut cluster = LocalCluster {
            port,
            redis_port,
            dir,
            started: Vec::new(),
            running: true,
        };
        cluster.started = cluster.read_pids();
        assert!(
            ok,
            "local-cluster.sh start failed (nginx {}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n{}",
            nginx.display(),
            cluster.logs()
        );
        let url = format!("url: http://127.0.0.1:{port}");
        assert!(
            stdout.lines().any(|l| l.starts_with(&url)),
            "start should print `{url} ...`; it printed:\n{stdout}"
        );
        cluster
    }

    fn read_pids(&self) -> Vec<Started> {
        let text = std::fs::read_to_string(self.dir.path().join("pids")).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() != 4 {
                    return None;
                }
                Some(Started {
                    kind: f[0].to_string(),
                    name: f[1].to_string(),
                    pid: f[2].parse().ok()?,
                    start: f[3].to_string(),
                })
            })
            .collect()
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn node(&self, node_id: &str) -> Started {
        self.started
            .iter()
            .find(|p| p.kind == "node" && p.name == node_id)
            .cloned()
            .unwrap_or_else(|| panic!("no node {node_id} in the pid list {:?}", self.started))
    }

    /// The tails of every log in the state directory, for failure reports.
    fn logs(&self) -> String {
        let mut out = String::new();
        let mut files = vec![
            self.dir.path().join("redis.log"),
            self.dir.path().join("nginx/error.log"),
            self.dir.path().join("nginx/stderr.log"),
        ];
        for i in 1..=3 {
            files.push(self.dir.path().join(format!("node-{i}.log")));
        }
        for file in files {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(25)..].join("\n");
                out.push_str(&format!("--- {} ---\n{tail}\n", file.display()));
            }
        }
        out
    }

    async fn stop(&mut self) -> String {
        let (ok, stdout, stderr) = self.run("stop").await;
        self.running = false;
        assert!(
            ok,
            "local-cluster.sh stop failed:\n{stdout}\n{stderr}\n{}",
            self.logs()
        );
        stdout
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if self.running {
            let mut cmd = std::process::Command::new("bash");
            cmd.arg(repo_path("deploy/local-cluster.sh"))
                .arg("stop")
                .env("CLUSTER_DIR", self.dir.path())
                .env("HUDDLE_SHUTDOWN_GRACE", "5s")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = cmd.status();
        }
        // Last resort, and only for what the script recorded as ours.
        for p in &self.started {
            if is_running(p) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &p.pid.to_string()])
                    .status();
            }
        }
    }
}

async fn run_script(mut cmd: tokio::process::Command) -> (bool, String, String) {
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("local-cluster.sh did not finish within {SCRIPT_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run local-cluster.sh: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A plain HTTP/1.1 GET: the status code.
async fn http_status(port: u16, path: &str) -> u16 {
    http_get_at(&format!("127.0.0.1:{port}"), path).await.0
}

/// A WebSocket upgrade with a browser's `Origin` header: `Ok(())` when the
/// socket opened, else the HTTP status of the refusal.
async fn upgrade_with_origin(url: &str, origin: &str) -> Result<(), u16> {
    let mut request = url.into_client_request().expect("a WebSocket request");
    request
        .headers_mut()
        .insert("Origin", origin.parse().expect("an Origin header value"));
    let connected = tokio::time::timeout(REPLY_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .unwrap_or_else(|_| panic!("upgrade at {url} with Origin {origin}: timed out"));
    match connected {
        Ok(_) => Ok(()),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("upgrade at {url} with Origin {origin}: {e}"),
    }
}

/// Guest `hello` through the balancer: the client and the node it landed on.
async fn hello_via(url: &str, name: &str) -> (Client, String) {
    let mut client = Client::connect_url(url, "nginx").await;
    let data = client.ok(json!({"type": "hello", "name": name})).await;
    client.user = Some(data["user"].clone());
    client.label = format!("{name}@nginx");
    let node = s(&data, "node").to_string();
    (client, node)
}

/// A client and the seqs of the room's `message.*` events it has seen, in
/// the order it saw them, from a join (`room.join` without `since`) on.
struct Watcher {
    client: Client,
    node: String,
    name: String,
    /// `last_seq` of the room in the join reply: seen starts after it.
    joined_at: u64,
    seen: Vec<u64>,
}

impl Watcher {
    /// Moves the room's message events already received into `seen`.
    fn absorb_queued(&mut self, room: &str) {
        while let Some(ev) = self
            .client
            .take_queued(|v| is_message_event(v) && v["room"] == room)
        {
            self.seen.push(seq(&ev));
        }
    }

    /// Reads the room's message events until `target` has been seen.
    async fn read_until(&mut self, room: &str, target: u64) {
        self.absorb_queued(room);
        while self.seen.last().is_none_or(|&last| last < target) {
            let ev = self.client.next_message_event(room).await;
            self.seen.push(seq(&ev));
        }
    }

    /// Every seq after the join, exactly once, in order, up to `last`.
    fn assert_complete(&self, last: u64) {
        let expected: Vec<u64> = (self.joined_at + 1..=last).collect();
        assert_eq!(
            self.seen, expected,
            "{} (on {}): must have seen every seq after {} exactly once, in order",
            self.name, self.node, self.joined_at
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_script_starts_and_stops_only_what_it_started() {
    let _heavy = heavy(module_path!()).await;
    // Processes of the same kinds that the script must leave alone.
    let other_redis = RedisServer::start().await;
    let other_node = Node::start(Some(&other_redis.url()), "bystander", &[]).await;

    let mut cluster = LocalCluster::start().await;
    let kinds: Vec<&str> = cluster.started.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["redis", "node", "node", "node", "nginx"],
        "the pid list: {:?}",
        cluster.started
    );
    for p in &cluster.started {
        assert!(is_running(p), "{p:?} should be running after start");
    }
    let (ok, stdout, _) = cluster.run("status").await;
    assert!(ok, "status of a running cluster should succeed: {stdout}");

    // Through nginx: a working session, readiness of some node, no metrics.
    let (mut client, node) = hello_via(&cluster.ws_url(), "Ann").await;
    assert!(node.starts_with("local-"), "landed on {node}");
    client.ping().await;
    assert_eq!(http_status(cluster.port, "/readyz").await, 200);
    assert_eq!(
        http_status(cluster.port, "/metrics").await,
        404,
        "the balancer must not publish a node's metrics"
    );

    // nginx passes the Host header as the client sent it, so a browser page
    // served from the balancer's own origin may open a socket, and a page
    // from elsewhere may not.
    let own_origin = format!("http://127.0.0.1:{}", cluster.port);
    assert_eq!(
        upgrade_with_origin(&cluster.ws_url(), &own_origin).await,
        Ok(()),
        "a same-origin page must be accepted through nginx"
    );
    assert_eq!(
        upgrade_with_origin(&cluster.ws_url(), "https://evil.example").await,
        Err(403),
        "a foreign origin must be refused"
    );

    // A second start while it runs is refused and changes nothing.
    let (ok, stdout, stderr) = cluster.run("start").await;
    assert!(
        !ok && stderr.contains("already running"),
        "a second start must refuse: {stdout}{stderr}"
    );
    assert_eq!(cluster.read_pids().len(), 5, "the pid list must be intact");
    client.ping().await;

    let said = cluster.stop().await;
    for p in &cluster.started {
        assert!(!is_running(p), "{p:?} still runs after stop:\n{said}");
    }
    assert!(
        TcpStream::connect(("127.0.0.1", cluster.port))
            .await
            .is_err(),
        "nginx's port is still open after stop"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", cluster.redis_port))
            .await
            .is_err(),
        "the cluster's Redis port is still open after stop"
    );
    // The bystanders are untouched.
    assert_eq!(
        other_redis.command(&["PING"]).await,
        redis::Value::SimpleString("PONG".into()),
        "stop must not touch a Redis it did not start"
    );
    assert_eq!(
        other_node.http_get("/healthz").await.0,
        200,
        "stop must not touch a node it did not start"
    );

    let (ok, stdout, _) = cluster.run("stop").await;
    assert!(
        ok && stdout.contains("nothing to stop"),
        "a second stop is a no-op: {stdout}"
    );
    let (ok, _, _) = cluster.run("status").await;
    assert!(!ok, "status of a stopped cluster reports not running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_node_resume_through_nginx_without_losing_anything() {
    let _heavy = heavy(module_path!()).await;
    let mut cluster = LocalCluster::start().await;
    let url = cluster.ws_url();

    // Six clients through the balancer; least_conn spreads them.
    let mut watchers = Vec::new();
    for i in 0..6 {
        let name = format!("user{i}");
        let (client, node) = hello_via(&url, &name).await;
        watchers.push(Watcher {
            client,
            node,
            name,
            joined_at: 0,
            seen: Vec::new(),
        });
    }
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for w in &watchers {
        *per_node.entry(w.node.clone()).or_default() += 1;
    }
    assert!(
        per_node.len() >= 2,
        "nginx put every client on one node ({per_node:?}): no balancing, nothing to test"
    );

    // One room, everyone in it.
    let room = watchers[0]
        .client
        .create_room("failover", json!({"max_participants": 100}))
        .await;
    let room_id = s(&room, "id").to_string();
    watchers[0].joined_at = room["last_seq"].as_u64().expect("last_seq");
    for w in watchers.iter_mut().skip(1) {
        let data = w.client.join(&room_id).await;
        w.joined_at = data["room"]["last_seq"].as_u64().expect("last_seq");
    }

    // The victim: the node with the most clients, but not all of them.
    let victim = per_node
        .iter()
        .max_by_key(|(node, n)| (**n, (*node).clone()))
        .map(|(node, _)| node.clone())
        .expect("some node");
    let victim_proc = cluster.node(&victim);
    eprintln!(
        "clients per node: {per_node:?}; killing {victim} (pid {})",
        victim_proc.pid
    );

    // Everyone sends, and every acknowledged message is remembered.
    let mut acked: Vec<(String, u64)> = Vec::new();
    for round in 0..3 {
        for w in watchers.iter_mut() {
            let m = w
                .client
                .send_message(&room_id, &format!("{} says {round}", w.name))
                .await;
            acked.push((s(&m, "id").to_string(), seq(&m)));
        }
    }

    // A survivor keeps writing while the victim dies.
    let writer_at = watchers
        .iter()
        .position(|w| w.node != victim)
        .expect("a client on another node");
    let mut writer = watchers.remove(writer_at);
    let (half_way_tx, half_way_rx) = tokio::sync::oneshot::channel::<()>();
    let writer_room = room_id.clone();
    let writing = tokio::spawn(async move {
        let mut half_way = Some(half_way_tx);
        let mut acked = Vec::new();
        for i in 0..20 {
            let m = writer
                .client
                .send_message(&writer_room, &format!("during the failover {i}"))
                .await;
            acked.push((s(&m, "id").to_string(), seq(&m)));
            if i == 5
                && let Some(tx) = half_way.take()
            {
                let _ = tx.send(());
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        (writer, acked)
    });
    tokio::time::timeout(Duration::from_secs(10), half_way_rx)
        .await
        .expect("the writer got going in time")
        .expect("the writer is alive");
    send_signal(victim_proc.pid, "KILL");

    // The victim's clients lose their sockets (nginx closes them when the
    // node's side dies) and keep what they received.
    for w in watchers.iter_mut().filter(|w| w.node == victim) {
        w.client.wait_close(Duration::from_secs(10)).await;
        w.absorb_queued(&room_id);
    }
    // The writer finishes while they are away: they miss its messages.
    let (writer, during) = tokio::time::timeout(Duration::from_secs(15), writing)
        .await
        .expect("the writer finished in time")
        .expect("the writer did not panic");
    let last_written = during.last().map(|(_, at)| *at).expect("writes");
    acked.extend(during);
    watchers.push(writer);

    // They reconnect through nginx, which must skip the dead node, and
    // resume from the last seq they saw.
    let mut resumed = 0;
    for w in watchers.iter_mut().filter(|w| w.node == victim) {
        let since = w.seen.last().copied().unwrap_or(w.joined_at);
        let (mut client, node) = hello_via(&url, &format!("{}-again", w.name)).await;
        assert_ne!(
            node, victim,
            "nginx sent a reconnecting client to the dead node"
        );
        let data = client.join_since(&room_id, since).await;
        assert_eq!(
            data["complete"],
            json!(true),
            "{}: the retained log covers the outage: {}",
            w.name,
            brief(&data)
        );
        let replayed: Vec<u64> = data["events"]
            .as_array()
            .unwrap_or_else(|| panic!("join with since without events: {}", brief(&data)))
            .iter()
            .filter(|ev| is_message_event(ev))
            .map(seq)
            .collect();
        assert!(
            replayed.contains(&last_written),
            "{}: resuming from {since} must replay what was written meanwhile (up to seq \
             {last_written}), got {replayed:?}",
            w.name
        );
        w.seen.extend(replayed);
        w.client = client;
        w.node = node;
        resumed += 1;
    }
    assert!(
        resumed > 0,
        "the victim {victim} had clients ({per_node:?})"
    );

    // A last message; everyone reads up to it.
    let marker = watchers[0].client.send_message(&room_id, "the end").await;
    let last = seq(&marker);
    acked.push((s(&marker, "id").to_string(), last));
    for w in watchers.iter_mut() {
        w.read_until(&room_id, last).await;
        w.assert_complete(last);
    }

    // Every acknowledged message is stored, the room's seqs have no gap.
    let history = watchers[0].client.history(&room_id, None, Some(100)).await;
    assert_eq!(history["has_more"], json!(false), "fewer than 100 messages");
    let messages = history["messages"].as_array().expect("messages").clone();
    let stored: HashMap<String, u64> = messages
        .iter()
        .map(|m| (s(m, "id").to_string(), seq(m)))
        .collect();
    for (id, at) in &acked {
        assert_eq!(
            stored.get(id),
            Some(at),
            "acknowledged message {id} (seq {at}) is missing from the history"
        );
    }
    let seqs = seqs(&messages);
    assert_consecutive(&seqs, "room history after the failover");
    assert_eq!(seqs.first(), Some(&1));

    // `stop` copes with the node that is already gone, and stops the rest.
    let said = cluster.stop().await;
    assert!(
        said.contains(&format!(
            "{victim} (pid {}) was not running",
            victim_proc.pid
        )),
        "stop should notice the killed node:\n{said}"
    );
    for p in &cluster.started {
        assert!(!is_running(p), "{p:?} still runs after stop:\n{said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_files_name_only_metrics_a_node_exports() {
    let redis = RedisServer::start().await;
    let node = Node::start(Some(&redis.url()), "metrics", &[]).await;
    // Traffic, so that labelled families have samples.
    let mut client = Client::connect(&node).await;
    client.hello("Ann").await;
    let room = client.create_room("metrics", json!({})).await;
    client.send_message(s(&room, "id"), "hi").await;
    let (status, _) = node.http_get("/readyz").await;
    assert_eq!(status, 200);
    let (status, text) = node.http_get("/metrics").await;
    assert_eq!(status, 200);

    // Sample names and family names (`# TYPE name kind`). A counter
    // family's samples are `name_total`, also before its first sample (a
    // labelled counter nothing has counted yet).
    let mut exported = BTreeSet::new();
    for line in text.lines() {
        let (name, counter) = match line.strip_prefix("# TYPE ") {
            Some(rest) => {
                let mut words = rest.split_whitespace();
                (words.next(), words.next() == Some("counter"))
            }
            None if line.starts_with('#') => (None, false),
            None => (line.split(['{', ' ']).next(), false),
        };
        if let Some(name) = name.filter(|n| n.starts_with("huddle_")) {
            exported.insert(name.to_string());
            if counter {
                exported.insert(format!("{name}_total"));
            }
        }
    }
    assert!(exported.contains("huddle_connections"), "{exported:?}");

    let files = [
        "deploy/grafana/dashboards/huddle.json",
        "deploy/prometheus/alerts.yml",
        "k8s/hpa.yaml",
        "k8s/prometheus-adapter/values.yaml",
        "docs/deploy.md",
    ];
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(repo_path(file))
            .unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        for (at, _) in text.match_indices("huddle_") {
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if name.ends_with('_') {
                // A prefix in prose (`huddle_` followed by `*`), not a name.
                continue;
            }
            assert!(
                exported.contains(&name),
                "{file} uses {name}, which no node exports; exported: {exported:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} metric references found");
}
