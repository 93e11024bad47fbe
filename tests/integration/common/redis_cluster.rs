//! A private Redis Cluster per test: six (or fewer) `redis-server` children
//! with `--cluster-enabled yes`, each on a free port P whose cluster-bus
//! port P+10000 is free too, joined with `redis-cli --cluster create` (or,
//! below three masters, with `CLUSTER ADDSLOTSRANGE` and `CLUSTER MEET`),
//! and waited for until every node reports `cluster_state:ok` and the
//! expected masters and online replicas.
//!
//! Faults and resharding are done the documented way: a master is killed
//! with SIGKILL and a replica takes over (`--cluster-node-timeout 1000`,
//! `--cluster-replica-validity-factor 0`, so a replica may always fail
//! over); a killed node restarts from its `nodes.conf` and rejoins as a
//! replica; a slot moves with `CLUSTER SETSLOT … IMPORTING/MIGRATING`,
//! `MIGRATE` batches and `CLUSTER SETSLOT … NODE` ([`SlotMigration`]).
//!
//! Every node is asked over its own single-node connection (the `redis`
//! crate without cluster support): a command for a key the node does not
//! serve fails with `MOVED`/`ASK`, which [`RedisCluster::try_command`]
//! returns. A test that needs a cluster panics when `redis-server` or
//! `redis-cli` is missing. Every wait is bounded. Children are killed on
//! drop; after a panic their log tails are printed and the directory kept.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::process::{TempDir, read_tail};

mod migration;
mod node;
mod topology;

use node::{ClusterProcess, cluster_ports, info_field, query, spawn_node, text};

pub(crate) use migration::SlotMigration;
pub(crate) use topology::{ClusterNode, Role};

/// `cluster-node-timeout` of the clusters tests start: failovers in a
/// couple of seconds.
const FAST_FAILOVER_MS: u32 = 1000;
/// `cluster-node-timeout` of the shared cluster (`RedisCluster::shared`).
const SHARED_NODE_TIMEOUT_MS: u32 = 15_000;

/// How long the nodes have to answer after spawning.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the joined cluster has to become healthy (`cluster_state:ok`
/// everywhere, every replica online).
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `redis-cli --cluster create` may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two looks at the cluster while waiting.
const POLL: Duration = Duration::from_millis(50);

/// A private Redis Cluster of `redis-server` children, killed on drop.
pub(crate) struct RedisCluster {
    /// Every node, in creation order: the masters first, then the replicas.
    nodes: Vec<ClusterProcess>,
    /// Client ports of the nodes that were masters when the cluster was
    /// created: what [`RedisCluster::seeds`] hands out.
    initial_masters: Vec<u16>,
    /// `cluster-node-timeout` of every node, ms.
    node_timeout_ms: u32,
    /// Holds one working directory per node. Declared last so it is
    /// removed after the children are gone.
    dir: TempDir,
}

impl RedisCluster {
    /// Starts three masters with one replica each and waits until the
    /// cluster is healthy. Panics when `redis-server` or `redis-cli` is
    /// missing or the cluster does not form within its timeouts.
    pub(crate) async fn start() -> RedisCluster {
        Self::start_with(3, 1).await
    }

    /// Starts `masters` masters without replicas: cheaper, for tests that
    /// need slots spread over nodes but no failover. One or two masters are
    /// joined by hand, since `redis-cli` insists on three.
    pub(crate) async fn start_masters_only(masters: usize) -> RedisCluster {
        Self::start_with(masters, 0).await
    }

    async fn start_with(masters: usize, replicas: usize) -> RedisCluster {
        Self::start_with_timeout(masters, replicas, FAST_FAILOVER_MS).await
    }

    async fn start_with_timeout(
        masters: usize,
        replicas: usize,
        node_timeout_ms: u32,
    ) -> RedisCluster {
        assert!(masters >= 1, "a cluster needs at least one master");
        let count = masters * (1 + replicas);
        let mut failures = Vec::new();
        // A free port may be taken between probing and binding: retry.
        for _attempt in 0..3 {
            let mut cluster = RedisCluster {
                nodes: Vec::new(),
                initial_masters: Vec::new(),
                node_timeout_ms,
                dir: TempDir::new("redis-cluster"),
            };
            for port in cluster_ports(count) {
                let dir = cluster.dir.path().join(port.to_string());
                std::fs::create_dir_all(&dir)
                    .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
                let log = dir.join("redis.log");
                let child = spawn_node(port, node_timeout_ms, &dir, &log);
                cluster.nodes.push(ClusterProcess {
                    port,
                    child: Some(child),
                    dir,
                    log,
                });
            }
            match cluster.wait_all_answer().await {
                Ok(()) => {
                    cluster.join(masters, replicas).await;
                    cluster.wait_healthy(masters, replicas).await;
                    cluster.initial_masters = cluster
                        .nodes()
                        .await
                        .iter()
                        .filter(|node| node.role == Role::Master)
                        .map(|node| node.port)
                        .collect();
                    return cluster;
                }
                // Dropping `cluster` kills the children before retrying.
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "the cluster's redis-servers did not all answer within \
             {NODE_START_TIMEOUT:?} (3 attempts):\n{}",
            failures.join("\n")
        );
    }

    /// Waits until every node answers (as the process we spawned); on
    /// failure says which node died or stayed silent, with its log tail.
    async fn wait_all_answer(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        for node in &mut self.nodes {
            loop {
                if let Some(child) = node.child.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(format!(
                        "port {} exited ({status}):\n    {}",
                        node.port,
                        read_tail(&node.log, 10).replace('\n', "\n    ")
                    ));
                }
                // Our own child answers, not some other server that won
                // the port: compare process ids.
                let pid = info_field(node.port, &["INFO", "server"], "process_id").await;
                if node.child.as_ref().map(|child| child.id().to_string()) == pid.ok() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "port {} silent:\n    {}",
                        node.port,
                        read_tail(&node.log, 10).replace('\n', "\n    ")
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Assigns the slots and replicas: `redis-cli --cluster create` for
    /// three or more masters, `CLUSTER ADDSLOTSRANGE` + `MEET` below that.
    async fn join(&self, masters: usize, replicas: usize) {
        if masters < 3 {
            assert_eq!(replicas, 0, "replicas need at least three masters");
            for (i, node) in self.nodes.iter().enumerate() {
                let first = i * usize::from(topology::SLOTS) / masters;
                let last = (i + 1) * usize::from(topology::SLOTS) / masters - 1;
                let (first, last) = (first.to_string(), last.to_string());
                self.command(node.port, &["CLUSTER", "ADDSLOTSRANGE", &first, &last])
                    .await;
                if i > 0 {
                    let seed = self.nodes[0].port.to_string();
                    self.command(node.port, &["CLUSTER", "MEET", "127.0.0.1", &seed])
                        .await;
                }
            }
            return;
        }
        let mut cmd = tokio::process::Command::new("redis-cli");
        cmd.args(["--cluster", "create"]);
        for node in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port));
        }
        cmd.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = match tokio::time::timeout(CREATE_TIMEOUT, cmd.output()).await {
            Err(_) => panic!("redis-cli --cluster create took over {CREATE_TIMEOUT:?}"),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-cli is not on PATH: this test needs it to create a Redis Cluster \
                 (install it, e.g. `apt-get install redis-tools`)"
            ),
            Ok(Err(e)) => panic!("cannot run redis-cli: {e}"),
            Ok(Ok(output)) => output,
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed ({}):\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Waits (20 s) until every live node reports `cluster_state:ok` and
    /// sees `masters` healthy masters covering all slots, each with
    /// `replicas` connected replicas, and every master has that many
    /// replicas online (`INFO replication`), so `WAIT` can be satisfied.
    async fn wait_healthy(&self, masters: usize, replicas: usize) {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let problem = self.health_problem(masters, replicas).await;
            let Some(problem) = problem else { return };
            if Instant::now() > deadline {
                panic!(
                    "the Redis Cluster was not healthy within {HEALTHY_TIMEOUT:?}: {problem}\n{}",
                    self.log_tails(10)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What is still wrong with the cluster, or `None` when it is healthy.
    async fn health_problem(&self, masters: usize, replicas: usize) -> Option<String> {
        for port in self.live_ports() {
            if let Some(problem) = self.node_problem(port, masters, replicas).await {
                return Some(format!("port {port}: {problem}"));
            }
        }
        None
    }

    async fn node_problem(&self, port: u16, masters: usize, replicas: usize) -> Option<String> {
        let state = match info_field(port, &["CLUSTER", "INFO"], "cluster_state").await {
            Ok(state) => state,
            Err(e) => return Some(e),
        };
        if state != "ok" {
            return Some(format!("cluster_state:{state}"));
        }
        let view = match self.try_nodes_from(port).await {
            Ok(view) => view,
            Err(e) => return Some(e),
        };
        let healthy_masters: Vec<&ClusterNode> = view
            .iter()
            .filter(|n| n.role == Role::Master && !n.failed && n.slot_count() > 0)
            .collect();
        let covered: usize = healthy_masters.iter().map(|n| n.slot_count()).sum();
        if healthy_masters.len() != masters || covered != usize::from(topology::SLOTS) {
            return Some(format!(
                "sees {} masters covering {covered} slots",
                healthy_masters.len()
            ));
        }
        for master in healthy_masters {
            let linked = view
                .iter()
                .filter(|n| n.master_id.as_deref() == Some(&master.id) && !n.failed && n.connected)
                .count();
            if linked < replicas {
                return Some(format!(
                    "master {} has {linked} linked replicas",
                    master.port
                ));
            }
            if master.myself && replicas > 0 {
                let info = match query(port, &["INFO", "replication"]).await {
                    Ok(info) => text(&info),
                    Err(e) => return Some(e),
                };
                let online = info.matches("state=online").count();
                if online < replicas {
                    return Some(format!("{online} replicas online"));
                }
            }
        }
        None
    }

    /// Comma-separated `redis://127.0.0.1:P` of the masters the cluster was
    /// created with that are running now: what `--redis-cluster` takes. A
    /// cluster client learns the rest of the topology from any seed.
    pub(crate) fn seeds(&self) -> String {
        self.initial_masters
            .iter()
            .filter(|port| self.is_running(**port))
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Client ports of all nodes, running or killed, in creation order.
    pub(crate) fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// Client ports of the running nodes.
    pub(crate) fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .map(|node| node.port)
            .collect()
    }

    fn is_running(&self, port: u16) -> bool {
        self.live_ports().contains(&port)
    }

    /// The cluster as the first live node that answers sees it.
    pub(crate) async fn nodes(&self) -> Vec<ClusterNode> {
        let mut errors = Vec::new();
        for port in self.live_ports() {
            match self.try_nodes_from(port).await {
                Ok(view) => return view,
                Err(e) => errors.push(format!("port {port}: {e}")),
            }
        }
        panic!("no live cluster node answered CLUSTER NODES: {errors:?}");
    }

    /// The cluster as the node on `port` sees it.
    pub(crate) async fn nodes_from(&self, port: u16) -> Vec<ClusterNode> {
        self.try_nodes_from(port)
            .await
            .unwrap_or_else(|e| panic!("CLUSTER NODES on port {port}: {e}"))
    }

    async fn try_nodes_from(&self, port: u16) -> Result<Vec<ClusterNode>, String> {
        let value = query(port, &["CLUSTER", "NODES"]).await?;
        Ok(topology::parse_cluster_nodes(&text(&value)))
    }

    /// The hash slot of `key` (CRC16-XMODEM of its hash tag, modulo 16384).
    pub(crate) fn slot_of(key: &str) -> u16 {
        topology::slot_of(key)
    }

    /// Port of the master serving `slot`, as a live node sees it now.
    pub(crate) async fn master_of_slot(&self, slot: u16) -> u16 {
        self.nodes()
            .await
            .iter()
            .find(|node| node.serves(slot))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
            .port
    }

    /// The node id of the node on `port`, as it says itself.
    pub(crate) async fn id_of(&self, port: u16) -> String {
        self.command_text(port, &["CLUSTER", "MYID"]).await
    }

    /// Kills the node on `port` (SIGKILL) and waits for it to exit. Its
    /// port and files are kept for [`RedisCluster::restart`].
    pub(crate) fn kill(&mut self, port: u16) {
        let node = self.process_mut(port);
        let mut child = node
            .child
            .take()
            .unwrap_or_else(|| panic!("node {port} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills (SIGKILL) the master serving `slot`; returns its port.
    pub(crate) async fn kill_master_of_slot(&mut self, slot: u16) -> u16 {
        let port = self.master_of_slot(slot).await;
        self.kill(port);
        port
    }

    /// Waits until a running node serves `slot` in the view of every live
    /// node and every live node reports `cluster_state:ok`: after
    /// [`RedisCluster::kill_master_of_slot`], a replica has taken over.
    /// Returns the new master's port.
    pub(crate) async fn wait_failover(&self, slot: u16, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            let problem = match self.failover_state(slot).await {
                Ok(port) => return port,
                Err(problem) => problem,
            };
            if Instant::now() > deadline {
                panic!(
                    "no failover of slot {slot} within {timeout:?}: {problem}\n{}",
                    self.log_tails(10)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn failover_state(&self, slot: u16) -> Result<u16, String> {
        let live = self.live_ports();
        let mut owner = None;
        for &port in &live {
            let state = info_field(port, &["CLUSTER", "INFO"], "cluster_state").await?;
            if state != "ok" {
                return Err(format!("port {port}: cluster_state:{state}"));
            }
            let view = self.try_nodes_from(port).await?;
            let serving = view.iter().find(|node| node.serves(slot)).map(|n| n.port);
            match serving {
                Some(p) if live.contains(&p) && owner.is_none_or(|o| o == p) => owner = Some(p),
                other => return Err(format!("port {port} sees slot {slot} at {other:?}")),
            }
        }
        owner.ok_or_else(|| "no live node".to_string())
    }

    /// Starts a killed node again on its port and directory and waits
    /// (20 s) until it is back: every live node reports `cluster_state:ok`,
    /// no longer flags it as failed and sees the role (and master) it
    /// claims; as a replica (a failed-over master comes back as one) its
    /// replication link is up, as a master it serves slots. Restart a
    /// master only after its slots failed over, or it returns as their
    /// master with an empty data set.
    pub(crate) async fn restart(&mut self, port: u16) {
        let timeout = self.node_timeout_ms;
        let node = self.process_mut(port);
        assert!(
            node.child.is_none(),
            "kill node {port} before restarting it"
        );
        node.child = Some(spawn_node(port, timeout, &node.dir, &node.log));
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let problem = self.rejoin_problem(port).await;
            let Some(problem) = problem else { return };
            if Instant::now() > deadline {
                panic!(
                    "node {port} did not rejoin within {HEALTHY_TIMEOUT:?}: {problem}\n{}",
                    self.log_tails(10)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn rejoin_problem(&self, port: u16) -> Option<String> {
        // What the node says of itself: a master must serve slots (a
        // failed-over master first returns claiming its old slots, is seen
        // as a slot-less master, and only then learns it is a replica).
        let own_view = match self.try_nodes_from(port).await {
            Ok(view) => view,
            Err(e) => return Some(e),
        };
        let Some(me) = own_view.iter().find(|node| node.myself) else {
            return Some("no myself line".to_string());
        };
        match me.role {
            Role::Master if me.slots.is_empty() => return Some("master without slots".into()),
            Role::Master => {}
            Role::Replica => {
                let link = info_field(port, &["INFO", "replication"], "master_link_status").await;
                if link.as_deref() != Ok("up") {
                    return Some(format!("replication link {link:?}"));
                }
            }
        }
        for live in self.live_ports() {
            let state = match info_field(live, &["CLUSTER", "INFO"], "cluster_state").await {
                Ok(state) => state,
                Err(e) => return Some(format!("port {live}: {e}")),
            };
            if state != "ok" {
                return Some(format!("port {live}: cluster_state:{state}"));
            }
            let view = match self.try_nodes_from(live).await {
                Ok(view) => view,
                Err(e) => return Some(e),
            };
            match view.iter().find(|node| node.port == port) {
                Some(node)
                    if !node.failed
                        && node.connected
                        && node.role == me.role
                        && node.master_id == me.master_id => {}
                other => return Some(format!("port {live} sees {other:?}, it says {me:?}")),
            }
        }
        None
    }

    fn process_mut(&mut self, port: u16) -> &mut ClusterProcess {
        self.nodes
            .iter_mut()
            .find(|node| node.port == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// Moves `slot` to the master on `to_port` with the documented steps,
    /// in batches of 100 keys; see [`SlotMigration`] for a stepwise move
    /// with traffic in between.
    pub(crate) async fn migrate_slot(&self, slot: u16, to_port: u16) {
        let migration = SlotMigration::begin(self, slot, to_port).await;
        while migration.move_keys(100).await > 0 {}
        migration.finish().await;
    }

    /// Runs one command on the node on `port`; panics on an error reply
    /// (use [`RedisCluster::try_command`] to see `MOVED` and friends).
    pub(crate) async fn command(&self, port: u16, args: &[&str]) -> redis::Value {
        query(port, args)
            .await
            .unwrap_or_else(|e| panic!("redis command {args:?} on port {port}: {e}"))
    }

    /// Runs one command on the node on `port`; an error reply is returned
    /// as its text (e.g. `MOVED 3999 127.0.0.1:30002`).
    pub(crate) async fn try_command(
        &self,
        port: u16,
        args: &[&str],
    ) -> Result<redis::Value, String> {
        query(port, args).await
    }

    /// Like [`RedisCluster::command`], for a reply that is text (INFO,
    /// CLUSTER NODES, GET of a string).
    pub(crate) async fn command_text(&self, port: u16, args: &[&str]) -> String {
        text(&self.command(port, args).await)
    }

    /// `PUBSUB SHARDCHANNELS` on every live master: which shard channels
    /// have subscribers on which node.
    pub(crate) async fn shard_channels(&self) -> Vec<(u16, Vec<String>)> {
        let masters: Vec<u16> = self
            .nodes()
            .await
            .iter()
            .filter(|node| node.role == Role::Master && self.is_running(node.port))
            .map(|node| node.port)
            .collect();
        self.channels_on(&masters, "SHARDCHANNELS").await
    }

    /// `PUBSUB CHANNELS` on every live node: which classic channels have
    /// subscribers on which node.
    pub(crate) async fn classic_channels(&self) -> Vec<(u16, Vec<String>)> {
        self.channels_on(&self.live_ports(), "CHANNELS").await
    }

    async fn channels_on(&self, ports: &[u16], subcommand: &str) -> Vec<(u16, Vec<String>)> {
        let mut all = Vec::new();
        for &port in ports {
            let value = self.command(port, &["PUBSUB", subcommand]).await;
            let mut channels: Vec<String> = redis::from_redis_value(value)
                .unwrap_or_else(|e| panic!("PUBSUB {subcommand} on port {port}: {e}"));
            channels.sort();
            all.push((port, channels));
        }
        all
    }

    /// Calls per command on the node on `port` since it started (or since
    /// `CONFIG RESETSTAT`), from `INFO commandstats`; names are lower case,
    /// subcommands as `cluster|nodes`. The harness's own calls count too
    /// (each of its connections sends `CLIENT SETINFO`, and it asks `INFO`
    /// and `CLUSTER NODES`): compare the data commands before and after.
    pub(crate) async fn commandstats(&self, port: u16) -> HashMap<String, u64> {
        let info = self.command_text(port, &["INFO", "commandstats"]).await;
        info.lines()
            .filter_map(|line| {
                let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = stats
                    .split(',')
                    .find_map(|field| field.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_string(), calls))
            })
            .collect()
    }

    /// Ports of the masters serving slots now.
    pub(crate) async fn master_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .nodes()
            .await
            .iter()
            .filter(|node| node.role == Role::Master && !node.slots.is_empty() && !node.failed)
            .map(|node| node.port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// How many clients the node on `port` has subscribed to the shard
    /// channel `channel` (`PUBSUB SHARDNUMSUB`).
    pub(crate) async fn shard_subscribers(&self, port: u16, channel: &str) -> u64 {
        match self
            .command(port, &["PUBSUB", "SHARDNUMSUB", channel])
            .await
        {
            redis::Value::Array(items) => items
                .get(1)
                .and_then(|v| redis::from_redis_value_ref::<u64>(v).ok())
                .unwrap_or(0),
            other => panic!("PUBSUB SHARDNUMSUB on {port}: {other:?}"),
        }
    }

    /// The process-wide test cluster (3 masters + 3 replicas), started by
    /// the first test that asks and shared by every test that only needs a
    /// working cluster: each keeps to its own key prefix. A watchdog process
    /// kills its servers when the test binary exits (a static is never
    /// dropped).
    pub(crate) async fn shared() -> &'static RedisCluster {
        static SHARED: tokio::sync::OnceCell<RedisCluster> = tokio::sync::OnceCell::const_new();
        SHARED
            .get_or_init(|| async {
                // Nothing is meant to fail over here: a long node timeout,
                // so a node starved of CPU by a busy test run is not
                // mistaken for dead.
                let cluster = RedisCluster::start_with_timeout(3, 1, SHARED_NODE_TIMEOUT_MS).await;
                cluster.watch_parent();
                cluster
            })
            .await
    }

    /// Starts a shell that waits for this test process to exit, then kills
    /// every server of the cluster and removes its directory.
    // The watchdog must outlive this process, so it is never waited for;
    // it ends only after this process has, and cannot linger as a zombie.
    #[allow(clippy::zombie_processes)]
    fn watch_parent(&self) {
        let pids: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|node| node.child.as_ref().map(|c| c.id().to_string()))
            .collect();
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -9 {pids} 2>/dev/null; rm -rf '{dir}'",
            me = std::process::id(),
            pids = pids.join(" "),
            dir = self.dir.path().display(),
        );
        std::process::Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the shared cluster's watchdog");
    }

    /// The last `lines` lines of every node's log, for failure reports.
    fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|node| {
                format!(
                    "--- redis-server {} ({}), last {lines} log lines ---\n{}",
                    node.port,
                    if node.child.is_some() {
                        "running"
                    } else {
                        "killed"
                    },
                    read_tail(&node.log, lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.nodes.is_empty() {
            eprintln!("{}", self.log_tails(20));
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
