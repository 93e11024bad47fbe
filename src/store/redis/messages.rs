//! `MessageStore` and `EventLog` on Redis: sends (with the lost-answer
//! settle), history, replays, edits and search.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::RedisStore;
use super::conn::Conn;
use super::parse::{corrupt, parse_message};
use super::scripts::{
    Replace, ReplaceReply, ScriptReply, Send, SendReply, Since, SinceReply, Trim, Trimmed,
};
use crate::codec;
use crate::error::{StoreError, StoreResult};
use crate::events::{EventLog, Presence, RawReplay};
use crate::model::{BanRecord, Event, Message, now_ms, now_us};
use crate::store::{
    AppendOutcome, HistoryPage, MessageStore, ReplaceOutcome, Replay, ScanCap, StoredMessage,
};

impl RedisStore {
    /// Reads message records by id (`None` for expired ones), in order.
    async fn read_messages(
        &self,
        c: &mut Conn<'_>,
        room: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Option<Vec<u8>>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.k().message(room, id)).collect();
        self.timed(
            "message_mget",
            redis::cmd("MGET").arg(&keys).query_async(&mut *c),
        )
        .await
    }

    /// With replica acknowledgements, the last seq readers may see (the
    /// room's `published` mark, see `crate::store::redis`); `None` without
    /// them or before the room's first acknowledged write.
    async fn published_mark(&self, c: &mut Conn<'_>, room: &str) -> StoreResult<Option<u64>> {
        if !self.deferred() {
            return Ok(None);
        }
        self.timed("published_mark", c.hget(self.k().room(room), "published"))
            .await
    }

    /// Drops expired messages from the room's index and their events.
    async fn trim(&self, c: &mut Conn<'_>, room: &str) -> StoreResult<()> {
        let k = self.k();
        let args = Trim {
            messages: k.room_messages(room),
            events: k.room_events(room),
            countable: k.countable(room),
            message_prefix: k.message_prefix(room),
        };
        let Trimmed(_) = self
            .script(c, "trim_expired", &self.inner.scripts.trim, &args)
            .await?;
        Ok(())
    }

    /// Decides a send whose answer was lost (timeout, dropped connection):
    /// once Redis's clock is past the script's deadline the script can no
    /// longer run, so whether the message exists is the final answer. Only
    /// when Redis cannot be asked does the send stay ambiguous (the client's
    /// `client_msg_id` retry then settles it).
    async fn settle(
        &self,
        message: &Message,
        deadline: i64,
        cause: StoreError,
    ) -> StoreResult<AppendOutcome> {
        let offset = self.inner.clock.offset();
        let past = deadline - offset + 20 - now_ms() as i64;
        if past > 0 {
            tokio::time::sleep(Duration::from_millis(past as u64)).await;
        }
        // A short look: a Redis that does not answer now will not settle it.
        let look = tokio::time::timeout(
            self.inner.timeout / 2,
            MessageStore::message(self, &message.room, &message.id),
        )
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("settling timed out".into())));
        match look {
            // Present, but whether replicas have it is not known.
            Ok(Some(_)) if self.deferred() => Err(StoreError::Unconfirmed(
                "the answer was lost; the message is on the master, its replicas unconfirmed"
                    .into(),
            )),
            Ok(Some(stored)) => {
                tracing::info!(message = %message.id, "a send whose answer was lost was applied");
                Ok(AppendOutcome::Appended(stored.message))
            }
            Ok(None) => Err(cause),
            Err(e) => {
                tracing::warn!(message = %message.id, error = %e, "cannot tell whether a send was applied");
                Err(cause)
            }
        }
    }
    /// One try of `append`.
    async fn append_once(
        &self,
        message: &Message,
        client_msg_id: Option<&str>,
    ) -> StoreResult<AppendOutcome> {
        let k = self.k();
        let room = &message.room;
        let mut stored = message.clone();
        stored.seq = 0;
        let tail = codec::encode_tail(&Event::MessageCreated(stored.clone()), now_us());
        let dedupe_key = k.dedupe(room, &message.user.id, client_msg_id.unwrap_or(""));
        let event = self.event_keys(room);
        let mut dedupe_mode = if client_msg_id.is_some() { 1 } else { 0 };
        let mut c = self.conn().await?;
        loop {
            let now = now_ms();
            let deadline = self.deadline();
            let args = Send {
                event: &event,
                members: k.room_members(room),
                messages: k.room_messages(room),
                message: k.message(room, &message.id),
                dedupe: &dedupe_key,
                mutes: k.mutes(room),
                countable: k.countable(room),
                reads: k.reads(room),
                user: &message.user.id,
                msg_id: &message.id,
                tail: &tail,
                ttl_ms: self.ttl_ms(),
                log_len: self.inner.settings.event_log_len,
                now,
                dedupe_mode,
                dedupe_ttl_ms: self.inner.settings.dedupe_ttl.as_millis() as u64,
                deadline,
            };
            // Bump the room in `active_rooms` (at most once a second per
            // node) in the same round trip: the multiplexed connection
            // pipelines both. `XX GT` only moves an existing room forward,
            // so a refused send leaves no trace.
            // `public_rooms` likewise: `XX` leaves private rooms out of it.
            // Both index keys of a room share one slot (`crate::layout`).
            let bump = self.inner.bumps.due(room, now).then(|| {
                let mut bump = redis::pipe();
                for index in [k.active_rooms_of(room), k.public_rooms_of(room)] {
                    bump.cmd("ZADD")
                        .arg(index)
                        .arg("XX")
                        .arg("GT")
                        .arg(now)
                        .arg(room)
                        .ignore();
                }
                bump
            });
            let mut c2 = c.twin();
            let (sent, bumped) = tokio::join!(
                self.invoke_durable(&mut c, "message_send", &self.inner.scripts.send, &args),
                async {
                    match &bump {
                        Some(bump) => {
                            self.timed("active_rooms", bump.query_async::<()>(&mut c2))
                                .await
                        }
                        None => Ok(()),
                    }
                },
            );
            // A lost answer is settled; a reply (even `late`) is final.
            let (reply, acks) = match sent {
                Ok(sent) => sent,
                Err(e) if e.is_transient() => {
                    return self.settle(message, deadline, e).await;
                }
                Err(e) => return Err(e),
            };
            if let Err(e) = bumped {
                tracing::debug!(room, error = %e, "could not bump active_rooms");
            }
            return match SendReply::parse(reply)? {
                SendReply::NoRoom => Ok(AppendOutcome::NoRoom),
                SendReply::NotMember => Ok(AppendOutcome::NotMember),
                SendReply::Muted(until) => Ok(AppendOutcome::Muted(until)),
                SendReply::Sent(seq) => {
                    self.confirm(&mut c, room, seq, acks).await?;
                    stored.seq = seq;
                    Ok(AppendOutcome::Appended(stored))
                }
                SendReply::Duplicate(prior_id) => {
                    let raw: Option<Vec<u8>> = self
                        .timed("message_get", c.get(k.message(room, &prior_id)))
                        .await?;
                    match raw {
                        Some(bytes) => {
                            let prior = parse_message(&bytes)?;
                            // With acknowledgements the script's write moved
                            // this connection past the original, so its
                            // WAIT covered the original too.
                            self.confirm(&mut c, room, prior.seq, acks).await?;
                            Ok(AppendOutcome::Duplicate(prior))
                        }
                        None => {
                            // The original expired before its dedupe key:
                            // write this one and let it take the key over.
                            dedupe_mode = 2;
                            continue;
                        }
                    }
                }
            };
        }
    }
}

#[async_trait]
impl MessageStore for RedisStore {
    async fn append(
        &self,
        message: &Message,
        client_msg_id: Option<&str>,
    ) -> StoreResult<AppendOutcome> {
        // Only a send with a `client_msg_id` is idempotent.
        match client_msg_id {
            Some(_) => {
                self.idempotent(|| self.append_once(message, client_msg_id))
                    .await
            }
            None => self.append_once(message, None).await,
        }
    }

    async fn history(
        &self,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<HistoryPage> {
        self.idempotent(|| async move {
            let k = self.k();
            let mut c = self.conn().await?;
            let max = match before {
                Some(b) => format!("({b}"),
                None => "+inf".to_owned(),
            };
            // Expired messages leave their ids in the index until trimmed: when
            // a page meets one, trim (it also drops their events) and read again.
            let mut trimmed = false;
            loop {
                let ids: Vec<String> = self
                    .timed(
                        "history_index",
                        redis::cmd("ZREVRANGEBYSCORE")
                            .arg(k.room_messages(room))
                            .arg(&max)
                            .arg("-inf")
                            .arg("LIMIT")
                            .arg(0)
                            .arg(limit + 1)
                            .query_async(&mut c),
                    )
                    .await?;
                let has_more = ids.len() > limit;
                let ids = &ids[..ids.len().min(limit)];
                let raw = self.read_messages(&mut c, room, ids).await?;
                if raw.iter().any(Option::is_none) && !trimmed {
                    self.trim(&mut c, room).await?;
                    trimmed = true;
                    continue;
                }
                let mut messages = raw
                    .iter()
                    .flatten()
                    .map(|b| parse_message(b))
                    .collect::<StoreResult<Vec<Message>>>()?;
                if let Some(mark) = self.published_mark(&mut c, room).await? {
                    messages.retain(|m| m.seq <= mark);
                }
                messages.reverse();
                return Ok(HistoryPage { messages, has_more });
            }
        })
        .await
    }

    async fn events_since(&self, room: &str, since: u64) -> StoreResult<Replay> {
        self.idempotent(|| async move {
            crate::store::decode_replay(self.envelopes_since(room, since).await?)
        })
        .await
    }

    async fn message(&self, room: &str, id: &str) -> StoreResult<Option<StoredMessage>> {
        self.idempotent(|| async move {
            let mut c = self.conn().await?;
            let raw: Option<Vec<u8>> = self
                .timed("message_get", c.get(self.k().message(room, id)))
                .await?;
            raw.map(|raw| {
                Ok(StoredMessage {
                    message: parse_message(&raw)?,
                    raw,
                })
            })
            .transpose()
        })
        .await
    }

    async fn replace(
        &self,
        room: &str,
        expected: &[u8],
        event: &Event,
    ) -> StoreResult<ReplaceOutcome> {
        let Some(m) = event.message() else {
            return Err(corrupt(format!(
                "replace takes a message event, not {}",
                event.name()
            )));
        };
        let mut c = self.conn().await?;
        let keys = self.event_keys(room);
        let tail = codec::encode_tail(event, now_us());
        let args = Replace {
            event: &keys,
            message: self.k().message(room, &m.id),
            countable: self.k().countable(room),
            msg_id: &m.id,
            deleting: matches!(event, Event::MessageDeleted(_)),
            expected,
            tail: &tail,
            log_len: self.inner.settings.event_log_len,
            now: now_ms(),
            mutes: self.k().mutes(room),
            muted_user: match event {
                Event::MessageUpdated(edited) => &edited.user.id,
                _ => "",
            },
            deadline: self.deadline(),
        };
        let (reply, acks) = self
            .invoke_durable(
                &mut c,
                "message_replace",
                &self.inner.scripts.replace,
                &args,
            )
            .await?;
        Ok(match ReplaceReply::parse(reply)? {
            ReplaceReply::Replaced(seq) => {
                self.confirm(&mut c, room, seq, acks).await?;
                ReplaceOutcome::Replaced(seq)
            }
            ReplaceReply::Changed => ReplaceOutcome::Changed,
            ReplaceReply::Gone => ReplaceOutcome::Gone,
            ReplaceReply::Muted(until) => ReplaceOutcome::Muted(until),
        })
    }

    async fn search(
        &self,
        room: &str,
        words: &[String],
        limit: usize,
        scan: ScanCap,
    ) -> StoreResult<Vec<Message>> {
        self.idempotent(|| async move {
            const PAGE: usize = 100;
            let mut c = self.conn().await?;
            self.trim(&mut c, room).await?;
            let mark = self.published_mark(&mut c, room).await?;
            let mut found = Vec::new();
            let mut scanned = 0;
            let mut read = 0;
            while scanned < scan.messages && read < scan.bytes && found.len() < limit {
                let take = PAGE.min(scan.messages - scanned);
                let ids: Vec<String> = self
                    .timed(
                        "search_index",
                        c.zrevrange(
                            self.k().room_messages(room),
                            scanned as isize,
                            (scanned + take) as isize - 1,
                        ),
                    )
                    .await?;
                scanned += ids.len();
                for raw in self
                    .read_messages(&mut c, room, &ids)
                    .await?
                    .iter()
                    .flatten()
                {
                    read += raw.len();
                    let m = parse_message(raw)?;
                    let visible = mark.is_none_or(|mark| m.seq <= mark);
                    if visible && crate::store::matches_words(&m, words) {
                        found.push(m);
                        if found.len() >= limit {
                            break;
                        }
                    }
                    if read >= scan.bytes {
                        break;
                    }
                }
                if ids.len() < take {
                    break;
                }
            }
            Ok(found)
        })
        .await
    }
}

#[async_trait]
impl EventLog for RedisStore {
    async fn envelopes_since(&self, room: &str, since: u64) -> StoreResult<RawReplay> {
        let k = self.k();
        let mut c = self.conn().await?;
        let args = Since {
            room: k.room(room),
            events: k.room_events(room),
            messages: k.room_messages(room),
            countable: k.countable(room),
            since,
            message_prefix: k.message_prefix(room),
        };
        let SinceReply {
            last_seq,
            envelopes,
        } = self
            .script(&mut c, "events_since", &self.inner.scripts.since, &args)
            .await?;
        let first = envelopes
            .first()
            .map(|e| codec::peek_seq(e))
            .transpose()
            .map_err(corrupt)?;
        let complete = since >= last_seq || first == Some(since + 1);
        Ok(RawReplay {
            envelopes,
            last_seq,
            complete,
        })
    }
    async fn presence(&self, room: &str, users: &[String]) -> StoreResult<Presence> {
        if users.is_empty() {
            return Ok(Presence {
                exists: true,
                gone: Vec::new(),
            });
        }
        self.idempotent(|| async move {
            let k = self.k();
            let mut c = self.conn().await?;
            // One slot: the room's hash, members and bans share its tag.
            let mut pipe = redis::pipe();
            pipe.cmd("EXISTS")
                .arg(k.room(room))
                .cmd("HMGET")
                .arg(k.room_members(room))
                .arg(users)
                .cmd("HMGET")
                .arg(k.bans(room))
                .arg(users);
            let (exists, members, bans): (bool, Vec<Option<String>>, Vec<Option<String>>) =
                self.timed("presence", pipe.query_async(&mut c)).await?;
            let now = now_ms();
            let gone = (0..users.len())
                .map(|i| {
                    if members.get(i).is_some_and(Option::is_some) {
                        return Ok(None);
                    }
                    let ban = match bans.get(i).and_then(Option::as_deref) {
                        Some(raw) => Some(serde_json::from_str::<BanRecord>(raw).map_err(corrupt)?),
                        None => None,
                    };
                    Ok(Some(ban.filter(|b| b.holds(now))))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            Ok(Presence { exists, gone })
        })
        .await
    }
}
