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
//! The arguments and replies of the message scripts (send, edit/delete,
//! replay, trim) live in `messages`, those of the room lifecycle (create,
//! join, leave, idle close, code release) in `rooms`, those of the counter
//! scripts (typing, abuse limits) in `counters`, those of the big-room
//! scripts (roster, member pages, `participants.changed`) in `crowd`, those
//! of the moderation verbs (1.1) in `moderation`, those of read state (1.1)
//! in `reads`, the join snapshot's (room, roster, standings, replay in one
//! call) in `snapshot`; the shared machinery (the script set, binding, the event
//! keys, publishing) is here. `mod_close.lua` also derives keys
//! from room prefixes (`member_conns:{R}:`, `typing:{R}:`), like
//! `close.lua`.

use redis::{Cmd, Script, ToRedisArgs, Value};

use super::parse::{corrupt, status};

mod counters;
mod crowd;
mod messages;
pub(super) mod moderation;
mod reads;
mod rooms;
mod snapshot;

use crate::error::{StoreError, StoreResult};
pub(super) use counters::{Limit, LimitReply, Tell, Typing};
pub(super) use crowd::{Changes, ChangesReply, Members, MembersReply, Roster, RosterReply};
pub(super) use messages::{
    Replace, ReplaceReply, Send, SendReply, Since, SinceReply, Trim, Trimmed,
};
pub(super) use reads::{
    MarkRead, MarkReadReply, Mine, MineReply, Receipts, ReceiptsReply, Unindex, Unindexed,
};
pub(super) use rooms::{
    Close, CloseReply, Create, CreateReply, Join, JoinReply, Leave, LeaveReply, MemberKeys, Note,
    ReleaseCode, Released,
};
pub(super) use snapshot::{Snapshot, SnapshotRead, SnapshotReply};

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
    /// `snapshot.lua`: what a join answers, in one call.
    pub(super) snapshot: Script,
    pub(super) members: Script,
    pub(super) changes: Script,
    /// `read.lua`: `room.read`.
    pub(super) read: Script,
    /// `mine.lua`: one room of `room.mine`.
    pub(super) mine: Script,
    /// `receipts.lua`: `room.receipts`.
    pub(super) receipts: Script,
    /// `unindex.lua`: rooms leave a user's index unless joined again.
    pub(super) unindex: Script,
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
            roster: with_common(include_str!("../lua/roster.lua")),
            snapshot: with_common(include_str!("../lua/snapshot.lua")),
            members: Script::new(include_str!("../lua/members.lua")),
            changes: Script::new(include_str!("../lua/changes.lua")),
            read: with_common(include_str!("../lua/read.lua")),
            mine: with_common(include_str!("../lua/mine.lua")),
            receipts: with_common(include_str!("../lua/receipts.lua")),
            unindex: Script::new(include_str!("../lua/unindex.lua")),
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
