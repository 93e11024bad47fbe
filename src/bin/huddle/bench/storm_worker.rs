//! `storm`'s client processes. One process may not hold 20,000 sockets (nor
//! may one node), so the parent splits the clients over workers: each is
//! `huddle bench storm --worker`, started from the parent's own executable,
//! and the two talk in JSON lines: the parent writes the [`Plan`] and then
//! [`ToWorker`] commands to the worker's stdin, the worker writes
//! [`FromWorker`] answers to its stdout (its stderr is the parent's).
//!
//! ```text
//! parent → worker   {"plan": …}            clients to join, survivors, secret
//! worker → parent   {"ready": …}           every client has joined (or failed)
//! parent → worker   {"killed": {"at_us"}}  the victim is dead since then
//! parent → worker   {"verify": …}          senders stopped: the rooms' last seqs
//! worker → parent   {"stats": …}           what the clients saw
//! parent → worker   (stdin closed)         close everything and exit
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Semaphore, mpsc, watch};

use super::storm_client::{self, Announcements, ClientPlan, Outcome, Phase, Shared};

/// Clients joining at once in a worker when no `--join-rate` is given.
const JOINS_IN_FLIGHT: usize = 200;

/// What one worker is to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Plan {
    /// The worker's number, for messages.
    pub(super) worker: usize,
    /// Its clients.
    pub(super) clients: Vec<ClientPlan>,
    /// The surviving nodes' URLs.
    pub(super) survivors: Vec<String>,
    /// The nodes' HS256 secret.
    pub(super) secret: String,
    /// Joins per second for this worker (its share of `--join-rate`).
    pub(super) join_rate: Option<f64>,
    /// The first reconnection's spread, ms.
    pub(super) spread_ms: u64,
}

/// A line from the parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ToWorker {
    /// The first line.
    Plan(Plan),
    /// The victim was killed at this Unix time, µs.
    Killed { at_us: u64 },
    /// The senders have stopped: check every seq up to the rooms' last
    /// seqs (room id → seq) and report.
    Verify { last_seqs: BTreeMap<String, u64> },
}

/// A line to the parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FromWorker {
    /// Every client has joined or failed to.
    Ready {
        /// Clients joined.
        joined: usize,
        /// Clients that could not join.
        failed: usize,
    },
    /// What the clients saw.
    Stats(Box<Stats>),
}

/// A worker's totals.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Stats {
    /// Clients that joined.
    pub(super) clients: usize,
    /// Failed tries of first joins, by reason (the client may have joined
    /// at a later try).
    pub(super) join_failures: BTreeMap<String, u64>,
    /// Of those, on the victim.
    pub(super) victims: usize,
    /// Per client that was dropped and came back: ms from the kill until
    /// its resume was answered.
    pub(super) resume_ms: Vec<u64>,
    /// Dropped clients that were not back by the end.
    pub(super) not_resumed: usize,
    /// Clients of surviving nodes whose connection dropped all the same.
    pub(super) unexpected_drops: usize,
    /// Reconnection tries.
    pub(super) attempts: u64,
    /// Failed tries, by reason.
    pub(super) failures: BTreeMap<String, u64>,
    /// Resumes answered `complete: false`.
    pub(super) incomplete_resumes: u64,
    /// `message.history` pages fetched after them.
    pub(super) history_pages: u64,
    /// Durable seqs never received, over all clients checked.
    pub(super) lost: u64,
    /// Clients missing at least one.
    pub(super) clients_with_loss: usize,
    /// Seqs received twice.
    pub(super) duplicates: u64,
    /// Clients checked.
    pub(super) verified: usize,
    /// Clients whose check failed, by reason.
    pub(super) verify_failures: BTreeMap<String, u64>,
    /// Announcements seen by the survivors' clients after the kill.
    pub(super) announcements: Announcements,
}

impl Stats {
    /// Adds one client's outcome; `killed_at_us` is when the victim died.
    pub(super) fn add(&mut self, o: Outcome, killed_at_us: u64) {
        for (k, v) in o.join_failures {
            *self.join_failures.entry(k).or_default() += v;
        }
        if !o.joined {
            return;
        }
        self.clients += 1;
        self.victims += usize::from(o.victim);
        if o.dropped {
            match o.resumed_at_us {
                Some(at) => self.resume_ms.push(at.saturating_sub(killed_at_us) / 1000),
                None => self.not_resumed += 1,
            }
            if !o.victim {
                self.unexpected_drops += 1;
            }
        }
        self.attempts += o.attempts;
        for (k, v) in o.failures {
            *self.failures.entry(k).or_default() += v;
        }
        self.incomplete_resumes += o.incomplete;
        self.history_pages += o.history_pages;
        self.duplicates += o.duplicates;
        if let Some(missing) = o.missing {
            self.verified += 1;
            self.lost += missing;
            self.clients_with_loss += usize::from(missing > 0);
        }
        if let Some(e) = o.verify_error {
            *self.verify_failures.entry(e).or_default() += 1;
        }
        self.announcements.merge(o.announcements);
    }

    /// Adds another worker's totals.
    pub(super) fn merge(&mut self, other: Stats) {
        self.clients += other.clients;
        for (k, v) in other.join_failures {
            *self.join_failures.entry(k).or_default() += v;
        }
        self.victims += other.victims;
        self.resume_ms.extend(other.resume_ms);
        self.not_resumed += other.not_resumed;
        self.unexpected_drops += other.unexpected_drops;
        self.attempts += other.attempts;
        for (k, v) in other.failures {
            *self.failures.entry(k).or_default() += v;
        }
        self.incomplete_resumes += other.incomplete_resumes;
        self.history_pages += other.history_pages;
        self.lost += other.lost;
        self.clients_with_loss += other.clients_with_loss;
        self.duplicates += other.duplicates;
        self.verified += other.verified;
        for (k, v) in other.verify_failures {
            *self.verify_failures.entry(k).or_default() += v;
        }
        self.announcements.merge(other.announcements);
    }
}

/// Writes one JSON line to stdout.
async fn say(out: &mut tokio::io::Stdout, line: &FromWorker) -> Result<(), String> {
    let mut text = serde_json::to_string(line).map_err(|e| e.to_string())?;
    text.push('\n');
    out.write_all(text.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    out.flush().await.map_err(|e| e.to_string())
}

/// Runs a worker: reads its plan from stdin and obeys the parent until
/// stdin closes.
pub(super) async fn run() -> Result<(), String> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let first = lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no plan on stdin")?;
    let ToWorker::Plan(plan) = serde_json::from_str(&first).map_err(|e| e.to_string())? else {
        return Err("the first line is not a plan".into());
    };
    if plan.survivors.is_empty() {
        return Err("no surviving node to reconnect to".into());
    }
    let shared = Arc::new(Shared {
        survivors: plan.survivors.clone(),
        secret: plan.secret.clone(),
        spread: Duration::from_millis(plan.spread_ms),
        killed_at_us: Default::default(),
        closing: Default::default(),
        back: Default::default(),
        last_seqs: Default::default(),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let total = plan.clients.len();
    let victims = plan.clients.iter().filter(|c| c.victim).count();
    let (joined_tx, mut joined_rx) = mpsc::channel(total.max(1));
    let (done_tx, mut done_rx) = mpsc::channel(total.max(1));
    let sem = Arc::new(Semaphore::new(JOINS_IN_FLIGHT));
    let mut pace = plan
        .join_rate
        .filter(|r| *r > 0.0)
        .map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r)));
    let mut tasks = Vec::with_capacity(total);
    for client in plan.clients {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (tx, shared, phase) = (joined_tx.clone(), shared.clone(), phase_rx.clone());
        // The permit is held until the client's first join is answered.
        let (inner_tx, mut inner_rx) = mpsc::channel(1);
        tokio::spawn(async move {
            if let Some(r) = inner_rx.recv().await {
                let _ = tx.send(r).await;
            }
            drop(permit);
        });
        tasks.push(tokio::spawn(storm_client::run(
            client,
            shared,
            inner_tx,
            done_tx.clone(),
            phase,
        )));
    }
    drop(joined_tx);
    let (mut joined, mut failed) = (0, 0);
    while let Some(ok) = joined_rx.recv().await {
        if ok {
            joined += 1;
        } else {
            failed += 1;
        }
    }
    say(&mut out, &FromWorker::Ready { joined, failed }).await?;

    let mut killed_at_us = 0;
    while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
        match serde_json::from_str(&line).map_err(|e| e.to_string())? {
            ToWorker::Plan(_) => return Err("a second plan".into()),
            ToWorker::Killed { at_us } => {
                killed_at_us = at_us;
                shared.killed_at_us.store(at_us, Ordering::Relaxed);
                tokio::spawn(progress(shared.clone(), plan.worker, victims));
            }
            ToWorker::Verify { last_seqs } => {
                shared.closing.store(true, Ordering::Relaxed);
                let _ = shared.last_seqs.set(last_seqs);
                let _ = phase_tx.send(Phase::Verify);
                let stats = collect(&mut done_rx, total, killed_at_us).await;
                say(&mut out, &FromWorker::Stats(Box::new(stats))).await?;
            }
        }
    }
    // Stdin closed: the run is over; close every connection.
    let _ = phase_tx.send(Phase::Exit);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}

/// Says every 2 s how many dropped clients are back, until all are or the
/// run ends.
async fn progress(shared: Arc<Shared>, worker: usize, victims: usize) {
    let began = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if shared.closing.load(Ordering::Relaxed) {
            return;
        }
        let back = shared.back.load(Ordering::Relaxed);
        eprintln!(
            "bench storm: worker {worker}: {back} of {victims} victim clients back after {:.0} s",
            began.elapsed().as_secs_f64()
        );
        if back >= victims {
            return;
        }
    }
}

/// Takes in every client's outcome (each sends it at the final check, or
/// when it ends before), waiting 10 s at most.
async fn collect(done: &mut mpsc::Receiver<Outcome>, total: usize, killed_at_us: u64) -> Stats {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut stats = Stats::default();
    let mut got = 0;
    while got < total {
        match tokio::time::timeout_at(deadline, done.recv()).await {
            Ok(Some(o)) => {
                stats.add(o, killed_at_us);
                got += 1;
            }
            _ => break,
        }
    }
    if got < total {
        stats
            .verify_failures
            .insert("no outcome within 10 s".into(), (total - got) as u64);
    }
    stats
}
