//! The Redis key and channel layout. Every key and channel name is built here.
//!
//! It sits below both Redis users, the store engine (`store::redis`) and the
//! bus (`bus::redis`), so neither imports the other to agree on a name.
//!
//! All keys carry the configured prefix (default `huddle:`). Keys that belong
//! to one room hold the room id in braces, a Redis Cluster hash tag, so all of
//! a room's keys live in one slot and one script may touch them all.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `room:{R}` | hash | room fields, `owner` (1.1), `seq`, `last_activity` |
//! | `room_code:CODE` | string | room id |
//! | `room_members:{R}` | hash | user id → user (JSON) |
//! | `member_conns:{R}:USER` | set | connection ids of that user in the room |
//! | `member_ids:{R}` | sorted set | the ids of `room_members`, all scored 0: the lexical index `room.members` pages through |
//! | `changes:{R}` | list | membership changes of a big room waiting for its next `participants.changed` (`j`/`l` + user JSON); capped, expires |
//! | `changes_gate:{R}` | string | set for 1 s (`SET NX PX`) by whoever publishes the room's `participants.changed`: at most one per room per second, across nodes |
//! | `roles:{R}` | hash | user id → `moderator` (1.1; members are absent; the owner is the `owner` field of `room:{R}`, absent: `created_by`); also read by `room.mine` |
//! | `bans:{R}` | hash | user id → ban record JSON `{user, until (ms, -1 none), by, reason}`; expired entries are ignored and removed lazily |
//! | `mutes:{R}` | hash | user id → muted until (ms); expired = not muted |
//! | `room_messages:{R}` | sorted set | message id by seq |
//! | `message:{R}:M` | string | envelope of the message's latest event; expires with `message_ttl` |
//! | `room_events:{R}` | sorted set | envelopes by seq, capped at `event_log_len` |
//! | `dedupe:{R}:USER:CLIENT_MSG_ID` | string | message id, 24 h |
//! | `reads:{R}` | hash | user id → read_seq (`room.read`; a send marks its author's); deleted with the room |
//! | `countable:{R}` | sorted set | message id by seq, for the messages unread counts count (not system; deleted and expired ones removed): unread = `ZCOUNT` after read_seq |
//! | `user_rooms:{U}` | sorted set | room ids a user joined, by join time (ms), the newest 1,000: `room.mine`'s candidates, dropped lazily once stale; tagged by user |
//! | `active_rooms` | sorted set | room id by last activity (ms); one shard of the room index (below) |
//! | `public_rooms` | sorted set | public room ids by last activity (ms), for `room.list`; same shard |
//! | `public_rooms_ready` | string | set once `public_rooms` was filled from `active_rooms` |
//! | `limit:NAME` | string | a per-minute abuse-limit counter; expires with its window |
//! | `session:CONN` | hash | user, node, connected_at; TTL `session_ttl` |
//! | `user_sessions:USER` | set | connection ids of a user |
//! | `presence:{R}` | sorted set | `USER:CONN` by join time (ms) |
//! | `session_rooms:CONN` | set | rooms a connection joined (for the janitor) |
//! | `node_sessions:INSTANCE` | set | connection ids held by a node instance |
//! | `nodes` | sorted set | node instance (`id/boot`) by last heartbeat (ms) |
//! | `typing:{R}:USER` | string | set while typing; 5 s TTL |
//! | `activity:USER` | hash | `last_seen` (ms), `messages` (count) |
//! | `cache:K` | string | general cache with TTL |
//! | `lock:NAME` | string | short lock (the janitor's) |
//!
//! Channel: `events:{R}` per room, carrying `crate::codec` envelopes. On a
//! Redis Cluster it is a shard channel (`SPUBLISH`/`SSUBSCRIBE`): it hashes
//! to the room's slot, so a room's events travel only inside the shard that
//! owns the room, and the scripts may publish it next to the room's keys.
//!
//! Channel: `user_events:{U}` per user, carrying a room id and an envelope
//! (`crate::codec::address`): events for one user's connections whatever
//! rooms they joined (the `read` event). A node subscribes it while it holds
//! a connection of the user; on a cluster it is a shard channel in the
//! user's slot.
//!
//! ## The room index and Redis Cluster
//!
//! The room index (`active_rooms`, `public_rooms`) is the only sorted set
//! every room writes to. On one Redis it is one pair of keys. On a cluster
//! one pair would put every room's bump on one master, so the index is split
//! into `index_shards` pairs, `active_rooms:{ix-N}` and
//! `public_rooms:{ix-N}`; a room belongs to shard `N = fnv1a(room id) %
//! index_shards`. The pair of a shard shares the hash tag `ix-N`, so adding,
//! bumping and removing a room is one single-slot pipeline; listing and the
//! idle sweep read every shard and merge.
//!
//! Every other key outside a room is used one key per command (`session:`,
//! `user_sessions:`, `node_sessions:`, `session_rooms:`, `nodes`,
//! `room_code:`, `activity:`, `limit:`, `cache:`, `lock:`, and
//! `user_rooms:{U}`, tagged by its user): none is written in one atomic
//! step with another, so they may live in any slot. Their cost
//! per connection and per message is in docs/scaling.md.

/// Shards of the room index on a Redis Cluster (`Keys::clustered`).
pub const CLUSTER_INDEX_SHARDS: u16 = 16;

/// Builds key names under a prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// Shards of the room index: 1 on one Redis (the historical key
    /// names), `CLUSTER_INDEX_SHARDS` on a cluster.
    index_shards: u16,
}

impl Keys {
    /// Keys under `prefix`, for one Redis.
    pub fn new(prefix: impl Into<String>) -> Keys {
        Keys {
            prefix: prefix.into(),
            index_shards: 1,
        }
    }

    /// Keys under `prefix` for a Redis Cluster: the room index is split
    /// into `CLUSTER_INDEX_SHARDS` shards.
    pub fn clustered(prefix: impl Into<String>) -> Keys {
        Keys {
            prefix: prefix.into(),
            index_shards: CLUSTER_INDEX_SHARDS,
        }
    }

    /// How many shards the room index has.
    pub fn index_shards(&self) -> u16 {
        self.index_shards
    }

    /// The room index shard `room` belongs to.
    pub fn index_shard(&self, room: &str) -> u16 {
        if self.index_shards <= 1 {
            return 0;
        }
        (fnv1a(room.as_bytes()) % u32::from(self.index_shards)) as u16
    }

    /// `room:{R}`.
    pub fn room(&self, room: &str) -> String {
        format!("{}room:{{{room}}}", self.prefix)
    }
    /// `room_code:CODE`.
    pub fn room_code(&self, code: &str) -> String {
        format!("{}room_code:{code}", self.prefix)
    }
    /// `room_members:{R}`.
    pub fn room_members(&self, room: &str) -> String {
        format!("{}room_members:{{{room}}}", self.prefix)
    }
    /// `member_conns:{R}:USER`.
    pub fn member_conns(&self, room: &str, user: &str) -> String {
        format!("{}member_conns:{{{room}}}:{user}", self.prefix)
    }
    /// `member_ids:{R}`.
    pub fn member_ids(&self, room: &str) -> String {
        format!("{}member_ids:{{{room}}}", self.prefix)
    }
    /// `changes:{R}`.
    pub fn changes(&self, room: &str) -> String {
        format!("{}changes:{{{room}}}", self.prefix)
    }
    /// `changes_gate:{R}`.
    pub fn changes_gate(&self, room: &str) -> String {
        format!("{}changes_gate:{{{room}}}", self.prefix)
    }
    /// `roles:{R}`.
    pub fn roles(&self, room: &str) -> String {
        format!("{}roles:{{{room}}}", self.prefix)
    }
    /// `bans:{R}`.
    pub fn bans(&self, room: &str) -> String {
        format!("{}bans:{{{room}}}", self.prefix)
    }
    /// `mutes:{R}`.
    pub fn mutes(&self, room: &str) -> String {
        format!("{}mutes:{{{room}}}", self.prefix)
    }
    /// The prefix of a room's typing keys (`typing:{R}:`), for scripts.
    pub fn typing_prefix(&self, room: &str) -> String {
        format!("{}typing:{{{room}}}:", self.prefix)
    }
    /// `room_messages:{R}`.
    pub fn room_messages(&self, room: &str) -> String {
        format!("{}room_messages:{{{room}}}", self.prefix)
    }
    /// `message:{R}:M`.
    pub fn message(&self, room: &str, message: &str) -> String {
        format!("{}message:{{{room}}}:{message}", self.prefix)
    }
    /// `room_events:{R}`.
    pub fn room_events(&self, room: &str) -> String {
        format!("{}room_events:{{{room}}}", self.prefix)
    }
    /// `dedupe:{R}:USER:CLIENT_MSG_ID`.
    pub fn dedupe(&self, room: &str, user: &str, client_msg_id: &str) -> String {
        format!("{}dedupe:{{{room}}}:{user}:{client_msg_id}", self.prefix)
    }
    /// `reads:{R}`.
    pub fn reads(&self, room: &str) -> String {
        format!("{}reads:{{{room}}}", self.prefix)
    }
    /// `countable:{R}`.
    pub fn countable(&self, room: &str) -> String {
        format!("{}countable:{{{room}}}", self.prefix)
    }
    /// `user_rooms:{U}`: hashed by the user, so the index of one user is
    /// one key in one slot, apart from the rooms' slots.
    pub fn user_rooms(&self, user: &str) -> String {
        format!("{}user_rooms:{{{user}}}", self.prefix)
    }
    /// The `active_rooms` shard `shard` (`active_rooms` itself when the
    /// index is not split).
    pub fn active_rooms(&self, shard: u16) -> String {
        self.index_key("active_rooms", shard)
    }
    /// The `public_rooms` shard `shard`: the public rooms of the same
    /// `active_rooms` shard, so listing them never wades through private
    /// ones.
    pub fn public_rooms(&self, shard: u16) -> String {
        self.index_key("public_rooms", shard)
    }
    /// The unsplit `active_rooms` and `public_rooms` of one Redis, when the
    /// index is split: keys copied from one Redis into a cluster keep these
    /// names, and are moved into the shards once.
    pub fn unsplit_index(&self) -> Option<(String, String)> {
        (self.index_shards > 1).then(|| {
            (
                format!("{}active_rooms", self.prefix),
                format!("{}public_rooms", self.prefix),
            )
        })
    }
    /// The `active_rooms` shard of `room`.
    pub fn active_rooms_of(&self, room: &str) -> String {
        self.active_rooms(self.index_shard(room))
    }
    /// The `public_rooms` shard of `room` (same slot as its `active_rooms`).
    pub fn public_rooms_of(&self, room: &str) -> String {
        self.public_rooms(self.index_shard(room))
    }
    fn index_key(&self, name: &str, shard: u16) -> String {
        if self.index_shards <= 1 {
            format!("{}{name}", self.prefix)
        } else {
            format!("{}{name}:{{ix-{shard}}}", self.prefix)
        }
    }
    /// `public_rooms_ready`: `public_rooms` holds every public room (it was
    /// filled from `active_rooms` once, after an upgrade).
    pub fn public_rooms_ready(&self) -> String {
        format!("{}public_rooms_ready", self.prefix)
    }
    /// `session:CONN`.
    pub fn session(&self, conn: &str) -> String {
        format!("{}session:{conn}", self.prefix)
    }
    /// `user_sessions:USER`.
    pub fn user_sessions(&self, user: &str) -> String {
        format!("{}user_sessions:{user}", self.prefix)
    }
    /// `presence:{R}`.
    pub fn presence(&self, room: &str) -> String {
        format!("{}presence:{{{room}}}", self.prefix)
    }
    /// `session_rooms:CONN`.
    pub fn session_rooms(&self, conn: &str) -> String {
        format!("{}session_rooms:{conn}", self.prefix)
    }
    /// `node_sessions:INSTANCE`.
    pub fn node_sessions(&self, instance: &str) -> String {
        format!("{}node_sessions:{instance}", self.prefix)
    }
    /// `nodes`.
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }
    /// `typing:{R}:USER`.
    pub fn typing(&self, room: &str, user: &str) -> String {
        format!("{}typing:{{{room}}}:{user}", self.prefix)
    }
    /// `activity:USER`.
    pub fn activity(&self, user: &str) -> String {
        format!("{}activity:{user}", self.prefix)
    }
    /// `lock:NAME`.
    pub fn lock(&self, name: &str) -> String {
        format!("{}lock:{name}", self.prefix)
    }
    /// The prefix of a room's message keys (`message:{R}:`), for scripts.
    pub fn message_prefix(&self, room: &str) -> String {
        format!("{}message:{{{room}}}:", self.prefix)
    }
    /// The prefix of a room's member connection sets, for scripts.
    pub fn member_conns_prefix(&self, room: &str) -> String {
        format!("{}member_conns:{{{room}}}:", self.prefix)
    }
    /// `limit:NAME`: a fixed-window counter of the abuse limits.
    pub fn limit(&self, name: &str) -> String {
        format!("{}limit:{name}", self.prefix)
    }
    /// `cache:K`.
    pub fn cache(&self, key: &str) -> String {
        format!("{}cache:{key}", self.prefix)
    }
    /// The room's pub/sub channel, `events:{R}`.
    pub fn channel(&self, room: &str) -> String {
        format!("{}events:{{{room}}}", self.prefix)
    }
    /// A user's pub/sub channel, `user_events:{U}`.
    pub fn user_channel(&self, user: &str) -> String {
        format!("{}user_events:{{{user}}}", self.prefix)
    }
    /// The user id of a user channel name, if it is one of ours.
    pub fn user_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("user_events:{")?
            .strip_suffix('}')
    }
    /// The room id of a channel name, if it is one of ours.
    pub fn room_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix("events:{")?
            .strip_suffix('}')
    }
}

/// FNV-1a, 32 bits: a stable spread of room ids over the index shards.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The hash tag of a key: the part between the first `{` and the next `}`.
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')? + open + 1;
    (close > open + 1).then(|| &key[open + 1..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_keys_share_the_room_hash_tag() {
        let k = Keys::new("huddle:");
        let r = "0190a1b2-c3d4";
        for key in [
            k.room(r),
            k.room_members(r),
            k.member_conns(r, "u1"),
            k.room_messages(r),
            k.message(r, "m1"),
            k.room_events(r),
            k.dedupe(r, "u1", "weird{}id"),
            k.presence(r),
            k.typing(r, "u1"),
            k.roles(r),
            k.bans(r),
            k.mutes(r),
            k.channel(r),
            k.reads(r),
            k.countable(r),
        ] {
            assert!(key.starts_with("huddle:"), "{key}");
            assert_eq!(hash_tag(&key), Some(r), "{key}");
        }
        assert_eq!(k.room(r), "huddle:room:{0190a1b2-c3d4}");
        assert_eq!(k.message(r, "m1"), "huddle:message:{0190a1b2-c3d4}:m1");
        assert_eq!(hash_tag(&k.active_rooms(0)), None);
        assert_eq!(
            k.active_rooms_of(r),
            "huddle:active_rooms",
            "one Redis: one index"
        );
        assert_eq!(k.public_rooms_of(r), "huddle:public_rooms");
        assert_eq!(hash_tag(&k.session("c1")), None);
        assert_eq!(hash_tag(&k.user_rooms("u1")), Some("u1"));
    }

    #[test]
    fn a_cluster_spreads_the_room_index_over_shards_sharing_a_slot_per_pair() {
        let k = Keys::clustered("huddle:");
        let mut used = std::collections::HashSet::new();
        for i in 0..400 {
            let room = format!("room-{i}");
            let shard = k.index_shard(&room);
            assert!(shard < CLUSTER_INDEX_SHARDS);
            assert_eq!(shard, k.index_shard(&room), "stable");
            let (active, public) = (k.active_rooms_of(&room), k.public_rooms_of(&room));
            assert_eq!(hash_tag(&active), hash_tag(&public), "{active} {public}");
            assert_eq!(active, format!("huddle:active_rooms:{{ix-{shard}}}"));
            used.insert(shard);
        }
        assert_eq!(
            used.len(),
            usize::from(CLUSTER_INDEX_SHARDS),
            "every shard is used"
        );
    }

    #[test]
    fn channel_names_round_trip() {
        let k = Keys::new("t1:");
        let ch = k.channel("abc");
        assert_eq!(ch, "t1:events:{abc}");
        assert_eq!(k.room_of_channel(&ch), Some("abc"));
        assert_eq!(k.room_of_channel("other:events:{abc}"), None);
        assert_eq!(k.room_of_channel("t1:room:{abc}"), None);
        let user = k.user_channel("u-1");
        assert_eq!(user, "t1:user_events:{u-1}");
        assert_eq!(hash_tag(&user), Some("u-1"), "hashed by the user");
        assert_eq!(k.user_of_channel(&user), Some("u-1"));
        assert_eq!(k.room_of_channel(&user), None, "not a room's");
        assert_eq!(k.user_of_channel(&ch), None, "not a user's");
    }
}
