//! `ReadStore` on Redis (scheme in `crate::store::reads`).
//!
//! - `room.read` is `read.lua`: an atomic max in `reads:{R}`, capped at
//!   the room's visible seq.
//! - Unread counts are counts by seq: `countable:{R}` holds the ids of the
//!   messages that count, scored by seq (`send.lua` adds, the delete path
//!   of `replace.lua` and the expiry trim remove), and a count is one
//!   `ZCOUNT` after the user's read_seq, up to the visible seq.
//! - `room.mine` reads `user_rooms:{U}` (tagged by user), then, scattered
//!   per room (one slot each), each candidate's `last_activity` and whether
//!   the user still participates; stale entries are removed from the index
//!   (`unindex.lua`, only while their join time is the one read: a join
//!   meanwhile keeps its entry; a leave's removal likewise spares a rejoin);
//!   the `limit` most recently active are read with `mine.lua` (room,
//!   counts and role facts in one call per room, concurrently).
//! - `room.receipts` is `receipts.lua`, which reads nothing proportional to
//!   a room above `RECEIPTS_MAX` participants.

use async_trait::async_trait;
use redis::AsyncCommands;

use super::RedisStore;
use super::conn::Conn;
use super::parse::{corrupt, parse_room, parse_users};
use super::scripts::{
    MarkRead, MarkReadReply, Mine, MineReply, Receipts, ReceiptsReply, ScriptReply, Unindex,
    Unindexed,
};
use crate::error::StoreResult;
use crate::store::{
    MyRoom, RECEIPTS_MAX, ReadOutcome, ReadStore, ReceiptsOutcome, RoleFacts, USER_ROOMS_MAX,
};

impl RedisStore {
    /// Drops `rooms` from `user`'s index, each only while its join time is
    /// below its bound; how many went.
    async fn unindex(
        &self,
        c: &mut Conn<'_>,
        user: &str,
        rooms: &[(&str, u64)],
    ) -> StoreResult<u64> {
        let args = Unindex {
            index: self.k().user_rooms(user),
            rooms,
        };
        let Unindexed(n) = self
            .script(c, "user_rooms", &self.inner.scripts.unindex, &args)
            .await?;
        Ok(n)
    }

    /// One room of `room.mine` (`None`: gone, or the user left it).
    async fn mine_one(
        &self,
        c: &mut Conn<'_>,
        room: &str,
        user: &str,
    ) -> StoreResult<Option<MyRoom>> {
        let k = self.k();
        let args = Mine {
            room: k.room(room),
            members: k.room_members(room),
            reads: k.reads(room),
            countable: k.countable(room),
            roles: k.roles(room),
            messages: k.room_messages(room),
            events: k.room_events(room),
            user,
            message_prefix: k.message_prefix(room),
        };
        let reply = MineReply::parse(
            self.invoke(c, "room_mine", &self.inner.scripts.mine, &args)
                .await?,
        )?;
        let MineReply::Mine {
            fields,
            count,
            read_seq,
            unread,
            moderator,
        } = reply
        else {
            return Ok(None);
        };
        let Some(mut parsed) = parse_room(&fields, count)? else {
            return Ok(None);
        };
        if self.deferred()
            && let Some(mark) = fields.get("published").and_then(|p| p.parse::<u64>().ok())
        {
            parsed.last_seq = parsed.last_seq.min(mark);
        }
        Ok(Some(MyRoom {
            room: parsed,
            read_seq,
            unread,
            role: RoleFacts {
                owner: fields.get("owner").cloned(),
                moderator,
            },
        }))
    }
}

#[async_trait]
impl ReadStore for RedisStore {
    async fn mark_read(&self, room: &str, user: &str, seq: u64) -> StoreResult<ReadOutcome> {
        // An atomic max: running it twice is running it once.
        self.idempotent(|| async move {
            let k = self.k();
            let args = MarkRead {
                room: k.room(room),
                members: k.room_members(room),
                reads: k.reads(room),
                user,
                seq,
            };
            let mut c = self.conn().await?;
            // With replica acknowledgements, `ok` means the replicas have it.
            let (reply, acks) = self
                .invoke_durable(&mut c, "room_read", &self.inner.scripts.read, &args)
                .await?;
            self.acked(acks)?;
            Ok(match MarkReadReply::parse(reply)? {
                MarkReadReply::Read(read_seq, moved) => ReadOutcome::Read { read_seq, moved },
                MarkReadReply::NoRoom => ReadOutcome::NoRoom,
                MarkReadReply::NotMember => ReadOutcome::NotMember,
            })
        })
        .await
    }

    async fn remember_room(&self, user: &str, room: &str, at_ms: u64) -> StoreResult<()> {
        self.idempotent(|| async move {
            let key = self.k().user_rooms(user);
            let mut c = self.conn().await?;
            // One key, one slot: the add and the bound in one pipeline.
            let mut pipe = redis::pipe();
            pipe.zadd(&key, room, at_ms)
                .ignore()
                .cmd("ZREMRANGEBYRANK")
                .arg(&key)
                .arg(0)
                .arg(-(USER_ROOMS_MAX as i64) - 1)
                .ignore();
            self.timed("user_rooms", pipe.query_async::<()>(&mut c))
                .await
        })
        .await
    }

    async fn forget_room(&self, user: &str, room: &str, joined_before_ms: u64) -> StoreResult<()> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            self.unindex(&mut c, user, &[(room, joined_before_ms)])
                .await
                .map(|_| ())
        })
        .await
    }

    async fn my_rooms(&self, user: &str, limit: usize) -> StoreResult<Vec<MyRoom>> {
        self.idempotent(|| async move {
            let k = self.k();
            let mut c = self.conn().await?;
            let index = k.user_rooms(user);
            let entries: Vec<(String, u64)> = self
                .timed("user_rooms", c.zrange_withscores(&index, 0, -1))
                .await?;
            if entries.is_empty() {
                return Ok(Vec::new());
            }
            // Each candidate's activity and the user's membership: one
            // group (one slot) per room.
            let groups = entries
                .iter()
                .map(|(id, _)| {
                    let mut activity = redis::cmd("HGET");
                    activity.arg(k.room(id)).arg("last_activity");
                    let mut member = redis::cmd("HEXISTS");
                    member.arg(k.room_members(id)).arg(user);
                    vec![activity, member]
                })
                .collect();
            let raw = self.scatter(&mut c, "user_rooms_check", groups).await?;
            // (last activity, room, joined at) of the rooms still theirs;
            // (room, joined at) of the stale ones.
            let mut live: Vec<(u64, &str, u64)> = Vec::new();
            let mut stale: Vec<(&str, u64)> = Vec::new();
            for ((id, joined), pair) in entries.iter().zip(raw) {
                let [activity, member] = pair.as_slice() else {
                    return Err(corrupt("room.mine check answered an odd count"));
                };
                let activity: Option<u64> =
                    redis::from_redis_value_ref(activity).map_err(corrupt)?;
                let member: bool = redis::from_redis_value_ref(member).map_err(corrupt)?;
                match activity {
                    Some(at) if member => live.push((at, id, *joined)),
                    _ => stale.push((id, *joined)),
                }
            }
            live.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            live.truncate(limit);
            // Concurrently, on twins of one connection (pipelined).
            let reads = live.iter().map(|(_, id, _)| {
                let mut twin = c.twin();
                async move { self.mine_one(&mut twin, id, user).await }
            });
            let mut rooms = Vec::with_capacity(live.len());
            for (mine, (_, id, joined)) in futures_util::future::try_join_all(reads)
                .await?
                .into_iter()
                .zip(&live)
            {
                match mine {
                    Some(mine) => rooms.push(mine),
                    None => stale.push((id, *joined)),
                }
            }
            if !stale.is_empty() {
                // Each goes only while its join time is the one read here:
                // a join meanwhile (another tab) keeps its entry.
                let bounds: Vec<(&str, u64)> = stale
                    .iter()
                    .map(|(id, joined)| (*id, joined.saturating_add(1)))
                    .collect();
                if let Err(e) = self.unindex(&mut c, user, &bounds).await {
                    tracing::debug!(error = %e, "could not drop stale rooms of a user's index");
                }
            }
            Ok(rooms)
        })
        .await
    }

    async fn receipts(&self, room: &str, user: &str) -> StoreResult<ReceiptsOutcome> {
        self.idempotent(|| async move {
            let k = self.k();
            let args = Receipts {
                room: k.room(room),
                members: k.room_members(room),
                reads: k.reads(room),
                user,
                max: RECEIPTS_MAX,
            };
            let mut c = self.conn().await?;
            Ok(
                match self
                    .script(&mut c, "room_receipts", &self.inner.scripts.receipts, &args)
                    .await?
                {
                    ReceiptsReply::NoRoom => ReceiptsOutcome::NoRoom,
                    ReceiptsReply::NotMember => ReceiptsOutcome::NotMember,
                    ReceiptsReply::TooBig(n) => ReceiptsOutcome::TooBig(n),
                    ReceiptsReply::Reads(pairs) => {
                        let users = parse_users(pairs.iter().map(|(json, _)| json))?;
                        let mut by_id: std::collections::HashMap<String, u64> = pairs
                            .iter()
                            .map(|(json, seq)| {
                                serde_json::from_str::<crate::model::User>(json)
                                    .map(|u| (u.id, *seq))
                                    .map_err(corrupt)
                            })
                            .collect::<StoreResult<_>>()?;
                        ReceiptsOutcome::Reads(
                            users
                                .into_iter()
                                .map(|u| {
                                    let seq = by_id.remove(&u.id).unwrap_or(0);
                                    (u, seq)
                                })
                                .collect(),
                        )
                    }
                },
            )
        })
        .await
    }
}
