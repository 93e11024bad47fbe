//! `ReadStore`: read state (protocol 1.1 "Read state"): each participant's
//! read position in a room, unread counts, and the per-user index of rooms
//! behind `room.mine`.
//!
//! Unread counts are counts by seq, never a scan of the history. Each room
//! keeps the set of its *countable* messages (not system messages; deleted
//! messages leave it when deleted, expired ones when trimmed), ordered by
//! seq, and a user's unread count is how many of them have a seq above the
//! user's `read_seq` (up to the last seq readers may see). "Not the user's
//! own" needs no per-user state: sending a message marks the room read up
//! to it, atomically with the write, so a user's own messages are never
//! above their `read_seq`.
//!
//! The rooms of a user are an index written by the service after a join
//! (one key per user, apart from the rooms' own keys), bounded to the
//! newest `USER_ROOMS_MAX` joins, and checked against each room when read:
//! entries for rooms that are gone, or that the user no longer
//! participates in (left from another node, kicked, the room closed or
//! expired), are dropped then.

use async_trait::async_trait;

use super::StoreResult;
use crate::model::{Room, User};

/// Rooms kept in a user's index (`room.mine` candidates): the newest joins.
pub const USER_ROOMS_MAX: usize = 1000;

/// Participants a room may have for `room.receipts`.
pub const RECEIPTS_MAX: u32 = 100;

/// Outcome of `ReadStore::mark_read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The read position after the call.
    Read {
        /// The stored `read_seq`.
        read_seq: u64,
        /// Whether this call moved it.
        moved: bool,
    },
    /// The room does not exist.
    NoRoom,
    /// The user is not a participant.
    NotMember,
}

/// What decides a participant's role, read with the room (the decision
/// itself is the service's: `service::reads::role`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleFacts {
    /// The room's `owner` field, when set (absent: the creator owns it).
    pub owner: Option<String>,
    /// The user is named moderator (`roles:{R}`).
    pub moderator: bool,
}

/// One of the user's rooms as `room.mine` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct MyRoom {
    /// The room.
    pub room: Room,
    /// The user's read position.
    pub read_seq: u64,
    /// Countable messages after it.
    pub unread: u64,
    /// What decides the user's role.
    pub role: RoleFacts,
}

/// Outcome of `ReadStore::receipts`.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiptsOutcome {
    /// Every participant with their read position (0 when never read),
    /// ordered as `sort_users` orders users.
    Reads(Vec<(User, u64)>),
    /// The room does not exist.
    NoRoom,
    /// The asking user is not a participant.
    NotMember,
    /// The room has more than `RECEIPTS_MAX` participants: this many.
    TooBig(u32),
}

/// Read positions, unread counts and the user's room index.
#[async_trait]
pub trait ReadStore: Send + Sync {
    /// Moves `user`'s read position in the room up to `seq`, capped at the
    /// room's last seq readers may see; a lower value changes nothing.
    async fn mark_read(&self, room: &str, user: &str, seq: u64) -> StoreResult<ReadOutcome>;

    /// Adds `room` to `user`'s index (joined at `at_ms`), keeping the
    /// newest `USER_ROOMS_MAX`.
    async fn remember_room(&self, user: &str, room: &str, at_ms: u64) -> StoreResult<()>;

    /// Removes `room` from `user`'s index unless the user joined it (again)
    /// at or after `joined_before_ms`: a leave passes a time taken before
    /// its own store call, so a concurrent rejoin's entry stays.
    async fn forget_room(&self, user: &str, room: &str, joined_before_ms: u64) -> StoreResult<()>;

    /// The rooms of `user`'s index that still exist and where the user is
    /// still a participant, most recently active first, at most `limit`;
    /// stale entries met on the way are dropped from the index.
    async fn my_rooms(&self, user: &str, limit: usize) -> StoreResult<Vec<MyRoom>>;

    /// Every participant's read position, for a participant `user`.
    async fn receipts(&self, room: &str, user: &str) -> StoreResult<ReceiptsOutcome>;
}
