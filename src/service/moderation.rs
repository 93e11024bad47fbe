//! `ModerationService`: roles and moderation (protocol 1.1) — `room.update`,
//! `member.role`, `member.kick`, `member.ban`, `member.unban`,
//! `member.mute`, `member.unmute`, `room.bans`, `room.close` — and the
//! roles shown on participant lists.
//!
//! The service validates the request, hands the verb to the
//! `ModerationStore` (which checks the permission table and applies the
//! effect atomically), maps the outcome to the protocol's codes, tells the
//! room (`room.updated`, `member.updated`; `member.removed` and
//! `room.closed` are published by the store with the removal itself), and
//! keeps the audit trail: one `info` log line per action carried out, with
//! actor, target, room and reason, and `huddle_moderation_actions_total`.

use std::sync::Arc;

use super::rooms::RoomService;
use super::{int_field, room_id, text_field};
use crate::bus::EventBus;
use crate::error::ServiceError;
use crate::metrics::Metrics;
use crate::model::{
    Event, Message, MessageKind, Participant, Role, Room, User, now_ms, system_user,
};
use crate::store::{
    Action, BanRecord, ModOutcome, ModerationStore, Removal, RemoveRequest, RoomChanges, Standing,
};

/// Longest `reason`.
pub const MAX_REASON_CHARS: usize = 200;
/// Shortest mute, ms (1 s).
pub const MUTE_MIN_MS: i64 = 1_000;
/// Longest mute, ms (30 days).
pub const MUTE_MAX_MS: i64 = 30 * 86_400_000;
/// Shortest timed ban, ms (1 s).
pub const BAN_MIN_MS: i64 = 1_000;
/// Longest timed ban, ms (10 years; without `duration_ms` a ban has no end).
pub const BAN_MAX_MS: i64 = 3_650 * 86_400_000;

/// Moderation rules.
#[derive(Clone)]
pub struct ModerationService {
    /// Roles, bans, mutes and the verbs' atomic effects.
    store: Arc<dyn ModerationStore>,
    /// Where `room.updated` and `member.updated` go.
    bus: Arc<dyn EventBus>,
    /// How the room is told that a removed user left (system message
    /// aside: the store writes it).
    rooms: RoomService,
    /// `huddle_moderation_actions_total`.
    metrics: Arc<Metrics>,
}

/// Checks an optional `reason`: trimmed, at most 200 characters; blank is
/// none.
pub fn reason_field(reason: Option<&str>) -> Result<Option<String>, ServiceError> {
    match reason.map(str::trim) {
        None | Some("") => Ok(None),
        Some(r) => text_field("reason", r, MAX_REASON_CHARS).map(Some),
    }
}

/// Checks a target user id.
pub fn user_field(user: &str) -> Result<&str, ServiceError> {
    if user.is_empty() || user.len() > 128 || user.chars().any(char::is_control) {
        return Err(ServiceError::BadRequest(format!(
            "`user` {user:?} is not a user id"
        )));
    }
    Ok(user)
}

/// Parses `member.role`'s `role`.
pub fn role_field(role: &str) -> Result<Role, ServiceError> {
    Role::parse(role).ok_or_else(|| {
        ServiceError::BadRequest(format!(
            "`role` must be owner, moderator or member, got {role:?}"
        ))
    })
}

/// The refusal of a permission check, in words.
fn forbidden(action: Action, actor: Role, target: Role) -> ServiceError {
    let why = match (action, actor, target) {
        (_, Role::Member, _) => "members may not moderate the room".to_owned(),
        (Action::Close | Action::SetRole, Role::Moderator, _) => {
            "only the room's owner may do this".to_owned()
        }
        (_, _, Role::Owner) => "nobody may act on the room's owner".to_owned(),
        (_, Role::Moderator, Role::Moderator) => {
            "a moderator may not act on another moderator".to_owned()
        }
        _ => format!("a {} may not do this", actor.as_str()),
    };
    ServiceError::Forbidden(why)
}

fn not_found(room: &str) -> ServiceError {
    ServiceError::NotFound(format!("room {room} does not exist"))
}

/// What a `ModOutcome` other than `Done` means to the client.
fn refusal<T>(room: &str, action: Action, outcome: ModOutcome<T>) -> Result<T, ServiceError> {
    match outcome {
        ModOutcome::Done(t) => Ok(t),
        ModOutcome::NoRoom => Err(not_found(room)),
        ModOutcome::Forbidden { actor, target } => Err(forbidden(action, actor, target)),
        ModOutcome::TooSmall(count) => Err(ServiceError::Conflict(format!(
            "the room has {count} participants: `max_participants` may not be lower"
        ))),
        ModOutcome::NotParticipant => Err(ServiceError::NotFound(
            "that user is not a participant of the room".into(),
        )),
    }
}

/// When a ban ends, in words.
pub fn ban_text(until: i64) -> String {
    if until < 0 {
        "until unbanned".to_owned()
    } else {
        format!("until {until} (Unix ms)")
    }
}

impl ModerationService {
    /// Rules over the given store and bus.
    pub(crate) fn new(
        store: Arc<dyn ModerationStore>,
        bus: Arc<dyn EventBus>,
        rooms: RoomService,
        metrics: Arc<Metrics>,
    ) -> ModerationService {
        ModerationService {
            store,
            bus,
            rooms,
            metrics,
        }
    }

    /// `users` of the room with their role and mute (one bounded lookup of
    /// just these users).
    pub async fn participants(
        &self,
        room: &str,
        users: Vec<User>,
    ) -> Result<Vec<Participant>, ServiceError> {
        let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        let standings = self.store.standings(room, &ids).await?;
        Ok(users
            .into_iter()
            .zip(
                standings
                    .into_iter()
                    .chain(std::iter::repeat(Standing::default())),
            )
            .map(|(user, s)| Participant {
                user,
                role: s.role,
                muted_until: s.muted_until,
            })
            .collect())
    }

    /// Refuses while `user` is muted in the room (the typing path; sends
    /// and edits are refused inside the store's write).
    pub async fn check_not_muted(&self, user: &User, room: &str) -> Result<(), ServiceError> {
        let standing = self
            .store
            .standings(room, std::slice::from_ref(&user.id))
            .await?;
        match standing.first().and_then(|s| s.muted_until) {
            Some(until) => Err(ServiceError::Forbidden(format!(
                "you are muted in this room until {until} (Unix ms)"
            ))),
            None => Ok(()),
        }
    }

    /// The audit trail of one action carried out.
    fn audit(
        &self,
        action: Action,
        actor: &User,
        room: &str,
        target: Option<&str>,
        reason: Option<&str>,
    ) {
        self.metrics.moderation(action.as_str());
        tracing::info!(
            action = action.as_str(),
            actor = %actor.id,
            target = target.unwrap_or(""),
            room,
            reason = reason.unwrap_or(""),
            "moderation"
        );
    }

    /// Publishes an ephemeral event; its loss costs only the live view (the
    /// change is stored), so a failure is logged.
    async fn tell(&self, room: &str, event: Event) {
        if let Err(e) = self.bus.publish(room, &event).await {
            tracing::warn!(room, event = event.name(), error = %e, "could not publish");
        }
    }

    /// Tells the room about `user`'s standing now, if they are a participant.
    async fn tell_standing(&self, room: &str, user: &str) {
        // The change is applied and stored already: a failure to read it
        // back costs only the live view, so it is logged, not returned.
        if let Err(e) = self.try_tell_standing(room, user).await {
            tracing::warn!(room, user, error = %e, "could not announce a standing");
        }
    }

    async fn try_tell_standing(&self, room: &str, user: &str) -> Result<(), ServiceError> {
        let Some(member) = self.store.member(room, user).await? else {
            return Ok(());
        };
        let standing = self
            .store
            .standings(room, &[user.to_owned()])
            .await?
            .pop()
            .unwrap_or_default();
        self.tell(
            room,
            Event::MemberUpdated {
                user: member,
                role: standing.role,
                muted_until: standing.muted_until,
            },
        )
        .await;
        Ok(())
    }

    /// `room.update`.
    pub async fn update(
        &self,
        actor: &User,
        room: &str,
        name: Option<&str>,
        max_participants: Option<i64>,
        private: Option<bool>,
    ) -> Result<Room, ServiceError> {
        let room = room_id(room)?;
        let changes = RoomChanges {
            name: name.map(|n| text_field("name", n, 100)).transpose()?,
            max_participants: max_participants
                .map(|m| int_field("max_participants", Some(m), 50, 2, 10_000).map(|m| m as u32))
                .transpose()?,
            private,
        };
        if changes == RoomChanges::default() {
            return Err(ServiceError::BadRequest(
                "give at least one of `name`, `max_participants`, `private`".into(),
            ));
        }
        let out = self.store.update_room(room, &actor.id, &changes).await?;
        let updated = refusal(room, Action::Update, out)?;
        self.audit(Action::Update, actor, room, None, None);
        self.tell(room, Event::RoomUpdated(updated.clone())).await;
        Ok(updated)
    }

    /// `member.role`.
    pub async fn set_role(
        &self,
        actor: &User,
        room: &str,
        target: &str,
        role: &str,
    ) -> Result<(), ServiceError> {
        let room = room_id(room)?;
        let target = user_field(target)?;
        let role = role_field(role)?;
        let out = self.store.set_role(room, &actor.id, target, role).await?;
        refusal(room, Action::SetRole, out)?;
        self.audit(
            Action::SetRole,
            actor,
            room,
            Some(target),
            Some(role.as_str()),
        );
        self.tell_standing(room, target).await;
        if role == Role::Owner {
            self.tell_standing(room, &actor.id).await;
        }
        Ok(())
    }

    /// `member.kick` (`duration_ms` ignored) and `member.ban` (`ban`):
    /// the target's connections get `member.removed` and are detached on
    /// every node; the room sees them leave.
    pub async fn remove(
        &self,
        actor: &User,
        room: &str,
        target: &str,
        ban: Option<Option<i64>>,
        reason: Option<&str>,
    ) -> Result<(), ServiceError> {
        let room = room_id(room)?;
        let target = user_field(target)?;
        let reason = reason_field(reason)?;
        let until = match ban {
            None => None,
            Some(None) => Some(-1),
            Some(Some(ms)) => {
                let ms = int_field("duration_ms", Some(ms), 0, BAN_MIN_MS, BAN_MAX_MS)?;
                Some((now_ms() as i64).saturating_add(ms))
            }
        };
        // The target's record, for the event: a participant's as stored,
        // anyone else by id.
        let user = self
            .store
            .member(room, target)
            .await?
            .unwrap_or_else(|| User {
                id: target.to_owned(),
                name: target.to_owned(),
                image: None,
            });
        let record = until.map(|until| BanRecord {
            user: user.clone(),
            until,
            by: actor.clone(),
            reason: reason.clone(),
        });
        let event = Event::MemberRemoved {
            user: user.clone(),
            by: actor.clone(),
            reason: reason.clone(),
            banned_until: until,
        };
        let note = Message {
            id: uuid::Uuid::now_v7().to_string(),
            room: room.to_owned(),
            seq: 0,
            user: system_user(),
            kind: MessageKind::System,
            content: format!("{} was removed from the room", user.name),
            attachment: None,
            created_at: now_ms(),
            edited_at: None,
            deleted: false,
        };
        let action = if until.is_some() {
            Action::Ban
        } else {
            Action::Kick
        };
        let out = self
            .store
            .remove_member(
                room,
                RemoveRequest {
                    actor: &actor.id,
                    target: &user,
                    ban: record.as_ref(),
                    event: &event,
                    note: &note,
                },
            )
            .await?;
        let removal = refusal(room, action, out)?;
        // Kicking someone who is not in the room changes nothing: not
        // counted (a ban of them is: the ban is recorded).
        if action == Action::Ban || !matches!(removal, Removal::Absent) {
            self.audit(action, actor, room, Some(target), reason.as_deref());
        }
        self.rooms
            .removed(room, &user, &removal, note.created_at)
            .await;
        Ok(())
    }

    /// `member.unban`.
    pub async fn unban(&self, actor: &User, room: &str, target: &str) -> Result<(), ServiceError> {
        let room = room_id(room)?;
        let target = user_field(target)?;
        let out = self.store.unban(room, &actor.id, target).await?;
        // Lifting a ban that was not in force changes nothing: not counted.
        if refusal(room, Action::Unban, out)? {
            self.audit(Action::Unban, actor, room, Some(target), None);
        }
        Ok(())
    }

    /// `member.mute` (`Some` duration) and `member.unmute` (`None`).
    pub async fn mute(
        &self,
        actor: &User,
        room: &str,
        target: &str,
        duration_ms: Option<Option<i64>>,
    ) -> Result<(), ServiceError> {
        let room = room_id(room)?;
        let target = user_field(target)?;
        let until = match duration_ms {
            None => None,
            Some(None) => {
                return Err(ServiceError::BadRequest(
                    "`duration_ms` is required (1 s – 30 days)".into(),
                ));
            }
            Some(Some(ms)) => Some(
                now_ms() + int_field("duration_ms", Some(ms), 0, MUTE_MIN_MS, MUTE_MAX_MS)? as u64,
            ),
        };
        let action = if until.is_some() {
            Action::Mute
        } else {
            Action::Unmute
        };
        let out = self.store.mute(room, &actor.id, target, until).await?;
        refusal(room, action, out)?;
        self.audit(action, actor, room, Some(target), None);
        self.tell_standing(room, target).await;
        Ok(())
    }

    /// `room.bans`.
    pub async fn bans(&self, actor: &User, room: &str) -> Result<Vec<BanRecord>, ServiceError> {
        let room = room_id(room)?;
        let out = self.store.bans(room, &actor.id).await?;
        refusal(room, Action::ListBans, out)
    }

    /// `room.close`: every joined connection gets `room.closed`; the room,
    /// its code and its history are gone.
    pub async fn close(&self, actor: &User, room: &str) -> Result<(), ServiceError> {
        let room = room_id(room)?;
        let event = Event::RoomClosed { by: actor.clone() };
        let out = self.store.close_by_owner(room, &actor.id, &event).await?;
        refusal(room, Action::Close, out)?;
        self.audit(Action::Close, actor, room, None, None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn reasons_roles_and_users_are_checked() {
        assert_eq!(reason_field(None).expect("none"), None);
        assert_eq!(reason_field(Some("  ")).expect("blank"), None);
        assert_eq!(
            reason_field(Some(" spam ")).expect("ok"),
            Some("spam".into())
        );
        assert_eq!(
            reason_field(Some(&"x".repeat(201))).unwrap_err().code(),
            ErrorCode::TooLarge
        );
        assert!(reason_field(Some(&"x".repeat(200))).is_ok());
        assert_eq!(role_field("moderator").expect("ok"), Role::Moderator);
        assert_eq!(
            role_field("admin").unwrap_err().code(),
            ErrorCode::BadRequest
        );
        assert_eq!(user_field("").unwrap_err().code(), ErrorCode::BadRequest);
        assert!(user_field("u-1").is_ok());
    }

    #[test]
    fn refusals_map_to_protocol_codes() {
        let code = |o: ModOutcome<()>| refusal("r", Action::Kick, o).unwrap_err().code();
        assert_eq!(code(ModOutcome::NoRoom), ErrorCode::NotFound);
        assert_eq!(
            code(ModOutcome::Forbidden {
                actor: Role::Moderator,
                target: Role::Moderator
            }),
            ErrorCode::Forbidden
        );
        assert_eq!(code(ModOutcome::TooSmall(3)), ErrorCode::Conflict);
        assert!(refusal("r", Action::Kick, ModOutcome::Done(())).is_ok());
    }
}
