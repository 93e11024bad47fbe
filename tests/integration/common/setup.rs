//! Ready-made set-ups the topic modules share: two nodes on one Redis (or,
//! with `HUDDLE_TEST_REDIS=cluster`, on the shared Redis Cluster), with or
//! without tokens, a single memory-engine node, and connected clients that
//! have said hello.

use std::sync::atomic::{AtomicU64, Ordering};

use super::FAST;
use super::client::Client;
use super::node::{Node, mint_token};
use super::redis_cluster::RedisCluster;
use super::redis_server::RedisServer;

/// Where a test's nodes keep their state.
pub(crate) enum Backend {
    /// A private `redis-server`.
    Single(RedisServer),
    /// The process-wide test cluster (`RedisCluster::shared`), under a key
    /// prefix of this test's own.
    Cluster {
        /// `--redis-cluster` seeds.
        seeds: String,
        /// `--key-prefix`.
        prefix: String,
    },
}

impl Backend {
    /// The shared Redis Cluster when `HUDDLE_TEST_REDIS=cluster` (how
    /// `scripts/test.sh` runs the multi-node tests a second time), else a
    /// private `redis-server`.
    pub(crate) async fn start() -> Backend {
        if std::env::var("HUDDLE_TEST_REDIS").as_deref() == Ok("cluster") {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let cluster = RedisCluster::shared().await;
            Backend::Cluster {
                seeds: cluster.seeds(),
                prefix: format!("t{}:", NEXT.fetch_add(1, Ordering::SeqCst)),
            }
        } else {
            Backend::Single(RedisServer::start().await)
        }
    }

    /// The flags that put a node on this backend.
    pub(crate) fn args(&self) -> Vec<String> {
        match self {
            Backend::Single(redis) => vec!["--redis".into(), redis.url()],
            // Six Redis processes share two cores with the test run: a
            // longer call timeout keeps a starved Redis from reading as
            // down. (Tests on this backend pass no timeout of their own.)
            Backend::Cluster { seeds, prefix } => vec![
                "--redis-cluster".into(),
                seeds.clone(),
                "--key-prefix".into(),
                prefix.clone(),
                "--redis-timeout-ms".into(),
                "3000".into(),
            ],
        }
    }

    /// Starts a node `id` on this backend with `extra` flags. On the
    /// cluster it also waits (10 s at most) until the node is ready, as a
    /// balancer would: its cluster connections find the topology first.
    pub(crate) async fn node(&self, id: &str, extra: &[&str]) -> Node {
        let mut args = self.args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = Node::start(None, id, &args).await;
        if matches!(self, Backend::Cluster { .. }) {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let (status, body) = node.http_get("/readyz").await;
                if status == 200 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "node {id} on the cluster not ready within 10 s: {status} {body}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        node
    }
}

/// The HS256 secret of [`two_jwt_nodes`] and [`user`].
pub(crate) const JWT_SECRET: &str = "cluster-test-secret";

/// Starts a backend (`Backend::start`) and two nodes (`n1`, `n2`) on it
/// with `extra` flags.
pub(crate) async fn two_nodes(extra: &[&str]) -> (Backend, Node, Node) {
    let backend = Backend::start().await;
    let a = backend.node("n1", extra).await;
    let b = backend.node("n2", extra).await;
    (backend, a, b)
}

/// Starts one private Redis and two nodes on it, for tests that act on
/// that Redis itself (kill it, ask it something).
pub(crate) async fn two_nodes_on_one_redis(extra: &[&str]) -> (RedisServer, Node, Node) {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let a = Node::start(Some(&url), "n1", extra).await;
    let b = Node::start(Some(&url), "n2", extra).await;
    (redis, a, b)
}

/// Two nodes that require HS256 tokens, so one user can hold several
/// connections (guests get a fresh id on every hello).
pub(crate) async fn two_jwt_nodes() -> (Backend, Node, Node) {
    let mut args = FAST.to_vec();
    args.extend(["--jwt-secret", JWT_SECRET]);
    two_nodes(&args).await
}

/// A single memory-engine node with high rate limits plus `extra` flags.
pub(crate) async fn solo(extra: &[&str]) -> Node {
    let mut args = FAST.to_vec();
    args.extend_from_slice(extra);
    Node::start(None, "solo", &args).await
}

/// A connected guest client that has said hello.
pub(crate) async fn guest(node: &Node, name: &str) -> Client {
    let mut client = Client::connect(node).await;
    client.hello(name).await;
    client
}

/// A client authenticated as `sub` with a token signed by [`JWT_SECRET`].
pub(crate) async fn user(node: &Node, sub: &str, name: &str) -> Client {
    let mut client = Client::connect(node).await;
    let token = mint_token(JWT_SECRET, sub, name);
    let u = client.hello_token(&token, name).await;
    assert_eq!(u["id"], sub, "the token's sub is the user id: {u}");
    client
}
