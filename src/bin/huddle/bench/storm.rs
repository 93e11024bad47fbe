//! `storm`: the issue-13 reconnection storm. Clients (default 20,000) join
//! rooms (default 100) over the nodes, a share of them (default half) on
//! the victim; a sender per room on a surviving node sends all along
//! (`--send-rate` per room). When everyone has joined and the joins have
//! quieted down, the victim (`--victim-pid`) gets SIGKILL. Its clients
//! reconnect to the survivors as the web client does and resume with
//! `since`. The report says how long they took from the kill (the target:
//! all within 10 s), whether any client misses a durable seq of its room
//! from its first join to the end (the target: none lost), and the join or
//! leave announcements the survivors' clients saw (the target: none, also
//! when the dead node's sessions expire: `--observe` must cover the nodes'
//! node timeout).
//!
//! The clients live in worker processes (`storm_worker`), the senders here.
//! Users are stable, signed with the nodes' `--jwt-secret`: a guest would
//! come back as a new user.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::client::{Ws, call, connect};
use super::storm_client::{ClientPlan, now_us, token};
use super::storm_report::{Run, SenderStats, StormReport};
use super::storm_worker::{FromWorker, Plan, Stats, ToWorker};
use super::system::{cpu_seconds, rss_bytes};
use crate::cli::BenchArgs;

/// Clients by default.
const DEFAULT_CLIENTS: usize = 20_000;
/// Rooms by default.
const DEFAULT_ROOMS: usize = 100;
/// Clients per worker process when `--workers` is not given (the
/// process's open-file limit on the reference machine is 20,000).
const CLIENTS_PER_WORKER: usize = 8_000;
/// The largest room the protocol allows.
const MAX_ROOM: usize = 10_000;
/// After the senders stop: time for the last messages to arrive.
const DRAIN: Duration = Duration::from_secs(2);

/// Where each client goes: `(room, on the victim)` for client `i`. Rooms
/// are dealt round-robin, and within each room the victim gets its share
/// evenly, so every room has clients on both sides.
pub(super) fn layout(clients: usize, rooms: usize, share: f64) -> Vec<(usize, bool)> {
    let rooms = rooms.max(1);
    (0..clients)
        .map(|i| {
            let k = (i / rooms) as f64;
            let victim = ((k + 1.0) * share).floor() > (k * share).floor();
            (i % rooms, victim)
        })
        .collect()
}

/// The run's settings, checked.
struct Setup {
    secret: String,
    victim_url: String,
    victim_pid: u32,
    survivors: Vec<String>,
    clients: usize,
    rooms: usize,
    workers: usize,
}

fn setup(args: &BenchArgs) -> Result<Setup, String> {
    let secret = args
        .jwt_secret
        .clone()
        .ok_or("storm needs --jwt-secret (or HUDDLE_JWT_SECRET): the nodes' HS256 secret, so that a client comes back as the same user")?;
    let victim_url = args
        .victim_url
        .clone()
        .unwrap_or_else(|| args.url[0].clone());
    let survivors: Vec<String> = args
        .url
        .iter()
        .filter(|u| **u != victim_url)
        .cloned()
        .collect();
    if survivors.is_empty() {
        return Err("storm needs a surviving node: give two --url at least".into());
    }
    let victim_pid = args
        .victim_pid
        .ok_or("storm needs --victim-pid, the PID of the node to kill")?;
    if !std::path::Path::new(&format!("/proc/{victim_pid}")).exists() {
        return Err(format!("--victim-pid {victim_pid}: no such process"));
    }
    let clients = args.connections.unwrap_or(DEFAULT_CLIENTS).max(1);
    let rooms = args.rooms_or(DEFAULT_ROOMS).clamp(1, clients);
    if clients.div_ceil(rooms) + 1 > MAX_ROOM {
        return Err(format!(
            "{clients} clients in {rooms} rooms: more than {MAX_ROOM} a room; give more --rooms"
        ));
    }
    if !(0.0..=1.0).contains(&args.victim_share) {
        return Err("--victim-share is a share: between 0 and 1".into());
    }
    let workers = args
        .workers
        .unwrap_or(clients.div_ceil(CLIENTS_PER_WORKER))
        .clamp(1, clients);
    // A worker inherits this process's open-file limit.
    if let Some(limit) = open_file_limit()
        && clients.div_ceil(workers) + FILES_SPARE > limit
    {
        return Err(format!(
            "{} clients a worker, but a process may open {limit} files: give more --workers (or raise ulimit -n)",
            clients.div_ceil(workers)
        ));
    }
    Ok(Setup {
        secret,
        victim_url,
        victim_pid,
        survivors,
        clients,
        rooms,
        workers,
    })
}

/// Files a worker needs besides its clients' sockets.
const FILES_SPARE: usize = 64;

/// This process's soft limit of open files, from `/proc/self/limits`.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A sender's connection: it created its room and sends to it.
async fn open_sender(
    url: &str,
    secret: &str,
    r: usize,
    size: usize,
) -> Result<(Ws, String), String> {
    let mut ws = connect(url).await?;
    let sub = format!("storm-sender-{r}");
    let token = token(secret, &sub)?;
    call(
        &mut ws,
        1,
        json!({"type": "hello", "token": token, "name": sub}),
    )
    .await?;
    let data = call(
        &mut ws,
        2,
        json!({"type": "room.create", "name": format!("storm {r}"), "max_participants": size}),
    )
    .await?;
    let room = data["room"]["id"]
        .as_str()
        .ok_or("room.create without a room id")?
        .to_owned();
    Ok((ws, room))
}

/// What the senders are to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    /// Send at the rate.
    On,
    /// Stop sending; keep the connection (closing it could announce a
    /// leave).
    Off,
    /// Close and report.
    Done,
}

/// Sends to `room` every `period` while `On`, reading everything.
async fn send_loop(
    mut ws: Ws,
    room: String,
    period: Duration,
    mut state: watch::Receiver<Sending>,
) -> SenderStats {
    let mut stats = SenderStats::default();
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_id: u64 = 10;
    loop {
        let now = *state.borrow();
        if now == Sending::Done {
            break;
        }
        tokio::select! {
            _ = ticker.tick(), if now == Sending::On => {
                let req = json!({"type": "message.send", "id": next_id, "room": room,
                    "content": format!("storm {next_id}")});
                next_id += 1;
                if ws.send(WsMessage::Text(req.to_string().into())).await.is_err() {
                    *stats.errors.entry("send failed".into()).or_default() += 1;
                    break;
                }
                stats.sent += 1;
            }
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else {
                    *stats.errors.entry("sender connection closed".into()).or_default() += 1;
                    break;
                };
                let WsMessage::Text(text) = msg else { continue };
                let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                if frame["type"] == "reply" {
                    if frame["ok"] == true {
                        stats.acked += 1;
                    } else {
                        let code = frame["error"]["code"].as_str().unwrap_or("unknown");
                        *stats.errors.entry(code.to_owned()).or_default() += 1;
                    }
                }
            }
            changed = state.changed() => if changed.is_err() { break },
        }
    }
    let _ = ws.close(None).await;
    stats
}

/// Each room's last seq, read from a survivor once the senders stopped
/// (one connection; a refused hello or read is tried again, 5 times at
/// most).
async fn last_seqs(
    url: &str,
    secret: &str,
    rooms: &[String],
) -> Result<BTreeMap<String, u64>, String> {
    let mut ws = connect(url).await?;
    let sub = "storm-checker";
    let token = token(secret, sub)?;
    let hello = json!({"type": "hello", "token": token, "name": sub});
    let mut tries = 0;
    while let Err(e) = call(&mut ws, 1, hello.clone()).await {
        // A node still busy with the storm may refuse: the check is what the
        // run is for, so it waits rather than losing the run.
        if tries >= 5 || e.contains("closed") {
            return Err(e);
        }
        tries += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut last = BTreeMap::new();
    let mut id = 2;
    for room in rooms {
        let mut tries = 0;
        let data = loop {
            id += 1;
            match call(&mut ws, id, json!({"type": "room.get", "room": room})).await {
                Ok(data) => break data,
                Err(e) if tries < 5 && !e.contains("closed") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(format!("room.get {room}: {e}")),
            }
        };
        let seq = data["room"]["last_seq"]
            .as_u64()
            .ok_or("room.get without last_seq")?;
        last.insert(room.clone(), seq);
    }
    let _ = ws.close(None).await;
    Ok(last)
}

/// One worker process and its pipes.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    number: usize,
}

impl Worker {
    fn spawn(number: usize, any_url: &str) -> Result<Worker, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
        let mut child = tokio::process::Command::new(exe)
            .args(["bench", "storm", "--worker", "--url", any_url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start worker {number}: {e}"))?;
        let stdin = child.stdin.take().ok_or("worker without stdin")?;
        let stdout = child.stdout.take().ok_or("worker without stdout")?;
        Ok(Worker {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            number,
        })
    }

    async fn tell(&mut self, line: &ToWorker) -> Result<(), String> {
        let mut text = serde_json::to_string(line).map_err(|e| e.to_string())?;
        text.push('\n');
        self.stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| format!("worker {}: {e}", self.number))?;
        self.stdin
            .flush()
            .await
            .map_err(|e| format!("worker {}: {e}", self.number))
    }

    async fn hear(&mut self) -> Result<FromWorker, String> {
        let line = self
            .lines
            .next_line()
            .await
            .map_err(|e| format!("worker {}: {e}", self.number))?
            .ok_or_else(|| {
                format!(
                    "worker {} ended early (see its messages above)",
                    self.number
                )
            })?;
        serde_json::from_str(&line).map_err(|e| format!("worker {}: {e}: {line}", self.number))
    }
}

/// CPU seconds of each process still alive, by PID.
fn cpu_by_pid(pids: &[u32]) -> BTreeMap<u32, f64> {
    pids.iter()
        .filter_map(|p| Some((*p, cpu_seconds(&[*p])?.first().copied()?)))
        .collect()
}

pub(super) async fn storm(args: &BenchArgs) -> Result<StormReport, String> {
    let s = setup(args)?;
    let places = layout(s.clients, s.rooms, args.victim_share);
    let victims = places.iter().filter(|(_, v)| *v).count();
    eprintln!(
        "bench storm: {} clients in {} rooms, {victims} on the victim {}; {} worker(s)",
        s.clients, s.rooms, s.victim_url, s.workers
    );

    // The rooms, each made by its sender on a survivor.
    let size = s.clients.div_ceil(s.rooms) + 1;
    let mut opening = Vec::new();
    for r in 0..s.rooms {
        let url = s.survivors[r % s.survivors.len()].clone();
        let secret = s.secret.clone();
        opening.push(tokio::spawn(async move {
            open_sender(&url, &secret, r, size).await
        }));
    }
    let mut senders = Vec::new();
    for o in opening {
        senders.push(o.await.map_err(|e| e.to_string())??);
    }
    let rooms: Vec<String> = senders.iter().map(|(_, room)| room.clone()).collect();
    let period = Duration::from_secs_f64(1.0 / args.send_rate.max(0.001));
    let (sending, sending_rx) = watch::channel(Sending::On);
    let send_tasks: Vec<_> = senders
        .into_iter()
        .map(|(ws, room)| tokio::spawn(send_loop(ws, room, period, sending_rx.clone())))
        .collect();

    // The clients, dealt to the workers.
    let mut plans: Vec<Vec<ClientPlan>> = vec![Vec::new(); s.workers];
    let mut on_survivor = 0usize;
    for (i, (room, victim)) in places.iter().copied().enumerate() {
        let url = if victim {
            s.victim_url.clone()
        } else {
            on_survivor += 1;
            s.survivors[on_survivor % s.survivors.len()].clone()
        };
        plans[i % s.workers].push(ClientPlan {
            index: i,
            room: rooms[room].clone(),
            url,
            victim,
        });
    }
    let began = Instant::now();
    let mut workers = Vec::new();
    for (number, clients) in plans.into_iter().enumerate() {
        let mut w = Worker::spawn(number, &s.survivors[0])?;
        w.tell(&ToWorker::Plan(Plan {
            worker: number,
            clients,
            survivors: s.survivors.clone(),
            secret: s.secret.clone(),
            join_rate: args.join_rate.map(|r| r / s.workers as f64),
            spread_ms: args.reconnect_spread.as_millis() as u64,
        }))
        .await?;
        workers.push(w);
    }
    let (mut joined, mut failed) = (0, 0);
    for w in &mut workers {
        match w.hear().await? {
            FromWorker::Ready {
                joined: j,
                failed: f,
            } => {
                joined += j;
                failed += f;
            }
            other => return Err(format!("worker {}: {other:?} before ready", w.number)),
        }
    }
    let join_seconds = began.elapsed().as_secs_f64();
    eprintln!(
        "bench storm: {joined} joined in {join_seconds:.1} s ({failed} failed); quiet for {:?}",
        args.quiet
    );
    tokio::time::sleep(args.quiet).await;

    // The kill.
    let cpu_before = cpu_by_pid(&args.server_pid);
    let status = std::process::Command::new("kill")
        .args(["-9", &s.victim_pid.to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if !status.success() {
        return Err(format!("kill -9 {} failed: {status}", s.victim_pid));
    }
    let killed_at_us = now_us();
    let killed = Instant::now();
    eprintln!(
        "bench storm: killed {} (pid {}); watching for {:?}",
        s.victim_url, s.victim_pid, args.observe
    );
    for w in &mut workers {
        w.tell(&ToWorker::Killed {
            at_us: killed_at_us,
        })
        .await?;
    }
    tokio::time::sleep(args.observe).await;

    // The end: senders stop, the last messages arrive, every client checks.
    let _ = sending.send(Sending::Off);
    tokio::time::sleep(DRAIN).await;
    let last_seqs = last_seqs(&s.survivors[0], &s.secret, &rooms).await?;
    for w in &mut workers {
        w.tell(&ToWorker::Verify {
            last_seqs: last_seqs.clone(),
        })
        .await?;
    }
    let mut stats = Stats::default();
    for w in &mut workers {
        match w.hear().await? {
            FromWorker::Stats(st) => stats.merge(*st),
            other => return Err(format!("worker {}: {other:?} instead of stats", w.number)),
        }
    }
    let seconds_after_kill = killed.elapsed().as_secs_f64();
    let cpu_after = cpu_by_pid(&args.server_pid);
    let rss: BTreeMap<String, u64> = args
        .server_pid
        .iter()
        .filter_map(|p| Some((p.to_string(), rss_bytes(&[*p])? as u64)))
        .collect();
    let _ = sending.send(Sending::Done);
    let mut sent = SenderStats::default();
    for t in send_tasks {
        if let Ok(st) = t.await {
            sent.merge(st);
        }
    }
    for mut w in workers {
        drop(w.stdin);
        if tokio::time::timeout(Duration::from_secs(10), w.child.wait())
            .await
            .is_err()
        {
            let _ = w.child.kill().await;
        }
    }
    let cpu: BTreeMap<String, f64> = cpu_after
        .iter()
        .filter_map(|(p, after)| Some((p.to_string(), after - cpu_before.get(p)?)))
        .collect();
    let run = Run {
        nodes: args.url.len(),
        rooms: s.rooms,
        workers: s.workers,
        clients: s.clients,
        join_seconds,
        seconds_after_kill,
        server_cpu_by_pid: cpu,
        server_rss_by_pid: rss,
    };
    if stats.clients != joined {
        eprintln!(
            "bench storm: {joined} joined but {} reported at the end",
            stats.clients
        );
    }
    Ok(StormReport::new(run, stats, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_read() {
        let limit = open_file_limit().expect("Linux has /proc/self/limits");
        assert!(limit >= 64, "{limit}");
    }

    #[test]
    fn every_room_gets_its_share_on_the_victim() {
        let places = layout(20_000, 100, 0.5);
        assert_eq!(places.iter().filter(|(_, v)| *v).count(), 10_000);
        for room in 0..100 {
            let (on, off) =
                places
                    .iter()
                    .filter(|(r, _)| *r == room)
                    .fold(
                        (0, 0),
                        |(on, off), (_, v)| if *v { (on + 1, off) } else { (on, off + 1) },
                    );
            assert_eq!((on, off), (100, 100), "room {room}");
        }
        let places = layout(60, 3, 0.25);
        assert_eq!(places.iter().filter(|(_, v)| *v).count(), 5 * 3);
        assert!(layout(10, 2, 0.0).iter().all(|(_, v)| !v));
        assert!(layout(10, 2, 1.0).iter().all(|(_, v)| *v));
    }
}
