//! Big rooms in memory: the bounded roster of a join, member pages and the
//! coalesced `participants.changed`, with the same rules as the Redis
//! scripts (`roster.lua`, `members.lua`, `changes.lua`).

use std::time::Duration;

use super::MemoryStore;
use crate::model::User;
use crate::store::{CHANGED_LIST_MAX, Change, Coalesced, MemberPage, fold_changes, sort_users};

/// Changes kept waiting per room at most (as on Redis).
const CHANGES_KEPT: usize = 4 * CHANGED_LIST_MAX;

impl MemoryStore {
    /// `RoomStore::roster`: everyone, sorted, up to `limit`; beyond it the
    /// most recently joined, newest first.
    pub(super) fn read_roster(&self, room: &str, limit: usize) -> Vec<User> {
        let st = self.state();
        let Some(rs) = st.rooms.get(room) else {
            return Vec::new();
        };
        if rs.members.len() <= limit {
            let mut users: Vec<User> = rs.members.values().map(|m| m.user.clone()).collect();
            sort_users(&mut users);
            return users;
        }
        let mut newest: Vec<(u64, &str, &User)> = rs
            .members
            .values()
            .map(|m| (m.joined_at, m.user.id.as_str(), &m.user))
            .collect();
        newest.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        newest
            .into_iter()
            .take(limit)
            .map(|(_, _, u)| u.clone())
            .collect()
    }

    /// `RoomStore::members`: by user id, after `after`.
    pub(super) fn read_members(&self, room: &str, after: Option<&str>, limit: usize) -> MemberPage {
        let st = self.state();
        let Some(rs) = st.rooms.get(room) else {
            return MemberPage {
                users: Vec::new(),
                next: None,
            };
        };
        let mut ids: Vec<&String> = rs
            .members
            .keys()
            .filter(|id| after.is_none_or(|a| id.as_str() > a))
            .collect();
        ids.sort_unstable();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let users: Vec<User> = ids
            .iter()
            .filter_map(|id| rs.members.get(*id).map(|m| m.user.clone()))
            .collect();
        let next = more.then(|| ids.last().map(|id| (*id).clone())).flatten();
        MemberPage { users, next }
    }

    /// `RoomStore::participants_changed`.
    pub(super) fn coalesce_changes(
        &self,
        room: &str,
        changes: &[Change],
        window: Duration,
    ) -> Coalesced {
        let now = self.now();
        let mut st = self.state();
        let count = st.rooms.get(room).map_or(0, |rs| rs.members.len() as u32);
        let entry = st.changes.entry(room.to_owned()).or_default();
        entry.0.extend(changes.iter().cloned());
        let excess = entry.0.len().saturating_sub(CHANGES_KEPT);
        entry.0.drain(..excess);
        if entry.0.is_empty() {
            return Coalesced::Nothing;
        }
        if entry.1 > now {
            return Coalesced::Wait(Duration::from_millis(entry.1 - now));
        }
        entry.1 = now + window.as_millis() as u64;
        let (joined, left) = fold_changes(std::mem::take(&mut entry.0));
        Coalesced::Publish {
            count,
            joined,
            left,
        }
    }
}
