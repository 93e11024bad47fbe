//! `ReadService`: read state (protocol 1.1 "Read state"): `room.read`,
//! `room.mine` and `room.receipts`, the `read` event, and the per-user room
//! index behind `room.mine`.
//!
//! Rules: only participants read or mark a room (`not_found` for a room
//! that does not exist, `forbidden` for one the user is not in, as
//! `room.members` answers); a read position only grows and never passes the
//! room's last seq. When `room.read` moves it, a `read` event goes out on
//! the user's channel carrying the room and the asking connection; every
//! node holding a connection of the user (`follow`, from hello to close)
//! hands it to the user's connections there but the asking one, whatever
//! rooms they joined. A send marks the room read for its author in the store (in the
//! send's own script); `sent` then publishes the author's `read` event the
//! same way, so the author's other tabs clear their badge too.
//!
//! Unread counts are counts by seq (`crate::store::reads`), never a scan.
//! The room index is written here after each successful join (`joined`)
//! and cleared after a final leave (`left`); `RoomService` calls both.

use std::sync::Arc;

use super::subscription::{Listener, UserSubscription};
use super::{int_field, room_id};
use crate::bus::EventBus;
use crate::error::ServiceError;
use crate::model::{Event, Role, Room, User, now_ms};
use crate::store::{MyRoom, RECEIPTS_MAX, ReadOutcome, ReadStore, ReceiptsOutcome, RoleFacts};

/// `room.mine`'s default page.
pub const MINE_DEFAULT: i64 = 100;
/// `room.mine`'s largest page.
pub const MINE_MAX: i64 = 200;

/// One room of `room.mine`, with the user's read state and role.
#[derive(Debug, Clone, PartialEq)]
pub struct MineEntry {
    /// The room.
    pub room: Room,
    /// The user's read position.
    pub read_seq: u64,
    /// Messages after it that count: not system, not the user's own, not
    /// deleted.
    pub unread: u64,
    /// The user's role in the room.
    pub role: Role,
}

/// The role of `user` in `room`: the owner (the room's `owner` field, or
/// its creator when unset), a named moderator, or a member. The one place
/// this is decided for read state, so that the roles rules can take it over.
pub fn role(room: &Room, user: &str, facts: &RoleFacts) -> Role {
    let owner = facts.owner.as_deref().unwrap_or(&room.created_by);
    if owner == user {
        Role::Owner
    } else if facts.moderator {
        Role::Moderator
    } else {
        Role::Member
    }
}

/// Read-state rules.
#[derive(Clone)]
pub struct ReadService {
    /// Read positions, counts, the room index.
    reads: Arc<dyn ReadStore>,
    /// Where `read` events go.
    bus: Arc<dyn EventBus>,
}

impl ReadService {
    /// Rules over the given store and bus.
    pub(crate) fn new(reads: Arc<dyn ReadStore>, bus: Arc<dyn EventBus>) -> ReadService {
        ReadService { reads, bus }
    }

    /// Starts handing `user`'s own events (`read`) to the connection behind
    /// `listener`, on this node, until the subscription is released; the
    /// connection calls it once hello said who it is.
    pub async fn follow(&self, user: &User, listener: Arc<dyn Listener>) -> UserSubscription {
        UserSubscription::start(&user.id, listener, self.bus.clone()).await
    }

    /// `room.read`: `user` (on connection `conn`) has read `room` up to
    /// `seq`; the read position after the call.
    pub async fn read(
        &self,
        user: &User,
        conn: &str,
        room: &str,
        seq: u64,
    ) -> Result<u64, ServiceError> {
        let room = room_id(room)?;
        match self.reads.mark_read(room, &user.id, seq).await? {
            ReadOutcome::NoRoom => Err(not_found(room)),
            ReadOutcome::NotMember => Err(ServiceError::Forbidden(
                "join the room to mark it read".into(),
            )),
            ReadOutcome::Read { read_seq, moved } => {
                if moved {
                    self.tell(user, conn, room, read_seq).await;
                }
                Ok(read_seq)
            }
        }
    }

    /// `user` sent the message `seq` from `conn` (not a retry): the store
    /// marked the room read up to it; the user's other connections are told.
    /// The publish runs on a task of its own, so the send's reply (and the
    /// connection's next request) does not wait for it; it still follows the
    /// `message.created`, which the send's script published already.
    pub fn sent(&self, user: &User, conn: &str, room: &str, seq: u64) {
        let (this, user, conn, room) =
            (self.clone(), user.clone(), conn.to_owned(), room.to_owned());
        tokio::spawn(async move { this.tell(&user, &conn, &room, seq).await });
    }

    /// Publishes `user`'s new read position to their other connections.
    /// The position is stored already: a lost event only leaves the other
    /// tabs' badges stale until their next `room.mine`, so it is logged.
    async fn tell(&self, user: &User, conn: &str, room: &str, read_seq: u64) {
        let event = Event::Read {
            user: user.id.clone(),
            conn: conn.to_owned(),
            read_seq,
        };
        if let Err(e) = self.bus.publish_to_user(&user.id, room, &event).await {
            tracing::warn!(room, error = %e, "could not publish a read event");
        }
    }

    /// `room.mine`: the user's rooms, most recently active first, with read
    /// state and role; `limit` 1–200 (default 100).
    pub async fn mine(
        &self,
        user: &User,
        limit: Option<i64>,
    ) -> Result<Vec<MineEntry>, ServiceError> {
        let limit = int_field("limit", limit, MINE_DEFAULT, 1, MINE_MAX)?;
        let rooms = self.reads.my_rooms(&user.id, limit as usize).await?;
        Ok(rooms
            .into_iter()
            .map(
                |MyRoom {
                     room,
                     read_seq,
                     unread,
                     role: facts,
                 }| MineEntry {
                    role: role(&room, &user.id, &facts),
                    room,
                    read_seq,
                    unread,
                },
            )
            .collect())
    }

    /// `room.receipts`: every participant's read position, in rooms of at
    /// most `RECEIPTS_MAX` participants.
    pub async fn receipts(
        &self,
        user: &User,
        room: &str,
    ) -> Result<Vec<(User, u64)>, ServiceError> {
        let room = room_id(room)?;
        match self.reads.receipts(room, &user.id).await? {
            ReceiptsOutcome::Reads(reads) => Ok(reads),
            ReceiptsOutcome::NoRoom => Err(not_found(room)),
            ReceiptsOutcome::NotMember => Err(ServiceError::Forbidden(
                "join the room to see its read receipts".into(),
            )),
            ReceiptsOutcome::TooBig(n) => Err(ServiceError::Conflict(format!(
                "read receipts are kept for rooms of at most {RECEIPTS_MAX} participants; \
                 this room has {n}"
            ))),
        }
    }

    /// `user` joined `room`: it goes into their room index. A failure is
    /// logged (the next join writes it again).
    pub async fn joined(&self, user: &str, room: &str) {
        if let Err(e) = self.reads.remember_room(user, room, now_ms()).await {
            tracing::warn!(room, error = %e, "could not record the room in the user's index");
        }
    }

    /// `user` finally left `room`: it leaves their index, unless they
    /// joined it again since `before_ms`, a time taken before the leave's
    /// store call (a rejoin from another tab races this removal). A failure
    /// is logged (`room.mine` drops the entry once it sees the user is
    /// gone).
    pub async fn left(&self, user: &str, room: &str, before_ms: u64) {
        if let Err(e) = self.reads.forget_room(user, room, before_ms).await {
            tracing::debug!(room, error = %e, "could not drop the room from the user's index");
        }
    }
}

fn not_found(room: &str) -> ServiceError {
    ServiceError::NotFound(format!("room {room} does not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(created_by: &str) -> Room {
        Room {
            id: "r".into(),
            code: "ABC234".into(),
            name: "Lobby".into(),
            created_by: created_by.into(),
            created_at: 0,
            max_participants: 50,
            private: false,
            participant_count: 2,
            last_seq: 3,
        }
    }

    #[test]
    fn the_owner_field_wins_over_the_creator_then_moderators_then_members() {
        let r = room("ann");
        let none = RoleFacts::default();
        assert_eq!(role(&r, "ann", &none), Role::Owner, "the creator owns it");
        assert_eq!(role(&r, "bob", &none), Role::Member);
        let handed = RoleFacts {
            owner: Some("bob".into()),
            moderator: false,
        };
        assert_eq!(role(&r, "bob", &handed), Role::Owner);
        assert_eq!(role(&r, "ann", &handed), Role::Member);
        let moderator = RoleFacts {
            owner: None,
            moderator: true,
        };
        assert_eq!(role(&r, "cid", &moderator), Role::Moderator);
        assert_eq!(role(&r, "ann", &moderator), Role::Owner, "owner first");
        assert_eq!(
            serde_json::to_string(&Role::Moderator).expect("json"),
            "\"moderator\""
        );
    }
}
