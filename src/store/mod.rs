//! Repositories: one trait per entity, two engines.
//!
//! - `redis` (`RedisStore`): production, and the only engine several nodes
//!   can share. Key layout in `crate::layout`; atomic operations are Lua
//!   scripts.
//! - `memory` (`MemoryStore`): a single node without Redis, and fast tests.
//!
//! Both engines pass the conformance suite in `tests/integration/store_conformance/`.
//!
//! Operations that append a durable event (a message written, a system
//! message on join or leave) assign the room's next `seq` and publish the
//! event atomically, so publish order equals seq order on every engine. A
//! business outcome the caller must handle (no such room, not a member, room
//! full) is a variant of the operation's outcome enum; `StoreError` is only
//! for infrastructure failure.

use std::time::Duration;

use async_trait::async_trait;

use crate::codec;
pub use crate::error::{StoreError, StoreResult};
use crate::events::{EventLog, RawReplay};
use crate::model::{Event, Message, Participant, Room, SeqEvent, User};

pub mod breaker;
pub mod memory;
pub mod moderation;
pub mod reads;
pub mod redis;

pub use self::moderation::{
    Action, BanRecord, ModOutcome, ModerationStore, Removal, RemoveRequest, RoomChanges, Standing,
};

pub use self::memory::MemoryStore;
pub use self::reads::{
    MyRoom, RECEIPTS_MAX, ReadOutcome, ReadStore, ReceiptsOutcome, RoleFacts, USER_ROOMS_MAX,
};
pub use self::redis::RedisStore;

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
        /// The store published `participant.joined` itself, right after
        /// the system message (so that both reach a connection in one
        /// write); the caller must not announce the join again.
        announced: bool,
    },
    /// The room does not exist.
    NoRoom,
    /// The room has `max_participants` distinct users.
    Full,
    /// Joined as the user's first connection in a room that now has more
    /// than `BIG_ROOM` participants: no system message was written (the
    /// caller coalesces the change into `participants.changed`).
    JoinedQuietly {
        /// Distinct users joined, this one included.
        count: u32,
    },
    /// The user is banned from the room until then (ms; -1: no end).
    Banned {
        /// When the ban ends.
        until: i64,
    },
    /// Joined by id (`Entry::ById`) a private room the user is not a
    /// participant of: nothing was written.
    Private,
}

/// Outcome of `RoomStore::leave`.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaveOutcome {
    /// Left. `last` when it was the user's last connection in the room (the
    /// system message was written).
    Left {
        /// The user is no longer a participant.
        last: bool,
        /// The store published `participant.left` itself, right after the
        /// system message; the caller must not announce the leave again.
        announced: bool,
    },
    /// This connection had not joined the room.
    NotJoined,
    /// The user's last connection left a room that had more than
    /// `BIG_ROOM` participants with them: no system message was written.
    LeftQuietly {
        /// Distinct users joined after this leave.
        count: u32,
    },
}

/// Rooms with more participants than this are big (protocol 1.1 "Big
/// rooms"): joins and leaves there write no system message, and the join and
/// get replies carry at most this many participants. A join counts the room
/// with the joining user, a leave with the leaving one, so the user who makes
/// a room big and the same user leaving again are treated alike.
pub const BIG_ROOM: u32 = 100;

/// Users in each list of one coalesced `participants.changed`.
pub const CHANGED_LIST_MAX: usize = 50;

/// One page of a room's members (`RoomStore::members`).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberPage {
    /// Members ordered by user id.
    pub users: Vec<User>,
    /// The id of the last user listed, to pass as `after` for the next
    /// page; `None` when this page is the last.
    pub next: Option<String>,
}

/// A change of membership in a big room, waiting to be told.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The user's first connection joined.
    Joined(User),
    /// The user's last connection left.
    Left(User),
}

/// Outcome of `RoomStore::participants_changed`.
#[derive(Debug, Clone, PartialEq)]
pub enum Coalesced {
    /// Nothing is waiting to be told in the room.
    Nothing,
    /// Someone told the room less than a window ago; call again after this.
    Wait(Duration),
    /// This caller holds the room's window: publish this, now.
    Publish {
        /// Distinct users joined, as read now.
        count: u32,
        /// Users who joined (at most `CHANGED_LIST_MAX`), newest last.
        joined: Vec<User>,
        /// Users who left (at most `CHANGED_LIST_MAX`), newest last.
        left: Vec<User>,
    },
}

/// Folds the waiting changes, oldest first, into the `joined` and `left`
/// lists of one `participants.changed`: a user's last change wins, and each
/// list keeps its newest `CHANGED_LIST_MAX` users. Both engines use this.
pub fn fold_changes(changes: impl IntoIterator<Item = Change>) -> (Vec<User>, Vec<User>) {
    let mut last: Vec<(bool, User)> = Vec::new();
    for change in changes {
        let (joined, user) = match change {
            Change::Joined(u) => (true, u),
            Change::Left(u) => (false, u),
        };
        last.retain(|(_, u)| u.id != user.id);
        last.push((joined, user));
    }
    let pick = |want: bool| {
        let list: Vec<User> = last
            .iter()
            .filter(|(j, _)| *j == want)
            .map(|(_, u)| u.clone())
            .collect();
        let skip = list.len().saturating_sub(CHANGED_LIST_MAX);
        list.into_iter().skip(skip).collect::<Vec<User>>()
    };
    (pick(true), pick(false))
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
    /// The author is muted in the room until then (ms); nothing was written.
    Muted(u64),
}

/// How much of a room one search may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanCap {
    /// Messages, newest first.
    pub messages: usize,
    /// Bytes of stored records; the scan stops once it has read this much.
    pub bytes: usize,
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
    /// Events with seq > since, ascending, decoded by the engine.
    pub events: Vec<SeqEvent>,
    /// The room's latest seq when read.
    pub last_seq: u64,
    /// Every event after `since` is in `events`.
    pub complete: bool,
}

/// How a join names its room, which decides whether a private room lets
/// the user in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// By the room's join code: a private room lets anyone in.
    ByCode,
    /// By id: a private room lets in only its participants (another
    /// connection, a resume), checked in the same step as the join.
    ById,
}

/// What a join snapshot reads besides the room and its participants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    /// A resume: the retained events after this seq.
    Since(u64),
    /// A fresh join: the newest this many messages.
    Newest(usize),
}

/// A join snapshot (`RoomStore::snapshot`), read in one step after the join.
#[derive(Debug, Clone)]
pub struct RoomSnapshot {
    /// The room (its `last_seq` is the replay's, when there is one).
    pub room: Room,
    /// At most the asked-for number of participants, as `RoomStore::roster`
    /// lists them, each with their role and mute.
    pub participants: Vec<Participant>,
    /// With `Backlog::Since`: the retained events after it.
    pub replay: Option<Replay>,
    /// With `Backlog::Newest(n)`: the newest `n` messages up to the room's
    /// `last_seq`, oldest first, as `MessageStore::history` pages them
    /// (empty otherwise).
    pub messages: Vec<Message>,
}

/// A connection's session record.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// Connection id.
    pub conn: String,
    /// Who.
    pub user: User,
    /// Which node holds the socket (its id, as shown to clients).
    pub node: String,
    /// The node process holding the socket (`node id/boot id`): the key the
    /// janitor uses to find a dead node's sessions.
    pub instance: String,
    /// When, Unix ms.
    pub connected_at: u64,
}

/// Outcome of `MessageStore::replace`.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplaceOutcome {
    /// The new state is stored and its event published with this seq.
    Replaced(u64),
    /// The message changed since it was read; read it again.
    Changed,
    /// The message no longer exists (expired).
    Gone,
    /// An edit by an author muted in the room until then (ms); nothing was
    /// written.
    Muted(u64),
}

/// A message as stored, with its raw record for compare-and-set updates.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    /// The decoded message.
    pub message: Message,
    /// The stored envelope, to pass back to `replace`.
    pub raw: Vec<u8>,
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
    /// checks capacity and appends `note`. A banned user is refused; so is
    /// a join `Entry::ById` of a private room by a non-participant.
    async fn join_by(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
        entry: Entry,
    ) -> StoreResult<JoinOutcome>;

    /// `join_by` with `Entry::ByCode`: privacy aside.
    async fn join(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<JoinOutcome> {
        self.join_by(room, user, conn, note, Entry::ByCode).await
    }

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

    /// At most `limit` participants, reading nothing proportional to the
    /// room's size: every participant, sorted as `participants`, when there
    /// are at most `limit`; otherwise the most recently joined ones, newest
    /// first (every participant has a live connection, so all are online).
    async fn roster(&self, room: &str, limit: usize) -> StoreResult<Vec<User>>;

    /// What a join answers, in one read (one round trip on Redis): the room,
    /// `roster(limit)` with each participant's standing, and the backlog:
    /// the events after a seq (`MessageStore::events_since`) or the newest
    /// messages (`MessageStore::history` before `last_seq + 1`). `None`: no
    /// such room.
    async fn snapshot(
        &self,
        room: &str,
        limit: usize,
        backlog: Backlog,
    ) -> StoreResult<Option<RoomSnapshot>>;

    /// A page of at most `limit` members ordered by user id, starting after
    /// the user id `after`. Every user who is a member throughout a walk
    /// over the pages is listed exactly once.
    async fn members(
        &self,
        room: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<MemberPage>;

    /// Records `changes` made through this caller in a big room and, unless
    /// the room was told less than `window` ago (by any caller, on any
    /// node), takes the window and hands back everything waiting, which the
    /// caller then publishes as one `participants.changed`. Waiting changes
    /// are capped (the newest few hundred); the count is read exactly.
    async fn participants_changed(
        &self,
        room: &str,
        changes: &[Change],
        window: Duration,
    ) -> StoreResult<Coalesced>;

    /// Whether `user` has joined the room on any connection.
    async fn is_participant(&self, room: &str, user: &str) -> StoreResult<bool>;

    /// Public rooms, most recently active first.
    async fn list_public(&self, limit: usize) -> StoreResult<Vec<Room>>;

    /// Distinct users with at least one connection joined to the room.
    async fn online(&self, room: &str) -> StoreResult<Vec<User>>;

    /// Sets (`active`) or clears `user`'s typing indicator in the room,
    /// which lapses after `ttl`; whether the room is to be told. Setting
    /// one that was told less than `repeat` ago only extends it (false), so
    /// a user typing on several connections or nodes is told at most once
    /// per `repeat`; clearing is always told.
    async fn set_typing(
        &self,
        room: &str,
        user: &str,
        active: bool,
        ttl: Duration,
        repeat: Duration,
    ) -> StoreResult<bool>;

    /// Rooms whose last activity is older than `before_ms`, oldest first.
    async fn idle_rooms(&self, before_ms: u64, limit: usize) -> StoreResult<Vec<String>>;

    /// Deletes a room that has nobody connected and no activity since
    /// `before_ms`; returns whether it was deleted. Its messages expire on
    /// their own.
    async fn close_room(&self, room: &str, before_ms: u64) -> StoreResult<bool>;
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

    /// One message, if it exists and has not expired.
    async fn message(&self, room: &str, id: &str) -> StoreResult<Option<StoredMessage>>;

    /// Stores a new state of a message (an edit or a tombstone) if its
    /// record is still `expected`, appending and publishing `event`
    /// (`MessageUpdated` or `MessageDeleted`) atomically. The message keeps
    /// its original expiry.
    async fn replace(
        &self,
        room: &str,
        expected: &[u8],
        event: &Event,
    ) -> StoreResult<ReplaceOutcome>;

    /// Newest-first messages (not deleted, not system) whose content or
    /// attachment name contains every one of `words` (already lowercase),
    /// scanning the newest messages within `scan` (whichever of its bounds
    /// comes first).
    async fn search(
        &self,
        room: &str,
        words: &[String],
        limit: usize,
        scan: ScanCap,
    ) -> StoreResult<Vec<Message>>;
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
    /// Removes a session and what it tracked.
    async fn close(&self, conn: &str, user: &str) -> StoreResult<()>;

    /// Records that a session joined (or left) a room.
    async fn track_room(&self, conn: &str, room: &str, joined: bool) -> StoreResult<()>;

    /// Rooms a session has joined.
    async fn session_rooms(&self, conn: &str) -> StoreResult<Vec<String>>;

    /// Records a node instance's heartbeat and extends the TTL of its
    /// sessions by `session_ttl` when `refresh_sessions`.
    async fn heartbeat(
        &self,
        instance: &str,
        refresh_sessions: Option<Duration>,
    ) -> StoreResult<()>;

    /// Node instances whose last heartbeat is older than `before_ms`.
    async fn dead_nodes(&self, before_ms: u64) -> StoreResult<Vec<String>>;

    /// Connection ids recorded under a node instance.
    async fn node_sessions(&self, instance: &str) -> StoreResult<Vec<String>>;

    /// Forgets a node instance (after its sessions are cleaned up).
    async fn forget_node(&self, instance: &str) -> StoreResult<()>;

    /// Updates `activity:USER`: last seen now, plus `messages_sent` more
    /// messages; the record lives `ttl` from now.
    async fn record_activity(
        &self,
        user: &str,
        messages_sent: u64,
        ttl: Duration,
    ) -> StoreResult<()>;

    /// Reads `activity:USER`: (last seen ms, messages sent).
    async fn activity(&self, user: &str) -> StoreResult<Option<(u64, u64)>>;
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

    /// Takes a named lock for `ttl` unless someone holds it; true if taken.
    async fn try_lock(&self, name: &str, ttl: Duration) -> StoreResult<bool>;
}

/// Health of the store.
#[async_trait]
pub trait StoreHealth: Send + Sync {
    /// Answers when the backend answers.
    async fn ping(&self) -> StoreResult<()>;
}

/// A fixed-window counter as read: how many were counted in the current
/// window, and when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// Counted in the current window (0 when there is none).
    pub count: u64,
    /// Until the window ends (zero when there is none).
    pub resets_in: Duration,
}

/// Counters behind the per-minute abuse limits, shared by every node (a
/// user or an address may use several nodes at once). A window starts with
/// its first count and lasts `window`; then the counter starts again.
#[async_trait]
pub trait LimitStore: Send + Sync {
    /// Counts one more under `name` and returns the window's count
    /// (including this one). Not idempotent: never retried.
    async fn count(&self, name: &str, window: Duration) -> StoreResult<Count>;

    /// Reads `name`'s window without counting.
    async fn peek(&self, name: &str) -> StoreResult<Count>;
}

/// A store that is every repository at once (both engines are).
pub trait Store:
    RoomStore
    + MessageStore
    + SessionStore
    + CacheStore
    + LimitStore
    + StoreHealth
    + ModerationStore
    + ReadStore
    + EventLog
{
}

impl<
    T: RoomStore
        + MessageStore
        + SessionStore
        + CacheStore
        + LimitStore
        + StoreHealth
        + ModerationStore
        + ReadStore
        + EventLog,
> Store for T
{
}

/// Settings both engines share.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Message lifetime.
    pub message_ttl: Duration,
    /// Durable events kept per room.
    pub event_log_len: u32,
    /// How long a `client_msg_id` is remembered.
    pub dedupe_ttl: Duration,
    /// How long session records live without a heartbeat.
    pub session_ttl: Duration,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            message_ttl: Duration::from_secs(30 * 86_400),
            event_log_len: 1000,
            dedupe_ttl: Duration::from_secs(86_400),
            session_ttl: Duration::from_secs(86_400),
        }
    }
}

/// Decodes a raw replay read from an engine's durable log. Both engines
/// keep envelopes (`crate::codec`); services see only model types.
pub fn decode_replay(raw: RawReplay) -> StoreResult<Replay> {
    let events = raw
        .envelopes
        .iter()
        .map(|bytes| {
            let env = codec::decode(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(SeqEvent {
                seq: env.seq,
                event: env.event,
            })
        })
        .collect::<StoreResult<Vec<SeqEvent>>>()?;
    Ok(Replay {
        events,
        last_seq: raw.last_seq,
        complete: raw.complete,
    })
}

/// The order both engines list users in (participants, presence): by name,
/// then id.
pub fn sort_users(users: &mut [User]) {
    users.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
}

/// Whether a message matches every (lowercase) search word: its content or
/// its attachment's name contains each. Deleted and system messages never
/// match. Both engines use this one rule.
pub fn matches_words(m: &Message, words: &[String]) -> bool {
    if m.deleted || m.kind == crate::model::MessageKind::System {
        return false;
    }
    let mut text = m.content.to_lowercase();
    if let Some(a) = &m.attachment {
        text.push('\n');
        text.push_str(&a.name.to_lowercase());
    }
    words.iter().all(|w| text.contains(w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> User {
        User {
            id: id.into(),
            name: id.into(),
            image: None,
        }
    }

    #[test]
    fn a_users_last_change_wins_and_lists_keep_the_newest() {
        let (joined, left) = fold_changes([
            Change::Joined(user("a")),
            Change::Joined(user("b")),
            Change::Left(user("a")),
            Change::Left(user("c")),
            Change::Joined(user("c")),
        ]);
        let ids = |list: &[User]| list.iter().map(|u| u.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&joined), ["b", "c"]);
        assert_eq!(ids(&left), ["a"]);
        let many = (0..CHANGED_LIST_MAX + 7).map(|i| Change::Left(user(&format!("u{i:03}"))));
        let (joined, left) = fold_changes(many);
        assert!(joined.is_empty());
        assert_eq!(left.len(), CHANGED_LIST_MAX);
        assert_eq!(left[0].id, "u007", "the oldest are dropped");
    }
}
