//! `huddle bench`: a load generator that speaks the client protocol to one
//! or more nodes, so operators can measure what a node carries.
//!
//! Modes (one file each; `client`, `report` and `system` are shared):
//! - `fanout`: R rooms × C clients spread round-robin over the node URLs;
//!   the first S clients of each room send at a fixed aggregate rate. Every
//!   client measures send→deliver latency of every message of its room.
//! - `saturate`: the same topology, but each sender keeps W messages in
//!   flight (a new send per acknowledgement).
//! - `connections`: N idle connections (hello + join), held open.
//! - `abuse`: the issue-15 abuse probe (a room-creation flood, then join
//!   code guessing) against nodes on this machine; it reports what got
//!   through (see `abuse`).
//! - `storm`: the issue-13 reconnection storm: kill -9 a node under many
//!   clients (in worker processes) and measure how they come back on the
//!   others, what they lost and what was announced (see `storm`).
//!
//! Latency is measured in one process with one monotonic clock: a message's
//! content carries its send time. With `--server-pid` (nodes and Redis) the
//! report adds the servers' CPU seconds over the measured window, and for
//! `connections` their resident memory per connection. The nodes' rate limit
//! must be raised for anything but tiny runs (`--rate-limit 100000
//! --rate-burst 200000`).

mod abuse;
mod abuse_report;
mod client;
mod connections;
mod report;
mod storm;
mod storm_client;
mod storm_report;
mod storm_worker;
mod system;
mod traffic;

use crate::cli::{BenchArgs, BenchMode};

/// Runs a benchmark and prints a summary and one JSON line.
pub(crate) async fn run(args: BenchArgs) -> Result<(), String> {
    if args.url.is_empty() {
        return Err("give at least one --url ws://HOST:PORT/ws".into());
    }
    match args.mode {
        BenchMode::Fanout | BenchMode::Saturate => {
            let report = traffic::traffic(&args).await?;
            report::print_summary(&report);
            print_json(&report)
        }
        BenchMode::Connections => {
            let report = connections::connections(&args).await?;
            report::print_summary(&report);
            print_json(&report)
        }
        BenchMode::Storm if args.worker => storm_worker::run().await,
        BenchMode::Storm => {
            let report = storm::storm(&args).await?;
            storm_report::print_summary(&report);
            print_json(&report)
        }
        BenchMode::Abuse => {
            let report = abuse::abuse(&args).await?;
            abuse_report::print_summary(&report);
            print_json(&report)
        }
    }
}

/// The report as one JSON line on stdout (the summary goes to stderr), for
/// scripts.
fn print_json(report: &impl serde::Serialize) -> Result<(), String> {
    println!(
        "{}",
        serde_json::to_string(report).map_err(|e| e.to_string())?
    );
    Ok(())
}
