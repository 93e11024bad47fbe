//! Roles and moderation (protocol 1.1): the `ModerationStore` trait, its
//! outcomes, the durable records both engines keep, and the permission
//! table every engine enforces.
//!
//! The permission table (`permitted`) is one pure function. The memory
//! engine calls it under its lock; the Redis engine's moderation scripts get
//! it as a Lua table generated from it (`lua_permission_table`), so the
//! check and the effect run in one script and the rule lives in one place.
//!
//! Data model (both engines): the owner is the room's `owner` field (absent:
//! `created_by`, rooms made before 1.1); moderators are listed per room;
//! members are everyone else. Bans are `BanRecord`s by user id, with an end
//! (`until` ms, -1 for none); mutes are an end (ms) by user id. Expired bans
//! and mutes are ignored when read and removed lazily. All of it is deleted
//! with the room.

use super::StoreResult;
pub use crate::model::BanRecord;

/// Most bans one `room.bans` reply lists (the ones ending soonest, bans
/// without an end last), so the reply and the script stay bounded.
pub const MAX_BANS_LISTED: usize = 500;

/// The order in which bans are kept when more than `MAX_BANS_LISTED` are in
/// force: soonest end first, bans without an end (`until` < 0) last.
pub fn ban_listing_key(ban: &BanRecord) -> (bool, i64, &str) {
    (ban.until < 0, ban.until, ban.user.id.as_str())
}
use crate::model::{Event, Message, Role, Room, User};
use async_trait::async_trait;

/// What a moderation request does, for the permission table and the audit
/// log (`huddle_moderation_actions_total{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `room.update`.
    Update,
    /// `member.role`.
    SetRole,
    /// `member.kick`.
    Kick,
    /// `member.ban`.
    Ban,
    /// `member.unban`.
    Unban,
    /// `member.mute`.
    Mute,
    /// `member.unmute`.
    Unmute,
    /// `room.bans`.
    ListBans,
    /// `room.close`.
    Close,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 9] = [
        Action::Update,
        Action::SetRole,
        Action::Kick,
        Action::Ban,
        Action::Unban,
        Action::Mute,
        Action::Unmute,
        Action::ListBans,
        Action::Close,
    ];

    /// The name in metrics, logs and the Lua permission table.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Update => "update",
            Action::SetRole => "role",
            Action::Kick => "kick",
            Action::Ban => "ban",
            Action::Unban => "unban",
            Action::Mute => "mute",
            Action::Unmute => "unmute",
            Action::ListBans => "bans",
            Action::Close => "close",
        }
    }

    /// Whether the action names a target user.
    pub fn has_target(self) -> bool {
        !matches!(self, Action::Update | Action::ListBans | Action::Close)
    }
}

/// The permission table: may an `actor` do `action` to a user whose role is
/// `target` (ignored for actions without a target)?
///
/// - `room.update`, `room.bans`: owner and moderators.
/// - `room.close`: the owner.
/// - `member.role`: the owner, on anyone but the owner.
/// - kick, ban, unban, mute, unmute: the owner on moderators and members; a
///   moderator on members only. Nobody acts on the owner.
pub fn permitted(action: Action, actor: Role, target: Role) -> bool {
    match action {
        Action::Update | Action::ListBans => matches!(actor, Role::Owner | Role::Moderator),
        Action::Close => actor == Role::Owner,
        Action::SetRole => actor == Role::Owner && target != Role::Owner,
        Action::Kick | Action::Ban | Action::Unban | Action::Mute | Action::Unmute => match actor {
            Role::Owner => target != Role::Owner,
            Role::Moderator => target == Role::Member,
            Role::Member => false,
        },
    }
}

/// The permission table as a Lua header for the Redis scripts: a set of
/// `'action:actor:target'` strings that are allowed (target `none` for the
/// actions without one), and `allowed(action, actor, target)`.
pub fn lua_permission_table() -> String {
    let roles = [Role::Owner, Role::Moderator, Role::Member];
    let mut entries = Vec::new();
    for action in Action::ALL {
        for actor in roles {
            if action.has_target() {
                for target in roles {
                    if permitted(action, actor, target) {
                        entries.push(format!(
                            "['{}:{}:{}']=true",
                            action.as_str(),
                            actor.as_str(),
                            target.as_str()
                        ));
                    }
                }
            } else if permitted(action, actor, Role::Member) {
                entries.push(format!(
                    "['{}:{}:none']=true",
                    action.as_str(),
                    actor.as_str()
                ));
            }
        }
    }
    format!(
        "local ALLOWED = {{{}}}\nlocal function allowed(action, actor, target)\n  return ALLOWED[action .. ':' .. actor .. ':' .. (target or 'none')] == true\nend\n",
        entries.join(",")
    )
}

/// A user's standing in a room: role, and mute while muted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Their role.
    pub role: Role,
    /// Until when (ms) they are muted, while muted.
    pub muted_until: Option<u64>,
}

impl Default for Standing {
    fn default() -> Self {
        Standing {
            role: Role::Member,
            muted_until: None,
        }
    }
}

/// Changes asked by `room.update` (validated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomChanges {
    /// New name.
    pub name: Option<String>,
    /// New capacity.
    pub max_participants: Option<u32>,
    /// New privacy.
    pub private: Option<bool>,
}

/// Outcome of a moderation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModOutcome<T> {
    /// Done.
    Done(T),
    /// The room does not exist.
    NoRoom,
    /// The permission table refused: the actor's and target's roles.
    Forbidden {
        /// The actor's role.
        actor: Role,
        /// The target's role (`Member` for actions without one).
        target: Role,
    },
    /// `room.update`: the new capacity is below the participant count.
    TooSmall(u32),
    /// `member.role` promoting a user who is not a participant.
    NotParticipant,
}

/// What a kick or ban removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// The user was not a participant (a ban still holds).
    Absent,
    /// Removed, the "left" system message written.
    Left,
    /// Removed from a big room, no system message; the count now.
    LeftQuietly(u32),
}

/// A kick or ban as the store applies it.
#[derive(Debug, Clone)]
pub struct RemoveRequest<'a> {
    /// Who acts.
    pub actor: &'a str,
    /// The user removed (`room_members` record, or by id).
    pub target: &'a User,
    /// The ban to record; `None` for a kick.
    pub ban: Option<&'a BanRecord>,
    /// The `member.removed` event, published by the store atomically with
    /// the removal (on Redis, inside the script, on the room's channel).
    pub event: &'a Event,
    /// The "left" system message.
    pub note: &'a Message,
}

/// Roles, bans, mutes and the moderation verbs. Each verb checks the
/// permission table and applies its effect atomically (one script on
/// Redis, under the lock in memory).
#[async_trait]
pub trait ModerationStore: Send + Sync {
    /// The standing of each of `users` in the room, in order (a bounded
    /// read of just these users; absent users are members, not muted).
    async fn standings(&self, room: &str, users: &[String]) -> StoreResult<Vec<Standing>>;

    /// The roles of `users` in the room, in order.
    async fn roles(&self, room: &str, users: &[String]) -> StoreResult<Vec<Role>> {
        Ok(self
            .standings(room, users)
            .await?
            .into_iter()
            .map(|s| s.role)
            .collect())
    }

    /// A participant's user record, if `user` is one.
    async fn member(&self, room: &str, user: &str) -> StoreResult<Option<User>>;

    /// `room.update`; the room as changed.
    async fn update_room(
        &self,
        room: &str,
        actor: &str,
        changes: &RoomChanges,
    ) -> StoreResult<ModOutcome<Room>>;

    /// `member.role`. Handing over (`Owner`) makes the actor a moderator.
    async fn set_role(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        role: Role,
    ) -> StoreResult<ModOutcome<()>>;

    /// `member.kick` and `member.ban`: records the ban, removes every
    /// connection of the target from the room, publishes `event`, and, if
    /// the target was a participant, writes the "left" message (not in big
    /// rooms).
    async fn remove_member(
        &self,
        room: &str,
        request: RemoveRequest<'_>,
    ) -> StoreResult<ModOutcome<Removal>>;

    /// `member.unban`; whether a ban was lifted.
    async fn unban(&self, room: &str, actor: &str, target: &str) -> StoreResult<ModOutcome<bool>>;

    /// `member.mute` (`until` ms) and `member.unmute` (`None`).
    async fn mute(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        until: Option<u64>,
    ) -> StoreResult<ModOutcome<()>>;

    /// `room.bans`: the bans in force, at most `MAX_BANS_LISTED`: the ones
    /// ending soonest (bans without an end last; ties by user id), ordered
    /// by user id.
    async fn bans(&self, room: &str, actor: &str) -> StoreResult<ModOutcome<Vec<BanRecord>>>;

    /// `room.close`: publishes `event` (`room.closed`), then deletes the
    /// room and every key of it, and releases its code.
    async fn close_by_owner(
        &self,
        room: &str,
        actor: &str,
        event: &Event,
    ) -> StoreResult<ModOutcome<()>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permission_table() {
        use Action::*;
        use Role::*;
        let roles = [Owner, Moderator, Member];
        for action in [Kick, Ban, Unban, Mute, Unmute] {
            for target in roles {
                assert_eq!(permitted(action, Owner, target), target != Owner);
                assert_eq!(permitted(action, Moderator, target), target == Member);
                assert!(!permitted(action, Member, target));
            }
        }
        for target in roles {
            assert_eq!(permitted(SetRole, Owner, target), target != Owner);
            assert!(!permitted(SetRole, Moderator, target));
            assert!(!permitted(SetRole, Member, target));
        }
        for action in [Update, ListBans] {
            assert!(permitted(action, Owner, Member));
            assert!(permitted(action, Moderator, Member));
            assert!(!permitted(action, Member, Member));
        }
        assert!(permitted(Close, Owner, Member));
        assert!(!permitted(Close, Moderator, Member));
        assert!(!permitted(Close, Member, Member));
    }

    #[test]
    fn the_lua_table_lists_exactly_what_is_permitted() {
        let lua = lua_permission_table();
        assert!(lua.contains("['kick:moderator:member']=true"));
        assert!(lua.contains("['close:owner:none']=true"));
        assert!(!lua.contains("kick:moderator:moderator"));
        assert!(!lua.contains(":owner']"), "nobody acts on the owner");
        assert!(!lua.contains("close:moderator"));
    }

    #[test]
    fn bans_end_by_themselves() {
        let user = User {
            id: "u".into(),
            name: "U".into(),
            image: None,
        };
        let mut ban = BanRecord {
            user: user.clone(),
            until: -1,
            by: user,
            reason: None,
        };
        assert!(ban.holds(u64::MAX));
        ban.until = 1000;
        assert!(ban.holds(999));
        assert!(!ban.holds(1000));
    }
}
