//! `ModerationStore` on Redis (protocol 1.1): roles, bans and mutes in the
//! room's hash-tagged keys (`roles:{R}`, `bans:{R}`, `mutes:{R}` and the
//! `owner` field of `room:{R}`, see `crate::layout`), one script per verb
//! (`lua/mod_*.lua`) that checks the permission table and applies the effect
//! atomically. Kicks, bans and closes publish their event from inside the
//! script, on the room's channel, so a removal and its announcement cannot
//! come apart.

use async_trait::async_trait;
use redis::Value;

use super::RedisStore;
use super::parse::{corrupt, note_tail, parse_users};
use super::scripts::ScriptReply;
use super::scripts::moderation::{
    Bans, CloseRoom, ModReply, Mute, Remove, RoleKeys, SetRole, Unban, Update,
};
use crate::codec;
use crate::error::StoreResult;
use crate::model::{Event, Role, Room, User, now_ms, now_us};
use crate::store::{
    BanRecord, ModOutcome, ModerationStore, Removal, RemoveRequest, RoomChanges, Standing,
};

/// The outcome of a refusal or a missing room; `None` when it went through.
fn refusal<T>(reply: &ModReply) -> Option<ModOutcome<T>> {
    match reply {
        ModReply::NoRoom => Some(ModOutcome::NoRoom),
        ModReply::Forbidden(actor, target) => Some(ModOutcome::Forbidden {
            actor: *actor,
            target: *target,
        }),
        ModReply::TooSmall(n) => Some(ModOutcome::TooSmall(*n)),
        ModReply::NotParticipant => Some(ModOutcome::NotParticipant),
        _ => None,
    }
}

impl RedisStore {
    fn role_keys(&self, room: &str) -> RoleKeys {
        RoleKeys {
            room: self.k().room(room),
            roles: self.k().roles(room),
        }
    }

    /// Runs a moderation script that writes and parses its reply. It is a
    /// durable write: with replica acknowledgements, fewer than wanted are
    /// `StoreError::Unconfirmed` whatever the script answered.
    async fn moderate(
        &self,
        op: &'static str,
        script: &redis::Script,
        args: &impl super::scripts::ScriptArgs,
    ) -> StoreResult<ModReply> {
        let mut c = self.conn().await?;
        let (reply, acks) = self.invoke_durable(&mut c, op, script, args).await?;
        self.acked(acks)?;
        ModReply::parse(reply)
    }
}

#[async_trait]
impl ModerationStore for RedisStore {
    async fn standings(&self, room: &str, users: &[String]) -> StoreResult<Vec<Standing>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        self.idempotent(|| async move {
            let k = self.k();
            let mut c = self.conn().await?;
            // One slot: the room's hash, roles and mutes share its tag.
            let mut pipe = redis::pipe();
            pipe.cmd("HMGET")
                .arg(k.room(room))
                .arg("owner")
                .arg("created_by")
                .cmd("HMGET")
                .arg(k.roles(room))
                .arg(users)
                .cmd("HMGET")
                .arg(k.mutes(room))
                .arg(users);
            let (owner, roles, mutes): (
                Vec<Option<String>>,
                Vec<Option<String>>,
                Vec<Option<u64>>,
            ) = self.timed("standings", pipe.query_async(&mut c)).await?;
            let owner = owner.into_iter().flatten().next();
            let now = now_ms();
            Ok(users
                .iter()
                .enumerate()
                .map(|(i, user)| Standing {
                    role: if owner.as_deref() == Some(user.as_str()) {
                        Role::Owner
                    } else if roles.get(i).and_then(|r| r.as_deref()) == Some("moderator") {
                        Role::Moderator
                    } else {
                        Role::Member
                    },
                    muted_until: mutes.get(i).copied().flatten().filter(|u| *u > now),
                })
                .collect())
        })
        .await
    }

    async fn member(&self, room: &str, user: &str) -> StoreResult<Option<User>> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            let raw: Option<String> = self
                .timed(
                    "member_read",
                    redis::cmd("HGET")
                        .arg(self.k().room_members(room))
                        .arg(user)
                        .query_async(&mut c),
                )
                .await?;
            Ok(parse_users(raw.iter())?.pop())
        })
        .await
    }

    async fn update_room(
        &self,
        room: &str,
        actor: &str,
        changes: &RoomChanges,
    ) -> StoreResult<ModOutcome<Room>> {
        let args = Update {
            keys: self.role_keys(room),
            members: self.k().room_members(room),
            actor,
            name: changes.name.as_deref().unwrap_or(""),
            max: changes.max_participants,
            private: changes.private,
            deadline: self.deadline(),
        };
        let reply = self
            .moderate("room_update", &self.inner.scripts.moderation.update, &args)
            .await?;
        if let Some(out) = refusal(&reply) {
            return Ok(out);
        }
        let k = self.k();
        let mut c = self.conn().await?;
        if let Some(private) = changes.private {
            // The room index is in another slot: one pipeline of its own.
            let mut index = redis::pipe();
            if private {
                index.zrem(k.public_rooms_of(room), room).ignore();
            } else {
                index.zadd(k.public_rooms_of(room), room, now_ms()).ignore();
            }
            let _: () = self
                .timed("public_rooms", index.query_async(&mut c))
                .await?;
            if !private {
                // A close may have run between the script and the ZADD and
                // dropped the room from the index already: the index is in
                // another slot, so the room is checked after the ZADD and
                // the entry taken back if it is gone.
                let exists: bool = self
                    .timed(
                        "room_exists",
                        redis::cmd("EXISTS").arg(k.room(room)).query_async(&mut c),
                    )
                    .await?;
                if !exists {
                    let _: () = self
                        .timed(
                            "public_rooms",
                            redis::cmd("ZREM")
                                .arg(k.public_rooms_of(room))
                                .arg(room)
                                .query_async(&mut c),
                        )
                        .await?;
                }
            }
        }
        match self.read_rooms(&mut c, &[room.to_owned()]).await?.pop() {
            Some(Some(room)) => Ok(ModOutcome::Done(room)),
            _ => Ok(ModOutcome::NoRoom),
        }
    }

    async fn set_role(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        role: Role,
    ) -> StoreResult<ModOutcome<()>> {
        let args = SetRole {
            keys: self.role_keys(room),
            members: self.k().room_members(room),
            mutes: self.k().mutes(room),
            actor,
            target,
            role,
            deadline: self.deadline(),
        };
        let reply = self
            .moderate("member_role", &self.inner.scripts.moderation.role, &args)
            .await?;
        Ok(refusal(&reply).unwrap_or(ModOutcome::Done(())))
    }

    async fn remove_member(
        &self,
        room: &str,
        request: RemoveRequest<'_>,
    ) -> StoreResult<ModOutcome<Removal>> {
        let k = self.k();
        let target = request.target.id.as_str();
        let ban = request
            .ban
            .map(serde_json::to_string)
            .transpose()
            .map_err(corrupt)?
            .unwrap_or_default();
        let removed = codec::encode(0, request.event, now_us());
        let tail = note_tail(request.note);
        let event = self.event_keys(room);
        let args = Remove {
            keys: self.role_keys(room),
            event: &event,
            bans: k.bans(room),
            members: k.room_members(room),
            member_ids: k.member_ids(room),
            presence: k.presence(room),
            member_conns: k.member_conns(room, target),
            typing: k.typing(room, target),
            messages: k.room_messages(room),
            message: k.message(room, &request.note.id),
            actor: request.actor,
            target,
            action: if request.ban.is_some() { "ban" } else { "kick" },
            ban: &ban,
            removed: &removed,
            now: now_ms(),
            note: self.note(&request.note.id, &tail),
            deadline: self.deadline(),
        };
        let mut c = self.conn().await?;
        let (reply, acks) = self
            .invoke_durable(
                &mut c,
                "member_remove",
                &self.inner.scripts.moderation.remove,
                &args,
            )
            .await?;
        let reply = ModReply::parse(reply)?;
        if !matches!(reply, ModReply::Ok(_)) {
            // No event appended: nothing to publish, only the acks to check.
            self.acked(acks)?;
        }
        if let Some(out) = refusal(&reply) {
            return Ok(out);
        }
        Ok(ModOutcome::Done(match reply {
            ModReply::Absent => Removal::Absent,
            ModReply::Quiet(count) => Removal::LeftQuietly(count),
            ModReply::Ok(data) => {
                let seq: u64 = match data.first() {
                    Some(v) => redis::from_redis_value_ref(v).map_err(corrupt)?,
                    None => return Err(corrupt("member remove script reply has no seq")),
                };
                self.confirm(&mut c, room, seq, acks).await?;
                Removal::Left
            }
            other => return Err(corrupt(format!("member remove script said {other:?}"))),
        }))
    }

    async fn unban(&self, room: &str, actor: &str, target: &str) -> StoreResult<ModOutcome<bool>> {
        let args = Unban {
            keys: self.role_keys(room),
            bans: self.k().bans(room),
            actor,
            target,
            now: now_ms(),
            deadline: self.deadline(),
        };
        let reply = self
            .moderate("member_unban", &self.inner.scripts.moderation.unban, &args)
            .await?;
        if let Some(out) = refusal(&reply) {
            return Ok(out);
        }
        let ModReply::Ok(data) = reply else {
            return Err(corrupt("unban script said something else"));
        };
        let lifted: i64 = match data.first() {
            Some(v) => redis::from_redis_value_ref(v).map_err(corrupt)?,
            None => 0,
        };
        Ok(ModOutcome::Done(lifted == 1))
    }

    async fn mute(
        &self,
        room: &str,
        actor: &str,
        target: &str,
        until: Option<u64>,
    ) -> StoreResult<ModOutcome<()>> {
        let args = Mute {
            keys: self.role_keys(room),
            mutes: self.k().mutes(room),
            actor,
            target,
            until,
            deadline: self.deadline(),
        };
        let reply = self
            .moderate("member_mute", &self.inner.scripts.moderation.mute, &args)
            .await?;
        Ok(refusal(&reply).unwrap_or(ModOutcome::Done(())))
    }

    async fn bans(&self, room: &str, actor: &str) -> StoreResult<ModOutcome<Vec<BanRecord>>> {
        let args = Bans {
            keys: self.role_keys(room),
            bans: self.k().bans(room),
            actor,
            now: now_ms(),
        };
        // Only expired entries are removed: a retry is harmless.
        let reply = self
            .idempotent(|| async {
                let mut c = self.conn().await?;
                self.script::<ModReply>(
                    &mut c,
                    "room_bans",
                    &self.inner.scripts.moderation.bans,
                    &args,
                )
                .await
            })
            .await?;
        if let Some(out) = refusal(&reply) {
            return Ok(out);
        }
        let ModReply::Ok(data) = reply else {
            return Err(corrupt("bans script said something else"));
        };
        let mut bans = data
            .iter()
            .map(|v| {
                let raw: String = redis::from_redis_value_ref(v).map_err(corrupt)?;
                serde_json::from_str::<BanRecord>(&raw).map_err(corrupt)
            })
            .collect::<StoreResult<Vec<BanRecord>>>()?;
        bans.sort_by(|a, b| a.user.id.cmp(&b.user.id));
        Ok(ModOutcome::Done(bans))
    }

    async fn close_by_owner(
        &self,
        room: &str,
        actor: &str,
        event: &Event,
    ) -> StoreResult<ModOutcome<()>> {
        let k = self.k();
        let closed = codec::encode(0, event, now_us());
        let channel = k.channel(room);
        let args = CloseRoom {
            keys: [
                k.room(room),
                k.room_members(room),
                k.room_messages(room),
                k.room_events(room),
                k.presence(room),
                k.member_ids(room),
                k.changes(room),
                k.changes_gate(room),
                k.roles(room),
                k.bans(room),
                k.mutes(room),
                k.reads(room),
                k.countable(room),
            ],
            actor,
            closed: &closed,
            channel: &channel,
            member_conns_prefix: k.member_conns_prefix(room),
            typing_prefix: k.typing_prefix(room),
            deadline: self.deadline(),
        };
        let mut c = self.conn().await?;
        let (reply, acks) = self
            .invoke_durable(
                &mut c,
                "room_close_owner",
                &self.inner.scripts.moderation.close,
                &args,
            )
            .await?;
        let reply = ModReply::parse(reply)?;
        if let Some(out) = refusal(&reply) {
            self.acked(acks)?;
            return Ok(out);
        }
        let ModReply::Ok(data) = reply else {
            return Err(corrupt("room close script said something else"));
        };
        let code: String = match data.first() {
            Some(Value::Nil) | None => String::new(),
            Some(v) => redis::from_redis_value_ref(v).map_err(corrupt)?,
        };
        if !code.is_empty() {
            self.release_code(&mut c, room, &code).await?;
        }
        let mut index = redis::pipe();
        index.zrem(k.active_rooms_of(room), room).ignore();
        index.zrem(k.public_rooms_of(room), room).ignore();
        let _: () = self
            .timed("active_rooms", index.query_async(&mut c))
            .await?;
        // The room is gone on the master either way: its code and index
        // entries are released first, then the replicas' word is reported.
        self.acked(acks)?;
        Ok(ModOutcome::Done(()))
    }
}
