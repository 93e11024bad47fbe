//! One `storm` client: it joins its room as a stable user (a signed token,
//! so that coming back is being the same user), records every durable seq
//! it gets, reconnects to a surviving node when its node dies (the web
//! client's schedule: the first try spread uniformly over the reconnect
//! spread, then jittered exponential backoff), resumes with `since` (paging
//! with `message.history` when the resume is incomplete) and counts the
//! join/leave announcements it sees once the victim is dead.
//!
//! The pure parts (the seq record and the reconnect schedule) are unit
//! tested here; the rest runs against real nodes in
//! `tests/integration/bench_storm.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use huddle::service::sessions::{Claims, sign};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::client::{Ws, connect};

/// How long a request may wait for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// The backoff after the first reconnection try: the web client's
/// defaults (`backoffInitialMs`, `backoffMaxMs`; factor 2).
const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// Tries of the first join (a node may be slow while thousands join).
const JOIN_TRIES: u32 = 4;
/// Users named in announcements that a worker reports, at most.
const NAMED_USERS_MAX: usize = 1000;
/// Announcement frames kept as examples, at most.
const EXAMPLES_MAX: usize = 5;

/// The durable seqs one client got in its room after its first join.
#[derive(Debug, Clone)]
pub(super) struct SeqLog {
    /// The room's `last_seq` when the client first joined: it owes nothing
    /// up to here.
    baseline: u64,
    /// Every seq above the baseline received, once.
    seen: BTreeSet<u64>,
    /// Seqs taken from a `message.history` page and not received live yet:
    /// a page can be ahead of live delivery (a message is stored before its
    /// event reaches this client), so its event may still come, once.
    filled: BTreeSet<u64>,
    /// Seqs received again (a live event after its resume, or twice live).
    pub(super) duplicates: u64,
}

impl SeqLog {
    pub(super) fn new(baseline: u64) -> SeqLog {
        SeqLog {
            baseline,
            seen: BTreeSet::new(),
            filled: BTreeSet::new(),
            duplicates: 0,
        }
    }

    /// Moves the baseline to `baseline` (the room's last seq at the first
    /// join), keeping what was received above it (live events may come
    /// before the join's reply).
    pub(super) fn rebase(&mut self, baseline: u64) {
        self.baseline = baseline;
        self.seen = self.seen.split_off(&(baseline + 1));
    }

    /// Records a durable event's seq.
    pub(super) fn record(&mut self, seq: u64) {
        if seq > self.baseline && !self.seen.insert(seq) && !self.filled.remove(&seq) {
            self.duplicates += 1;
        }
    }

    /// Records a seq read from a history page (not yet received).
    fn fill(&mut self, seq: u64) {
        if seq > self.baseline && self.seen.insert(seq) {
            self.filled.insert(seq);
        }
    }

    /// The last seq seen: the `since` of a resume.
    pub(super) fn last(&self) -> u64 {
        self.seen.last().copied().unwrap_or(self.baseline)
    }

    /// Seqs after the baseline up to `upto` (the room's last seq) that were
    /// never received.
    pub(super) fn missing(&self, upto: u64) -> u64 {
        let owed = upto.saturating_sub(self.baseline);
        let got = self.seen.range(..=upto).count() as u64;
        owed.saturating_sub(got)
    }

    /// Whether `seq` was received.
    fn has(&self, seq: u64) -> bool {
        seq <= self.baseline || self.seen.contains(&seq)
    }
}

/// The wait before reconnection try `attempt` (0 = the first after the
/// drop), with `random` uniform in [0, 1): the first is spread uniformly
/// over `spread`; later ones are half the backoff step plus a random half
/// (500 ms doubling, at most 15 s), as `web/client/transport.js` does.
pub(super) fn reconnect_delay(attempt: u32, spread: Duration, random: f64) -> Duration {
    let random = random.clamp(0.0, 1.0);
    if attempt == 0 {
        return spread.mul_f64(random);
    }
    let step = BACKOFF_INITIAL
        .saturating_mul(1u32 << attempt.min(20))
        .min(BACKOFF_MAX);
    step / 2 + (step / 2).mul_f64(random)
}

/// Join/leave announcements seen after the kill by clients that stayed on
/// a surviving node.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(super) struct Announcements {
    /// `participant.joined` events.
    pub(super) participant_joined: u64,
    /// `participant.left` events.
    pub(super) participant_left: u64,
    /// `participants.changed` events naming someone who joined or left.
    pub(super) participants_changed: u64,
    /// System messages (a first join or a final leave).
    pub(super) system_messages: u64,
    /// The user ids named by any of them (at most 1000).
    pub(super) users: BTreeSet<String>,
    /// The first few such frames, as received, with the ms since the kill
    /// (`"ms_after_kill"`), to see what was announced.
    pub(super) examples: Vec<Value>,
}

impl Announcements {
    pub(super) fn total(&self) -> u64 {
        self.participant_joined
            + self.participant_left
            + self.participants_changed
            + self.system_messages
    }

    pub(super) fn merge(&mut self, other: Announcements) {
        self.participant_joined += other.participant_joined;
        self.participant_left += other.participant_left;
        self.participants_changed += other.participants_changed;
        self.system_messages += other.system_messages;
        for u in other.users {
            if self.users.len() < NAMED_USERS_MAX {
                self.users.insert(u);
            }
        }
        let room = EXAMPLES_MAX.saturating_sub(self.examples.len());
        self.examples.extend(other.examples.into_iter().take(room));
    }

    fn name(&mut self, user: &Value) {
        if let Some(id) = user["id"].as_str()
            && self.users.len() < NAMED_USERS_MAX
        {
            self.users.insert(id.to_owned());
        }
    }

    /// Counts `frame` if it announces a join or a leave; `ms_after_kill`
    /// goes with the example.
    fn observe(&mut self, frame: &Value, ms_after_kill: u64) {
        let before = self.total();
        self.count(frame);
        if self.total() > before && self.examples.len() < EXAMPLES_MAX {
            let mut example = frame.clone();
            example["ms_after_kill"] = json!(ms_after_kill);
            self.examples.push(example);
        }
    }

    fn count(&mut self, frame: &Value) {
        match frame["event"].as_str() {
            Some("participant.joined") => {
                self.participant_joined += 1;
                self.name(&frame["user"]);
            }
            Some("participant.left") => {
                self.participant_left += 1;
                self.name(&frame["user"]);
            }
            Some("participants.changed") => {
                let joined = frame["joined"].as_array().map(Vec::as_slice);
                let left = frame["left"].as_array().map(Vec::as_slice);
                let named: Vec<&Value> = joined
                    .unwrap_or_default()
                    .iter()
                    .chain(left.unwrap_or_default())
                    .collect();
                if !named.is_empty() {
                    self.participants_changed += 1;
                    for u in named {
                        self.name(u);
                    }
                }
            }
            Some("message.created") if frame["message"]["kind"] == "system" => {
                self.system_messages += 1;
                self.name(&frame["message"]["user"]);
            }
            _ => {}
        }
    }
}

/// Where one client starts and who it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ClientPlan {
    /// The client's number in the whole run: its user is `storm-{index}`.
    pub(super) index: usize,
    /// Its room's id.
    pub(super) room: String,
    /// The node it first connects to.
    pub(super) url: String,
    /// Whether that node is the one to be killed.
    pub(super) victim: bool,
}

/// What a worker's clients share.
pub(super) struct Shared {
    /// The surviving nodes, where dropped clients reconnect.
    pub(super) survivors: Vec<String>,
    /// The nodes' HS256 secret.
    pub(super) secret: String,
    /// The first reconnection's spread.
    pub(super) spread: Duration,
    /// When the victim was killed, Unix µs (0 until the parent says so):
    /// announcements count from then.
    pub(super) killed_at_us: AtomicU64,
    /// Set at `Verify`: from then on clients close, and the leaves that
    /// announces are the bench's own doing, not counted.
    pub(super) closing: AtomicBool,
    /// Dropped clients back and resumed so far (for progress lines).
    pub(super) back: AtomicUsize,
    /// Each room's last seq once the senders stopped (set at `Verify`).
    pub(super) last_seqs: OnceLock<BTreeMap<String, u64>>,
}

/// The run's phase, as the parent announces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Joined; reading, and reconnecting when dropped.
    Run,
    /// Senders have stopped: check the room's seqs, then wait.
    Verify,
    /// Close and end.
    Exit,
}

/// What one client did, for the worker's totals.
#[derive(Debug, Default, Clone)]
pub(super) struct Outcome {
    /// It started on the victim.
    pub(super) victim: bool,
    /// Its first join succeeded (within `JOIN_TRIES` tries).
    pub(super) joined: bool,
    /// Failed tries of the first join, by reason.
    pub(super) join_failures: BTreeMap<String, u64>,
    /// When it was connected and resumed again after its connection
    /// dropped (Unix µs), if it was.
    pub(super) resumed_at_us: Option<u64>,
    /// Its connection dropped at least once.
    pub(super) dropped: bool,
    /// Reconnection tries made.
    pub(super) attempts: u64,
    /// Failed tries, by reason.
    pub(super) failures: BTreeMap<String, u64>,
    /// Resumes answered `complete: false`.
    pub(super) incomplete: u64,
    /// `message.history` pages asked for after them.
    pub(super) history_pages: u64,
    /// Seqs never received up to the room's last seq (None: not checked).
    pub(super) missing: Option<u64>,
    /// Seqs received twice.
    pub(super) duplicates: u64,
    /// Why the final check could not be made.
    pub(super) verify_error: Option<String>,
    /// Announcements seen (survivors' clients only).
    pub(super) announcements: Announcements,
}

/// Unix time, µs.
pub(super) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A token for user `sub`, valid for two hours.
pub(super) fn token(secret: &str, sub: &str) -> Result<String, String> {
    let now = now_us() / 1_000_000;
    let claims = Claims {
        sub: sub.to_owned(),
        name: Some(sub.to_owned()),
        image: None,
        exp: now + 7200,
        nbf: None,
        iat: Some(now),
    };
    sign(secret, &claims).map_err(|e| e.to_string())
}

/// One client's connection and what it has seen.
struct Client {
    plan: ClientPlan,
    shared: Arc<Shared>,
    /// The seqs received (set at the first join).
    log: SeqLog,
    /// The next request id on the current connection.
    next_id: u64,
    outcome: Outcome,
}

/// The short reason of a failed try, for the report's counts.
fn reason(e: &str) -> String {
    let e = e.to_ascii_lowercase();
    for (needle, short) in [
        ("unauthorized", "unauthorized"),
        ("rate_limited", "rate_limited"),
        ("unavailable", "unavailable"),
        ("refused", "connection refused"),
        ("timed out", "connect timed out"),
        ("no reply", "no reply in time"),
        ("closed", "closed"),
        ("reset", "connection reset"),
        ("too many open files", "too many open files"),
        ("http error", "http error"),
    ] {
        if e.contains(needle) {
            return short.to_owned();
        }
    }
    e.chars().take(60).collect()
}

impl Client {
    /// Handles a frame that is not the awaited reply.
    fn on_frame(&mut self, frame: &Value) {
        if frame["type"] != "event" {
            return;
        }
        if let Some(seq) = frame["seq"].as_u64() {
            self.log.record(seq);
        }
        let killed = self.shared.killed_at_us.load(Ordering::Relaxed);
        if killed != 0 && !self.plan.victim && !self.shared.closing.load(Ordering::Relaxed) {
            let ms = now_us().saturating_sub(killed) / 1000;
            self.outcome.announcements.observe(frame, ms);
        }
    }

    /// Sends a request and waits for its reply, handling the frames that
    /// come meanwhile.
    async fn request(&mut self, ws: &mut Ws, mut req: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        req["id"] = json!(id);
        ws.send(WsMessage::Text(req.to_string().into()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => return Err(format!("{}: no reply within 10 s", req["type"])),
                Ok(None) => return Err("connection closed".into()),
                Ok(Some(Err(e))) => return Err(format!("connection closed: {e}")),
                Ok(Some(Ok(msg))) => msg,
            };
            let WsMessage::Text(text) = msg else {
                if let WsMessage::Close(_) = msg {
                    return Err("connection closed".into());
                }
                continue;
            };
            let frame: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if frame["type"] == "reply" && frame["id"] == id {
                if frame["ok"] == true {
                    return Ok(frame["data"].clone());
                }
                return Err(format!(
                    "{} answered {}",
                    req["type"], frame["error"]["code"]
                ));
            }
            self.on_frame(&frame);
        }
    }

    /// Connects to `url`, says hello with the user's token and joins the
    /// room (resuming after `since`, if given).
    async fn open(&mut self, url: &str, since: Option<u64>) -> Result<(Ws, Value), String> {
        let mut ws = connect(url).await?;
        self.next_id = 1;
        let sub = format!("storm-{}", self.plan.index);
        let token = token(&self.shared.secret, &sub)?;
        self.request(
            &mut ws,
            json!({"type": "hello", "token": token, "name": sub}),
        )
        .await?;
        let mut join = json!({"type": "room.join", "room": self.plan.room});
        if let Some(since) = since {
            join["since"] = json!(since);
        }
        let data = self.request(&mut ws, join).await?;
        Ok((ws, data))
    }

    /// Takes in a resume's events; when it is incomplete, pages back with
    /// `message.history` from the room's last seq to what was missed.
    async fn resume(&mut self, ws: &mut Ws, data: &Value, since: u64) -> Result<(), String> {
        for e in data["events"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if let Some(seq) = e["seq"].as_u64() {
                self.log.record(seq);
            }
        }
        if data["complete"] != false {
            return Ok(());
        }
        self.outcome.incomplete += 1;
        // From the newest down: the reply's `room.last_seq` may already be
        // behind the point live delivery resumes from.
        let mut before: Option<u64> = None;
        loop {
            let mut req = json!({"type": "message.history", "room": self.plan.room, "limit": 100});
            if let Some(before) = before {
                req["before"] = json!(before);
            }
            self.outcome.history_pages += 1;
            let page = self.request(ws, req).await?;
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            let Some(lowest) = messages.first().and_then(|m| m["seq"].as_u64()) else {
                break;
            };
            for m in &messages {
                if let Some(seq) = m["seq"].as_u64() {
                    self.log.fill(seq);
                }
            }
            // Stop as soon as everything down to `since` is here.
            if page["has_more"] != true || (since + 1..lowest).all(|s| self.log.has(s)) {
                break;
            }
            before = Some(lowest);
        }
        Ok(())
    }

    /// Reconnects to a survivor until connected and resumed, or until the
    /// run's final check (then it counts as not back).
    async fn reconnect(&mut self, phase: &mut watch::Receiver<Phase>) -> Option<Ws> {
        let mut attempt: u32 = 0;
        loop {
            let delay = reconnect_delay(attempt, self.shared.spread, rand::rng().random());
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = phase.wait_for(|p| *p != Phase::Run) => return None,
            }
            let survivors = &self.shared.survivors;
            let url = survivors[(self.plan.index + attempt as usize) % survivors.len()].clone();
            self.outcome.attempts += 1;
            attempt = attempt.saturating_add(1);
            let since = self.log.last();
            let result = match self.open(&url, Some(since)).await {
                Ok((mut ws, data)) => self.resume(&mut ws, &data, since).await.map(|_| ws),
                Err(e) => Err(e),
            };
            match result {
                Ok(ws) => {
                    self.outcome.resumed_at_us = Some(now_us());
                    self.shared.back.fetch_add(1, Ordering::Relaxed);
                    return Some(ws);
                }
                Err(e) => *self.outcome.failures.entry(reason(&e)).or_default() += 1,
            }
        }
    }

    /// The final check: every seq of the room up to its last one (as the
    /// parent read it once the senders had stopped).
    fn verify(&mut self) {
        match self
            .shared
            .last_seqs
            .get()
            .and_then(|l| l.get(&self.plan.room))
        {
            Some(last) => self.outcome.missing = Some(self.log.missing(*last)),
            None => self.outcome.verify_error = Some("the room's last seq is unknown".into()),
        }
    }
}

/// Joins, then reads (reconnecting when dropped) until the parent says the
/// run is over. The first join's success goes to `joined`; the outcome goes
/// to `done` at the final check (or when the client ends before it).
pub(super) async fn run(
    plan: ClientPlan,
    shared: Arc<Shared>,
    joined: mpsc::Sender<bool>,
    done: mpsc::Sender<Outcome>,
    mut phase: watch::Receiver<Phase>,
) {
    let victim = plan.victim;
    let url = plan.url.clone();
    let mut client = Client {
        plan,
        shared,
        log: SeqLog::new(0),
        next_id: 1,
        outcome: Outcome {
            victim,
            ..Outcome::default()
        },
    };
    let mut current = None;
    for attempt in 0..JOIN_TRIES {
        if attempt > 0 {
            let delay = reconnect_delay(attempt, Duration::ZERO, rand::rng().random());
            tokio::time::sleep(delay).await;
        }
        match client.open(&url, None).await {
            Ok((ws, data)) => {
                client
                    .log
                    .rebase(data["room"]["last_seq"].as_u64().unwrap_or(0));
                current = Some(ws);
                break;
            }
            Err(e) => *client.outcome.join_failures.entry(reason(&e)).or_default() += 1,
        }
    }
    client.outcome.joined = current.is_some();
    let _ = joined.send(client.outcome.joined).await;
    let Some(mut current) = current else {
        let _ = done.send(client.snapshot()).await;
        return;
    };
    let mut reported = false;
    loop {
        let now = *phase.borrow();
        if now == Phase::Exit {
            break;
        }
        if now == Phase::Verify && !reported {
            reported = true;
            client.verify();
            let _ = done.send(client.snapshot()).await;
            continue;
        }
        tokio::select! {
            msg = current.next() => {
                let dropped = match msg {
                    Some(Ok(WsMessage::Text(text))) => {
                        if let Ok(frame) = serde_json::from_str::<Value>(&text) {
                            client.on_frame(&frame);
                        }
                        false
                    }
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => true,
                    Some(Ok(_)) => false,
                };
                if dropped && reported {
                    // After the check a drop changes nothing.
                    return;
                }
                if dropped {
                    client.outcome.dropped = true;
                    match client.reconnect(&mut phase).await {
                        Some(ws) => current = ws,
                        None => {
                            let _ = done.send(client.snapshot()).await;
                            return;
                        }
                    }
                }
            }
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
            }
        }
    }
    let _ = current.close(None).await;
}

impl Client {
    /// The outcome so far.
    fn snapshot(&self) -> Outcome {
        let mut outcome = self.outcome.clone();
        outcome.duplicates = self.log.duplicates;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seq_log_counts_gaps_and_repeats_after_the_first_join() {
        let mut log = SeqLog::new(10);
        assert_eq!((log.last(), log.missing(10)), (10, 0), "owes nothing yet");
        for s in [5, 11, 12, 14, 12, 15] {
            log.record(s);
        }
        assert_eq!(log.duplicates, 1, "12 came twice; 5 is before the join");
        assert_eq!(log.last(), 15, "the resume asks after the last seen");
        assert_eq!(log.missing(15), 1, "13");
        assert_eq!(log.missing(17), 3, "13, 16, 17");
        assert_eq!(log.missing(12), 0, "nothing owed up to 12 is missing");
        assert!(log.has(3) && log.has(14) && !log.has(13));
        // A history page ahead of live delivery: its events still come,
        // once each, and are not repeats; a second one is.
        log.fill(13);
        log.fill(16);
        log.record(16);
        assert_eq!(log.duplicates, 1, "16 filled, then live once");
        log.record(16);
        assert_eq!(log.duplicates, 2, "16 live twice");
        assert_eq!(log.missing(16), 0);

        let mut early = SeqLog::new(0);
        for s in [7, 8] {
            early.record(s);
        }
        early.rebase(7);
        assert_eq!((early.last(), early.missing(9)), (8, 1), "8 kept, 9 owed");
    }

    #[test]
    fn the_first_reconnection_is_spread_then_backs_off() {
        let spread = Duration::from_secs(2);
        assert_eq!(reconnect_delay(0, spread, 0.0), Duration::ZERO);
        assert_eq!(reconnect_delay(0, spread, 0.5), Duration::from_secs(1));
        // Try n waits between half and all of 500 ms × 2^n, capped at 15 s.
        assert_eq!(reconnect_delay(1, spread, 0.0), Duration::from_millis(500));
        assert_eq!(reconnect_delay(1, spread, 1.0), Duration::from_secs(1));
        assert_eq!(reconnect_delay(2, spread, 0.0), Duration::from_secs(1));
        assert_eq!(reconnect_delay(10, spread, 1.0), Duration::from_secs(15));
        assert_eq!(
            reconnect_delay(u32::MAX, spread, 0.0),
            Duration::from_millis(7500)
        );
    }

    #[test]
    fn only_announcements_of_joins_and_leaves_count() {
        let mut a = Announcements::default();
        let user = json!({"id": "u1", "name": "storm-1"});
        let frames = [
            json!({"type": "event", "event": "participant.left", "user": user}),
            json!({"type": "event", "event": "participants.changed",
                "participant_count": 3, "joined": [], "left": []}),
            json!({"type": "event", "event": "participants.changed",
                "participant_count": 3, "joined": [{"id": "u2"}], "left": [{"id": "u1"}]}),
            json!({"type": "event", "seq": 4, "event": "message.created",
                "message": {"kind": "text", "user": user}}),
            json!({"type": "event", "seq": 5, "event": "message.created",
                "message": {"kind": "system", "user": {"id": "u3"}}}),
        ];
        for (ms, frame) in (1..).zip(&frames) {
            a.observe(frame, ms);
        }
        assert_eq!(
            (
                a.participant_left,
                a.participants_changed,
                a.system_messages,
                a.total()
            ),
            (1, 1, 1, 3)
        );
        let users: Vec<&str> = a.users.iter().map(String::as_str).collect();
        assert_eq!(users, ["u1", "u2", "u3"]);
        let when: Vec<u64> = a
            .examples
            .iter()
            .filter_map(|e| e["ms_after_kill"].as_u64())
            .collect();
        assert_eq!(when, [1, 3, 5], "the counted frames are the examples");
    }

    #[test]
    fn failure_reasons_are_short() {
        assert_eq!(
            reason("ws://127.0.0.1:1/ws: IO error: Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(reason("ws://x: connect timed out"), "connect timed out");
        assert_eq!(
            reason("\"room.join\" answered \"unavailable\""),
            "unavailable"
        );
    }
}
