//! Huddle's integration tests: one test crate, one module per topic, all
//! black-box against the real `huddle` binary (nodes as child processes,
//! private `redis-server`s, real WebSocket and HTTP clients).
//!
//! The harness lives in [`common`], split by concern. All topics share one
//! binary, so the harness may run any two tests side by side; the few heavy
//! ones take [`common::heavy`] so that heavy tests of different topics
//! never overlap.
//!
//! Run one topic with `cargo test --test integration cluster::`.

mod common;

mod abuse;
mod bench_abuse;
mod bench_storm;
mod closes;
mod cluster;
mod faults;
mod fuzz_frames;
mod listen;
mod memory_engine;
mod messages;
mod moderation;
mod nginx_cluster;
mod operations;
mod presence;
mod protocol_errors;
mod reads;
mod redis_cluster_harness;
mod redis_cluster_mode;
mod redis_tls;
mod resync;
mod rooms;
mod store_conformance;
mod storm;
mod websocket;
