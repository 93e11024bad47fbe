//! `huddle bench`: a load generator that speaks the client protocol to one
//! or more nodes, so operators can measure what a node carries.
//!
//! Modes:
//! - `fanout`: R rooms × C clients spread round-robin over the node URLs;
//!   the first S clients of each room send at a fixed aggregate rate. Every
//!   client measures send→deliver latency of every message of its room.
//! - `saturate`: the same topology, but each sender keeps W messages in
//!   flight (a new send per acknowledgement).
//! - `connections`: N idle connections (hello + join), held open.
//!
//! Latency is measured in one process with one monotonic clock: a message's
//! content carries its send time. With `--server-pid` (nodes and Redis) the
//! report adds the servers' CPU seconds over the measured window, and for
//! `connections` their resident memory per connection. The nodes' rate limit
//! must be raised for anything but tiny runs (`--rate-limit 100000
//! --rate-burst 200000`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::cli::{BenchArgs, BenchMode};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a run measured; printed as one JSON line.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Mode.
    mode: &'static str,
    /// Node URLs.
    nodes: usize,
    /// Rooms × clients per room (or connections).
    clients: usize,
    /// Measured seconds (sending phase).
    seconds: f64,
    /// Messages sent.
    sent: u64,
    /// Messages acknowledged `ok`.
    acked: u64,
    /// Deliveries expected: acknowledged messages × clients in their room.
    deliveries_expected: u64,
    /// Deliveries seen.
    deliveries: u64,
    /// Events whose seq was not the next one (a repeat or a step back).
    out_of_order: u64,
    /// Seqs skipped.
    gaps: u64,
    /// Deliveries per second over the sending phase.
    deliveries_per_sec: f64,
    /// Latency send → deliver, microseconds.
    latency_us: Latency,
    /// Error replies by code.
    errors: BTreeMap<String, u64>,
    /// CPU seconds of the `--server-pid` processes during the run.
    server_cpu_seconds: Option<f64>,
    /// The same, per `--server-pid`, keyed by PID.
    server_cpu_by_pid: BTreeMap<String, f64>,
    /// Deliveries per server CPU-second.
    deliveries_per_server_cpu_sec: Option<f64>,
    /// `connections`: server RSS growth per connection, bytes.
    rss_per_connection: Option<f64>,
    /// `connections`: connections that failed to open.
    connect_failures: u64,
}

/// Latency percentiles.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Latency {
    /// Median.
    p50: u64,
    /// 90th percentile.
    p90: u64,
    /// 99th percentile.
    p99: u64,
    /// 99.9th percentile.
    p999: u64,
    /// Maximum.
    max: u64,
}

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

/// What one client saw.
struct ClientStats {
    latency: Histogram<u64>,
    deliveries: u64,
    out_of_order: u64,
    gaps: u64,
    sent: u64,
    acked: u64,
    errors: BTreeMap<String, u64>,
}

impl ClientStats {
    fn new() -> ClientStats {
        ClientStats {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| {
                Histogram::new(3)
                    .unwrap_or_else(|_| unreachable!("3 significant figures are valid"))
            }),
            deliveries: 0,
            out_of_order: 0,
            gaps: 0,
            sent: 0,
            acked: 0,
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: ClientStats) {
        let _ = self.latency.add(&other.latency);
        self.deliveries += other.deliveries;
        self.out_of_order += other.out_of_order;
        self.gaps += other.gaps;
        self.sent += other.sent;
        self.acked += other.acked;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// Runs a benchmark and prints a summary and one JSON line.
pub(crate) async fn run(args: BenchArgs) -> Result<Report, String> {
    if args.url.is_empty() {
        return Err("give at least one --url ws://HOST:PORT/ws".into());
    }
    let report = match args.mode {
        BenchMode::Fanout | BenchMode::Saturate => traffic(&args).await?,
        BenchMode::Connections => connections(&args).await?,
    };
    print_summary(&report);
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    );
    Ok(report)
}

async fn connect(url: &str) -> Result<Ws, String> {
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .map_err(|_| format!("{url}: connect timed out"))?
    .map_err(|e| format!("{url}: {e}"))?;
    Ok(ws)
}

/// Sends a request and waits for its reply, skipping other frames.
async fn call(
    ws: &mut Ws,
    id: u64,
    mut req: serde_json::Value,
) -> Result<serde_json::Value, String> {
    req["id"] = json!(id);
    ws.send(WsMessage::Text(req.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no reply within 10 s".to_string())?
            .ok_or("connection closed")?
            .map_err(|e| e.to_string())?;
        if let WsMessage::Text(text) = msg {
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if v["type"] == "reply" && v["id"] == id {
                if v["ok"] == true {
                    return Ok(v["data"].clone());
                }
                return Err(format!("{} failed: {}", req["type"], v["error"]));
            }
        }
    }
}

/// CPU seconds (user + system) used so far by each of `pids`.
fn cpu_seconds(pids: &[u32]) -> Option<Vec<f64>> {
    if pids.is_empty() {
        return None;
    }
    let ticks = clock_ticks();
    let mut each = Vec::with_capacity(pids.len());
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        each.push((utime + stime) / ticks);
    }
    Some(each)
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of `pids`, bytes.
fn rss_bytes(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0.0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        total += kb * 1024.0;
    }
    Some(total)
}

struct Plan {
    room: String,
    url: String,
    sender: bool,
}

/// Creates `count` rooms named `prefix N` from one connection, which the
/// caller keeps open for the run (closing it would post "left" messages).
async fn create_rooms(url: &str, count: usize, prefix: &str) -> Result<(Ws, Vec<String>), String> {
    let mut admin = connect(url).await?;
    call(
        &mut admin,
        1,
        json!({"type": "hello", "name": "bench-admin"}),
    )
    .await?;
    let mut rooms = Vec::with_capacity(count);
    for r in 0..count {
        let data = call(
            &mut admin,
            2 + r as u64,
            json!({"type": "room.create", "name": format!("{prefix} {r}"), "max_participants": 10000}),
        )
        .await?;
        rooms.push(data["room"]["id"].as_str().unwrap_or_default().to_owned());
    }
    Ok((admin, rooms))
}

async fn traffic(args: &BenchArgs) -> Result<Report, String> {
    let saturate = matches!(args.mode, BenchMode::Saturate);
    // One connection creates the rooms.
    let (_admin, rooms) = create_rooms(&args.url[0], args.rooms, "bench").await?;
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
    let senders = (args.rooms * args.senders).max(1);
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
        clients: args.rooms * args.clients,
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

fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        p50: h.value_at_quantile(0.50),
        p90: h.value_at_quantile(0.90),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
    }
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

async fn connections(args: &BenchArgs) -> Result<Report, String> {
    let rss_before = rss_bytes(&args.server_pid);
    let (_admin, rooms) = create_rooms(&args.url[0], args.rooms.max(1), "idle").await?;
    let began = Instant::now();
    let hold = args.duration;
    let sem = Arc::new(tokio::sync::Semaphore::new(200));
    let opened = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..args.connections {
        let url = args.url[i % args.url.len()].clone();
        let room = rooms[i % rooms.len()].clone();
        let sem = sem.clone();
        let opened = opened.clone();
        tasks.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut ws = connect(&url).await?;
            call(
                &mut ws,
                1,
                json!({"type": "hello", "name": format!("idle-{i}")}),
            )
            .await?;
            call(&mut ws, 2, json!({"type": "room.join", "room": room})).await?;
            drop(permit);
            opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<Ws, String>(ws)
        }));
    }
    let mut sockets = Vec::new();
    let mut failures = 0u64;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(ws)) => sockets.push(ws),
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
    let connected = sockets.len();
    eprintln!(
        "bench: {connected} connections open after {:.1} s; holding {:?}",
        began.elapsed().as_secs_f64(),
        hold
    );
    // Hold them, answering pings.
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let until = tokio::time::Instant::now() + hold;
                while let Ok(Some(Ok(_))) = tokio::time::timeout_at(until, ws.next()).await {}
                ws
            })
        })
        .collect();
    tokio::time::sleep(hold / 2).await;
    let rss_after = rss_bytes(&args.server_pid);
    let mut held = Vec::new();
    for r in readers {
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
        latency_us: Latency::default(),
        errors: BTreeMap::new(),
        server_cpu_seconds: None,
        server_cpu_by_pid: BTreeMap::new(),
        deliveries_per_server_cpu_sec: None,
        rss_per_connection,
        connect_failures: failures,
    })
}

fn print_summary(r: &Report) {
    eprintln!(
        "== huddle bench {} ({} node URL(s), {} clients) ==",
        r.mode, r.nodes, r.clients
    );
    if r.mode == "connections" {
        eprintln!(
            "connections open: {}   failed: {}",
            r.clients, r.connect_failures
        );
        if let Some(b) = r.rss_per_connection {
            eprintln!(
                "server RSS per connection: {:.0} bytes ({:.2} KiB)",
                b,
                b / 1024.0
            );
        }
        return;
    }
    let pct = if r.deliveries_expected > 0 {
        100.0 * r.deliveries as f64 / r.deliveries_expected as f64
    } else {
        0.0
    };
    eprintln!(
        "sent {}  acked {}  deliveries {}/{} ({pct:.2} %)  out of order {}  gaps {}",
        r.sent, r.acked, r.deliveries, r.deliveries_expected, r.out_of_order, r.gaps
    );
    eprintln!(
        "deliveries/s {:.0} over {:.1} s",
        r.deliveries_per_sec, r.seconds
    );
    let l = &r.latency_us;
    eprintln!(
        "latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    if let (Some(cpu), Some(per)) = (r.server_cpu_seconds, r.deliveries_per_server_cpu_sec) {
        eprintln!("server CPU {cpu:.2} s → {per:.0} deliveries per server CPU-second");
        let each: Vec<String> = r
            .server_cpu_by_pid
            .iter()
            .map(|(pid, s)| format!("{pid}: {s:.2} s"))
            .collect();
        eprintln!("  by process: {}", each.join(", "));
    }
    if !r.errors.is_empty() {
        eprintln!("errors: {:?}", r.errors);
    }
}
