//! Roles and moderation in memory: each room's owner, moderators, bans and
//! mutes live in its `RoomState` (so they go with the room), and every verb
//! checks `store::moderation::permitted` and applies its effect under the
//! store's one lock, as the Redis scripts do in one script.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::{MemoryStore, RoomState, room_view};
use crate::codec;
use crate::model::{Event, Role, Room, User, now_us};
use crate::store::moderation::{MAX_BANS_LISTED, ban_listing_key, permitted};
use crate::store::{
    Action, BIG_ROOM, BanRecord, ModOutcome, ModerationStore, Removal, RemoveRequest, RoleFacts,
    RoomChanges, Standing, StoreResult,
};

/// A room's moderation state.
#[derive(Debug, Default)]
pub(super) struct Moderation {
    /// The owner; `None` means the room's creator.
    owner: Option<String>,
    /// Moderators' user ids.
    moderators: HashSet<String>,
    /// Bans by user id (expired ones are dropped when read).
    bans: HashMap<String, BanRecord>,
    /// Mutes: user id → until (ms).
    mutes: HashMap<String, u64>,
}

impl Moderation {
    /// When `user`'s ban ends (-1: never), if banned at `now`; drops an
    /// expired ban.
    pub(super) fn banned_until(&mut self, user: &str, now: u64) -> Option<i64> {
        match self.bans.get(user) {
            Some(ban) if ban.holds(now) => Some(ban.until),
            Some(_) => {
                self.bans.remove(user);
                None
            }
            None => None,
        }
    }

    /// `user`'s ban, if one holds at `now`.
    pub(super) fn ban(&self, user: &str, now: u64) -> Option<&BanRecord> {
        self.bans.get(user).filter(|ban| ban.holds(now))
    }

    /// Until when `user` is muted, if muted at `now`.
    pub(super) fn muted_until(&self, user: &str, now: u64) -> Option<u64> {
        self.mutes.get(user).copied().filter(|until| *until > now)
    }

    /// What `room.mine` decides `user`'s role from: the owner set by a
    /// hand-over (`None`: the creator) and whether `user` is a moderator,
    /// as `mine.lua` reads them from `room:{R}` and `roles:{R}`.
    pub(super) fn role_facts(&self, user: &str) -> RoleFacts {
        RoleFacts {
            owner: self.owner.clone(),
            moderator: self.moderators.contains(user),
        }
    }
}

impl RoomState {
    fn owner(&self) -> &str {
        self.moderation
            .owner
            .as_deref()
            .unwrap_or(&self.room.created_by)
    }

    fn role(&self, user: &str) -> Role {
        if user == self.owner() {
            Role::Owner
        } else if self.moderation.moderators.contains(user) {
            Role::Moderator
        } else {
            Role::Member
        }
    }

    /// The permission check of `action` by `actor` on `target`.
    fn check(&self, action: Action, actor: &str, target: Option<&str>) -> Result<(), (Role, Role)> {
        let actor = self.role(actor);
        let target = target.map_or(Role::Member, |t| self.role(t));
        if permitted(action, actor, target) {
            Ok(())
        } else {
            Err((actor, target))
        }
    }
}

/// The outcome of a refused check.
fn refused<T>((actor, target): (Role, Role)) -> StoreResult<ModOutcome<T>> {
    Ok(ModOutcome::Forbidden { actor, target })
}

#[async_trait]
impl ModerationStore for MemoryStore {
    async fn standings(&self, room: &str, users: &[String]) -> StoreResult<Vec<Standing>> {
        let now = self.now();
        let st = self.state();
        let Some(rs) = st.rooms.get(room) else {
            return Ok(vec![Standing::default(); users.len()]);
        };
        Ok(users
            .iter()
            .map(|u| Standing {
                role: rs.role(u),
                muted_until: rs.moderation.muted_until(u, now),
            })
            .collect())
    }

    async fn member(&self, room: &str, user: &str) -> StoreResult<Option<User>> {
        let st = self.state();
        Ok(st
            .rooms
            .get(room)
            .and_then(|rs| rs.members.get(user))
            .map(|m| m.user.clone()))
    }

    async fn update_room(
        &self,
        room: &str,
        actor: &str,
        changes: &RoomChanges,
    ) -> StoreResult<ModOutcome<Room>> {
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(ModOutcome::NoRoom);
        };
        if let Err(roles) = rs.check(Action::Update, actor, None) {
            return refused(roles);
        }
        if let Some(max) = changes.max_participants
            && (max as usize) < rs.members.len()
        {
            return Ok(ModOutcome::TooSmall(rs.members.len() as u32));
        }
        if let Some(name) = &changes.name {
            rs.room.name = name.clone();
        }
        if let Some(max) = changes.max_participants {
            rs.room.max_participants = max;
        }
        if let Some(private) = changes.private {
            rs.room.private = private;
        }
        Ok(ModOutcome::Done(room_view(rs)))
    }

    async fn set_role(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        role: Role,
    ) -> StoreResult<ModOutcome<()>> {
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(ModOutcome::NoRoom);
        };
        if let Err(roles) = rs.check(Action::SetRole, actor, Some(target)) {
            return refused(roles);
        }
        if role != Role::Member && !rs.members.contains_key(target) {
            return Ok(ModOutcome::NotParticipant);
        }
        let m = &mut rs.moderation;
        match role {
            Role::Owner => {
                m.moderators.remove(target);
                // Nobody may unmute an owner: the hand-over lifts the mute.
                m.mutes.remove(target);
                m.moderators.insert(actor.to_owned());
                m.owner = Some(target.to_owned());
            }
            Role::Moderator => {
                m.moderators.insert(target.to_owned());
            }
            Role::Member => {
                m.moderators.remove(target);
            }
        }
        Ok(ModOutcome::Done(()))
    }

    async fn remove_member(
        &self,
        room: &str,
        request: RemoveRequest<'_>,
    ) -> StoreResult<ModOutcome<Removal>> {
        let now = self.now();
        let mut st = self.state();
        let target = request.target.id.as_str();
        st.typing.remove(&(room.to_owned(), target.to_owned()));
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(ModOutcome::NoRoom);
        };
        let action = if request.ban.is_some() {
            Action::Ban
        } else {
            Action::Kick
        };
        if let Err(roles) = rs.check(action, request.actor, Some(target)) {
            return refused(roles);
        }
        if let Some(ban) = request.ban {
            rs.moderation.bans.insert(target.to_owned(), ban.clone());
            // A banned moderator is a moderator no more.
            rs.moderation.moderators.remove(target);
        }
        let before = rs.members.len() as u32;
        if rs.members.remove(target).is_none() {
            if request.ban.is_some() {
                self.inner
                    .sink
                    .deliver(room, &codec::encode(0, request.event, now_us()));
            }
            return Ok(ModOutcome::Done(Removal::Absent));
        }
        self.inner
            .sink
            .deliver(room, &codec::encode(0, request.event, now_us()));
        if before > BIG_ROOM {
            rs.last_activity = now;
            return Ok(ModOutcome::Done(Removal::LeftQuietly(before - 1)));
        }
        self.inner
            .append_event(rs, Event::MessageCreated(request.note.clone()));
        Ok(ModOutcome::Done(Removal::Left))
    }

    async fn unban(&self, room: &str, actor: &str, target: &str) -> StoreResult<ModOutcome<bool>> {
        let now = self.now();
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(ModOutcome::NoRoom);
        };
        if let Err(roles) = rs.check(Action::Unban, actor, Some(target)) {
            return refused(roles);
        }
        let lifted = rs.moderation.banned_until(target, now).is_some();
        rs.moderation.bans.remove(target);
        Ok(ModOutcome::Done(lifted))
    }

    async fn mute(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        until: Option<u64>,
    ) -> StoreResult<ModOutcome<()>> {
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(ModOutcome::NoRoom);
        };
        let action = if until.is_some() {
            Action::Mute
        } else {
            Action::Unmute
        };
        if let Err(roles) = rs.check(action, actor, Some(target)) {
            return refused(roles);
        }
        match until {
            Some(until) => rs.moderation.mutes.insert(target.to_owned(), until),
            None => rs.moderation.mutes.remove(target),
        };
        Ok(ModOutcome::Done(()))
    }

    async fn bans(&self, room: &str, actor: &str) -> StoreResult<ModOutcome<Vec<BanRecord>>> {
        let now = self.now();
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(ModOutcome::NoRoom);
        };
        if let Err(roles) = rs.check(Action::ListBans, actor, None) {
            return refused(roles);
        }
        rs.moderation.bans.retain(|_, ban| ban.holds(now));
        let mut bans: Vec<BanRecord> = rs.moderation.bans.values().cloned().collect();
        bans.sort_by(|a, b| ban_listing_key(a).cmp(&ban_listing_key(b)));
        bans.truncate(MAX_BANS_LISTED);
        bans.sort_by(|a, b| a.user.id.cmp(&b.user.id));
        Ok(ModOutcome::Done(bans))
    }

    async fn close_by_owner(
        &self,
        room: &str,
        actor: &str,
        event: &Event,
    ) -> StoreResult<ModOutcome<()>> {
        let mut st = self.state();
        let Some(rs) = st.rooms.get(room) else {
            return Ok(ModOutcome::NoRoom);
        };
        if let Err(roles) = rs.check(Action::Close, actor, None) {
            return refused(roles);
        }
        let code = rs.room.code.clone();
        self.inner
            .sink
            .deliver(room, &codec::encode(0, event, now_us()));
        st.rooms.remove(room);
        st.changes.remove(room);
        st.typing.retain(|(r, _), _| r != room);
        if st.codes.get(&code).is_some_and(|id| id == room) {
            st.codes.remove(&code);
        }
        Ok(ModOutcome::Done(()))
    }
}
