//! The two seams between the store, the bus and the gateway's fan-out.
//!
//! - `EventSink`: where a node's received room events go. The gateway's hub
//!   implements it; the memory engine (which publishes durable events itself)
//!   and the buses deliver to it.
//! - `EventLog`: a room's durable event log, read raw. The Redis bus uses it
//!   to repair a gap in what pub/sub delivered; the Redis store implements it.
//!
//! Both live below the store and the bus, so those siblings never import each
//! other. Envelopes are handed over as bytes (`crate::codec`): the receiver
//! decodes them once.

use async_trait::async_trait;

use crate::error::StoreResult;

/// Where received envelopes go: the node's local fan-out.
pub trait EventSink: Send + Sync {
    /// Delivers one envelope (`crate::codec`) of `room` to local connections.
    /// Called in seq order per room; must not block.
    fn deliver(&self, room: &str, envelope: &[u8]);
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
}
