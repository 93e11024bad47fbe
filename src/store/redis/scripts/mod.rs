//! The Lua scripts, their typed arguments and their parsed replies.
//!
//! Each script lives in `lua/*.lua` (its contract is written at its top) and
//! is loaded with `include_str!`. Scripts that append a durable event are
//! prefixed with `guard.lua` (refuse a write whose deadline, the last ARGV,
//! has passed in Redis time) and `common.lua` (`append_event`,
//! `write_message`, `trim_expired`).
//!
//! For every script an argument struct owns the order of its KEYS and ARGV
//! (`ScriptArgs::bind`), and its reply is parsed once into an enum
//! (`ScriptReply::parse`); nothing else knows a position. Every key known
//! before the call is declared in KEYS. The only keys a script derives
//! itself are the per-message keys `trim_expired` finds while trimming and
//! the member connection sets `close.lua` deletes: both are built from a
//! room prefix (`message:{R}:`, `member_conns:{R}:`) and so share the room's
//! hash tag, the slot of the declared KEYS (`crate::layout`).
//!
//! The arguments and replies of the counter scripts (typing, abuse limits)
//! live in `counters`, those of the big-room scripts (roster, member pages,
//! `participants.changed`) in `crowd`, those of the moderation verbs (1.1)
//! in `moderation`; the rest are here. `mod_close.lua` also derives keys
//! from room prefixes (`member_conns:{R}:`, `typing:{R}:`), like
//! `close.lua`.

use redis::{Cmd, Script, ToRedisArgs, Value};

use super::parse::{corrupt, status};

mod counters;
mod crowd;
pub(super) mod moderation;
mod reads;

use crate::error::{StoreError, StoreResult};
pub(super) use counters::{Limit, LimitReply, Tell, Typing};
pub(super) use crowd::{Changes, ChangesReply, Members, MembersReply, Roster, RosterReply};
pub(super) use reads::{MarkRead, MarkReadReply, Mine, MineReply, Receipts, ReceiptsReply};

const GUARD: &str = include_str!("../lua/guard.lua");
const COMMON: &str = include_str!("../lua/common.lua");

/// How the scripts publish a durable event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Publish {
    /// `PUBLISH`: one Redis.
    Classic,
    /// `SPUBLISH` on the room's shard channel: a Redis Cluster.
    Sharded,
}

impl Publish {
    fn verb(self) -> &'static str {
        match self {
            Publish::Classic => "PUBLISH",
            Publish::Sharded => "SPUBLISH",
        }
    }

    /// The Lua header that sets `PUBLISH_VERB`, `RELEASE_VERB` and
    /// `DEFERRED` for `common.lua`, and `BIG_ROOM` (`crate::store::BIG_ROOM`)
    /// for the membership scripts.
    fn header(self, deferred: bool) -> String {
        let verb = self.verb();
        let big = format!("local BIG_ROOM = {}\n", crate::store::BIG_ROOM);
        big + &if deferred {
            format!(
                "local PUBLISH_VERB = false\nlocal RELEASE_VERB = '{verb}'\nlocal DEFERRED = true\n"
            )
        } else {
            format!(
                "local PUBLISH_VERB = '{verb}'\nlocal RELEASE_VERB = '{verb}'\nlocal DEFERRED = false\n"
            )
        }
    }
}

/// Every script, hashed once.
pub(super) struct Scripts {
    /// `publish.lua`: publishes what replicas confirmed.
    pub(super) release: Script,
    pub(super) send: Script,
    pub(super) create: Script,
    pub(super) join: Script,
    pub(super) leave: Script,
    pub(super) since: Script,
    pub(super) trim: Script,
    pub(super) replace: Script,
    pub(super) close: Script,
    pub(super) release_code: Script,
    pub(super) limit: Script,
    pub(super) typing: Script,
    pub(super) roster: Script,
    pub(super) members: Script,
    pub(super) changes: Script,
    /// `read.lua`: `room.read`.
    pub(super) read: Script,
    /// `mine.lua`: one room of `room.mine`.
    pub(super) mine: Script,
    /// `receipts.lua`: `room.receipts`.
    pub(super) receipts: Script,
    /// The moderation verbs (`moderation`).
    pub(super) moderation: moderation::ModScripts,
}

impl Scripts {
    /// The scripts for `publish`; `deferred` when durable events are
    /// published only after replicas confirmed them (`publish.lua`).
    pub(super) fn new(publish: Publish, deferred: bool) -> Scripts {
        let header = publish.header(deferred);
        let with_common = |body: &str| Script::new(&format!("{header}{COMMON}\n{body}"));
        let guarded = |body: &str| Script::new(&format!("{GUARD}\n{header}{COMMON}\n{body}"));
        Scripts {
            release: with_common(include_str!("../lua/publish.lua")),
            send: guarded(include_str!("../lua/send.lua")),
            create: guarded(include_str!("../lua/create.lua")),
            join: guarded(include_str!("../lua/join.lua")),
            leave: guarded(include_str!("../lua/leave.lua")),
            since: with_common(include_str!("../lua/since.lua")),
            trim: with_common(include_str!("../lua/trim.lua")),
            replace: guarded(include_str!("../lua/replace.lua")),
            close: Script::new(include_str!("../lua/close.lua")),
            release_code: Script::new(include_str!("../lua/release_code.lua")),
            limit: Script::new(include_str!("../lua/limit.lua")),
            typing: Script::new(include_str!("../lua/typing.lua")),
            roster: Script::new(include_str!("../lua/roster.lua")),
            members: Script::new(include_str!("../lua/members.lua")),
            changes: Script::new(include_str!("../lua/changes.lua")),
            read: with_common(include_str!("../lua/read.lua")),
            mine: with_common(include_str!("../lua/mine.lua")),
            receipts: Script::new(include_str!("../lua/receipts.lua")),
            moderation: moderation::ModScripts::new(&header, COMMON, GUARD),
        }
    }
}

/// A script's KEYS and ARGV as bound by its argument struct.
#[derive(Default)]
pub(super) struct Bound {
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Bound {
    /// The KEYS and ARGV of `args`.
    pub(super) fn of(args: &impl ScriptArgs) -> Bound {
        let mut bound = Bound::default();
        args.bind(&mut bound);
        bound
    }

    /// Adds a key (KEYS, in order).
    pub(super) fn key(&mut self, key: impl ToRedisArgs) -> &mut Bound {
        self.keys.extend(key.to_redis_args());
        self
    }

    /// Adds an argument (ARGV, in order).
    pub(super) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Bound {
        self.args.extend(arg.to_redis_args());
        self
    }

    /// `EVALSHA` of `script` with these KEYS and ARGV (its first key routes
    /// it on a cluster).
    pub(super) fn evalsha(&self, script: &Script) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash())
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        cmd
    }
}

/// A script's arguments: binds KEYS, then ARGV, in the script's order.
pub(super) trait ScriptArgs {
    /// Adds every key and argument to `inv`.
    fn bind(&self, inv: &mut Bound);
}

/// A script's reply, parsed once.
pub(super) trait ScriptReply: Sized {
    /// Reads the raw reply. `late` (a guarded write refused after its
    /// deadline) is `StoreError::Unavailable`: nothing was written.
    fn parse(value: Value) -> StoreResult<Self>;
}

/// The keys of a room's durable event: shared by the scripts that append one.
pub(super) struct EventKeys {
    /// `room:{R}`: its `seq` and `last_activity`.
    pub(super) room: String,
    /// `room_events:{R}`: the durable log.
    pub(super) events: String,
    /// `events:{R}`: the channel the event is published on (an ARGV: channels
    /// are not keys).
    pub(super) channel: String,
}

/// `publish.lua`: publishes a room's events up to `upto`.
pub(super) struct Release<'a> {
    /// Room, log and channel.
    pub(super) event: &'a EventKeys,
    /// The last seq the replicas confirmed.
    pub(super) upto: u64,
}

impl ScriptArgs for Release<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.event.room)
            .key(&self.event.events)
            .arg(&self.event.channel)
            .arg(self.upto);
    }
}

/// How many events `publish.lua` published.
pub(super) struct Published(pub(super) u64);

impl ScriptReply for Published {
    fn parse(value: Value) -> StoreResult<Self> {
        redis::from_redis_value(value)
            .map(Published)
            .map_err(corrupt)
    }
}

/// `send.lua`.
pub(super) struct Send<'a> {
    /// Room, log and channel.
    pub(super) event: &'a EventKeys,
    /// `room_members:{R}`: the author must be one.
    pub(super) members: String,
    /// `room_messages:{R}`: the message index.
    pub(super) messages: String,
    /// `message:{R}:M`: the new message's record.
    pub(super) message: String,
    /// `dedupe:{R}:USER:CLIENT_MSG_ID`.
    pub(super) dedupe: &'a str,
    /// `mutes:{R}`: a muted author is refused.
    pub(super) mutes: String,
    /// `countable:{R}`: the message counts as unread for others.
    pub(super) countable: String,
    /// `reads:{R}`: the author has read up to it.
    pub(super) reads: String,
    /// Author id.
    pub(super) user: &'a str,
    /// Message id.
    pub(super) msg_id: &'a str,
    /// The envelope tail (`crate::codec::encode_tail`).
    pub(super) tail: &'a [u8],
    /// Message TTL, ms.
    pub(super) ttl_ms: u64,
    /// Events kept in the log.
    pub(super) log_len: u32,
    /// Now, Unix ms (our clock: `last_activity`).
    pub(super) now: u64,
    /// 0 no dedupe, 1 check then remember, 2 remember (the original expired).
    pub(super) dedupe_mode: u8,
    /// How long the dedupe key lives, ms.
    pub(super) dedupe_ttl_ms: u64,
    /// Refuse after this Redis time, ms.
    pub(super) deadline: i64,
}

impl ScriptArgs for Send<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.event.room)
            .key(&self.members)
            .key(&self.messages)
            .key(&self.event.events)
            .key(&self.message)
            .key(self.dedupe)
            .key(&self.mutes)
            .key(&self.countable)
            .key(&self.reads)
            .arg(self.user)
            .arg(self.msg_id)
            .arg(self.tail)
            .arg(self.ttl_ms)
            .arg(self.log_len)
            .arg(self.now)
            .arg(&self.event.channel)
            .arg(self.dedupe_mode.to_string())
            .arg(self.dedupe_ttl_ms)
            .arg(self.deadline);
    }
}

/// What `send.lua` did.
#[derive(Debug, PartialEq)]
pub(super) enum SendReply {
    /// Written with this seq.
    Sent(u64),
    /// The room does not exist.
    NoRoom,
    /// The author is not a member.
    NotMember,
    /// The `client_msg_id` was used for this message id.
    Duplicate(String),
    /// The author is muted until then (ms).
    Muted(u64),
}

impl ScriptReply for SendReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (head, data) = status(value)?;
        match head.as_str() {
            "ok" => Ok(SendReply::Sent(item(&data, "send")?)),
            "no_room" => Ok(SendReply::NoRoom),
            "not_member" => Ok(SendReply::NotMember),
            "duplicate" => Ok(SendReply::Duplicate(item(&data, "send")?)),
            "muted" => Ok(SendReply::Muted(item(&data, "send")?)),
            other => Err(corrupt(format!("send script said {other}"))),
        }
    }
}

/// The membership keys of `create.lua`, `join.lua` and `leave.lua`.
pub(super) struct MemberKeys<'a> {
    /// Room, log and channel.
    pub(super) event: &'a EventKeys,
    /// `room_members:{R}`.
    pub(super) members: String,
    /// `member_conns:{R}:USER`.
    pub(super) member_conns: String,
    /// `presence:{R}`.
    pub(super) presence: String,
    /// `room_messages:{R}`.
    pub(super) messages: String,
    /// `message:{R}:M` of the system message.
    pub(super) message: String,
    /// `member_ids:{R}`.
    pub(super) member_ids: String,
}

impl MemberKeys<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.event.room)
            .key(&self.members)
            .key(&self.member_conns)
            .key(&self.presence)
            .key(&self.messages)
            .key(&self.event.events)
            .key(&self.message)
            .key(&self.member_ids);
    }

    /// The ARGV `join.lua` and `leave.lua` end with: now, the system
    /// message (id, tail, ttl, log length), channel, deadline.
    fn bind_note_args(&self, inv: &mut Bound, now: u64, note: &Note<'_>, deadline: i64) {
        inv.arg(now)
            .arg(note.id)
            .arg(note.tail)
            .arg(note.ttl_ms)
            .arg(note.log_len)
            .arg(&self.event.channel)
            .arg(deadline);
    }
}

/// The system message a membership script writes.
pub(super) struct Note<'a> {
    /// Its id.
    pub(super) id: &'a str,
    /// Its envelope tail.
    pub(super) tail: &'a [u8],
    /// Message TTL, ms.
    pub(super) ttl_ms: u64,
    /// Events kept in the log.
    pub(super) log_len: u32,
}

/// `create.lua`.
pub(super) struct Create<'a> {
    /// The keys.
    pub(super) keys: MemberKeys<'a>,
    /// The room.
    pub(super) room: &'a crate::model::Room,
    /// The creator's id.
    pub(super) user_id: &'a str,
    /// The creator as JSON (`room_members` value).
    pub(super) user_json: &'a str,
    /// The creator's connection.
    pub(super) conn: &'a str,
    /// `USER:CONN` (`presence` member).
    pub(super) presence_member: &'a str,
    /// The "created" system message.
    pub(super) note: Note<'a>,
    /// Now, Unix ms.
    pub(super) now: u64,
    /// Refuse after this Redis time, ms.
    pub(super) deadline: i64,
}

impl ScriptArgs for Create<'_> {
    fn bind(&self, inv: &mut Bound) {
        self.keys.bind(inv);
        let r = self.room;
        inv.arg(&r.id)
            .arg(&r.code)
            .arg(&r.name)
            .arg(&r.created_by)
            .arg(r.created_at)
            .arg(r.max_participants)
            .arg(if r.private { "1" } else { "0" })
            .arg(self.user_id)
            .arg(self.user_json)
            .arg(self.conn)
            .arg(self.presence_member)
            .arg(self.note.id)
            .arg(self.note.tail)
            .arg(self.note.ttl_ms)
            .arg(self.note.log_len)
            .arg(self.now)
            .arg(&self.keys.event.channel)
            .arg(self.deadline);
    }
}

/// What `create.lua` did.
#[derive(Debug, PartialEq)]
pub(super) enum CreateReply {
    /// Created; the system message has this seq.
    Created(u64),
    /// A room with this id exists.
    Exists,
}

impl ScriptReply for CreateReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (head, data) = status(value)?;
        match head.as_str() {
            "ok" => Ok(CreateReply::Created(item(&data, "create")?)),
            "exists" => Ok(CreateReply::Exists),
            other => Err(corrupt(format!("room create script said {other}"))),
        }
    }
}

/// `join.lua`.
pub(super) struct Join<'a> {
    /// The keys.
    pub(super) keys: MemberKeys<'a>,
    /// The user's id.
    pub(super) user_id: &'a str,
    /// The user as JSON.
    pub(super) user_json: &'a str,
    /// The connection.
    pub(super) conn: &'a str,
    /// `USER:CONN`.
    pub(super) presence_member: &'a str,
    /// Now, Unix ms.
    pub(super) now: u64,
    /// The "joined" system message.
    pub(super) note: Note<'a>,
    /// `bans:{R}`: a banned user is refused.
    pub(super) bans: String,
    /// Refuse after this Redis time, ms.
    pub(super) deadline: i64,
}

impl ScriptArgs for Join<'_> {
    fn bind(&self, inv: &mut Bound) {
        self.keys.bind(inv);
        inv.key(&self.bans);
        inv.arg(self.user_id)
            .arg(self.user_json)
            .arg(self.conn)
            .arg(self.presence_member);
        self.keys
            .bind_note_args(inv, self.now, &self.note, self.deadline);
    }
}

/// What `join.lua` did.
#[derive(Debug, PartialEq)]
pub(super) enum JoinReply {
    /// Joined; `first` when the system message was written.
    Joined {
        /// The user's first connection in the room.
        first: bool,
        /// The system message's seq, when one was written.
        seq: Option<u64>,
    },
    /// The room does not exist.
    NoRoom,
    /// The room is full.
    Full,
    /// The user's first connection joined a big room (no system message);
    /// the participant count now.
    Quiet(u32),
    /// The user is banned until then (ms; -1 no end).
    Banned(i64),
}

impl ScriptReply for JoinReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (head, data) = status(value)?;
        match head.as_str() {
            "ok" => Ok(JoinReply::Joined {
                first: item::<i64>(&data, "join")? == 1,
                seq: second(&data, "join")?,
            }),
            "no_room" => Ok(JoinReply::NoRoom),
            "full" => Ok(JoinReply::Full),
            "banned" => Ok(JoinReply::Banned(item(&data, "join")?)),
            "quiet" => Ok(JoinReply::Quiet(item(&data, "join")?)),
            other => Err(corrupt(format!("join script said {other}"))),
        }
    }
}

/// `leave.lua`.
pub(super) struct Leave<'a> {
    /// The keys.
    pub(super) keys: MemberKeys<'a>,
    /// The user's id.
    pub(super) user_id: &'a str,
    /// The connection.
    pub(super) conn: &'a str,
    /// `USER:CONN`.
    pub(super) presence_member: &'a str,
    /// Now, Unix ms.
    pub(super) now: u64,
    /// The "left" system message.
    pub(super) note: Note<'a>,
    /// Refuse after this Redis time, ms.
    pub(super) deadline: i64,
}

impl ScriptArgs for Leave<'_> {
    fn bind(&self, inv: &mut Bound) {
        self.keys.bind(inv);
        inv.arg(self.user_id)
            .arg(self.conn)
            .arg(self.presence_member);
        self.keys
            .bind_note_args(inv, self.now, &self.note, self.deadline);
    }
}

/// What `leave.lua` did.
#[derive(Debug, PartialEq)]
pub(super) enum LeaveReply {
    /// Left; `last` when the participant was removed.
    Left {
        /// It was the user's last connection in the room.
        last: bool,
        /// The system message's seq, when one was written.
        seq: Option<u64>,
    },
    /// The connection had not joined.
    NotJoined,
    /// The user's last connection left a big room (no system message); the
    /// participant count now.
    Quiet(u32),
}

impl ScriptReply for LeaveReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (head, data) = status(value)?;
        match head.as_str() {
            "ok" => Ok(LeaveReply::Left {
                last: item::<i64>(&data, "leave")? == 1,
                seq: second(&data, "leave")?,
            }),
            "not_joined" => Ok(LeaveReply::NotJoined),
            "quiet" => Ok(LeaveReply::Quiet(item(&data, "leave")?)),
            other => Err(corrupt(format!("leave script said {other}"))),
        }
    }
}

/// `since.lua`.
pub(super) struct Since {
    /// `room:{R}`.
    pub(super) room: String,
    /// `room_events:{R}`.
    pub(super) events: String,
    /// `room_messages:{R}`.
    pub(super) messages: String,
    /// `countable:{R}`: expired messages stop counting.
    pub(super) countable: String,
    /// Events after this seq.
    pub(super) since: u64,
    /// `message:{R}:`, for the keys trimming finds.
    pub(super) message_prefix: String,
}

impl ScriptArgs for Since {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.room)
            .key(&self.events)
            .key(&self.messages)
            .key(&self.countable)
            .arg(self.since)
            .arg(&self.message_prefix);
    }
}

/// What `since.lua` read.
#[derive(Debug, PartialEq)]
pub(super) struct SinceReply {
    /// The room's seq.
    pub(super) last_seq: u64,
    /// Envelopes after `since`, ascending.
    pub(super) envelopes: Vec<Vec<u8>>,
}

impl ScriptReply for SinceReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (last_seq, envelopes): (u64, Vec<Vec<u8>>) =
            redis::from_redis_value(value).map_err(corrupt)?;
        Ok(SinceReply {
            last_seq,
            envelopes,
        })
    }
}

/// `trim.lua`.
pub(super) struct Trim {
    /// `room_messages:{R}`.
    pub(super) messages: String,
    /// `room_events:{R}`.
    pub(super) events: String,
    /// `countable:{R}`: expired messages stop counting.
    pub(super) countable: String,
    /// `message:{R}:`, for the keys trimming finds.
    pub(super) message_prefix: String,
}

impl ScriptArgs for Trim {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.messages)
            .key(&self.events)
            .key(&self.countable)
            .arg(&self.message_prefix);
    }
}

/// How many expired messages `trim.lua` dropped.
#[derive(Debug, PartialEq)]
pub(super) struct Trimmed(pub(super) u64);

impl ScriptReply for Trimmed {
    fn parse(value: Value) -> StoreResult<Self> {
        redis::from_redis_value(value).map(Trimmed).map_err(corrupt)
    }
}

/// `replace.lua`.
pub(super) struct Replace<'a> {
    /// Room, log and channel.
    pub(super) event: &'a EventKeys,
    /// `message:{R}:M`.
    pub(super) message: String,
    /// `countable:{R}`: a deleted message stops counting.
    pub(super) countable: String,
    /// The message's id.
    pub(super) msg_id: &'a str,
    /// The new state is a tombstone.
    pub(super) deleting: bool,
    /// The record the caller read.
    pub(super) expected: &'a [u8],
    /// The new event's envelope tail.
    pub(super) tail: &'a [u8],
    /// Events kept in the log.
    pub(super) log_len: u32,
    /// Now, Unix ms.
    pub(super) now: u64,
    /// `mutes:{R}`.
    pub(super) mutes: String,
    /// An edit's author, refused while muted; `""` for a deletion.
    pub(super) muted_user: &'a str,
    /// Refuse after this Redis time, ms.
    pub(super) deadline: i64,
}

impl ScriptArgs for Replace<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.event.room)
            .key(&self.event.events)
            .key(&self.message)
            .key(&self.mutes)
            .key(&self.countable)
            .arg(self.expected)
            .arg(self.tail)
            .arg(self.log_len)
            .arg(self.now)
            .arg(&self.event.channel)
            .arg(self.muted_user)
            .arg(self.msg_id)
            .arg(if self.deleting { "1" } else { "0" })
            .arg(self.deadline);
    }
}

/// What `replace.lua` did.
#[derive(Debug, PartialEq)]
pub(super) enum ReplaceReply {
    /// Stored; the event has this seq.
    Replaced(u64),
    /// The record is not the expected one.
    Changed,
    /// The message expired.
    Gone,
    /// The editing author is muted until then (ms).
    Muted(u64),
}

impl ScriptReply for ReplaceReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (head, data) = status(value)?;
        match head.as_str() {
            "ok" => Ok(ReplaceReply::Replaced(item(&data, "replace")?)),
            "changed" => Ok(ReplaceReply::Changed),
            "gone" => Ok(ReplaceReply::Gone),
            "muted" => Ok(ReplaceReply::Muted(item(&data, "replace")?)),
            other => Err(corrupt(format!("replace script said {other}"))),
        }
    }
}

/// `close.lua`.
pub(super) struct Close {
    /// `room:{R}`.
    pub(super) room: String,
    /// `room_members:{R}`.
    pub(super) members: String,
    /// `room_messages:{R}`.
    pub(super) messages: String,
    /// `room_events:{R}`.
    pub(super) events: String,
    /// `presence:{R}`.
    pub(super) presence: String,
    /// `member_ids:{R}`.
    pub(super) member_ids: String,
    /// `changes:{R}`.
    pub(super) changes: String,
    /// `changes_gate:{R}`.
    pub(super) changes_gate: String,
    /// `roles:{R}`, `bans:{R}`, `mutes:{R}`.
    pub(super) moderation: [String; 3],
    /// `reads:{R}`.
    pub(super) reads: String,
    /// `countable:{R}`.
    pub(super) countable: String,
    /// `member_conns:{R}:`, for the sets the script finds.
    pub(super) member_conns_prefix: String,
    /// Only a room idle since before this (Unix ms) is closed.
    pub(super) before_ms: u64,
}

impl ScriptArgs for Close {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.room)
            .key(&self.members)
            .key(&self.messages)
            .key(&self.events)
            .key(&self.presence)
            .key(&self.member_ids)
            .key(&self.changes)
            .key(&self.changes_gate)
            .key(&self.moderation[0])
            .key(&self.moderation[1])
            .key(&self.moderation[2])
            .key(&self.reads)
            .key(&self.countable)
            .arg(&self.member_conns_prefix)
            .arg(self.before_ms);
    }
}

/// What `close.lua` did.
#[derive(Debug, PartialEq)]
pub(super) enum CloseReply {
    /// Deleted; its join code, if it had one, is to be released.
    Closed(Option<String>),
    /// Someone is connected, or it was active recently.
    Busy,
    /// No such room.
    Gone,
}

impl ScriptReply for CloseReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (head, data) = status(value)?;
        match head.as_str() {
            "ok" => {
                let code: String = item(&data, "close")?;
                Ok(CloseReply::Closed((!code.is_empty()).then_some(code)))
            }
            "busy" => Ok(CloseReply::Busy),
            "gone" => Ok(CloseReply::Gone),
            other => Err(corrupt(format!("close script said {other}"))),
        }
    }
}

/// `release_code.lua`.
pub(super) struct ReleaseCode<'a> {
    /// `room_code:CODE`.
    pub(super) code_key: String,
    /// The room the code must still name.
    pub(super) room: &'a str,
}

impl ScriptArgs for ReleaseCode<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.code_key).arg(self.room);
    }
}

/// Whether `release_code.lua` deleted the code.
#[derive(Debug, PartialEq)]
pub(super) struct Released(pub(super) bool);

impl ScriptReply for Released {
    fn parse(value: Value) -> StoreResult<Self> {
        redis::from_redis_value::<i64>(value)
            .map(|n| Released(n > 0))
            .map_err(corrupt)
    }
}

/// The optional second item of a reply's data.
fn second<T: redis::FromRedisValue>(data: &[Value], script: &str) -> StoreResult<Option<T>> {
    data.get(1)
        .map(|value| {
            redis::from_redis_value_ref(value)
                .map_err(|e| StoreError::Corrupt(format!("{script} script reply: {e}")))
        })
        .transpose()
}

/// The data item after the status, which the script's contract promises.
fn item<T: redis::FromRedisValue>(data: &[Value], script: &str) -> StoreResult<T> {
    let value = data
        .first()
        .ok_or_else(|| corrupt(format!("{script} script reply has no data")))?;
    redis::from_redis_value_ref(value)
        .map_err(|e| StoreError::Corrupt(format!("{script} script reply: {e}")))
}
