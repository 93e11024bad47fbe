//! The moderation scripts (`lua/mod_*.lua`, protocol 1.1): their typed
//! arguments and parsed replies.
//!
//! Each is prefixed with the header of `Publish` (for `RELEASE_VERB` and
//! `BIG_ROOM`), the permission table generated from
//! `store::moderation::permitted`, and `moderation.lua` (`role_of`,
//! `ban_holds`); the ones that write are guarded by a deadline
//! (`guard.lua`) and `mod_remove.lua` also gets `common.lua` for the
//! "left" system message.

use redis::{Script, Value};

use super::super::parse::{corrupt, status};
use super::{Bound, EventKeys, ScriptArgs, ScriptReply, item};
use crate::error::StoreResult;
use crate::model::Role;
use crate::store::moderation::lua_permission_table;

const MODERATION: &str = include_str!("../lua/moderation.lua");

/// The moderation scripts.
pub(in crate::store::redis) struct ModScripts {
    pub(in crate::store::redis) update: Script,
    pub(in crate::store::redis) role: Script,
    pub(in crate::store::redis) remove: Script,
    pub(in crate::store::redis) unban: Script,
    pub(in crate::store::redis) mute: Script,
    pub(in crate::store::redis) bans: Script,
    pub(in crate::store::redis) close: Script,
}

impl ModScripts {
    /// The scripts, with the engine's publish `header`.
    pub(super) fn new(header: &str, common: &str, guard: &str) -> ModScripts {
        let table = lua_permission_table();
        let guarded = |body: &str| {
            Script::new(&format!(
                "{guard}\n{header}{common}\n{table}{MODERATION}\n{body}"
            ))
        };
        ModScripts {
            update: guarded(include_str!("../lua/mod_update.lua")),
            role: guarded(include_str!("../lua/mod_role.lua")),
            remove: guarded(include_str!("../lua/mod_remove.lua")),
            unban: guarded(include_str!("../lua/mod_unban.lua")),
            mute: guarded(include_str!("../lua/mod_mute.lua")),
            bans: Script::new(&format!(
                "{header}{table}{MODERATION}\n{}",
                include_str!("../lua/mod_bans.lua")
            )),
            close: guarded(include_str!("../lua/mod_close.lua")),
        }
    }
}

/// The two keys every moderation script starts with.
pub(in crate::store::redis) struct RoleKeys {
    /// `room:{R}`.
    pub(in crate::store::redis) room: String,
    /// `roles:{R}`.
    pub(in crate::store::redis) roles: String,
}

impl RoleKeys {
    fn bind(&self, inv: &mut Bound) {
        inv.key(&self.room).key(&self.roles);
    }
}

/// `mod_update.lua`.
pub(in crate::store::redis) struct Update<'a> {
    pub(in crate::store::redis) keys: RoleKeys,
    /// `room_members:{R}`.
    pub(in crate::store::redis) members: String,
    pub(in crate::store::redis) actor: &'a str,
    /// `""`: keep.
    pub(in crate::store::redis) name: &'a str,
    /// `None`: keep.
    pub(in crate::store::redis) max: Option<u32>,
    /// `None`: keep.
    pub(in crate::store::redis) private: Option<bool>,
    pub(in crate::store::redis) deadline: i64,
}

impl ScriptArgs for Update<'_> {
    fn bind(&self, inv: &mut Bound) {
        self.keys.bind(inv);
        inv.key(&self.members)
            .arg(self.actor)
            .arg(self.name)
            .arg(self.max.map(|m| m.to_string()).unwrap_or_default())
            .arg(match self.private {
                None => "",
                Some(true) => "1",
                Some(false) => "0",
            })
            .arg(self.deadline);
    }
}

/// `mod_role.lua`.
pub(in crate::store::redis) struct SetRole<'a> {
    pub(in crate::store::redis) keys: RoleKeys,
    /// `room_members:{R}`.
    pub(in crate::store::redis) members: String,
    /// `mutes:{R}`: a hand-over lifts the new owner's mute.
    pub(in crate::store::redis) mutes: String,
    pub(in crate::store::redis) actor: &'a str,
    pub(in crate::store::redis) target: &'a str,
    pub(in crate::store::redis) role: Role,
    pub(in crate::store::redis) deadline: i64,
}

impl ScriptArgs for SetRole<'_> {
    fn bind(&self, inv: &mut Bound) {
        self.keys.bind(inv);
        inv.key(&self.members)
            .key(&self.mutes)
            .arg(self.actor)
            .arg(self.target)
            .arg(self.role.as_str())
            .arg(self.deadline);
    }
}

/// `mod_remove.lua`.
pub(in crate::store::redis) struct Remove<'a> {
    pub(in crate::store::redis) keys: RoleKeys,
    pub(in crate::store::redis) event: &'a EventKeys,
    pub(in crate::store::redis) bans: String,
    pub(in crate::store::redis) members: String,
    pub(in crate::store::redis) member_ids: String,
    pub(in crate::store::redis) presence: String,
    /// `member_conns:{R}:TARGET`.
    pub(in crate::store::redis) member_conns: String,
    /// `typing:{R}:TARGET`.
    pub(in crate::store::redis) typing: String,
    pub(in crate::store::redis) messages: String,
    /// `message:{R}:M` of the "left" note.
    pub(in crate::store::redis) message: String,
    pub(in crate::store::redis) actor: &'a str,
    pub(in crate::store::redis) target: &'a str,
    /// `kick` or `ban`.
    pub(in crate::store::redis) action: &'static str,
    /// The ban record JSON; `""` for a kick.
    pub(in crate::store::redis) ban: &'a str,
    /// The whole `member.removed` envelope.
    pub(in crate::store::redis) removed: &'a [u8],
    pub(in crate::store::redis) now: u64,
    pub(in crate::store::redis) note: super::Note<'a>,
    pub(in crate::store::redis) deadline: i64,
}

impl ScriptArgs for Remove<'_> {
    fn bind(&self, inv: &mut Bound) {
        self.keys.bind(inv);
        inv.key(&self.bans)
            .key(&self.members)
            .key(&self.member_ids)
            .key(&self.presence)
            .key(&self.member_conns)
            .key(&self.typing)
            .key(&self.messages)
            .key(&self.event.events)
            .key(&self.message)
            .arg(self.actor)
            .arg(self.target)
            .arg(self.action)
            .arg(self.ban)
            .arg(self.removed)
            .arg(&self.event.channel)
            .arg(self.now)
            .arg(self.note.id)
            .arg(self.note.tail)
            .arg(self.note.ttl_ms)
            .arg(self.note.log_len)
            .arg(self.deadline);
    }
}

/// `mod_unban.lua`.
pub(in crate::store::redis) struct Unban<'a> {
    pub(in crate::store::redis) keys: RoleKeys,
    pub(in crate::store::redis) bans: String,
    pub(in crate::store::redis) actor: &'a str,
    pub(in crate::store::redis) target: &'a str,
    pub(in crate::store::redis) now: u64,
    pub(in crate::store::redis) deadline: i64,
}

impl ScriptArgs for Unban<'_> {
    fn bind(&self, inv: &mut Bound) {
        self.keys.bind(inv);
        inv.key(&self.bans)
            .arg(self.actor)
            .arg(self.target)
            .arg(self.now)
            .arg(self.deadline);
    }
}

/// `mod_mute.lua`.
pub(in crate::store::redis) struct Mute<'a> {
    pub(in crate::store::redis) keys: RoleKeys,
    pub(in crate::store::redis) mutes: String,
    pub(in crate::store::redis) actor: &'a str,
    pub(in crate::store::redis) target: &'a str,
    /// `None`: unmute.
    pub(in crate::store::redis) until: Option<u64>,
    pub(in crate::store::redis) deadline: i64,
}

impl ScriptArgs for Mute<'_> {
    fn bind(&self, inv: &mut Bound) {
        self.keys.bind(inv);
        inv.key(&self.mutes)
            .arg(self.actor)
            .arg(self.target)
            .arg(self.until.map(|u| u.to_string()).unwrap_or_default())
            .arg(self.deadline);
    }
}

/// `mod_bans.lua`.
pub(in crate::store::redis) struct Bans<'a> {
    pub(in crate::store::redis) keys: RoleKeys,
    pub(in crate::store::redis) bans: String,
    pub(in crate::store::redis) actor: &'a str,
    pub(in crate::store::redis) now: u64,
}

impl ScriptArgs for Bans<'_> {
    fn bind(&self, inv: &mut Bound) {
        self.keys.bind(inv);
        inv.key(&self.bans)
            .arg(self.actor)
            .arg(self.now)
            .arg(crate::store::moderation::MAX_BANS_LISTED);
    }
}

/// `mod_close.lua`.
pub(in crate::store::redis) struct CloseRoom<'a> {
    /// room, members, messages, events, presence, member_ids, changes,
    /// changes_gate, roles, bans, mutes, reads, countable.
    pub(in crate::store::redis) keys: [String; 13],
    pub(in crate::store::redis) actor: &'a str,
    /// The whole `room.closed` envelope.
    pub(in crate::store::redis) closed: &'a [u8],
    pub(in crate::store::redis) channel: &'a str,
    pub(in crate::store::redis) member_conns_prefix: String,
    pub(in crate::store::redis) typing_prefix: String,
    pub(in crate::store::redis) deadline: i64,
}

impl ScriptArgs for CloseRoom<'_> {
    fn bind(&self, inv: &mut Bound) {
        for key in &self.keys {
            inv.key(key);
        }
        inv.arg(self.actor)
            .arg(self.closed)
            .arg(self.channel)
            .arg(&self.member_conns_prefix)
            .arg(&self.typing_prefix)
            .arg(self.deadline);
    }
}

/// What a moderation script said, before the verb's own data.
#[derive(Debug, PartialEq)]
pub(in crate::store::redis) enum ModReply {
    /// Done; the rest of the reply.
    Ok(Vec<Value>),
    /// No such room.
    NoRoom,
    /// Refused by the permission table.
    Forbidden(Role, Role),
    /// `mod_update.lua`: below the participant count.
    TooSmall(u32),
    /// `mod_role.lua`: the target is not a participant.
    NotParticipant,
    /// `mod_remove.lua`: the target was not a participant.
    Absent,
    /// `mod_remove.lua`: removed from a big room; the count now.
    Quiet(u32),
}

fn role(value: Option<&Value>) -> StoreResult<Role> {
    let name: String = value
        .ok_or_else(|| corrupt("moderation script reply has no role"))
        .and_then(|v| redis::from_redis_value_ref(v).map_err(corrupt))?;
    Role::parse(&name).ok_or_else(|| corrupt(format!("moderation script said role {name}")))
}

impl ScriptReply for ModReply {
    fn parse(value: Value) -> StoreResult<Self> {
        let (head, data) = status(value)?;
        match head.as_str() {
            "ok" => Ok(ModReply::Ok(data)),
            "no_room" => Ok(ModReply::NoRoom),
            "forbidden" => Ok(ModReply::Forbidden(role(data.first())?, role(data.get(1))?)),
            "too_small" => Ok(ModReply::TooSmall(item(&data, "room update")?)),
            "not_participant" => Ok(ModReply::NotParticipant),
            "absent" => Ok(ModReply::Absent),
            "quiet" => Ok(ModReply::Quiet(item(&data, "member remove")?)),
            other => Err(corrupt(format!("moderation script said {other}"))),
        }
    }
}
