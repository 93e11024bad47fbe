//! `RoomStore::snapshot` on Redis: what a join answers in one call of
//! `snapshot.lua` (every key in the room's slot), instead of a read of the
//! room, `roster.lua`, `since.lua` and the standings' `HMGET`s one after
//! the other.

use std::collections::{HashMap, HashSet};

use super::RedisStore;
use super::parse::{corrupt, parse_message, parse_room};
use super::scripts::{Snapshot, SnapshotRead, SnapshotReply};
use crate::codec;
use crate::error::StoreResult;
use crate::events::RawReplay;
use crate::model::{Message, Participant, Role, User, now_ms};
use crate::store::{Backlog, RoomSnapshot, decode_replay, sort_users};

impl RedisStore {
    /// One try of `RoomStore::snapshot` (idempotent: the expiry trim is, and
    /// the rest only reads).
    pub(super) async fn read_snapshot(
        &self,
        room: &str,
        limit: usize,
        backlog: Backlog,
    ) -> StoreResult<Option<RoomSnapshot>> {
        let k = self.k();
        let prefix = k.message_prefix(room);
        let args = Snapshot {
            room: k.room(room),
            members: k.room_members(room),
            presence: k.presence(room),
            roles: k.roles(room),
            mutes: k.mutes(room),
            events: k.room_events(room),
            messages: k.room_messages(room),
            countable: k.countable(room),
            limit,
            backlog,
            message_prefix: &prefix,
        };
        let mut c = self.conn().await?;
        match self
            .script(&mut c, "join_snapshot", &self.inner.scripts.snapshot, &args)
            .await?
        {
            SnapshotReply::NoRoom => Ok(None),
            SnapshotReply::Room(read) => snapshot_of(*read, backlog, now_ms()),
        }
    }
}

/// The snapshot from what the script read, at `now` (mutes that ended are
/// not shown).
fn snapshot_of(
    read: SnapshotRead,
    backlog: Backlog,
    now: u64,
) -> StoreResult<Option<RoomSnapshot>> {
    let Some(mut room) = parse_room(&read.fields, read.count)? else {
        return Ok(None);
    };
    // The script's seq is the visible one (the `published` mark with
    // replica acknowledgements), as `read_rooms` gives it.
    room.last_seq = read.seq;
    let mut users = read
        .users
        .iter()
        .flatten()
        .map(|j| serde_json::from_str::<User>(j).map_err(corrupt))
        .collect::<StoreResult<Vec<User>>>()?;
    if !read.partial {
        sort_users(&mut users);
    }
    // The owner as `standings` finds it: `owner`, else the creator.
    let owner = read
        .fields
        .get("owner")
        .or_else(|| read.fields.get("created_by"));
    let moderators: HashSet<&str> = read.moderators.iter().map(String::as_str).collect();
    let mutes: HashMap<&str, u64> = read
        .mutes
        .iter()
        .map(|(user, until)| (user.as_str(), *until))
        .collect();
    let participants = users
        .into_iter()
        .map(|user| {
            let role = if owner == Some(&user.id) {
                Role::Owner
            } else if moderators.contains(user.id.as_str()) {
                Role::Moderator
            } else {
                Role::Member
            };
            let muted_until = mutes.get(user.id.as_str()).copied().filter(|u| *u > now);
            Participant {
                user,
                role,
                muted_until,
            }
        })
        .collect();
    let mut messages = read
        .messages
        .iter()
        .map(|state| parse_message(state))
        .collect::<StoreResult<Vec<Message>>>()?;
    messages.reverse();
    let replay = match backlog {
        Backlog::Newest(_) => None,
        Backlog::Since(since) => {
            let first = read
                .envelopes
                .first()
                .map(|e| codec::peek_seq(e))
                .transpose()
                .map_err(corrupt)?;
            let complete = since >= read.seq || first == Some(since + 1);
            Some(decode_replay(RawReplay {
                envelopes: read.envelopes,
                last_seq: read.seq,
                complete,
            })?)
        }
    };
    Ok(Some(RoomSnapshot {
        room,
        participants,
        replay,
        messages,
    }))
}
