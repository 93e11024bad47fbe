//! Ready-made set-ups the topic modules share: two nodes on one Redis,
//! with or without tokens, a single memory-engine node, and connected
//! clients that have said hello.

use super::FAST;
use super::client::Client;
use super::node::{Node, mint_token};
use super::redis_server::RedisServer;

/// The HS256 secret of [`two_jwt_nodes`] and [`user`].
pub(crate) const JWT_SECRET: &str = "cluster-test-secret";

/// Starts Redis and two nodes (`n1`, `n2`) on it with `extra` flags.
pub(crate) async fn two_nodes(extra: &[&str]) -> (RedisServer, Node, Node) {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let a = Node::start(Some(&url), "n1", extra).await;
    let b = Node::start(Some(&url), "n2", extra).await;
    (redis, a, b)
}

/// Two nodes that require HS256 tokens, so one user can hold several
/// connections (guests get a fresh id on every hello).
pub(crate) async fn two_jwt_nodes() -> (RedisServer, Node, Node) {
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
