//! The arguments and replies of the read-state scripts: `read.lua`
//! (`room.read`), `mine.lua` (one room of `room.mine`) and `receipts.lua`
//! (`room.receipts`).

use std::collections::HashMap;

use redis::Value;

use super::{Bound, ScriptArgs, ScriptReply, corrupt, item, status};
use crate::error::StoreResult;

/// `unindex.lua`: drops rooms from a user's index unless joined again.
pub(in crate::store::redis) struct Unindex<'a> {
    /// `user_rooms:{U}`.
    pub(in crate::store::redis) index: String,
    /// Each room with its bound: it goes while its join time is below.
    pub(in crate::store::redis) rooms: &'a [(&'a str, u64)],
}

impl ScriptArgs for Unindex<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.index);
        for (room, bound) in self.rooms {
            inv.arg(*room).arg(*bound);
        }
    }
}

/// How many rooms `unindex.lua` dropped.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) struct Unindexed(pub(in crate::store::redis) u64);

impl ScriptReply for Unindexed {
    fn parse(value: Value) -> StoreResult<Self> {
        redis::from_redis_value::<u64>(value)
            .map(Unindexed)
            .map_err(corrupt)
    }
}

/// `read.lua`.
pub(in crate::store::redis) struct MarkRead<'a> {
    /// `room:{R}`.
    pub(in crate::store::redis) room: String,
    /// `room_members:{R}`.
    pub(in crate::store::redis) members: String,
    /// `reads:{R}`.
    pub(in crate::store::redis) reads: String,
    /// The reader.
    pub(in crate::store::redis) user: &'a str,
    /// Read up to this seq.
    pub(in crate::store::redis) seq: u64,
}

impl ScriptArgs for MarkRead<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.room)
            .key(&self.members)
            .key(&self.reads)
            .arg(self.user)
            .arg(self.seq);
    }
}

/// What `read.lua` did.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) enum MarkReadReply {
    /// The read position now, and whether this call moved it.
    Read(u64, bool),
    /// No such room.
    NoRoom,
    /// The user is not a participant.
    NotMember,
}

impl ScriptReply for MarkReadReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (head, data) = status(value)?;
        match head.as_str() {
            "ok" => {
                let read: u64 = item(&data, "read")?;
                let moved: i64 = item(&data[1.min(data.len())..], "read")?;
                Ok(MarkReadReply::Read(read, moved == 1))
            }
            "no_room" => Ok(MarkReadReply::NoRoom),
            "not_member" => Ok(MarkReadReply::NotMember),
            other => Err(corrupt(format!("read script said {other}"))),
        }
    }
}

/// `mine.lua`.
pub(in crate::store::redis) struct Mine<'a> {
    /// `room:{R}`.
    pub(in crate::store::redis) room: String,
    /// `room_members:{R}`.
    pub(in crate::store::redis) members: String,
    /// `reads:{R}`.
    pub(in crate::store::redis) reads: String,
    /// `countable:{R}`.
    pub(in crate::store::redis) countable: String,
    /// `roles:{R}`.
    pub(in crate::store::redis) roles: String,
    /// `room_messages:{R}`, for the expiry trim.
    pub(in crate::store::redis) messages: String,
    /// `room_events:{R}`, for the expiry trim.
    pub(in crate::store::redis) events: String,
    /// The user.
    pub(in crate::store::redis) user: &'a str,
    /// `message:{R}:`, for the keys trimming finds.
    pub(in crate::store::redis) message_prefix: String,
}

impl ScriptArgs for Mine<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.room)
            .key(&self.members)
            .key(&self.reads)
            .key(&self.countable)
            .key(&self.roles)
            .key(&self.messages)
            .key(&self.events)
            .arg(self.user)
            .arg(&self.message_prefix);
    }
}

/// What `mine.lua` read.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) enum MineReply {
    /// The room, as its participant sees it.
    Mine {
        /// The room hash.
        fields: HashMap<String, String>,
        /// Participants.
        count: u32,
        /// The user's read position.
        read_seq: u64,
        /// Countable messages after it.
        unread: u64,
        /// The user is a moderator.
        moderator: bool,
    },
    /// No such room, or the user is no longer a participant.
    Gone,
}

impl ScriptReply for MineReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (head, data) = status(value)?;
        match head.as_str() {
            "ok" => {
                let flat: Vec<String> = item(&data, "mine")?;
                let fields = flat
                    .chunks_exact(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect();
                let rest =
                    |i: usize| -> StoreResult<u64> { item(&data[i.min(data.len())..], "mine") };
                Ok(MineReply::Mine {
                    fields,
                    count: rest(1)? as u32,
                    read_seq: rest(2)?,
                    unread: rest(3)?,
                    moderator: rest(4)? == 1,
                })
            }
            "gone" => Ok(MineReply::Gone),
            other => Err(corrupt(format!("mine script said {other}"))),
        }
    }
}

/// `receipts.lua`.
pub(in crate::store::redis) struct Receipts<'a> {
    /// `room:{R}`.
    pub(in crate::store::redis) room: String,
    /// `room_members:{R}`.
    pub(in crate::store::redis) members: String,
    /// `reads:{R}`.
    pub(in crate::store::redis) reads: String,
    /// The asking user.
    pub(in crate::store::redis) user: &'a str,
    /// Participants the room may have.
    pub(in crate::store::redis) max: u32,
}

impl ScriptArgs for Receipts<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.room)
            .key(&self.members)
            .key(&self.reads)
            .arg(self.user)
            .arg(self.max);
    }
}

/// What `receipts.lua` read.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) enum ReceiptsReply {
    /// Participants (user JSON) and their read positions, in order.
    Reads(Vec<(String, u64)>),
    /// No such room.
    NoRoom,
    /// The asking user is not a participant.
    NotMember,
    /// The room has this many participants, more than asked for.
    TooBig(u32),
}

impl ScriptReply for ReceiptsReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (head, data) = status(value)?;
        match head.as_str() {
            "ok" => {
                let users: Vec<String> = item(&data, "receipts")?;
                let reads: Vec<u64> = item(&data[1.min(data.len())..], "receipts")?;
                if users.len() != reads.len() {
                    return Err(corrupt("receipts script answered uneven lists"));
                }
                Ok(ReceiptsReply::Reads(users.into_iter().zip(reads).collect()))
            }
            "no_room" => Ok(ReceiptsReply::NoRoom),
            "not_member" => Ok(ReceiptsReply::NotMember),
            "too_big" => Ok(ReceiptsReply::TooBig(item(&data, "receipts")?)),
            other => Err(corrupt(format!("receipts script said {other}"))),
        }
    }
}
