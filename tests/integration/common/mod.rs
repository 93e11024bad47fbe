//! Black-box harness for Huddle's integration tests, split by concern.
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
//!
//! - [`process`]: temporary directories, free ports, signals;
//! - [`redis_server`]: a private `redis-server`;
//! - [`redis_cluster`]: a private Redis Cluster (masters, replicas,
//!   failover, slot migration, per-node pub/sub and command counters);
//! - [`node`]: a `huddle serve` child, tokens from `huddle token`;
//! - [`setup`]: ready-made nodes and users the topic modules share;
//! - [`http`]: plain HTTP GETs;
//! - [`client`]: the protocol client;
//! - [`raw`]: a hand-made WebSocket client for transport-level misbehaviour;
//! - [`assertions`]: reading and checking JSON frames;
//! - [`heavy`]: one heavy test at a time across the whole crate.

use std::time::Duration;

mod assertions;
mod client;
mod heavy;
mod http;
mod node;
mod process;
mod raw;
mod redis_cluster;
mod redis_server;
mod setup;

pub(crate) use assertions::*;
pub(crate) use client::*;
pub(crate) use heavy::heavy;
pub(crate) use http::{http_get_at, try_http_get_at};
pub(crate) use node::*;
pub(crate) use process::*;
pub(crate) use raw::*;
pub(crate) use redis_cluster::{RedisCluster, Role, SlotMigration};
pub(crate) use redis_server::RedisServer;
pub(crate) use setup::*;

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
