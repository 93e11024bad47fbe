//! The arguments and replies of the message scripts: a send (`send.lua`,
//! with the mute check and the read state it writes), an edit or delete
//! (`replace.lua`), the replay of a room's events (`since.lua`) and the
//! expiry trim (`trim.lua`).

use redis::Value;

use super::{Bound, EventKeys, ScriptArgs, ScriptReply, corrupt, item, status};
use crate::error::StoreResult;

/// `send.lua`.
pub(in crate::store::redis) struct Send<'a> {
    /// Room, log and channel.
    pub(in crate::store::redis) event: &'a EventKeys,
    /// `room_members:{R}`: the author must be one.
    pub(in crate::store::redis) members: String,
    /// `room_messages:{R}`: the message index.
    pub(in crate::store::redis) messages: String,
    /// `message:{R}:M`: the new message's record.
    pub(in crate::store::redis) message: String,
    /// `dedupe:{R}:USER:CLIENT_MSG_ID`.
    pub(in crate::store::redis) dedupe: &'a str,
    /// `mutes:{R}`: a muted author is refused.
    pub(in crate::store::redis) mutes: String,
    /// `countable:{R}`: the message counts as unread for others.
    pub(in crate::store::redis) countable: String,
    /// `reads:{R}`: the author has read up to it.
    pub(in crate::store::redis) reads: String,
    /// Author id.
    pub(in crate::store::redis) user: &'a str,
    /// Message id.
    pub(in crate::store::redis) msg_id: &'a str,
    /// The envelope tail (`crate::codec::encode_tail`).
    pub(in crate::store::redis) tail: &'a [u8],
    /// Message TTL, ms.
    pub(in crate::store::redis) ttl_ms: u64,
    /// Events kept in the log.
    pub(in crate::store::redis) log_len: u32,
    /// Now, Unix ms (our clock: `last_activity`).
    pub(in crate::store::redis) now: u64,
    /// 0 no dedupe, 1 check then remember, 2 remember (the original expired).
    pub(in crate::store::redis) dedupe_mode: u8,
    /// How long the dedupe key lives, ms.
    pub(in crate::store::redis) dedupe_ttl_ms: u64,
    /// Refuse after this Redis time, ms.
    pub(in crate::store::redis) deadline: i64,
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
pub(in crate::store::redis) enum SendReply {
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

/// `since.lua`.
pub(in crate::store::redis) struct Since {
    /// `room:{R}`.
    pub(in crate::store::redis) room: String,
    /// `room_events:{R}`.
    pub(in crate::store::redis) events: String,
    /// `room_messages:{R}`.
    pub(in crate::store::redis) messages: String,
    /// `countable:{R}`: expired messages stop counting.
    pub(in crate::store::redis) countable: String,
    /// Events after this seq.
    pub(in crate::store::redis) since: u64,
    /// `message:{R}:`, for the keys trimming finds.
    pub(in crate::store::redis) message_prefix: String,
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
pub(in crate::store::redis) struct SinceReply {
    /// The room's seq.
    pub(in crate::store::redis) last_seq: u64,
    /// Envelopes after `since`, ascending.
    pub(in crate::store::redis) envelopes: Vec<Vec<u8>>,
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
pub(in crate::store::redis) struct Trim {
    /// `room_messages:{R}`.
    pub(in crate::store::redis) messages: String,
    /// `room_events:{R}`.
    pub(in crate::store::redis) events: String,
    /// `countable:{R}`: expired messages stop counting.
    pub(in crate::store::redis) countable: String,
    /// `message:{R}:`, for the keys trimming finds.
    pub(in crate::store::redis) message_prefix: String,
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
pub(in crate::store::redis) struct Trimmed(pub(in crate::store::redis) u64);

impl ScriptReply for Trimmed {
    fn parse(value: Value) -> StoreResult<Self> {
        redis::from_redis_value(value).map(Trimmed).map_err(corrupt)
    }
}

/// `replace.lua`.
pub(in crate::store::redis) struct Replace<'a> {
    /// Room, log and channel.
    pub(in crate::store::redis) event: &'a EventKeys,
    /// `message:{R}:M`.
    pub(in crate::store::redis) message: String,
    /// `countable:{R}`: a deleted message stops counting.
    pub(in crate::store::redis) countable: String,
    /// The message's id.
    pub(in crate::store::redis) msg_id: &'a str,
    /// The new state is a tombstone.
    pub(in crate::store::redis) deleting: bool,
    /// The record the caller read.
    pub(in crate::store::redis) expected: &'a [u8],
    /// The new event's envelope tail.
    pub(in crate::store::redis) tail: &'a [u8],
    /// Events kept in the log.
    pub(in crate::store::redis) log_len: u32,
    /// Now, Unix ms.
    pub(in crate::store::redis) now: u64,
    /// `mutes:{R}`.
    pub(in crate::store::redis) mutes: String,
    /// An edit's author, refused while muted; `""` for a deletion.
    pub(in crate::store::redis) muted_user: &'a str,
    /// Refuse after this Redis time, ms.
    pub(in crate::store::redis) deadline: i64,
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
pub(in crate::store::redis) enum ReplaceReply {
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
