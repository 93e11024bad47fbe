//! `ReadStore` in memory: each room's read positions and countable seqs
//! (`RoomReads`, kept beside the room's messages), and each user's room
//! index. The same counts-by-seq scheme as Redis (`crate::store::reads`):
//! a send adds its seq to the countable set and moves its author's read
//! position to it; a delete or an expiry trim takes the seq out.

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;

use super::{MemoryStore, RoomState, room_view, trim_expired};
use crate::model::MessageKind;
use crate::store::{
    MyRoom, RECEIPTS_MAX, ReadOutcome, ReadStore, ReceiptsOutcome, StoreResult, USER_ROOMS_MAX,
    sort_users,
};

/// One room's read state.
#[derive(Debug, Default)]
pub(super) struct RoomReads {
    /// user id → read_seq.
    read: HashMap<String, u64>,
    /// Seqs of the messages that count as unread (not system; not deleted,
    /// not expired), ascending. Sends append (seqs grow), the expiry trim
    /// takes from the front, and a count is a binary search: `room.mine`
    /// costs O(log n) per room, like Redis's `ZCOUNT`.
    countable: VecDeque<u64>,
}

impl RoomReads {
    /// A message of `kind` by `author` was written with `seq`: it counts
    /// (unless a system message), and its author has read up to it.
    pub(super) fn sent(&mut self, author: &str, kind: MessageKind, seq: u64) {
        if kind == MessageKind::System {
            return;
        }
        match self.countable.back() {
            Some(&last) if last >= seq => {
                let at = self.countable.partition_point(|&s| s < seq);
                if self.countable.get(at) != Some(&seq) {
                    self.countable.insert(at, seq);
                }
            }
            _ => self.countable.push_back(seq),
        }
        let read = self.read.entry(author.to_owned()).or_default();
        *read = (*read).max(seq);
    }

    /// The message `seq` was deleted or expired: it no longer counts.
    pub(super) fn gone(&mut self, seq: u64) {
        if self.countable.front() == Some(&seq) {
            self.countable.pop_front();
        } else if let Ok(at) = self.countable.binary_search(&seq) {
            self.countable.remove(at);
        }
    }

    fn read_seq(&self, user: &str) -> u64 {
        self.read.get(user).copied().unwrap_or(0)
    }

    /// Countable messages after `read_seq`.
    fn unread(&self, read_seq: u64) -> u64 {
        let read = self.countable.partition_point(|&s| s <= read_seq);
        (self.countable.len() - read) as u64
    }
}

#[async_trait]
impl ReadStore for MemoryStore {
    async fn mark_read(&self, room: &str, user: &str, seq: u64) -> StoreResult<ReadOutcome> {
        let mut st = self.state();
        let Some(rs) = st.rooms.get_mut(room) else {
            return Ok(ReadOutcome::NoRoom);
        };
        if !rs.members.contains_key(user) {
            return Ok(ReadOutcome::NotMember);
        }
        let wanted = seq.min(rs.room.last_seq);
        let read = rs.reads.read.entry(user.to_owned()).or_default();
        let moved = wanted > *read;
        if moved {
            *read = wanted;
        }
        Ok(ReadOutcome::Read {
            read_seq: *read,
            moved,
        })
    }

    async fn remember_room(&self, user: &str, room: &str, at_ms: u64) -> StoreResult<()> {
        let mut st = self.state();
        let index = st.user_rooms.entry(user.to_owned()).or_default();
        index.insert(room.to_owned(), at_ms);
        if index.len() > USER_ROOMS_MAX {
            let mut by_age: Vec<(u64, String)> =
                index.iter().map(|(r, at)| (*at, r.clone())).collect();
            by_age.sort();
            for (_, old) in by_age.into_iter().take(index.len() - USER_ROOMS_MAX) {
                index.remove(&old);
            }
        }
        Ok(())
    }

    async fn forget_room(&self, user: &str, room: &str, joined_before_ms: u64) -> StoreResult<()> {
        let mut st = self.state();
        if let Some(index) = st.user_rooms.get_mut(user)
            && index.get(room).is_some_and(|&at| at < joined_before_ms)
        {
            index.remove(room);
            if index.is_empty() {
                st.user_rooms.remove(user);
            }
        }
        Ok(())
    }

    async fn my_rooms(&self, user: &str, limit: usize) -> StoreResult<Vec<MyRoom>> {
        let now = self.now();
        let mut guard = self.state();
        let st = &mut *guard;
        let candidates: Vec<String> = st
            .user_rooms
            .get(user)
            .map(|index| index.keys().cloned().collect())
            .unwrap_or_default();
        let mut found: Vec<(u64, MyRoom)> = Vec::new();
        let mut stale = Vec::new();
        for id in candidates {
            match st.rooms.get_mut(&id) {
                Some(rs) if rs.members.contains_key(user) => {
                    found.push((rs.last_activity, mine(rs, user, now)));
                }
                _ => stale.push(id),
            }
        }
        if let Some(index) = st.user_rooms.get_mut(user) {
            for id in &stale {
                index.remove(id);
            }
        }
        // As on Redis: most recent activity first, then by room id.
        found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.room.id.cmp(&b.1.room.id)));
        Ok(found.into_iter().take(limit).map(|(_, m)| m).collect())
    }

    async fn receipts(&self, room: &str, user: &str) -> StoreResult<ReceiptsOutcome> {
        let st = self.state();
        let Some(rs) = st.rooms.get(room) else {
            return Ok(ReceiptsOutcome::NoRoom);
        };
        if !rs.members.contains_key(user) {
            return Ok(ReceiptsOutcome::NotMember);
        }
        let count = rs.members.len() as u32;
        if count > RECEIPTS_MAX {
            return Ok(ReceiptsOutcome::TooBig(count));
        }
        let mut users: Vec<_> = rs.members.values().map(|m| m.user.clone()).collect();
        sort_users(&mut users);
        Ok(ReceiptsOutcome::Reads(
            users
                .into_iter()
                .map(|u| {
                    let seq = rs.reads.read_seq(&u.id);
                    (u, seq)
                })
                .collect(),
        ))
    }
}

/// `user`'s view of a room they participate in, after dropping expired
/// messages (so they no longer count).
fn mine(rs: &mut RoomState, user: &str, now: u64) -> MyRoom {
    trim_expired(rs, now);
    let read_seq = rs.reads.read_seq(user);
    MyRoom {
        room: room_view(rs),
        read_seq,
        unread: rs.reads.unread(read_seq),
        role: rs.moderation.role_facts(user),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::events::EventSink;
    use crate::store::StoreSettings;

    struct NoSink;
    impl EventSink for NoSink {
        fn deliver(&self, _: &str, _: &[u8]) {}
    }

    #[tokio::test]
    async fn the_room_index_keeps_the_newest_joins() {
        let store = MemoryStore::new(StoreSettings::default(), Arc::new(NoSink));
        for i in 0..USER_ROOMS_MAX + 5 {
            store
                .remember_room("u", &format!("r{i:04}"), i as u64)
                .await
                .expect("remember");
        }
        let st = store.state();
        let index = st.user_rooms.get("u").expect("index");
        assert_eq!(index.len(), USER_ROOMS_MAX);
        assert!(!index.contains_key("r0004"), "the oldest joins go");
        assert!(index.contains_key("r0005") && index.contains_key("r1004"));
    }

    #[test]
    fn counts_are_by_seq_above_the_read_position() {
        let mut reads = RoomReads::default();
        reads.sent("ann", MessageKind::Text, 3);
        reads.sent("ann", MessageKind::Image, 5);
        reads.sent("system", MessageKind::System, 6);
        reads.sent("bob", MessageKind::Text, 7);
        assert_eq!(reads.unread(0), 3, "system messages do not count");
        assert_eq!(
            reads.read_seq("ann"),
            5,
            "a send marks its author's position"
        );
        assert_eq!(reads.unread(reads.read_seq("ann")), 1);
        reads.gone(7);
        assert_eq!(reads.unread(5), 0, "deleted or expired: gone");
        assert_eq!(reads.unread(u64::MAX), 0);
    }

    #[test]
    fn counts_stay_right_through_deletes_trims_and_out_of_order_seqs() {
        let mut reads = RoomReads::default();
        for seq in [2, 4, 6, 8, 10] {
            reads.sent("bob", MessageKind::Text, seq);
        }
        // A seq below the last (not written by today's send path) and a
        // repeat land in place, once.
        reads.sent("bob", MessageKind::Text, 5);
        reads.sent("bob", MessageKind::Text, 5);
        assert_eq!(reads.countable, [2, 4, 5, 6, 8, 10]);
        assert_eq!(reads.unread(0), 6);
        assert_eq!(reads.unread(4), 4);
        assert_eq!(reads.unread(5), 3, "at a counted seq: after it");
        reads.gone(2); // the expiry trim takes the oldest
        reads.gone(6); // a delete in the middle
        reads.gone(7); // never counted: nothing
        assert_eq!(reads.countable, [4, 5, 8, 10]);
        assert_eq!(reads.unread(0), 4);
        assert_eq!(reads.unread(8), 1);
        assert_eq!(reads.unread(10), 0);
    }
}
