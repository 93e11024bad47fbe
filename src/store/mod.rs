//! Repositories: one trait per entity, two engines.
//!
//! - `redis` (`RedisStore`): production, and the only engine several nodes
//!   can share. Key layout in `keys`; atomic operations are Lua scripts.
//! - `memory` (`MemoryStore`): a single node without Redis, and fast tests.
//!
//! Both engines pass the conformance suite in `tests/store_conformance.rs`.
//!
//! Operations that append a durable event (a message written, a system
//! message on join or leave) assign the room's next `seq` and publish the
//! event atomically, so publish order equals seq order on every engine. A
//! business outcome the caller must handle (no such room, not a member, room
//! full) is a variant of the operation's outcome enum; `StoreError` is only
//! for infrastructure failure.

use std::time::Duration;

use async_trait::async_trait;

use crate::model::{Message, Room, User};

pub mod keys;
pub mod memory;
pub mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

/// An infrastructure failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or timed out; nothing was written.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with something we cannot read.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether a retry later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// Outcome of `RoomStore::create_room`.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateOutcome {
    /// Created; the creator has joined and the system message is written.
    Created(Room),
    /// Another live room holds this code; pick another.
    CodeTaken,
}

/// Outcome of `RoomStore::join`.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinOutcome {
    /// Joined. `first` when this is the user's first connection in the room
    /// (the system message was written).
    Joined {
        /// The user was not a participant before.
        first: bool,
    },
    /// The room does not exist.
    NoRoom,
    /// The room has `max_participants` distinct users.
    Full,
}

/// Outcome of `RoomStore::leave`.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaveOutcome {
    /// Left. `last` when it was the user's last connection in the room (the
    /// system message was written).
    Left {
        /// The user is no longer a participant.
        last: bool,
    },
    /// This connection had not joined the room.
    NotJoined,
}

/// Outcome of `MessageStore::append`.
#[derive(Debug, Clone, PartialEq)]
pub enum AppendOutcome {
    /// Written and published, with its seq.
    Appended(Message),
    /// The same `client_msg_id` was used before: the original message.
    Duplicate(Message),
    /// The room does not exist.
    NoRoom,
    /// The author has not joined the room.
    NotMember,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    /// Ascending seq.
    pub messages: Vec<Message>,
    /// Older messages exist.
    pub has_more: bool,
}

/// Events after a seq, for `room.join` with `since`.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// Envelopes (`crate::codec`) with seq > since, ascending.
    pub events: Vec<Vec<u8>>,
    /// The room's latest seq when read.
    pub last_seq: u64,
    /// Every event after `since` is in `events`.
    pub complete: bool,
}

/// A connection's session record.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// Connection id.
    pub conn: String,
    /// Who.
    pub user: User,
    /// Which node holds the socket.
    pub node: String,
    /// When, Unix ms.
    pub connected_at: u64,
}

/// Rooms, their members and connections.
#[async_trait]
pub trait RoomStore: Send + Sync {
    /// Creates `room` (its `last_seq` and `participant_count` are ignored),
    /// joins `creator` on `conn`, and appends `note` (a system message).
    async fn create_room(
        &self,
        room: &Room,
        creator: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<CreateOutcome>;

    /// Reads a room.
    async fn room(&self, id: &str) -> StoreResult<Option<Room>>;

    /// Resolves a join code.
    async fn room_id_by_code(&self, code: &str) -> StoreResult<Option<String>>;

    /// Adds `conn` of `user` to the room. On the user's first connection,
    /// checks capacity and appends `note`.
    async fn join(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<JoinOutcome>;

    /// Removes `conn` from the room. On the user's last connection, removes
    /// the participant and appends `note` (unless the room is gone).
    async fn leave(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<LeaveOutcome>;

    /// Distinct users joined.
    async fn participants(&self, room: &str) -> StoreResult<Vec<User>>;

    /// Whether `user` has joined the room on any connection.
    async fn is_participant(&self, room: &str, user: &str) -> StoreResult<bool>;

    /// Public rooms, most recently active first.
    async fn list_public(&self, limit: usize) -> StoreResult<Vec<Room>>;
}

/// Messages and the durable event log.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Appends a message (its `seq` is assigned here) and publishes
    /// `message.created`, atomically with the membership and idempotency
    /// checks.
    async fn append(
        &self,
        message: &Message,
        client_msg_id: Option<&str>,
    ) -> StoreResult<AppendOutcome>;

    /// Messages with seq < `before`, newest `limit`, returned ascending.
    async fn history(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<HistoryPage>;

    /// Durable events after `since`.
    async fn events_since(&self, room: &str, since: u64) -> StoreResult<Replay>;
}

/// Session records.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Records a connection's session with a TTL.
    async fn open(&self, session: &SessionRecord, ttl: Duration) -> StoreResult<()>;
    /// Reads a session.
    async fn session(&self, conn: &str) -> StoreResult<Option<SessionRecord>>;
    /// Connection ids of a user, on any node.
    async fn user_sessions(&self, user: &str) -> StoreResult<Vec<String>>;
    /// Removes a session.
    async fn close(&self, conn: &str, user: &str) -> StoreResult<()>;
}

/// A general cache with TTL.
#[async_trait]
pub trait CacheStore: Send + Sync {
    /// Reads a value.
    async fn get(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Writes a value with a TTL.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> StoreResult<()>;
    /// Removes a value.
    async fn delete(&self, key: &str) -> StoreResult<()>;
}

/// Health of the store.
#[async_trait]
pub trait StoreHealth: Send + Sync {
    /// Answers when the backend answers.
    async fn ping(&self) -> StoreResult<()>;
}

/// A store that is every repository at once (both engines are).
pub trait Store: RoomStore + MessageStore + SessionStore + CacheStore + StoreHealth {}

impl<T: RoomStore + MessageStore + SessionStore + CacheStore + StoreHealth> Store for T {}

/// Settings both engines share.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Message lifetime.
    pub message_ttl: Duration,
    /// Durable events kept per room.
    pub event_log_len: u32,
    /// How long a `client_msg_id` is remembered.
    pub dedupe_ttl: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            message_ttl: Duration::from_secs(30 * 86_400),
            event_log_len: 1000,
            dedupe_ttl: Duration::from_secs(86_400),
        }
    }
}
