//! The Redis bus: per-room channels `events:{R}` on one dedicated pub/sub
//! connection per node.
//!
//! One task, the subscriber, owns the pub/sub connection and the table of
//! rooms this node holds. Subscribe and unsubscribe requests reach it over a
//! bounded command queue, so reference counts and `SUBSCRIBE`/`UNSUBSCRIBE`
//! are applied in order without locks. The subscriber also remembers the last
//! seq it delivered per room:
//!
//! - an envelope with a seq at or below it is a duplicate and is dropped;
//! - an envelope whose seq jumps past it means pub/sub lost events: the
//!   missed ones are read from `room_events:{R}` and delivered first;
//! - when the connection drops, it reconnects with jittered exponential
//!   backoff (`backon`), subscribes every held room again, and repairs each
//!   room the same way.
//!
//! Ephemeral events are published with `PUBLISH` on a self-reconnecting
//! multiplexed connection handed in by the caller: the store's shared
//! connection, so publishing and commands share one connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSubSink};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::EventBus;
use crate::codec;
use crate::error::{StoreError, StoreResult};
use crate::events::{EventLog, EventSink};
use crate::layout::Keys;
use crate::metrics::Metrics;
use crate::model::{Event, now_us};

enum Command {
    Subscribe(String, oneshot::Sender<StoreResult<()>>),
    Unsubscribe(String),
}

/// The Redis engine of the bus.
pub(crate) struct RedisBus {
    /// Subscribe and unsubscribe requests to the subscriber task.
    commands: mpsc::Sender<Command>,
    /// The connection `PUBLISH` goes on; it connects on first use and
    /// reconnects by itself, so a node starts (not ready) while Redis is down.
    publisher: ConnectionManager,
    /// Channel names.
    keys: Keys,
    /// The bound on every Redis call.
    timeout: Duration,
    /// Whether the pub/sub connection is up (readiness).
    healthy: Arc<AtomicBool>,
}

/// What the subscriber task needs.
struct Subscriber {
    client: redis::Client,
    keys: Keys,
    timeout: Duration,
    sink: Arc<dyn EventSink>,
    /// The rooms' durable logs, for gap repair.
    log: Arc<dyn EventLog>,
    metrics: Arc<Metrics>,
    healthy: Arc<AtomicBool>,
    /// room → (holds, last seq delivered; 0 = none yet)
    rooms: HashMap<String, (usize, u64)>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisBus {
    /// Starts the subscriber task, which stops when `stop` is cancelled.
    /// Ephemeral events are published on `publisher`.
    // Each argument is one part the composition root hands in.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start(
        url: &str,
        keys: Keys,
        timeout: Duration,
        publisher: ConnectionManager,
        sink: Arc<dyn EventSink>,
        log: Arc<dyn EventLog>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> StoreResult<RedisBus> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let healthy = Arc::new(AtomicBool::new(false));
        let (commands, rx) = mpsc::channel(1024);
        let subscriber = Subscriber {
            client,
            keys: keys.clone(),
            timeout,
            sink,
            log,
            metrics,
            healthy: healthy.clone(),
            rooms: HashMap::new(),
        };
        tokio::spawn(subscriber.run(rx, stop));
        Ok(RedisBus {
            commands,
            publisher,
            keys,
            timeout,
            healthy,
        })
    }
}

#[async_trait]
impl EventBus for RedisBus {
    async fn publish(&self, room: &str, event: &Event) -> StoreResult<()> {
        let payload = codec::encode(0, event, now_us());
        let mut conn = self.publisher.clone();
        let channel = self.keys.channel(room);
        match tokio::time::timeout(
            self.timeout,
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::backend(e)),
            Err(_) => Err(unavailable("PUBLISH timed out")),
        }
    }

    async fn subscribe(&self, room: &str) -> StoreResult<()> {
        if !self.healthy() {
            return Err(unavailable("pub/sub is not connected"));
        }
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Subscribe(room.to_owned(), tx))
            .await
            .map_err(|_| unavailable("the subscriber has stopped"))?;
        rx.await
            .map_err(|_| unavailable("the subscriber has stopped"))?
    }

    async fn unsubscribe(&self, room: &str) {
        let _ = self
            .commands
            .send(Command::Unsubscribe(room.to_owned()))
            .await;
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// The first wait before reconnecting pub/sub; doubled each time.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
/// The longest wait between reconnect attempts before jitter (which adds
/// up to as much again, so the longest wait is 4 s).
const RECONNECT_MAX: Duration = Duration::from_millis(2000);

/// Waits between pub/sub reconnect attempts: exponential from
/// `RECONNECT_MIN` up to `RECONNECT_MAX`, with jitter, never giving up.
fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(RECONNECT_MIN)
        .with_factor(2.0)
        .with_max_delay(RECONNECT_MAX)
        .without_max_times()
        .with_jitter()
        .build()
}

/// Why the inner loop ended.
enum Exit {
    Stop,
    Reconnect,
}

impl Subscriber {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>, stop: CancellationToken) {
        let mut attempt: u32 = 0;
        let mut backoff = reconnect_backoff();
        let mut reconnecting = false;
        loop {
            if stop.is_cancelled() {
                return;
            }
            match self.connect().await {
                Ok((sink, stream)) => {
                    attempt = 0;
                    backoff = reconnect_backoff();
                    if reconnecting {
                        self.metrics.pubsub_reconnects.inc();
                        tracing::info!("pub/sub reconnected; repairing held rooms");
                    }
                    self.healthy.store(true, Ordering::Relaxed);
                    if reconnecting {
                        self.repair_all().await;
                    }
                    match self.serve(sink, stream, &mut commands, &stop).await {
                        Exit::Stop => return,
                        Exit::Reconnect => {}
                    }
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!("pub/sub connection lost");
                }
                Err(e) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, attempt, "pub/sub connect failed");
                    // Answer waiting subscribers instead of leaving them hanging.
                    while let Ok(cmd) = commands.try_recv() {
                        self.apply_offline(cmd);
                    }
                }
            }
            reconnecting = true;
            attempt = attempt.saturating_add(1);
            let wait = backoff.next().unwrap_or(RECONNECT_MAX);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Records a command while disconnected: holds are counted and will be
    /// subscribed on reconnect, but a subscriber cannot be told it receives
    /// events yet, so it gets `unavailable`.
    fn apply_offline(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe(_, ack) => {
                let _ = ack.send(Err(unavailable("pub/sub is reconnecting")));
            }
            Command::Unsubscribe(room) => {
                self.release(&room);
            }
        }
    }

    fn release(&mut self, room: &str) -> bool {
        let Some(entry) = self.rooms.get_mut(room) else {
            return false;
        };
        entry.0 = entry.0.saturating_sub(1);
        if entry.0 == 0 {
            self.rooms.remove(room);
            self.metrics.pubsub_channels.set(self.rooms.len() as i64);
            return true;
        }
        false
    }

    async fn connect(&self) -> Result<(PubSubSink, redis::aio::PubSubStream), StoreError> {
        let pubsub = tokio::time::timeout(self.timeout, self.client.get_async_pubsub())
            .await
            .map_err(|_| unavailable("pub/sub connect timed out"))?
            .map_err(unavailable)?;
        let (mut sink, stream) = pubsub.split();
        let channels: Vec<String> = self.rooms.keys().map(|r| self.keys.channel(r)).collect();
        if !channels.is_empty() {
            tokio::time::timeout(self.timeout, sink.subscribe(&channels))
                .await
                .map_err(|_| unavailable("re-subscribe timed out"))?
                .map_err(unavailable)?;
        }
        Ok((sink, stream))
    }

    async fn serve(
        &mut self,
        mut sink: PubSubSink,
        mut stream: redis::aio::PubSubStream,
        commands: &mut mpsc::Receiver<Command>,
        stop: &CancellationToken,
    ) -> Exit {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Exit::Stop,
                msg = stream.next() => {
                    let Some(msg) = msg else { return Exit::Reconnect };
                    let channel = msg.get_channel_name().to_owned();
                    let Some(room) = self.keys.room_of_channel(&channel).map(str::to_owned) else {
                        continue;
                    };
                    self.receive(&room, msg.get_payload_bytes()).await;
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return Exit::Stop };
                    if !self.apply(&mut sink, cmd).await {
                        return Exit::Reconnect;
                    }
                }
            }
        }
    }

    /// Applies a command on a live connection; false when the connection failed.
    async fn apply(&mut self, sink: &mut PubSubSink, cmd: Command) -> bool {
        match cmd {
            Command::Subscribe(room, ack) => {
                if let Some(entry) = self.rooms.get_mut(&room) {
                    entry.0 += 1;
                    let _ = ack.send(Ok(()));
                    return true;
                }
                let channel = self.keys.channel(&room);
                match tokio::time::timeout(self.timeout, sink.subscribe(&channel)).await {
                    Ok(Ok(())) => {
                        self.rooms.insert(room, (1, 0));
                        self.metrics.pubsub_channels.set(self.rooms.len() as i64);
                        let _ = ack.send(Ok(()));
                        true
                    }
                    Ok(Err(e)) => {
                        let _ = ack.send(Err(unavailable(&e)));
                        false
                    }
                    Err(_) => {
                        let _ = ack.send(Err(unavailable("SUBSCRIBE timed out")));
                        false
                    }
                }
            }
            Command::Unsubscribe(room) => {
                if self.release(&room) {
                    let channel = self.keys.channel(&room);
                    matches!(
                        tokio::time::timeout(self.timeout, sink.unsubscribe(&channel)).await,
                        Ok(Ok(()))
                    )
                } else {
                    true
                }
            }
        }
    }

    /// Delivers one received envelope, repairing a gap first.
    async fn receive(&mut self, room: &str, payload: &[u8]) {
        let seq = match codec::peek_seq(payload) {
            Ok(seq) => seq,
            Err(e) => {
                tracing::warn!(room, error = %e, "dropping undecodable envelope");
                return;
            }
        };
        let Some(&(_, last)) = self.rooms.get(room) else {
            // Unsubscribed while the message was in flight.
            return;
        };
        if seq > 0 {
            if last > 0 && seq <= last {
                return;
            }
            if last > 0 && seq > last + 1 {
                self.repair(room, last).await;
                if self.last_seq(room) >= seq {
                    return;
                }
            }
            if let Some(entry) = self.rooms.get_mut(room) {
                entry.1 = seq;
            }
        }
        self.sink.deliver(room, payload);
    }

    fn last_seq(&self, room: &str) -> u64 {
        self.rooms.get(room).map(|e| e.1).unwrap_or(0)
    }

    /// Reads what the room's log holds after `last` and delivers it in order.
    async fn repair(&mut self, room: &str, last: u64) {
        let replay = match self.log.envelopes_since(room, last).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(room, error = %e, "gap repair failed; clients will resume with since");
                return;
            }
        };
        if !replay.complete {
            tracing::warn!(room, last, "gap larger than the retained log");
        }
        let mut repaired = 0u64;
        for env in &replay.envelopes {
            let Ok(seq) = codec::peek_seq(env) else {
                continue;
            };
            if seq <= self.last_seq(room) {
                continue;
            }
            if let Some(entry) = self.rooms.get_mut(room) {
                entry.1 = seq;
            }
            self.sink.deliver(room, env);
            repaired += 1;
        }
        self.metrics.gap_repairs.inc();
        self.metrics.events_repaired.inc_by(repaired);
    }

    async fn repair_all(&mut self) {
        let held: Vec<(String, u64)> = self
            .rooms
            .iter()
            .filter(|(_, (_, last))| *last > 0)
            .map(|(r, (_, last))| (r.clone(), *last))
            .collect();
        for (room, last) in held {
            self.repair(&room, last).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::events::RawReplay;
    use crate::model::{Message, MessageKind, User, now_ms};

    #[derive(Default)]
    struct Recorder(Mutex<Vec<u64>>);

    impl EventSink for Recorder {
        fn deliver(&self, _room: &str, envelope: &[u8]) {
            let seq = codec::peek_seq(envelope).expect("seq");
            self.0.lock().expect("lock").push(seq);
        }
    }

    /// A room log held in memory: the envelopes of seqs 1..=len.
    struct Log(Vec<Vec<u8>>);

    #[async_trait]
    impl EventLog for Log {
        async fn envelopes_since(&self, _room: &str, since: u64) -> StoreResult<RawReplay> {
            Ok(RawReplay {
                envelopes: self.0.iter().skip(since as usize).cloned().collect(),
                last_seq: self.0.len() as u64,
                complete: true,
            })
        }
    }

    fn message(text: &str) -> Message {
        Message {
            id: uuid::Uuid::now_v7().to_string(),
            room: "r".into(),
            seq: 0,
            user: User {
                id: "u".into(),
                name: "U".into(),
                image: None,
            },
            kind: MessageKind::Text,
            content: text.into(),
            attachment: None,
            created_at: now_ms(),
            edited_at: None,
            deleted: false,
        }
    }

    /// A subscriber holding room `r` up to seq 2, whose log holds seqs 1..=6.
    fn subscriber() -> (Subscriber, Arc<Recorder>, Vec<Vec<u8>>) {
        let log: Vec<Vec<u8>> = (1..=6)
            .map(|seq| codec::encode(seq, &Event::MessageCreated(message("m")), now_us()))
            .collect();
        let sink = Arc::new(Recorder::default());
        let mut rooms = HashMap::new();
        rooms.insert("r".to_owned(), (1, 2));
        let sub = Subscriber {
            client: redis::Client::open("redis://127.0.0.1:1").expect("client"),
            keys: Keys::new("t:"),
            timeout: Duration::from_secs(1),
            sink: sink.clone(),
            log: Arc::new(Log(log.clone())),
            metrics: Arc::new(Metrics::new()),
            healthy: Arc::new(AtomicBool::new(true)),
            rooms,
        };
        (sub, sink, log)
    }

    #[tokio::test]
    async fn a_seq_jump_is_repaired_from_the_log_in_order() {
        let (mut sub, sink, log) = subscriber();
        // Delivered up to 2; 3 and 4 were lost; 5 arrives. The repair
        // delivers everything the log holds after 2, in order (6 included,
        // which is still on its way live).
        sub.receive("r", &log[4]).await;
        assert_eq!(*sink.0.lock().expect("lock"), [3, 4, 5, 6]);
        assert_eq!(sub.metrics.gap_repairs.get(), 1);
        assert_eq!(sub.metrics.events_repaired.get(), 4);
        // What then arrives live is a duplicate and is dropped.
        sub.receive("r", &log[3]).await;
        sub.receive("r", &log[5]).await;
        assert_eq!(*sink.0.lock().expect("lock"), [3, 4, 5, 6]);
    }

    #[tokio::test]
    async fn reconnect_repairs_every_held_room() {
        let (mut sub, sink, _log) = subscriber();
        sub.repair_all().await;
        assert_eq!(*sink.0.lock().expect("lock"), [3, 4, 5, 6]);
        // Events of rooms this node does not hold are ignored.
        sub.receive(
            "other",
            &codec::encode(9, &Event::MessageCreated(message("x")), 0),
        )
        .await;
        assert_eq!(sink.0.lock().expect("lock").len(), 4);
    }
}
