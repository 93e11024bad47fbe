//! The event bus: publishing room events to every node, and receiving them.
//!
//! Durable events (messages) are published by the store, inside the same
//! atomic operation that assigns their seq; the bus publishes only the
//! ephemeral ones (participants, typing, room updates). Receiving is the
//! node's subscription multiplexer: a room's channel is subscribed while at
//! least one local connection has joined the room, and every received
//! envelope is handed, undecoded, to the node's `crate::events::EventSink`
//! (the gateway's hub), which decodes it once and fans the rendered frame
//! out.
//!
//! Events addressed to one user (a `read` event, for the user's connections
//! whatever rooms they joined) go on the user's channel instead, which a
//! node subscribes while it holds a connection of the user (`users`).
//!
//! Engines: `MemoryBus` (one node: publish is a local delivery),
//! `RedisBus` (per-room channels on one dedicated pub/sub connection that
//! heals itself) and `ShardedBus` (a Redis Cluster: per-room shard
//! channels that follow slot moves and failovers). Both Redis engines
//! repair gaps from the room's event log, read through
//! `crate::events::EventLog` (`table`).

use std::sync::Arc;

use async_trait::async_trait;

use crate::codec;
use crate::error::StoreResult;
use crate::events::EventSink;
use crate::model::{Event, now_us};

pub(crate) mod redis;
pub(crate) mod sharded;
mod table;
mod users;

pub(crate) use self::redis::RedisBus;
pub(crate) use self::sharded::ShardedBus;

/// Publishing and subscribing to room events.
#[async_trait]
pub(crate) trait EventBus: Send + Sync {
    /// Publishes an ephemeral event to every node.
    async fn publish(&self, room: &str, event: &Event) -> StoreResult<()>;

    /// Publishes an ephemeral event of `room` to `user`'s connections on
    /// every node (the user's channel). Best effort: a node that has just
    /// taken its hold may not receive it yet.
    async fn publish_to_user(&self, user: &str, room: &str, event: &Event) -> StoreResult<()>;

    /// Takes one hold on `user`'s channel. Returns once the request is
    /// queued, not once the channel is subscribed (see `users`). Every
    /// `hold_user` is paired with a `release_user`.
    async fn hold_user(&self, user: &str);

    /// Releases one hold on `user`'s channel.
    async fn release_user(&self, user: &str);

    /// Takes one hold on the room's channel; returns once this node receives
    /// the room's events. Every `subscribe` is paired with an `unsubscribe`.
    async fn subscribe(&self, room: &str) -> StoreResult<()>;

    /// Releases one hold; the channel is dropped with the last one.
    async fn unsubscribe(&self, room: &str);

    /// Whether events are being received (the pub/sub connection is up).
    fn healthy(&self) -> bool;
}

/// The single-node bus: publishing is local delivery.
pub(crate) struct MemoryBus {
    sink: Arc<dyn EventSink>,
}

impl MemoryBus {
    /// A bus delivering to `sink`.
    pub(crate) fn new(sink: Arc<dyn EventSink>) -> MemoryBus {
        MemoryBus { sink }
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    async fn publish(&self, room: &str, event: &Event) -> StoreResult<()> {
        self.sink.deliver(room, &codec::encode(0, event, now_us()));
        Ok(())
    }

    async fn publish_to_user(&self, user: &str, room: &str, event: &Event) -> StoreResult<()> {
        self.sink
            .deliver_to_user(user, room, &codec::encode(0, event, now_us()));
        Ok(())
    }

    async fn hold_user(&self, _user: &str) {}

    async fn release_user(&self, _user: &str) {}

    async fn subscribe(&self, _room: &str) -> StoreResult<()> {
        Ok(())
    }

    async fn unsubscribe(&self, _room: &str) {}

    fn healthy(&self) -> bool {
        true
    }
}
