//! The Redis Cluster bus: each room's channel `events:{R}` is a shard
//! channel (`SSUBSCRIBE`/`SPUBLISH`, Redis 7). It hashes to the room's
//! slot, so a room's events travel only inside the shard that owns the
//! room, never to every master.
//!
//! One task, the subscriber, owns a cluster connection speaking RESP3 whose
//! pushes (messages, unsubscribe notices, disconnections) arrive on a
//! channel, and the table of rooms this node holds (`super::table`).
//! A room's channel is subscribed while the node has a local member and
//! dropped after the last one leaves.
//!
//! The redis crate routes each `SSUBSCRIBE` to the master of the channel's
//! slot and follows the topology. The subscriber does not rely on it alone
//! to keep every channel: a room whose channel may have been lost is marked
//! stale and subscribed again, then repaired from its event log, so every
//! event missed meanwhile is delivered in order:
//!
//! - Redis tells a shard channel's subscribers when the channel's slot moved
//!   to another master (an `sunsubscribe` push nobody asked for): that room
//!   is stale;
//! - a connection to any master dropped (a failover, a restart): every held
//!   room is stale, since which rooms lived there is not known here.
//!
//! User channels (`super::users`) are shard channels too, in the user's
//! slot. Their holds arrive on a queue of their own and are applied in
//! batches, each user's channel subscribed concurrently with the others; a
//! user channel lost like a room's is subscribed again, without repair
//! (what it carries is best effort).
//!
//! Stale rooms are subscribed again with jittered exponential backoff until
//! the cluster answers (a failover takes the cluster about
//! `cluster-node-timeout` plus an election).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::EventBus;
use super::redis::{
    Command, RECONNECT_MAX, publish_on, reconnect_backoff, release_hold, request_hold, unavailable,
};
use super::table::RoomTable;
use super::users::{self, UserCommand, UserHolds};
use crate::codec;
use crate::error::StoreResult;
use crate::events::{EventLog, EventSink};
use crate::layout::Keys;
use crate::metrics::Metrics;
use crate::model::{Event, now_us};

/// Channels subscribed again at once while healing.
const RESUBSCRIBE_CONCURRENCY: usize = 64;

/// The Redis Cluster engine of the bus.
pub(crate) struct ShardedBus {
    /// Subscribe and unsubscribe requests to the subscriber task.
    commands: mpsc::Sender<Command>,
    /// User channel holds and releases to the subscriber task.
    users: mpsc::Sender<UserCommand>,
    /// The store's cluster connection, on which `SPUBLISH` goes.
    publisher: ClusterConnection,
    /// Channel names.
    keys: Keys,
    /// The bound on every Redis call.
    timeout: Duration,
    /// Whether the subscriber's cluster connection is up (readiness).
    healthy: Arc<AtomicBool>,
}

/// What the subscriber task needs.
struct Subscriber {
    /// A RESP3 cluster client whose pushes arrive on `run`'s receiver.
    client: redis::cluster::ClusterClient,
    keys: Keys,
    timeout: Duration,
    metrics: Arc<Metrics>,
    healthy: Arc<AtomicBool>,
    /// The held rooms.
    rooms: RoomTable,
    /// Held rooms whose channel may have been lost: subscribed again and
    /// repaired by `heal`.
    stale: HashSet<String>,
    /// The held user channels.
    users: UserHolds,
    /// Held users whose channel may have been lost or was not subscribed:
    /// subscribed again by `heal`.
    stale_users: HashSet<String>,
}

impl ShardedBus {
    /// Starts the subscriber task on a cluster connection of its own, made
    /// from `client` (RESP3, its pushes sent to `pushes`); it stops when
    /// `stop` is cancelled. Ephemeral events are published on `publisher`.
    // Each argument is one part the composition root hands in.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        client: redis::cluster::ClusterClient,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
        keys: Keys,
        timeout: Duration,
        publisher: ClusterConnection,
        sink: Arc<dyn EventSink>,
        log: Arc<dyn EventLog>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> ShardedBus {
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
            stale: HashSet::new(),
            users: UserHolds::new(sink, metrics),
            stale_users: HashSet::new(),
        };
        tokio::spawn(subscriber.run(rx, users_rx, pushes, stop));
        ShardedBus {
            commands,
            users,
            publisher,
            keys,
            timeout,
            healthy,
        }
    }
}

#[async_trait]
impl EventBus for ShardedBus {
    async fn publish(&self, room: &str, event: &Event) -> StoreResult<()> {
        let mut conn = self.publisher.clone();
        publish_on(
            &mut conn,
            "SPUBLISH",
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
            "SPUBLISH",
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

/// What a push from the cluster connection means here.
#[derive(Debug, PartialEq)]
enum Push {
    /// A room's event.
    Event { channel: String, payload: Vec<u8> },
    /// Redis dropped our subscription to a channel (its slot moved), or
    /// confirmed an `SUNSUBSCRIBE`.
    Dropped(String),
    /// A connection to a master dropped.
    Disconnected,
    /// Anything else (subscribe confirmations).
    Other,
}

fn classify(push: PushInfo) -> Push {
    let text = |v: Option<&Value>| match v {
        Some(Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Some(Value::SimpleString(s)) => Some(s.clone()),
        _ => None,
    };
    let mut data = push.data.into_iter();
    match push.kind {
        PushKind::SMessage => {
            let channel = text(data.next().as_ref());
            match (channel, data.next()) {
                (Some(channel), Some(Value::BulkString(payload))) => {
                    Push::Event { channel, payload }
                }
                _ => Push::Other,
            }
        }
        PushKind::SUnsubscribe => text(data.next().as_ref())
            .map(Push::Dropped)
            .unwrap_or(Push::Other),
        PushKind::Disconnection => Push::Disconnected,
        _ => Push::Other,
    }
}

impl Subscriber {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut user_cmds: mpsc::Receiver<UserCommand>,
        mut pushes: mpsc::UnboundedReceiver<PushInfo>,
        stop: CancellationToken,
    ) {
        let mut backoff = reconnect_backoff();
        let mut reconnecting = false;
        loop {
            match self.connect().await {
                Ok(conn) => {
                    backoff = reconnect_backoff();
                    self.healthy.store(true, Ordering::Relaxed);
                    if reconnecting {
                        self.metrics.pubsub_reconnects.inc();
                        self.stale.extend(self.rooms.held());
                    }
                    // Users held while disconnected, or before: a new
                    // connection holds none of their channels.
                    self.stale_users.extend(self.users.held());
                    if self
                        .serve(conn, &mut pushes, &mut commands, &mut user_cmds, &stop)
                        .await
                    {
                        return;
                    }
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!("cluster pub/sub connection lost");
                }
                Err(e) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cluster pub/sub connect failed");
                    while let Ok(cmd) = commands.try_recv() {
                        match cmd {
                            Command::Subscribe(_, ack) => {
                                let _ = ack.send(Err(unavailable("pub/sub is reconnecting")));
                            }
                            Command::Unsubscribe(room) => {
                                self.rooms.release(&room);
                            }
                        }
                    }
                    while let Ok(cmd) = user_cmds.try_recv() {
                        let cmds = users::batch(cmd, &mut user_cmds);
                        self.users.apply(cmds);
                    }
                }
            }
            reconnecting = true;
            let wait = backoff.next().unwrap_or(RECONNECT_MAX);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn connect(&self) -> StoreResult<ClusterConnection> {
        tokio::time::timeout(self.timeout * 2, self.client.get_async_connection())
            .await
            .map_err(|_| unavailable("cluster pub/sub connect timed out"))?
            .map_err(unavailable)
    }

    /// Serves until stopped (true) or the connection is gone (false).
    async fn serve(
        &mut self,
        mut conn: ClusterConnection,
        pushes: &mut mpsc::UnboundedReceiver<PushInfo>,
        commands: &mut mpsc::Receiver<Command>,
        user_cmds: &mut mpsc::Receiver<UserCommand>,
        stop: &CancellationToken,
    ) -> bool {
        let mut backoff = reconnect_backoff();
        let mut next_heal = Instant::now();
        loop {
            let healing = !self.stale.is_empty() || !self.stale_users.is_empty();
            tokio::select! {
                biased;
                _ = stop.cancelled() => return true,
                push = pushes.recv() => {
                    let Some(push) = push else { return false };
                    match classify(push) {
                        Push::Event { channel, payload } => {
                            if let Some(room) = self.keys.room_of_channel(&channel).map(str::to_owned) {
                                self.rooms.receive(&room, &payload).await;
                            } else if let Some(user) = self.keys.user_of_channel(&channel) {
                                self.users.receive(user, &payload);
                            }
                        }
                        Push::Dropped(channel) => {
                            if let Some(room) = self.keys.room_of_channel(&channel)
                                && self.rooms.holds(room)
                            {
                                tracing::info!(room, "shard channel dropped by Redis (slot moved?)");
                                self.mark_stale(room.to_owned(), &mut next_heal);
                            } else if let Some(user) = self.keys.user_of_channel(&channel)
                                && self.users.holds(user)
                            {
                                tracing::debug!(user, "user channel dropped by Redis (slot moved?)");
                                self.mark_user_stale(user.to_owned(), &mut next_heal);
                            }
                        }
                        Push::Disconnected => {
                            tracing::info!(rooms = self.rooms.len(), "a cluster connection dropped; checking every room channel");
                            for room in self.rooms.held() {
                                self.mark_stale(room, &mut next_heal);
                            }
                            for user in self.users.held() {
                                self.mark_user_stale(user, &mut next_heal);
                            }
                        }
                        Push::Other => {}
                    }
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return true };
                    self.apply(&mut conn, cmd).await;
                }
                cmd = user_cmds.recv() => {
                    let Some(cmd) = cmd else { return true };
                    let cmds = users::batch(cmd, user_cmds);
                    self.apply_users(&conn, cmds, &mut next_heal).await;
                }
                _ = tokio::time::sleep_until(next_heal), if healing => {
                    if self.heal(&conn).await {
                        backoff = reconnect_backoff();
                    } else {
                        next_heal = Instant::now() + backoff.next().unwrap_or(RECONNECT_MAX);
                    }
                }
            }
        }
    }

    fn mark_user_stale(&mut self, user: String, next_heal: &mut Instant) {
        if self.stale.is_empty() && self.stale_users.is_empty() {
            *next_heal = Instant::now() + Duration::from_millis(50);
        }
        self.stale_users.insert(user);
    }

    /// Applies a batch of user commands: the users newly held are
    /// subscribed concurrently (those that fail are left to `heal`), the
    /// users no longer held unsubscribed.
    async fn apply_users(
        &mut self,
        conn: &ClusterConnection,
        cmds: Vec<UserCommand>,
        next_heal: &mut Instant,
    ) {
        let changes = self.users.apply(cmds);
        for user in &changes.unsubscribe {
            self.stale_users.remove(user);
        }
        let failed = self.ssubscribe_users(conn, changes.subscribe).await;
        for user in failed {
            self.mark_user_stale(user, next_heal);
        }
        let timeout = self.timeout;
        let keys = &self.keys;
        futures_util::stream::iter(changes.unsubscribe)
            .for_each_concurrent(RESUBSCRIBE_CONCURRENCY, |user| {
                let mut conn = conn.clone();
                let channel = keys.user_channel(&user);
                async move {
                    if let Ok(Err(e)) =
                        tokio::time::timeout(timeout, conn.sunsubscribe(&channel)).await
                    {
                        tracing::debug!(user, error = %e, "SUNSUBSCRIBE of a user channel failed");
                    }
                }
            })
            .await;
    }

    /// Subscribes the channels of `users` concurrently; the users whose
    /// subscription failed.
    async fn ssubscribe_users(&self, conn: &ClusterConnection, users: Vec<String>) -> Vec<String> {
        let timeout = self.timeout;
        let keys = &self.keys;
        futures_util::stream::iter(users)
            .map(|user| {
                let mut conn = conn.clone();
                let channel = keys.user_channel(&user);
                async move {
                    let ok = matches!(
                        tokio::time::timeout(timeout, conn.ssubscribe(&channel)).await,
                        Ok(Ok(()))
                    );
                    (user, ok)
                }
            })
            .buffer_unordered(RESUBSCRIBE_CONCURRENCY)
            .filter_map(|(user, ok)| async move { (!ok).then_some(user) })
            .collect()
            .await
    }

    fn mark_stale(&mut self, room: String, next_heal: &mut Instant) {
        if self.stale.is_empty() && self.stale_users.is_empty() {
            // A short pause lets the cluster settle a moved slot first.
            *next_heal = Instant::now() + Duration::from_millis(50);
        }
        self.stale.insert(room);
    }

    async fn apply(&mut self, conn: &mut ClusterConnection, cmd: Command) {
        match cmd {
            Command::Subscribe(room, ack) => {
                if self.rooms.add_hold(&room) {
                    let _ = ack.send(Ok(()));
                    return;
                }
                let channel = self.keys.channel(&room);
                let answer =
                    match tokio::time::timeout(self.timeout, conn.ssubscribe(&channel)).await {
                        Ok(Ok(())) => {
                            self.rooms.insert(room);
                            Ok(())
                        }
                        Ok(Err(e)) => Err(unavailable(e)),
                        Err(_) => Err(unavailable("SSUBSCRIBE timed out")),
                    };
                let _ = ack.send(answer);
            }
            Command::Unsubscribe(room) => {
                if self.rooms.release(&room) {
                    self.stale.remove(&room);
                    let channel = self.keys.channel(&room);
                    if let Ok(Err(e)) =
                        tokio::time::timeout(self.timeout, conn.sunsubscribe(&channel)).await
                    {
                        tracing::debug!(room, error = %e, "SUNSUBSCRIBE failed");
                    }
                }
            }
        }
    }

    /// Subscribes the stale rooms again and repairs each from its log, and
    /// the stale users' channels; true when none is left.
    async fn heal(&mut self, conn: &ClusterConnection) -> bool {
        let users: Vec<String> = std::mem::take(&mut self.stale_users)
            .into_iter()
            .filter(|user| self.users.holds(user))
            .collect();
        let failed = self.ssubscribe_users(conn, users).await;
        if !failed.is_empty() {
            tracing::warn!(
                failed = failed.len(),
                "user channels not subscribed again yet; retrying"
            );
        }
        self.stale_users.extend(failed);
        let stale: Vec<String> = self
            .stale
            .iter()
            .filter(|room| self.rooms.holds(room))
            .cloned()
            .collect();
        let timeout = self.timeout;
        let keys = &self.keys;
        let outcomes: Vec<(String, bool)> = futures_util::stream::iter(stale)
            .map(|room| {
                let mut conn = conn.clone();
                let channel = keys.channel(&room);
                async move {
                    let ok = matches!(
                        tokio::time::timeout(timeout, conn.ssubscribe(&channel)).await,
                        Ok(Ok(()))
                    );
                    (room, ok)
                }
            })
            .buffer_unordered(RESUBSCRIBE_CONCURRENCY)
            .collect()
            .await;
        self.stale.retain(|room| self.rooms.holds(room));
        let mut failed = 0;
        for (room, ok) in outcomes {
            if !ok {
                failed += 1;
                continue;
            }
            self.stale.remove(&room);
            self.metrics.pubsub_resubscribes.inc();
            self.rooms.repair(&room).await;
        }
        if failed > 0 {
            tracing::warn!(failed, "shard channels not subscribed again yet; retrying");
        }
        self.stale.is_empty() && self.stale_users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn pushes_are_read_as_events_drops_and_disconnections() {
        let event = PushInfo {
            kind: PushKind::SMessage,
            data: vec![bulk("h:events:{r1}"), Value::BulkString(vec![1, 0, 7])],
        };
        assert_eq!(
            classify(event),
            Push::Event {
                channel: "h:events:{r1}".into(),
                payload: vec![1, 0, 7]
            }
        );
        let dropped = PushInfo {
            kind: PushKind::SUnsubscribe,
            data: vec![bulk("h:events:{r1}"), Value::Int(0)],
        };
        assert_eq!(classify(dropped), Push::Dropped("h:events:{r1}".into()));
        let gone = PushInfo {
            kind: PushKind::Disconnection,
            data: vec![],
        };
        assert_eq!(classify(gone), Push::Disconnected);
        let confirm = PushInfo {
            kind: PushKind::SSubscribe,
            data: vec![bulk("h:events:{r1}"), Value::Int(1)],
        };
        assert_eq!(classify(confirm), Push::Other);
        let malformed = PushInfo {
            kind: PushKind::SMessage,
            data: vec![bulk("h:events:{r1}")],
        };
        assert_eq!(classify(malformed), Push::Other);
    }
}
