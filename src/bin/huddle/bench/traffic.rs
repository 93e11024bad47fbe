//! `fanout` and `saturate`: rooms of clients, some of them senders, every
//! client measuring send → deliver latency and the order of what it gets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::client::{call, connect, create_rooms};
use super::report::{ClientStats, Report, latency};
use super::system::cpu_seconds;
use crate::cli::{BenchArgs, BenchMode};

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    event: Option<&'a str>,
    #[serde(default)]
    message: Option<IncomingMessage>,
    #[serde(default)]
    error: Option<IncomingError>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct IncomingMessage {
    content: String,
}

#[derive(Deserialize)]
struct IncomingError {
    code: String,
}

struct Plan {
    room: String,
    url: String,
    sender: bool,
}

pub(super) async fn traffic(args: &BenchArgs) -> Result<Report, String> {
    let saturate = matches!(args.mode, BenchMode::Saturate);
    // One connection creates the rooms.
    let room_count = args.rooms_or(10);
    let (_admin, rooms) = create_rooms(&args.url[0], room_count, "bench").await?;
    let mut plans = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        for c in 0..args.clients {
            plans.push(Plan {
                room: room.clone(),
                url: args.url[(r * args.clients + c) % args.url.len()].clone(),
                sender: c < args.senders,
            });
        }
    }
    let senders = (room_count * args.senders).max(1);
    let period = Duration::from_secs_f64(senders as f64 / args.rate.max(1) as f64);
    let start = Instant::now();
    let ready = Arc::new(tokio::sync::Barrier::new(plans.len() + 1));
    let stop_at = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = Vec::new();
    for (i, plan) in plans.into_iter().enumerate() {
        let ready = ready.clone();
        let stop_at = stop_at.clone();
        let window = args.window;
        let warmup = args.warmup;
        tasks.push(tokio::spawn(async move {
            client_task(
                i, plan, start, ready, stop_at, period, saturate, window, warmup,
            )
            .await
        }));
    }
    ready.wait().await;
    // Everyone has joined: measure from here.
    let cpu_before = cpu_seconds(&args.server_pid);
    let began = Instant::now();
    let _ = stop_at.set(began + args.warmup + args.duration);
    tokio::time::sleep(args.warmup + args.duration).await;
    let cpu_after = cpu_seconds(&args.server_pid);
    let seconds = began.elapsed().as_secs_f64();
    let mut total = ClientStats::new();
    for t in tasks {
        match t.await {
            Ok(Ok(stats)) => total.merge(stats),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(format!("client task failed: {e}")),
        }
    }
    let server_cpu_each: Vec<f64> = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => a.iter().zip(&b).map(|(a, b)| b - a).collect(),
        _ => Vec::new(),
    };
    let server_cpu = (!server_cpu_each.is_empty()).then(|| server_cpu_each.iter().sum::<f64>());
    let deliveries_expected = total.acked * args.clients as u64;
    Ok(Report {
        mode: if saturate { "saturate" } else { "fanout" },
        nodes: args.url.len(),
        clients: room_count * args.clients,
        seconds,
        sent: total.sent,
        acked: total.acked,
        deliveries_expected,
        deliveries: total.deliveries,
        out_of_order: total.out_of_order,
        gaps: total.gaps,
        deliveries_per_sec: total.deliveries as f64 / seconds,
        latency_us: latency(&total.latency),
        errors: total.errors,
        server_cpu_seconds: server_cpu,
        server_cpu_by_pid: args
            .server_pid
            .iter()
            .zip(&server_cpu_each)
            .map(|(pid, cpu)| (pid.to_string(), *cpu))
            .collect(),
        deliveries_per_server_cpu_sec: server_cpu
            .filter(|c| *c > 0.0)
            .map(|c| total.deliveries as f64 / c),
        rss_per_connection: None,
        connect_failures: 0,
    })
}

#[allow(clippy::too_many_arguments)]
async fn client_task(
    index: usize,
    plan: Plan,
    start: Instant,
    ready: Arc<tokio::sync::Barrier>,
    stop_at: Arc<std::sync::OnceLock<Instant>>,
    period: Duration,
    saturate: bool,
    window: usize,
    warmup: Duration,
) -> Result<ClientStats, String> {
    let mut ws = connect(&plan.url).await?;
    call(
        &mut ws,
        1,
        json!({"type": "hello", "name": format!("bench-{index}")}),
    )
    .await?;
    let joined = call(&mut ws, 2, json!({"type": "room.join", "room": plan.room})).await?;
    let mut last_seq = joined["room"]["last_seq"].as_u64().unwrap_or(0);
    let tag = format!("b{index}");
    ready.wait().await;
    let stop = *stop_at.wait();
    let began = Instant::now();
    let mut stats = ClientStats::new();
    let mut next_id: u64 = 10;
    let mut in_flight = 0usize;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let send_msg = |ws_id: u64| {
        let nanos = start.elapsed().as_nanos();
        let content = format!("{tag}:{nanos}");
        json!({"type": "message.send", "id": ws_id, "room": plan.room, "content": content})
            .to_string()
    };
    if plan.sender && saturate {
        for _ in 0..window {
            ws.feed(WsMessage::Text(send_msg(next_id).into()))
                .await
                .map_err(|e| e.to_string())?;
            next_id += 1;
            stats.sent += 1;
            in_flight += 1;
        }
        ws.flush().await.map_err(|e| e.to_string())?;
    }
    // After the sending phase, read on for in-flight deliveries.
    let drain_until = stop + Duration::from_secs(2);
    loop {
        let now = Instant::now();
        if now >= drain_until {
            break;
        }
        let sending = plan.sender && now < stop;
        tokio::select! {
            _ = ticker.tick(), if sending && !saturate => {
                ws.send(WsMessage::Text(send_msg(next_id).into())).await.map_err(|e| e.to_string())?;
                next_id += 1;
                stats.sent += 1;
                in_flight += 1;
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(drain_until)) => break,
            msg = ws.next() => {
                let Some(msg) = msg else { break };
                let WsMessage::Text(text) = msg.map_err(|e| e.to_string())? else { continue };
                let frame: Incoming<'_> = match serde_json::from_str(&text) {
                    Ok(f) => f,
                    Err(_) => continue,
                };
                match frame.kind {
                    "reply" => {
                        in_flight = in_flight.saturating_sub(1);
                        if frame.ok == Some(true) {
                            stats.acked += 1;
                        } else if let Some(e) = frame.error {
                            *stats.errors.entry(e.code).or_default() += 1;
                        }
                        let _ = (frame.id, frame.data);
                        if saturate && sending {
                            ws.send(WsMessage::Text(send_msg(next_id).into())).await.map_err(|e| e.to_string())?;
                            next_id += 1;
                            stats.sent += 1;
                            in_flight += 1;
                        }
                    }
                    "error" => {
                        if let Some(e) = frame.error {
                            *stats.errors.entry(e.code).or_default() += 1;
                        }
                    }
                    "event" => {
                        let Some(seq) = frame.seq else { continue };
                        if !frame.event.is_some_and(|e| e.starts_with("message.")) {
                            continue;
                        }
                        if seq <= last_seq {
                            stats.out_of_order += 1;
                        } else {
                            stats.gaps += seq - last_seq - 1;
                            last_seq = seq;
                        }
                        let Some(m) = frame.message else { continue };
                        let Some((_, sent_ns)) = m.content.split_once(':') else { continue };
                        let Ok(sent_ns) = sent_ns.parse::<u128>() else { continue };
                        stats.deliveries += 1;
                        let sent_at = Duration::from_nanos(sent_ns as u64);
                        if sent_at >= (began - start) + warmup {
                            let now_ns = start.elapsed();
                            let us = now_ns.saturating_sub(sent_at).as_micros() as u64;
                            let _ = stats.latency.record(us.max(1));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let _ = ws.close(None).await;
    Ok(stats)
}
