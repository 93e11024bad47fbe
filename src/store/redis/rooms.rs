//! `RoomStore` on Redis: rooms, codes, membership, presence, typing and the
//! idle-room sweep.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::RedisStore;
use super::conn::Conn;
use super::parse::{corrupt, note_tail, parse_room, parse_users, presence_member, user_json};
use super::scripts::{
    Close, CloseReply, Create, CreateReply, EventKeys, Join, JoinReply, Leave, LeaveReply,
    MemberKeys, Note, ReleaseCode, Released, ScriptReply, Tell, Typing,
};
use crate::codec;
use crate::error::StoreResult;
use crate::layout::Keys;
use crate::model::{Event, Message, Room, User, now_ms, now_us};
use crate::store::{
    Backlog, Change, Coalesced, CreateOutcome, Entry, JoinOutcome, LeaveOutcome, MemberPage,
    RoomSnapshot, RoomStore,
};

impl RedisStore {
    /// Frees a closed room's join code, unless it names another room by now.
    pub(super) async fn release_code(
        &self,
        c: &mut Conn<'_>,
        room: &str,
        code: &str,
    ) -> StoreResult<()> {
        let release = ReleaseCode {
            code_key: self.k().room_code(code),
            room,
        };
        let Released(_) = self
            .script(
                c,
                "room_code_release",
                &self.inner.scripts.release_code,
                &release,
            )
            .await?;
        Ok(())
    }

    /// The KEYS of the create, join and leave scripts.
    fn member_keys<'a>(
        &self,
        event: &'a EventKeys,
        room: &str,
        user: &str,
        note: &str,
    ) -> MemberKeys<'a> {
        let k = self.k();
        MemberKeys {
            event,
            members: k.room_members(room),
            member_conns: k.member_conns(room, user),
            presence: k.presence(room),
            messages: k.room_messages(room),
            message: k.message(room, note),
            member_ids: k.member_ids(room),
        }
    }

    /// The participant event a membership script publishes right after its
    /// system message; `None` when publishing waits for the replicas (the
    /// caller announces after the release).
    fn announcement(&self, event: Event) -> Option<Vec<u8>> {
        (!self.deferred()).then(|| codec::encode(0, &event, now_us()))
    }

    /// A system message's script arguments.
    pub(super) fn note<'a>(&self, id: &'a str, tail: &'a [u8]) -> Note<'a> {
        Note {
            id,
            tail,
            ttl_ms: self.ttl_ms(),
            log_len: self.inner.settings.event_log_len,
        }
    }

    /// On a cluster, moves an unsplit room index copied from one Redis
    /// (`redis-cli --cluster import`) into the index shards, once per
    /// process (every node may do it at once: moving is idempotent).
    async fn index_split(&self) -> StoreResult<()> {
        let k = self.k();
        let Some((active, public)) = k.unsplit_index() else {
            return Ok(());
        };
        if self.inner.index_split.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut c = self.conn().await?;
        for (unsplit, shard_of) in [
            (&active, Keys::active_rooms_of as fn(&Keys, &str) -> String),
            (&public, Keys::public_rooms_of),
        ] {
            loop {
                let page: Vec<(String, f64)> = self
                    .timed("index_split", c.zrange_withscores(unsplit, 0, 499))
                    .await?;
                if page.is_empty() {
                    break;
                }
                // Added to the shards first, then removed from the unsplit
                // key, so a failure in between leaves a room in both (the
                // next pass moves it again), never in neither.
                let adds = page
                    .iter()
                    .map(|(room, at)| {
                        let mut add = redis::cmd("ZADD");
                        add.arg(shard_of(k, room)).arg("GT").arg(*at).arg(room);
                        vec![add]
                    })
                    .collect();
                self.scatter(&mut c, "index_split", adds).await?;
                let mut moved = redis::cmd("ZREM");
                moved.arg(unsplit);
                for (room, _) in &page {
                    moved.arg(room);
                }
                self.scatter(&mut c, "index_split", vec![vec![moved]])
                    .await?;
                tracing::info!(
                    rooms = page.len(),
                    "moved rooms of an unsplit index into its shards"
                );
            }
        }
        self.inner.index_split.store(true, Ordering::Release);
        Ok(())
    }

    /// Makes sure `public_rooms` holds every public room: a deployment
    /// upgraded from a version without it fills it once from
    /// `active_rooms`, shard by shard (every node may do it at once: adding
    /// is idempotent), then marks it ready. Checked once per process.
    async fn public_index_ready(&self) -> StoreResult<()> {
        if self.inner.public_index.load(Ordering::Acquire) {
            return Ok(());
        }
        let k = self.k();
        let mut c = self.conn().await?;
        let ready: bool = self
            .timed("public_rooms", c.exists(k.public_rooms_ready()))
            .await?;
        if !ready {
            for shard in 0..k.index_shards() {
                self.fill_public_shard(&mut c, shard).await?;
            }
            let _: () = self
                .timed("public_rooms", c.set(k.public_rooms_ready(), 1))
                .await?;
            tracing::info!("public_rooms filled from active_rooms");
        }
        self.inner.public_index.store(true, Ordering::Release);
        Ok(())
    }

    /// Adds the public rooms of one `active_rooms` shard to its
    /// `public_rooms` shard.
    async fn fill_public_shard(&self, c: &mut Conn<'_>, shard: u16) -> StoreResult<()> {
        const PAGE: isize = 500;
        let k = self.k();
        let mut start = 0;
        loop {
            let ids: Vec<(String, u64)> = self
                .timed(
                    "public_rooms",
                    c.zrange_withscores(k.active_rooms(shard), start, start + PAGE - 1),
                )
                .await?;
            let names: Vec<String> = ids.iter().map(|(id, _)| id.clone()).collect();
            let rooms = self.read_rooms(c, &names).await?;
            let mut add = redis::pipe();
            for ((id, at), room) in ids.iter().zip(rooms) {
                if room.is_some_and(|r| !r.private) {
                    add.zadd(k.public_rooms(shard), id, *at).ignore();
                }
            }
            if !add.is_empty() {
                let _: () = self.timed("public_rooms", add.query_async(&mut *c)).await?;
            }
            if (ids.len() as isize) < PAGE {
                return Ok(());
            }
            start += PAGE;
        }
    }

    /// Reads rooms by id (`None` for missing ones), in order.
    pub(super) async fn read_rooms(
        &self,
        c: &mut Conn<'_>,
        ids: &[String],
    ) -> StoreResult<Vec<Option<Room>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // One group per room: its hash and its member count share a slot.
        let groups = ids
            .iter()
            .map(|id| {
                let mut fields = redis::cmd("HGETALL");
                fields.arg(self.k().room(id));
                let mut count = redis::cmd("HLEN");
                count.arg(self.k().room_members(id));
                vec![fields, count]
            })
            .collect();
        let raw = self.scatter(c, "room_read", groups).await?;
        let mut out = Vec::with_capacity(ids.len());
        for pair in raw {
            let [fields, count] = pair.as_slice() else {
                return Err(corrupt("room read answered an odd count"));
            };
            let fields: HashMap<String, String> =
                redis::from_redis_value_ref(fields).map_err(corrupt)?;
            let count: u32 = redis::from_redis_value_ref(count).map_err(corrupt)?;
            let mut room = parse_room(&fields, count)?;
            // With replica acknowledgements a room's last seq is the last
            // one readers may see.
            if self.deferred()
                && let (Some(room), Some(mark)) = (
                    room.as_mut(),
                    fields.get("published").and_then(|p| p.parse::<u64>().ok()),
                )
            {
                room.last_seq = room.last_seq.min(mark);
            }
            out.push(room);
        }
        Ok(out)
    }
}

#[async_trait]
impl RoomStore for RedisStore {
    async fn create_room(
        &self,
        room: &Room,
        creator: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<CreateOutcome> {
        let k = self.k();
        let mut c = self.conn().await?;
        let claimed: Option<String> = self
            .timed(
                "room_code_claim",
                redis::cmd("SET")
                    .arg(k.room_code(&room.code))
                    .arg(&room.id)
                    .arg("NX")
                    .query_async(&mut c),
            )
            .await?;
        if claimed.is_none() {
            return Ok(CreateOutcome::CodeTaken);
        }
        let now = now_ms();
        let event = self.event_keys(&room.id);
        let tail = note_tail(note);
        let user_json = user_json(creator);
        let presence = presence_member(&creator.id, conn);
        let args = Create {
            keys: self.member_keys(&event, &room.id, &creator.id, &note.id),
            room,
            user_id: &creator.id,
            user_json: &user_json,
            conn,
            presence_member: &presence,
            note: self.note(&note.id, &tail),
            now,
            deadline: self.deadline(),
        };
        let (reply, acks) = self
            .invoke_durable(&mut c, "room_create", &self.inner.scripts.create, &args)
            .await?;
        let seq = match CreateReply::parse(reply)? {
            CreateReply::Created(seq) => seq,
            CreateReply::Exists => {
                return Err(corrupt("room create script said exists"));
            }
        };
        self.confirm(&mut c, &room.id, seq, acks).await?;
        // One slot: a room's two index keys share a hash tag.
        let mut index = redis::pipe();
        index
            .zadd(k.active_rooms_of(&room.id), &room.id, now)
            .ignore();
        if !room.private {
            index
                .zadd(k.public_rooms_of(&room.id), &room.id, now)
                .ignore();
        }
        let _: () = self
            .timed("active_rooms", index.query_async(&mut c))
            .await?;
        let mut created = room.clone();
        created.last_seq = seq;
        created.participant_count = 1;
        Ok(CreateOutcome::Created(created))
    }

    async fn room(&self, id: &str) -> StoreResult<Option<Room>> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            Ok(self
                .read_rooms(&mut c, &[id.to_owned()])
                .await?
                .pop()
                .flatten())
        })
        .await
    }

    async fn room_id_by_code(&self, code: &str) -> StoreResult<Option<String>> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            let key = self.k().room_code(code);
            self.timed("room_code_get", c.get(key)).await
        })
        .await
    }

    async fn join_by(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
        entry: Entry,
    ) -> StoreResult<JoinOutcome> {
        let mut c = self.conn().await?;
        let event = self.event_keys(room);
        let tail = note_tail(note);
        let user_json = user_json(user);
        let presence = presence_member(&user.id, conn);
        let announcement = self.announcement(Event::ParticipantJoined(user.clone()));
        let args = Join {
            keys: self.member_keys(&event, room, &user.id, &note.id),
            user_id: &user.id,
            user_json: &user_json,
            conn,
            presence_member: &presence,
            now: now_ms(),
            note: self.note(&note.id, &tail),
            bans: self.k().bans(room),
            deadline: self.deadline(),
            by_id: entry == Entry::ById,
            announcement: announcement.as_deref().unwrap_or_default(),
        };
        let (reply, acks) = self
            .invoke_durable(&mut c, "room_join", &self.inner.scripts.join, &args)
            .await?;
        Ok(match JoinReply::parse(reply)? {
            JoinReply::Joined { first, seq } => {
                match seq {
                    Some(seq) => self.confirm(&mut c, room, seq, acks).await?,
                    // No event, but the membership is a write all the same.
                    None => self.acked(acks)?,
                }
                JoinOutcome::Joined {
                    first,
                    announced: first && seq.is_some() && announcement.is_some(),
                }
            }
            JoinReply::NoRoom => JoinOutcome::NoRoom,
            JoinReply::Full => JoinOutcome::Full,
            JoinReply::Quiet(count) => {
                self.acked(acks)?;
                JoinOutcome::JoinedQuietly { count }
            }
            JoinReply::Banned(until) => JoinOutcome::Banned { until },
            JoinReply::Private => JoinOutcome::Private,
        })
    }

    async fn leave(
        &self,
        room: &str,
        user: &User,
        conn: &str,
        note: &Message,
    ) -> StoreResult<LeaveOutcome> {
        let mut c = self.conn().await?;
        let event = self.event_keys(room);
        let tail = note_tail(note);
        let presence = presence_member(&user.id, conn);
        let announcement = self.announcement(Event::ParticipantLeft(user.clone()));
        let args = Leave {
            keys: self.member_keys(&event, room, &user.id, &note.id),
            user_id: &user.id,
            conn,
            presence_member: &presence,
            now: now_ms(),
            note: self.note(&note.id, &tail),
            deadline: self.deadline(),
            announcement: announcement.as_deref().unwrap_or_default(),
        };
        let (reply, acks) = self
            .invoke_durable(&mut c, "room_leave", &self.inner.scripts.leave, &args)
            .await?;
        Ok(match LeaveReply::parse(reply)? {
            LeaveReply::Left { last, seq } => {
                match seq {
                    Some(seq) => self.confirm(&mut c, room, seq, acks).await?,
                    None => self.acked(acks)?,
                }
                LeaveOutcome::Left {
                    last,
                    announced: last && seq.is_some() && announcement.is_some(),
                }
            }
            LeaveReply::NotJoined => LeaveOutcome::NotJoined,
            LeaveReply::Quiet(count) => {
                self.acked(acks)?;
                LeaveOutcome::LeftQuietly { count }
            }
        })
    }

    async fn participants(&self, room: &str) -> StoreResult<Vec<User>> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            let raw: Vec<String> = self
                .timed("participants", c.hvals(self.k().room_members(room)))
                .await?;
            parse_users(raw.iter())
        })
        .await
    }

    async fn roster(&self, room: &str, limit: usize) -> StoreResult<Vec<User>> {
        self.idempotent(|| self.read_roster(room, limit)).await
    }

    async fn snapshot(
        &self,
        room: &str,
        limit: usize,
        backlog: Backlog,
    ) -> StoreResult<Option<RoomSnapshot>> {
        self.idempotent(|| self.read_snapshot(room, limit, backlog))
            .await
    }

    async fn members(
        &self,
        room: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<MemberPage> {
        // The script may rebuild the index, which is idempotent too, so a
        // retry is safe.
        self.idempotent(|| self.read_members(room, after, limit))
            .await
    }

    async fn participants_changed(
        &self,
        room: &str,
        changes: &[Change],
        window: Duration,
    ) -> StoreResult<Coalesced> {
        // Never retried: a retry would append the changes twice.
        self.coalesce_changes(room, changes, window).await
    }

    async fn is_participant(&self, room: &str, user: &str) -> StoreResult<bool> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            self.timed(
                "is_participant",
                c.hexists(self.k().room_members(room), user),
            )
            .await
        })
        .await
    }

    async fn list_public(&self, limit: usize) -> StoreResult<Vec<Room>> {
        self.idempotent(|| async move {
            self.index_split().await?;
            self.public_index_ready().await?;
            let mut c = self.conn().await?;
            // The newest `limit` of every shard, merged by activity.
            let k = self.k();
            let groups = (0..k.index_shards())
                .map(|shard| {
                    let mut newest = redis::cmd("ZREVRANGE");
                    newest
                        .arg(k.public_rooms(shard))
                        .arg(0)
                        .arg(limit as isize - 1)
                        .arg("WITHSCORES");
                    vec![newest]
                })
                .collect();
            let mut listed: Vec<(String, f64)> = Vec::new();
            for shard in self.scatter(&mut c, "public_rooms", groups).await? {
                for value in shard {
                    let page: Vec<(String, f64)> =
                        redis::from_redis_value(value).map_err(corrupt)?;
                    listed.extend(page);
                }
            }
            listed.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
            listed.truncate(limit);
            let ids: Vec<String> = listed.into_iter().map(|(id, _)| id).collect();
            // A room closed between the two reads is skipped.
            Ok(self
                .read_rooms(&mut c, &ids)
                .await?
                .into_iter()
                .flatten()
                .filter(|room| !room.private)
                .collect())
        })
        .await
    }

    async fn online(&self, room: &str) -> StoreResult<Vec<User>> {
        self.idempotent(|| async move {
            let k = self.k();
            let mut c = self.conn().await?;
            let entries: Vec<String> = self
                .timed("presence_read", c.zrange(k.presence(room), 0, -1))
                .await?;
            let mut ids: Vec<&str> = entries
                .iter()
                .filter_map(|e| e.rsplit_once(':').map(|(user, _)| user))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let raw: Vec<Option<String>> = self
                .timed(
                    "presence_users",
                    redis::cmd("HMGET")
                        .arg(k.room_members(room))
                        .arg(&ids)
                        .query_async(&mut c),
                )
                .await?;
            parse_users(raw.iter().flatten())
        })
        .await
    }

    async fn set_typing(
        &self,
        room: &str,
        user: &str,
        active: bool,
        ttl: Duration,
        repeat: Duration,
    ) -> StoreResult<bool> {
        self.idempotent(|| async move {
            let args = Typing {
                key: self.k().typing(room, user),
                active,
                ttl_ms: ttl.as_millis() as u64,
                repeat_ms: repeat.as_millis() as u64,
            };
            let mut c = self.conn().await?;
            let Tell(tell) = self
                .script(&mut c, "typing", &self.inner.scripts.typing, &args)
                .await?;
            Ok(tell)
        })
        .await
    }

    async fn idle_rooms(&self, before_ms: u64, limit: usize) -> StoreResult<Vec<String>> {
        self.idempotent(|| async move {
            self.index_split().await?;
            let mut c = self.conn().await?;
            let k = self.k();
            let mut idle = Vec::new();
            for shard in 0..k.index_shards() {
                if idle.len() >= limit {
                    break;
                }
                let found: Vec<String> = self
                    .timed(
                        "idle_rooms",
                        redis::cmd("ZRANGEBYSCORE")
                            .arg(k.active_rooms(shard))
                            .arg("-inf")
                            .arg(format!("({before_ms}"))
                            .arg("LIMIT")
                            .arg(0)
                            .arg(limit - idle.len())
                            .query_async(&mut c),
                    )
                    .await?;
                idle.extend(found);
            }
            Ok(idle)
        })
        .await
    }

    async fn close_room(&self, room: &str, before_ms: u64) -> StoreResult<bool> {
        self.idempotent(|| async move {
            let k = self.k();
            let mut c = self.conn().await?;
            let args = Close {
                room: k.room(room),
                members: k.room_members(room),
                messages: k.room_messages(room),
                events: k.room_events(room),
                presence: k.presence(room),
                member_ids: k.member_ids(room),
                changes: k.changes(room),
                changes_gate: k.changes_gate(room),
                moderation: [k.roles(room), k.bans(room), k.mutes(room)],
                reads: k.reads(room),
                countable: k.countable(room),
                member_conns_prefix: k.member_conns_prefix(room),
                before_ms,
            };
            let closed = match self
                .script(&mut c, "room_close", &self.inner.scripts.close, &args)
                .await?
            {
                CloseReply::Busy => return Ok(false),
                CloseReply::Gone => false,
                CloseReply::Closed(code) => {
                    if let Some(code) = code {
                        self.release_code(&mut c, room, &code).await?;
                    }
                    true
                }
            };
            let mut index = redis::pipe();
            index.zrem(k.active_rooms_of(room), room).ignore();
            index.zrem(k.public_rooms_of(room), room).ignore();
            let _: () = self
                .timed("active_rooms", index.query_async(&mut c))
                .await?;
            Ok(closed)
        })
        .await
    }
}
