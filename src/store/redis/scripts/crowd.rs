//! The arguments and replies of the big-room scripts: the bounded roster of
//! a join, member pages and the coalesced `participants.changed`.

use redis::Value;

use super::{Bound, ScriptArgs, ScriptReply, corrupt, status};
use crate::error::StoreResult;

/// `roster.lua`.
pub(in crate::store::redis) struct Roster {
    /// `room_members:{R}`.
    pub(in crate::store::redis) members: String,
    /// `presence:{R}`.
    pub(in crate::store::redis) presence: String,
    /// At most this many users.
    pub(in crate::store::redis) limit: usize,
}

impl ScriptArgs for Roster {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.members)
            .key(&self.presence)
            .arg(self.limit.max(1));
    }
}

/// What `roster.lua` read: users as JSON (`None` for a presence entry whose
/// member record is gone), and whether the room was too big for all.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) struct RosterReply {
    /// The room has more participants than asked for: these are the
    /// newest, newest first.
    pub(in crate::store::redis) partial: bool,
    /// User JSON.
    pub(in crate::store::redis) users: Vec<Option<String>>,
}

impl ScriptReply for RosterReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (partial, users): (i64, Vec<Option<String>>) =
            redis::from_redis_value(value).map_err(corrupt)?;
        Ok(RosterReply {
            partial: partial == 1,
            users,
        })
    }
}

/// `members.lua`.
pub(in crate::store::redis) struct Members<'a> {
    /// `room_members:{R}`.
    pub(in crate::store::redis) members: String,
    /// `member_ids:{R}`.
    pub(in crate::store::redis) member_ids: String,
    /// The page starts after this user id (`""`: the first page).
    pub(in crate::store::redis) after: &'a str,
    /// At most this many.
    pub(in crate::store::redis) limit: usize,
}

impl ScriptArgs for Members<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.members)
            .key(&self.member_ids)
            .arg(self.after)
            .arg(self.limit.max(1));
    }
}

/// What `members.lua` read.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) struct MembersReply {
    /// More members follow the page.
    pub(in crate::store::redis) more: bool,
    /// The page's user ids, ascending.
    pub(in crate::store::redis) ids: Vec<String>,
    /// Their JSON, in the same order (`None` if one vanished meanwhile,
    /// which the script's atomicity rules out).
    pub(in crate::store::redis) users: Vec<Option<String>>,
}

impl ScriptReply for MembersReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (more, ids, users): (i64, Vec<String>, Vec<Option<String>>) =
            redis::from_redis_value(value).map_err(corrupt)?;
        Ok(MembersReply {
            more: more == 1,
            ids,
            users,
        })
    }
}

/// `changes.lua`.
pub(in crate::store::redis) struct Changes<'a> {
    /// `changes:{R}`.
    pub(in crate::store::redis) changes: String,
    /// `changes_gate:{R}`.
    pub(in crate::store::redis) gate: String,
    /// `room_members:{R}`.
    pub(in crate::store::redis) members: String,
    /// The gate's window, ms.
    pub(in crate::store::redis) window_ms: u64,
    /// Changes kept waiting at most.
    pub(in crate::store::redis) keep: usize,
    /// This caller's changes: `j` or `l` followed by the user's JSON.
    pub(in crate::store::redis) added: &'a [String],
}

impl ScriptArgs for Changes<'_> {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.changes)
            .key(&self.gate)
            .key(&self.members)
            .arg(self.window_ms.max(1))
            .arg(self.keep.max(1));
        for change in self.added {
            inv.arg(change);
        }
    }
}

/// What `changes.lua` decided.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) enum ChangesReply {
    /// Nothing waits.
    Nothing,
    /// The gate is taken for this many more ms.
    Wait(i64),
    /// Publish: the participant count and the waiting changes, oldest first.
    Publish(u32, Vec<String>),
}

impl ScriptReply for ChangesReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (head, data) = status(value)?;
        let get = |i: usize| {
            data.get(i)
                .ok_or_else(|| corrupt("changes script reply is short"))
        };
        match head.as_str() {
            "none" => Ok(ChangesReply::Nothing),
            "wait" => Ok(ChangesReply::Wait(
                redis::from_redis_value_ref(get(0)?).map_err(corrupt)?,
            )),
            "publish" => Ok(ChangesReply::Publish(
                redis::from_redis_value_ref(get(0)?).map_err(corrupt)?,
                redis::from_redis_value_ref(get(1)?).map_err(corrupt)?,
            )),
            other => Err(corrupt(format!("changes script said {other}"))),
        }
    }
}
