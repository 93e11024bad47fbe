//! The two seams between the store, the bus and the gateway's fan-out.
//!
//! - `EventSink`: where a node's received room events go, and the events
//!   addressed to one user's connections. The gateway's hub
//!   implements it; the memory engine (which publishes durable events itself)
//!   and the buses deliver to it.
//! - `EventLog`: a room's durable event log, read raw. The Redis bus uses it
//!   to repair a gap in what pub/sub delivered; the Redis store implements it.
//!   It also answers who of some users is still in a room (`presence`):
//!   after a repair the bus tells the sink the room was resynced
//!   (`EventSink::resynced`) and hands it the log, so the hub can re-check
//!   its local connections against the store. Ephemeral events
//!   (`member.removed`, `room.closed`) are not in the log: a node whose
//!   pub/sub lost one learns of the removal this way.
//!
//! Both live below the store and the bus, so those siblings never import each
//! other. Envelopes are handed over as bytes (`crate::codec`): the receiver
//! decodes them once.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::StoreResult;
use crate::model::BanRecord;

/// Where received envelopes go: the node's local fan-out.
pub trait EventSink: Send + Sync {
    /// Delivers one envelope (`crate::codec`) of `room` to local connections.
    /// Called in seq order per room; must not block.
    fn deliver(&self, room: &str, envelope: &[u8]);

    /// Delivers one envelope of `room` addressed to `user`'s local
    /// connections, whatever rooms they joined (a `read` event, from the
    /// user's channel). Must not block. Default: nothing (a sink with no
    /// connections of its own, as in tests).
    fn deliver_to_user(&self, user: &str, room: &str, envelope: &[u8]) {
        let _ = (user, room, envelope);
    }

    /// Says `room` was repaired or subscribed again after pub/sub lost it:
    /// ephemeral events of that time are lost, so the sink may re-check its
    /// local connections with `log`. Must not block. Default: nothing.
    fn resynced(&self, room: &str, log: &Arc<dyn EventLog>) {
        let _ = (room, log);
    }
}

/// Where some users stand in a room, as the store says now.
#[derive(Debug, Clone, PartialEq)]
pub struct Presence {
    /// The room exists.
    pub exists: bool,
    /// For each user asked, in order: still a participant (`None`), or not
    /// (`Some`), with their ban if one holds.
    pub gone: Vec<Option<Option<BanRecord>>>,
}

/// The retained part of a room's durable log after a seq, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RawReplay {
    /// Envelopes (`crate::codec`) with seq > since, ascending.
    pub envelopes: Vec<Vec<u8>>,
    /// The room's latest seq when read.
    pub last_seq: u64,
    /// Every event after `since` is in `envelopes` (the log was not trimmed
    /// past it).
    pub complete: bool,
}

/// A room's durable event log, read without decoding.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// The envelopes of `room` with seq > `since`, ascending.
    async fn envelopes_since(&self, room: &str, since: u64) -> StoreResult<RawReplay>;

    /// Whether `room` exists and which of `users` are no longer its
    /// participants (one bounded read: the room, its members and its bans).
    async fn presence(&self, room: &str, users: &[String]) -> StoreResult<Presence>;
}
