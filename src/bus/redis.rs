//! The Redis bus: per-room channels `events:{R}` on one dedicated pub/sub
//! connection per node.
//!
//! One task, the subscriber, owns the pub/sub connection and the table of
//! rooms this node holds (`super::table`: holds, last seq, gap repair).
//! Subscribe and unsubscribe requests reach it over a bounded command queue,
//! so reference counts and `SUBSCRIBE`/`UNSUBSCRIBE` are applied in order
//! without locks. When the connection drops, it reconnects with jittered
//! exponential backoff (`backon`), subscribes every held room again, and
//! repairs each room from its log.
//!
//! The same task and connection hold the node's user channels
//! (`super::users`): their commands come on a queue of their own, taken in
//! batches, one `SUBSCRIBE`/`UNSUBSCRIBE` of many channels each, and after
//! the rooms' (a join waits for its room's subscription; nobody waits for a
//! user's).
//!
//! Ephemeral events are published with `PUBLISH` on a self-reconnecting
//! multiplexed connection handed in by the caller: the store's shared
//! connection, so publishing and commands share one connection.

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
use super::table::RoomTable;
use super::users::{self, UserCommand, UserHolds};
use crate::codec;
use crate::error::{StoreError, StoreResult};
use crate::events::{EventLog, EventSink};
use crate::layout::Keys;
use crate::metrics::Metrics;
use crate::model::{Event, now_us};

/// A request to the subscriber task.
pub(super) enum Command {
    /// Take a hold on a room; answered once its events are received.
    Subscribe(String, oneshot::Sender<StoreResult<()>>),
    /// Release a hold.
    Unsubscribe(String),
}

/// The Redis engine of the bus.
pub(crate) struct RedisBus {
    /// Subscribe and unsubscribe requests to the subscriber task.
    commands: mpsc::Sender<Command>,
    /// User channel holds and releases to the subscriber task.
    users: mpsc::Sender<UserCommand>,
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
    metrics: Arc<Metrics>,
    healthy: Arc<AtomicBool>,
    /// The held rooms.
    rooms: RoomTable,
    /// The held user channels.
    users: UserHolds,
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
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
        let (users, users_rx) = mpsc::channel(users::QUEUE);
        let subscriber = Subscriber {
            client,
            keys: keys.clone(),
            timeout,
            metrics: metrics.clone(),
            healthy: healthy.clone(),
            rooms: RoomTable::new(sink.clone(), log, metrics.clone()),
            users: UserHolds::new(sink, metrics),
        };
        tokio::spawn(subscriber.run(rx, users_rx, stop));
        Ok(RedisBus {
            commands,
            users,
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
        let mut conn = self.publisher.clone();
        publish_on(
            &mut conn,
            "PUBLISH",
            &self.keys.channel(room),
            codec::encode(0, event, now_us()),
            self.timeout,
        )
        .await
    }

    async fn publish_to_user(&self, user: &str, room: &str, event: &Event) -> StoreResult<()> {
        let mut conn = self.publisher.clone();
        publish_on(
            &mut conn,
            "PUBLISH",
            &self.keys.user_channel(user),
            users::payload(room, event),
            self.timeout,
        )
        .await
    }

    async fn hold_user(&self, user: &str) {
        users::request(&self.users, UserCommand::Hold(user.to_owned())).await;
    }

    async fn release_user(&self, user: &str) {
        users::request(&self.users, UserCommand::Release(user.to_owned())).await;
    }

    async fn subscribe(&self, room: &str) -> StoreResult<()> {
        request_hold(&self.commands, self.healthy(), room).await
    }

    async fn unsubscribe(&self, room: &str) {
        release_hold(&self.commands, room).await;
    }

    fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Publishes `payload` (an envelope, or an addressed one on a user
/// channel) on `channel` with `verb` (`PUBLISH`, or `SPUBLISH` on a
/// cluster), within `timeout`.
pub(super) async fn publish_on(
    conn: &mut impl redis::aio::ConnectionLike,
    verb: &str,
    channel: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> StoreResult<()> {
    match tokio::time::timeout(
        timeout,
        redis::cmd(verb)
            .arg(channel)
            .arg(payload)
            .query_async::<i64>(conn),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(StoreError::backend(e)),
        Err(_) => Err(unavailable(format!("{verb} timed out"))),
    }
}

/// Asks a subscriber task for a hold on `room`; answered once the node
/// receives the room's events. `healthy`: whether its connection is up.
pub(super) async fn request_hold(
    commands: &mpsc::Sender<Command>,
    healthy: bool,
    room: &str,
) -> StoreResult<()> {
    if !healthy {
        return Err(unavailable("pub/sub is not connected"));
    }
    let (tx, rx) = oneshot::channel();
    commands
        .send(Command::Subscribe(room.to_owned(), tx))
        .await
        .map_err(|_| unavailable("the subscriber has stopped"))?;
    rx.await
        .map_err(|_| unavailable("the subscriber has stopped"))?
}

/// Tells a subscriber task to release one hold on `room`.
pub(super) async fn release_hold(commands: &mpsc::Sender<Command>, room: &str) {
    let _ = commands.send(Command::Unsubscribe(room.to_owned())).await;
}

/// The first wait before reconnecting pub/sub; doubled each time.
pub(super) const RECONNECT_MIN: Duration = Duration::from_millis(200);
/// The longest wait between reconnect attempts before jitter (which adds
/// up to as much again, so the longest wait is 4 s).
pub(super) const RECONNECT_MAX: Duration = Duration::from_millis(2000);

/// Waits between pub/sub reconnect attempts: exponential from
/// `RECONNECT_MIN` up to `RECONNECT_MAX`, with jitter, never giving up.
pub(super) fn reconnect_backoff() -> impl Iterator<Item = Duration> {
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
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut user_cmds: mpsc::Receiver<UserCommand>,
        stop: CancellationToken,
    ) {
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
                        self.rooms.repair_all().await;
                    }
                    match self
                        .serve(sink, stream, &mut commands, &mut user_cmds, &stop)
                        .await
                    {
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
                    // User holds are counted; `connect` subscribes them.
                    while let Ok(cmd) = user_cmds.try_recv() {
                        let cmds = users::batch(cmd, &mut user_cmds);
                        self.users.apply(cmds);
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
                self.rooms.release(&room);
            }
        }
    }

    async fn connect(&self) -> Result<(PubSubSink, redis::aio::PubSubStream), StoreError> {
        let pubsub = tokio::time::timeout(self.timeout, self.client.get_async_pubsub())
            .await
            .map_err(|_| unavailable("pub/sub connect timed out"))?
            .map_err(unavailable)?;
        let (mut sink, stream) = pubsub.split();
        let rooms = self.rooms.held().into_iter().map(|r| self.keys.channel(&r));
        let users = self
            .users
            .held()
            .into_iter()
            .map(|u| self.keys.user_channel(&u));
        let channels: Vec<String> = rooms.chain(users).collect();
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
        user_cmds: &mut mpsc::Receiver<UserCommand>,
        stop: &CancellationToken,
    ) -> Exit {
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Exit::Stop,
                msg = stream.next() => {
                    let Some(msg) = msg else { return Exit::Reconnect };
                    let channel = msg.get_channel_name();
                    if let Some(room) = self.keys.room_of_channel(channel).map(str::to_owned) {
                        self.rooms.receive(&room, msg.get_payload_bytes()).await;
                    } else if let Some(user) = self.keys.user_of_channel(channel) {
                        self.users.receive(user, msg.get_payload_bytes());
                    }
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return Exit::Stop };
                    if !self.apply(&mut sink, cmd).await {
                        return Exit::Reconnect;
                    }
                }
                cmd = user_cmds.recv() => {
                    let Some(cmd) = cmd else { return Exit::Stop };
                    let cmds = users::batch(cmd, user_cmds);
                    if !self.apply_users(&mut sink, cmds).await {
                        return Exit::Reconnect;
                    }
                }
            }
        }
    }

    /// Applies a batch of user commands on a live connection: one
    /// `SUBSCRIBE` and one `UNSUBSCRIBE` of the net change; false when the
    /// connection failed (`connect` subscribes every held user again).
    async fn apply_users(&mut self, sink: &mut PubSubSink, cmds: Vec<UserCommand>) -> bool {
        let changes = self.users.apply(cmds);
        let channels = |users: &[String]| -> Vec<String> {
            users.iter().map(|u| self.keys.user_channel(u)).collect()
        };
        let (subscribe, unsubscribe) =
            (channels(&changes.subscribe), channels(&changes.unsubscribe));
        if !subscribe.is_empty()
            && !matches!(
                tokio::time::timeout(self.timeout, sink.subscribe(&subscribe)).await,
                Ok(Ok(()))
            )
        {
            return false;
        }
        if !unsubscribe.is_empty()
            && !matches!(
                tokio::time::timeout(self.timeout, sink.unsubscribe(&unsubscribe)).await,
                Ok(Ok(()))
            )
        {
            return false;
        }
        true
    }

    /// Applies a command on a live connection; false when the connection failed.
    async fn apply(&mut self, sink: &mut PubSubSink, cmd: Command) -> bool {
        match cmd {
            Command::Subscribe(room, ack) => {
                if self.rooms.add_hold(&room) {
                    let _ = ack.send(Ok(()));
                    return true;
                }
                let channel = self.keys.channel(&room);
                match tokio::time::timeout(self.timeout, sink.subscribe(&channel)).await {
                    Ok(Ok(())) => {
                        self.rooms.insert(room);
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
                if self.rooms.release(&room) {
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
}
