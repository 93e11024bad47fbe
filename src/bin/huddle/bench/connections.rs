//! `connections`: N idle connections (hello + join) held open, and the
//! servers' resident memory per connection. The latency reported is each
//! connection's connect + hello + join time; with `--join-rate` the
//! connections arrive at that rate (a crowd joining, `--rooms 1` for one
//! big room), otherwise 200 at a time; the join times are also given by
//! the 3 s window of the run they started in (a crowd filling its rooms
//! costs more as they grow). Every connection is read from the moment its
//! join is answered, as a real client's is: events the server
//! queued for a client nobody reads would count as the server's memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::json;

use serde::de::IgnoredAny;

use super::client::{Ws, call_as, connect, create_rooms};
use super::report::{ClientStats, Report, latency};
use super::system::rss_bytes;
use crate::cli::BenchArgs;

/// Connections opened by default.
const DEFAULT_CONNECTIONS: usize = 1000;

/// The windows of the run the join times are also reported by.
const PHASE: std::time::Duration = std::time::Duration::from_secs(3);

pub(super) async fn connections(args: &BenchArgs) -> Result<Report, String> {
    let rss_before = rss_bytes(&args.server_pid);
    let (_admin, rooms) = create_rooms(&args.url[0], args.rooms_or(10).max(1), "idle").await?;
    let began = Instant::now();
    let hold = args.duration;
    let sem = Arc::new(tokio::sync::Semaphore::new(200));
    let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Readers run until this says stop (after the hold).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut pace = args
        .join_rate
        .filter(|r| *r > 0.0)
        .map(|r| tokio::time::interval(std::time::Duration::from_secs_f64(1.0 / r)));
    let mut tasks = Vec::new();
    for i in 0..args.connections.unwrap_or(DEFAULT_CONNECTIONS) {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let url = args.url[i % args.url.len()].clone();
        let room = rooms[i % rooms.len()].clone();
        let sem = sem.clone();
        let opened = opened.clone();
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.map_err(|e| e.to_string())?;
            let started = Instant::now();
            let mut ws = connect(&url).await?;
            call_as::<IgnoredAny>(
                &mut ws,
                1,
                json!({"type": "hello", "name": format!("idle-{i}")}),
            )
            .await?;
            call_as::<IgnoredAny>(&mut ws, 2, json!({"type": "room.join", "room": room})).await?;
            let took = started.elapsed();
            drop(permit);
            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, String>((tokio::spawn(drain(ws, stop)), took, started))
        }));
    }
    let mut joins = ClientStats::new();
    let mut sockets = Vec::new();
    let mut failures = 0u64;
    let mut first_error = None;
    // Join times by when the join started (a window of `PHASE`): a crowd
    // filling its rooms costs more as they grow, and this shows where.
    let mut phases: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for t in tasks {
        match t.await {
            Ok(Ok((reader, took, started))) => {
                phases
                    .entry((started - began).as_secs() / PHASE.as_secs())
                    .or_default()
                    .push(took.as_micros() as u64);
                let _ = joins.latency.record((took.as_micros() as u64).max(1));
                sockets.push(reader);
            }
            Ok(Err(e)) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = &first_error {
        eprintln!("bench: {failures} connections failed; first: {e}");
    }
    for (phase, mut took) in phases {
        took.sort_unstable();
        let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        let from = phase * PHASE.as_secs();
        eprintln!(
            "bench: joins started {from}-{} s: {}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            from + PHASE.as_secs(),
            took.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    }
    let connected = sockets.len();
    eprintln!(
        "bench: {connected} connections open after {:.1} s; holding {:?}",
        began.elapsed().as_secs_f64(),
        hold
    );
    // Hold them (their readers answer pings), measure midway.
    tokio::time::sleep(hold / 2).await;
    let rss_after = rss_bytes(&args.server_pid);
    tokio::time::sleep(hold / 2).await;
    let _ = stop_tx.send(true);
    let mut held = Vec::new();
    for r in sockets {
        if let Ok(ws) = r.await {
            held.push(ws);
        }
    }
    drop(held);
    let rss_per_connection = match (rss_before, rss_after) {
        (Some(a), Some(b)) if connected > 0 => Some((b - a) / connected as f64),
        _ => None,
    };
    Ok(Report {
        mode: "connections",
        nodes: args.url.len(),
        clients: connected,
        seconds: began.elapsed().as_secs_f64(),
        sent: 0,
        acked: 0,
        deliveries_expected: 0,
        deliveries: 0,
        out_of_order: 0,
        gaps: 0,
        deliveries_per_sec: 0.0,
        latency_us: latency(&joins.latency),
        errors: BTreeMap::new(),
        server_cpu_seconds: None,
        server_cpu_by_pid: BTreeMap::new(),
        deliveries_per_server_cpu_sec: None,
        rss_per_connection,
        connect_failures: failures,
    })
}

/// Reads (and drops) what the server sends `ws` until `stop` says so or the
/// server closes it; hands the socket back so that it closes only then.
async fn drain(mut ws: Ws, mut stop: tokio::sync::watch::Receiver<bool>) -> Ws {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return ws,
            frame = ws.next() => {
                if !matches!(frame, Some(Ok(_))) {
                    return ws;
                }
            }
        }
    }
}
