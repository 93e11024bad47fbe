//! The arguments and reply of `snapshot.lua`: what a join answers (the
//! room, the roster with standings, the replay after `since`) in one call.

use std::collections::HashMap;

use redis::Value;

use super::{Bound, ScriptArgs, ScriptReply, corrupt};
use crate::error::StoreResult;
use crate::store::Backlog;

/// `snapshot.lua`.
pub(in crate::store::redis) struct Snapshot<'a> {
    /// `room:{R}`.
    pub(in crate::store::redis) room: String,
    /// `room_members:{R}`.
    pub(in crate::store::redis) members: String,
    /// `presence:{R}`.
    pub(in crate::store::redis) presence: String,
    /// `roles:{R}`.
    pub(in crate::store::redis) roles: String,
    /// `mutes:{R}`.
    pub(in crate::store::redis) mutes: String,
    /// `room_events:{R}`.
    pub(in crate::store::redis) events: String,
    /// `room_messages:{R}`.
    pub(in crate::store::redis) messages: String,
    /// `countable:{R}`.
    pub(in crate::store::redis) countable: String,
    /// At most this many participants.
    pub(in crate::store::redis) limit: usize,
    /// The replay after a seq, or the newest messages.
    pub(in crate::store::redis) backlog: Backlog,
    /// `message:{R}:`, for the expiry trim.
    pub(in crate::store::redis) message_prefix: &'a str,
}

impl ScriptArgs for Snapshot<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.room)
            .key(&self.members)
            .key(&self.presence)
            .key(&self.roles)
            .key(&self.mutes)
            .key(&self.events)
            .key(&self.messages)
            .key(&self.countable)
            .arg(self.limit.max(1));
        match self.backlog {
            Backlog::Since(since) => inv.arg(since).arg(self.message_prefix).arg(0),
            Backlog::Newest(n) => inv.arg(-1).arg(self.message_prefix).arg(n),
        };
    }
}

/// What `snapshot.lua` read.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) enum SnapshotReply {
    /// The room does not exist.
    NoRoom,
    /// The room and what a join answers.
    Room(Box<SnapshotRead>),
}

/// The reads of `snapshot.lua`, as Redis answered them.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) struct SnapshotRead {
    /// The room's hash.
    pub(in crate::store::redis) fields: HashMap<String, String>,
    /// Its participant count.
    pub(in crate::store::redis) count: u32,
    /// More participants than asked for: `users` are the newest, newest
    /// first (as `roster.lua`).
    pub(in crate::store::redis) partial: bool,
    /// Users as JSON (`None` for a presence entry whose member is gone).
    pub(in crate::store::redis) users: Vec<Option<String>>,
    /// The moderators among them.
    pub(in crate::store::redis) moderators: Vec<String>,
    /// The mutes among them: (user id, until ms), expired ones included.
    pub(in crate::store::redis) mutes: Vec<(String, u64)>,
    /// The last seq readers may see.
    pub(in crate::store::redis) seq: u64,
    /// The envelopes after `since` (empty without one).
    pub(in crate::store::redis) envelopes: Vec<Vec<u8>>,
    /// The states of the newest messages, newest first (empty with a
    /// `since`).
    pub(in crate::store::redis) messages: Vec<Vec<u8>>,
}

type Raw = (
    HashMap<String, String>,
    u32,
    i64,
    Vec<Option<String>>,
    Vec<String>,
    Vec<(String, u64)>,
    u64,
    Vec<Vec<u8>>,
    Vec<Vec<u8>>,
);

impl ScriptReply for SnapshotReply {
    fn parse(value: Value) -> StoreResult<Self> {
        if matches!(&value, Value::Array(items) if items.is_empty()) {
            return Ok(SnapshotReply::NoRoom);
        }
        let (fields, count, partial, users, moderators, mutes, seq, envelopes, messages): Raw =
            redis::from_redis_value(value).map_err(corrupt)?;
        Ok(SnapshotReply::Room(Box::new(SnapshotRead {
            fields,
            count,
            partial: partial == 1,
            users,
            moderators,
            mutes,
            seq,
            envelopes,
            messages,
        })))
    }
}
