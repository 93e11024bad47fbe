//! Big rooms on Redis: the bounded roster of a join, member pages and the
//! coalesced `participants.changed` (protocol 1.1 "Big rooms"). Each is one
//! script on the room's keys, so one slot on a cluster.

use std::time::Duration;

use super::RedisStore;
use super::parse::{corrupt, user_json};
use super::scripts::{Changes, ChangesReply, Members, MembersReply, Roster, RosterReply};
use crate::error::StoreResult;
use crate::model::User;
use crate::store::{CHANGED_LIST_MAX, Change, Coalesced, MemberPage, fold_changes, sort_users};

/// Changes kept waiting in `changes:{R}` at most: enough for both lists of
/// a `participants.changed` even when a user appears twice.
const CHANGES_KEPT: usize = 4 * CHANGED_LIST_MAX;

fn parse_user(json: &str) -> StoreResult<User> {
    serde_json::from_str(json).map_err(corrupt)
}

impl RedisStore {
    /// `RoomStore::roster`.
    pub(super) async fn read_roster(&self, room: &str, limit: usize) -> StoreResult<Vec<User>> {
        let k = self.k();
        let mut c = self.conn().await?;
        let args = Roster {
            members: k.room_members(room),
            presence: k.presence(room),
            limit,
        };
        let reply: RosterReply = self
            .script(&mut c, "roster", &self.inner.scripts.roster, &args)
            .await?;
        let mut users = reply
            .users
            .iter()
            .flatten()
            .map(|j| parse_user(j))
            .collect::<StoreResult<Vec<User>>>()?;
        if !reply.partial {
            sort_users(&mut users);
        }
        Ok(users)
    }

    /// `RoomStore::members`.
    pub(super) async fn read_members(
        &self,
        room: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<MemberPage> {
        let k = self.k();
        let mut c = self.conn().await?;
        let args = Members {
            members: k.room_members(room),
            member_ids: k.member_ids(room),
            after: after.unwrap_or(""),
            limit,
        };
        let reply: MembersReply = self
            .script(&mut c, "members", &self.inner.scripts.members, &args)
            .await?;
        let users = reply
            .users
            .iter()
            .flatten()
            .map(|j| parse_user(j))
            .collect::<StoreResult<Vec<User>>>()?;
        let next = if reply.more {
            reply.ids.last().cloned()
        } else {
            None
        };
        Ok(MemberPage { users, next })
    }

    /// `RoomStore::participants_changed`.
    pub(super) async fn coalesce_changes(
        &self,
        room: &str,
        changes: &[Change],
        window: Duration,
    ) -> StoreResult<Coalesced> {
        let k = self.k();
        let added: Vec<String> = changes
            .iter()
            .map(|change| match change {
                Change::Joined(u) => format!("j{}", user_json(u)),
                Change::Left(u) => format!("l{}", user_json(u)),
            })
            .collect();
        let args = Changes {
            changes: k.changes(room),
            gate: k.changes_gate(room),
            members: k.room_members(room),
            window_ms: window.as_millis() as u64,
            keep: CHANGES_KEPT,
            added: &added,
        };
        let mut c = self.conn().await?;
        let reply: ChangesReply = self
            .script(
                &mut c,
                "participants_changed",
                &self.inner.scripts.changes,
                &args,
            )
            .await?;
        Ok(match reply {
            ChangesReply::Nothing => Coalesced::Nothing,
            // A gate without a TTL (-1) or gone meanwhile (-2): try again
            // soon rather than never.
            ChangesReply::Wait(ms) => Coalesced::Wait(Duration::from_millis(ms.max(10) as u64)),
            ChangesReply::Publish(count, waiting) => {
                let changes = waiting
                    .iter()
                    .map(|raw| match raw.split_at_checked(1) {
                        Some(("j", json)) => parse_user(json).map(Change::Joined),
                        Some(("l", json)) => parse_user(json).map(Change::Left),
                        _ => Err(corrupt(format!("a waiting change reads {raw:?}"))),
                    })
                    .collect::<StoreResult<Vec<Change>>>()?;
                let (joined, left) = fold_changes(changes);
                Coalesced::Publish {
                    count,
                    joined,
                    left,
                }
            }
        })
    }
}
