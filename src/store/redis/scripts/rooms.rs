//! The arguments and replies of the room lifecycle scripts: create, join
//! and leave (with the system message each writes), the idle sweep's close
//! (`close.lua`) and the release of a room code (`release_code.lua`).

use redis::Value;

use super::{Bound, EventKeys, ScriptArgs, ScriptReply, corrupt, item, second, status};
use crate::error::StoreResult;

/// The membership keys of `create.lua`, `join.lua` and `leave.lua`.
pub(in crate::store::redis) struct MemberKeys<'a> {
    /// Room, log and channel.
    pub(in crate::store::redis) event: &'a EventKeys,
    /// `room_members:{R}`.
    pub(in crate::store::redis) members: String,
    /// `member_conns:{R}:USER`.
    pub(in crate::store::redis) member_conns: String,
    /// `presence:{R}`.
    pub(in crate::store::redis) presence: String,
    /// `room_messages:{R}`.
    pub(in crate::store::redis) messages: String,
    /// `message:{R}:M` of the system message.
    pub(in crate::store::redis) message: String,
    /// `member_ids:{R}`.
    pub(in crate::store::redis) member_ids: String,
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

    /// The ARGV `join.lua` and `leave.lua` go on with after their own: now,
    /// the system message (id, tail, ttl, log length), channel.
    fn bind_note_args(&self, inv: &mut Bound, now: u64, note: &Note<'_>) {
        inv.arg(now)
            .arg(note.id)
            .arg(note.tail)
            .arg(note.ttl_ms)
            .arg(note.log_len)
            .arg(&self.event.channel);
    }
}

/// The system message a membership script writes.
pub(in crate::store::redis) struct Note<'a> {
    /// Its id.
    pub(in crate::store::redis) id: &'a str,
    /// Its envelope tail.
    pub(in crate::store::redis) tail: &'a [u8],
    /// Message TTL, ms.
    pub(in crate::store::redis) ttl_ms: u64,
    /// Events kept in the log.
    pub(in crate::store::redis) log_len: u32,
}

/// `create.lua`.
pub(in crate::store::redis) struct Create<'a> {
    /// The keys.
    pub(in crate::store::redis) keys: MemberKeys<'a>,
    /// The room.
    pub(in crate::store::redis) room: &'a crate::model::Room,
    /// The creator's id.
    pub(in crate::store::redis) user_id: &'a str,
    /// The creator as JSON (`room_members` value).
    pub(in crate::store::redis) user_json: &'a str,
    /// The creator's connection.
    pub(in crate::store::redis) conn: &'a str,
    /// `USER:CONN` (`presence` member).
    pub(in crate::store::redis) presence_member: &'a str,
    /// The "created" system message.
    pub(in crate::store::redis) note: Note<'a>,
    /// Now, Unix ms.
    pub(in crate::store::redis) now: u64,
    /// Refuse after this Redis time, ms.
    pub(in crate::store::redis) deadline: i64,
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
pub(in crate::store::redis) enum CreateReply {
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
pub(in crate::store::redis) struct Join<'a> {
    /// The keys.
    pub(in crate::store::redis) keys: MemberKeys<'a>,
    /// The user's id.
    pub(in crate::store::redis) user_id: &'a str,
    /// The user as JSON.
    pub(in crate::store::redis) user_json: &'a str,
    /// The connection.
    pub(in crate::store::redis) conn: &'a str,
    /// `USER:CONN`.
    pub(in crate::store::redis) presence_member: &'a str,
    /// Now, Unix ms.
    pub(in crate::store::redis) now: u64,
    /// The "joined" system message.
    pub(in crate::store::redis) note: Note<'a>,
    /// `bans:{R}`: a banned user is refused.
    pub(in crate::store::redis) bans: String,
    /// Refuse after this Redis time, ms.
    pub(in crate::store::redis) deadline: i64,
    /// Joined by id: a private room refuses a newcomer.
    pub(in crate::store::redis) by_id: bool,
    /// The `participant.joined` envelope published after the system
    /// message (not when publishing is deferred); empty for none.
    pub(in crate::store::redis) announcement: &'a [u8],
}

impl ScriptArgs for Join<'_> {
    fn bind(&self, inv: &mut Bound) {
        self.keys.bind(inv);
        inv.key(&self.bans);
        inv.arg(self.user_id)
            .arg(self.user_json)
            .arg(self.conn)
            .arg(self.presence_member);
        self.keys.bind_note_args(inv, self.now, &self.note);
        inv.arg(if self.by_id { "1" } else { "0" })
            .arg(self.announcement)
            .arg(self.deadline);
    }
}

/// What `join.lua` did.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) enum JoinReply {
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
    /// A private room, joined by id by a newcomer.
    Private,
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
            "private" => Ok(JoinReply::Private),
            "banned" => Ok(JoinReply::Banned(item(&data, "join")?)),
            "quiet" => Ok(JoinReply::Quiet(item(&data, "join")?)),
            other => Err(corrupt(format!("join script said {other}"))),
        }
    }
}

/// `leave.lua`.
pub(in crate::store::redis) struct Leave<'a> {
    /// The keys.
    pub(in crate::store::redis) keys: MemberKeys<'a>,
    /// The user's id.
    pub(in crate::store::redis) user_id: &'a str,
    /// The connection.
    pub(in crate::store::redis) conn: &'a str,
    /// `USER:CONN`.
    pub(in crate::store::redis) presence_member: &'a str,
    /// Now, Unix ms.
    pub(in crate::store::redis) now: u64,
    /// The "left" system message.
    pub(in crate::store::redis) note: Note<'a>,
    /// Refuse after this Redis time, ms.
    pub(in crate::store::redis) deadline: i64,
    /// The `participant.left` envelope published after the system message
    /// (not when publishing is deferred); empty for none.
    pub(in crate::store::redis) announcement: &'a [u8],
}

impl ScriptArgs for Leave<'_> {
    fn bind(&self, inv: &mut Bound) {
        self.keys.bind(inv);
        inv.arg(self.user_id)
            .arg(self.conn)
            .arg(self.presence_member);
        self.keys.bind_note_args(inv, self.now, &self.note);
        inv.arg(self.announcement).arg(self.deadline);
    }
}

/// What `leave.lua` did.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) enum LeaveReply {
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

/// `close.lua`.
pub(in crate::store::redis) struct Close {
    /// `room:{R}`.
    pub(in crate::store::redis) room: String,
    /// `room_members:{R}`.
    pub(in crate::store::redis) members: String,
    /// `room_messages:{R}`.
    pub(in crate::store::redis) messages: String,
    /// `room_events:{R}`.
    pub(in crate::store::redis) events: String,
    /// `presence:{R}`.
    pub(in crate::store::redis) presence: String,
    /// `member_ids:{R}`.
    pub(in crate::store::redis) member_ids: String,
    /// `changes:{R}`.
    pub(in crate::store::redis) changes: String,
    /// `changes_gate:{R}`.
    pub(in crate::store::redis) changes_gate: String,
    /// `roles:{R}`, `bans:{R}`, `mutes:{R}`.
    pub(in crate::store::redis) moderation: [String; 3],
    /// `reads:{R}`.
    pub(in crate::store::redis) reads: String,
    /// `countable:{R}`.
    pub(in crate::store::redis) countable: String,
    /// `member_conns:{R}:`, for the sets the script finds.
    pub(in crate::store::redis) member_conns_prefix: String,
    /// Only a room idle since before this (Unix ms) is closed.
    pub(in crate::store::redis) before_ms: u64,
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
pub(in crate::store::redis) enum CloseReply {
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
pub(in crate::store::redis) struct ReleaseCode<'a> {
    /// `room_code:CODE`.
    pub(in crate::store::redis) code_key: String,
    /// The room the code must still name.
    pub(in crate::store::redis) room: &'a str,
}

impl ScriptArgs for ReleaseCode<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.code_key).arg(self.room);
    }
}

/// Whether `release_code.lua` deleted the code.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) struct Released(pub(in crate::store::redis) bool);

impl ScriptReply for Released {
    fn parse(value: Value) -> StoreResult<Self> {
        redis::from_redis_value::<i64>(value)
            .map(|n| Released(n > 0))
            .map_err(corrupt)
    }
}
