//! Read state on every engine: read positions (an atomic max, capped at the
//! last seq), unread counts by seq (system, own, deleted and expired
//! messages do not count), the user's room index behind `room.mine` (order,
//! limit, stale rooms dropped) and receipts.

use std::time::Duration;

use huddle::model::{Event, Message, Role};
use huddle::store::{ModOutcome, MyRoom, ReadOutcome, ReceiptsOutcome, Store, StoreError};

use super::*;

async fn join(store: &dyn Store, room: &str, u: &User) {
    let out = store
        .join(room, u, &format!("c-{}", u.id), &note(room, "joined"))
        .await
        .expect("join");
    assert!(matches!(out, JoinOutcome::Joined { .. }), "{out:?}");
    store
        .remember_room(&u.id, room, now_ms())
        .await
        .expect("remember");
}

async fn mine(store: &dyn Store, u: &User) -> Vec<MyRoom> {
    store.my_rooms(&u.id, 100).await.expect("my rooms")
}

async fn unread(store: &dyn Store, u: &User, room: &str) -> (u64, u64) {
    let rooms = mine(store, u).await;
    let r = rooms
        .iter()
        .find(|m| m.room.id == room)
        .unwrap_or_else(|| panic!("{} is not in {}'s rooms: {rooms:?}", room, u.id));
    (r.read_seq, r.unread)
}

async fn delete(store: &dyn Store, room: &str, m: &Message) {
    let stored = store
        .message(room, &m.id)
        .await
        .expect("read")
        .expect("exists");
    let mut tomb = stored.message.clone();
    tomb.deleted = true;
    tomb.content.clear();
    let out = store
        .replace(room, &stored.raw, &Event::MessageDeleted(tomb))
        .await
        .expect("delete");
    assert!(matches!(out, ReplaceOutcome::Replaced(_)), "{out:?}");
}

async fn receipts_of(store: &dyn Store, room: &str, asker: &User) -> Vec<(String, u64)> {
    match store.receipts(room, &asker.id).await.expect("receipts") {
        ReceiptsOutcome::Reads(reads) => reads.into_iter().map(|(u, s)| (u.id, s)).collect(),
        other => panic!("receipts: {other:?}"),
    }
}

pub(super) async fn read_positions(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob, cat) = (user("ann"), user("bob"), user("cat"));
    create(store, &room("r-rd", "RDR222", 50, false), &ann, "a1").await;
    join(store, "r-rd", &bob).await;
    for i in 0..3 {
        appended(send(store, "r-rd", &ann, &format!("m{i}"), None).await);
    }
    // 1 created, 2 bob joined, 3..5 ann's.
    let read = |seq| store.mark_read("r-rd", &bob.id, seq);
    assert_eq!(
        read(3).await.expect("read"),
        ReadOutcome::Read {
            read_seq: 3,
            moved: true
        }
    );
    assert_eq!(
        read(2).await.expect("read"),
        ReadOutcome::Read {
            read_seq: 3,
            moved: false
        },
        "a lower value changes nothing"
    );
    assert_eq!(
        read(3).await.expect("read"),
        ReadOutcome::Read {
            read_seq: 3,
            moved: false
        }
    );
    assert_eq!(
        read(1_000_000).await.expect("read"),
        ReadOutcome::Read {
            read_seq: 5,
            moved: true
        },
        "capped at the last seq"
    );
    // Refusals change nothing.
    assert_eq!(
        store.mark_read("r-rd", &cat.id, 4).await.expect("read"),
        ReadOutcome::NotMember
    );
    assert_eq!(
        store.mark_read("r-none", &bob.id, 4).await.expect("read"),
        ReadOutcome::NoRoom
    );
    let reads = receipts_of(store, "r-rd", &ann).await;
    assert_eq!(
        reads,
        [(ann.id.clone(), 5), (bob.id.clone(), 5)],
        "ann read her own sends; cat's refused read left no trace"
    );
}

pub(super) async fn unread_counts(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob) = (user("ann"), user("bob"));
    create(store, &room("r-un", "UNR222", 50, false), &ann, "a1").await;
    store
        .remember_room(&ann.id, "r-un", now_ms())
        .await
        .expect("remember");
    join(store, "r-un", &bob).await;
    assert_eq!(
        unread(store, &bob, "r-un").await,
        (0, 0),
        "system messages do not count"
    );
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(appended(
            send(store, "r-un", &ann, &format!("a{i}"), None).await,
        ));
    }
    assert_eq!(unread(store, &bob, "r-un").await, (0, 3));
    assert_eq!(
        unread(store, &ann, "r-un").await,
        (5, 0),
        "one's own messages do not count: a send marks the room read"
    );
    // Bob answers: his send marks the room read up to it.
    let reply = appended(send(store, "r-un", &bob, "b0", None).await);
    assert_eq!(unread(store, &bob, "r-un").await, (reply.seq, 0));
    assert_eq!(unread(store, &ann, "r-un").await, (5, 1));
    for i in 3..5 {
        sent.push(appended(
            send(store, "r-un", &ann, &format!("a{i}"), None).await,
        ));
    }
    assert_eq!(unread(store, &bob, "r-un").await, (reply.seq, 2));
    // A deleted message stops counting; deleting an already read one
    // changes nothing for the reader.
    delete(store, "r-un", &sent[3]).await;
    assert_eq!(unread(store, &bob, "r-un").await, (reply.seq, 1));
    delete(store, "r-un", &sent[0]).await;
    assert_eq!(unread(store, &bob, "r-un").await, (reply.seq, 1));
    // An edit still counts once.
    let last = &sent[4];
    let stored = store
        .message("r-un", &last.id)
        .await
        .expect("read")
        .expect("exists");
    let mut edited = stored.message.clone();
    edited.content = "edited".into();
    store
        .replace("r-un", &stored.raw, &Event::MessageUpdated(edited))
        .await
        .expect("edit");
    assert_eq!(unread(store, &bob, "r-un").await, (reply.seq, 1));
    // Reading up to the room's end clears the count.
    store
        .mark_read("r-un", &bob.id, u64::MAX)
        .await
        .expect("read");
    assert_eq!(unread(store, &bob, "r-un").await.1, 0);
}

/// Needs a store with a 1 s message TTL.
pub(super) async fn unread_after_expiry(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob) = (user("ann"), user("bob"));
    create(store, &room("r-ux", "UNX222", 50, false), &ann, "a1").await;
    join(store, "r-ux", &bob).await;
    for i in 0..2 {
        appended(send(store, "r-ux", &ann, &format!("old{i}"), None).await);
    }
    assert_eq!(unread(store, &bob, "r-ux").await.1, 2);
    t.pass(Duration::from_millis(1300)).await;
    appended(send(store, "r-ux", &ann, "fresh", None).await);
    assert_eq!(
        unread(store, &bob, "r-ux").await.1,
        1,
        "expired messages stop counting"
    );
}

pub(super) async fn my_rooms_order_limit_and_stale(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob) = (user("ann"), user("bob"));
    for (id, code) in [
        ("r-m1", "MMA222"),
        ("r-m2", "MMB222"),
        ("r-m3", "MMC222"),
        ("r-m4", "MMD222"),
    ] {
        create(store, &room(id, code, 50, false), &ann, "a1").await;
        join(store, id, &bob).await;
        t.pass(Duration::from_millis(5)).await;
    }
    let ids = |rooms: Vec<MyRoom>| rooms.into_iter().map(|m| m.room.id).collect::<Vec<_>>();
    assert_eq!(
        ids(mine(store, &bob).await),
        ["r-m4", "r-m3", "r-m2", "r-m1"],
        "most recently active first"
    );
    // Activity moves a room up.
    appended(send(store, "r-m2", &ann, "news", None).await);
    t.pass(Duration::from_millis(5)).await;
    let got = mine(store, &bob).await;
    assert_eq!(got[0].room.id, "r-m2");
    assert_eq!((got[0].unread, got[0].room.last_seq), (1, 3));
    assert_eq!(got[0].room.participant_count, 2);
    // Bob is a member (on Redis, create.lua wrote ann into the room's
    // `owner` field; the memory engine leaves it to `created_by`).
    assert_eq!(
        huddle::service::reads::role(&got[0].room, &bob.id, &got[0].role),
        Role::Member
    );
    assert!(!got[0].role.moderator);
    assert_eq!(
        ids(store.my_rooms(&bob.id, 2).await.expect("mine")),
        ["r-m2", "r-m4"],
        "at most limit"
    );
    // Bob left r-m4 (on another node, say: the index was not told) and r-m3
    // was closed: neither is listed, and neither takes a place in the limit.
    store
        .leave("r-m4", &bob, "c-u-bob", &note("r-m4", "left"))
        .await
        .expect("leave");
    store
        .leave("r-m3", &bob, "c-u-bob", &note("r-m3", "left"))
        .await
        .expect("leave");
    store
        .leave("r-m3", &ann, "a1", &note("r-m3", "left"))
        .await
        .expect("leave");
    assert!(store.close_room("r-m3", u64::MAX).await.expect("close"));
    assert_eq!(
        ids(store.my_rooms(&bob.id, 2).await.expect("mine")),
        ["r-m2", "r-m1"]
    );
    // The stale entry was dropped from the index: joining again without
    // the service's index write does not bring it back.
    store
        .join("r-m4", &bob, "c-u-bob", &note("r-m4", "joined"))
        .await
        .expect("join");
    assert_eq!(ids(mine(store, &bob).await), ["r-m2", "r-m1"]);
    // A forget takes a room out at once, unless the user joined it again
    // at or after the forget's bound (a rejoin from another tab racing the
    // leave keeps its entry).
    store
        .remember_room(&bob.id, "r-m2", 5_000)
        .await
        .expect("rejoin");
    store
        .forget_room(&bob.id, "r-m2", 5_000)
        .await
        .expect("forget");
    store
        .forget_room(&bob.id, "r-m1", now_ms() + 1)
        .await
        .expect("forget");
    assert_eq!(ids(mine(store, &bob).await), ["r-m2"]);
    store
        .forget_room(&bob.id, "r-m2", 5_001)
        .await
        .expect("forget");
    assert!(ids(mine(store, &bob).await).is_empty());
    assert!(mine(store, &user("nobody")).await.is_empty());
}

pub(super) async fn read_receipts(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob, cat, dan) = (user("ann"), user("bob"), user("cat"), user("dan"));
    create(store, &room("r-rc", "RCP222", 50, false), &ann, "a1").await;
    join(store, "r-rc", &bob).await;
    join(store, "r-rc", &cat).await;
    let m = appended(send(store, "r-rc", &ann, "hello", None).await);
    store.mark_read("r-rc", &bob.id, 2).await.expect("read");
    assert_eq!(
        receipts_of(store, "r-rc", &cat).await,
        [
            (ann.id.clone(), m.seq),
            (bob.id.clone(), 2),
            (cat.id.clone(), 0)
        ],
        "every participant, 0 when never read"
    );
    assert_eq!(
        store.receipts("r-rc", &dan.id).await.expect("receipts"),
        ReceiptsOutcome::NotMember
    );
    assert_eq!(
        store.receipts("r-none", &ann.id).await.expect("receipts"),
        ReceiptsOutcome::NoRoom
    );
    // Above 100 participants: refused, with the count.
    let owner = crowd(store, "r-rcb", "RCB222", 100).await;
    assert_eq!(
        store.receipts("r-rcb", &owner.id).await.expect("receipts"),
        ReceiptsOutcome::TooBig(101)
    );
}

/// The room index keeps the newest `USER_ROOMS_MAX` joins.
pub(super) async fn room_index_bound(t: &Engine) {
    let store = t.store.as_ref();
    let ann = user("ann");
    create(store, &room("r-ib", "IBX222", 50, false), &ann, "a1").await;
    let max = huddle::store::USER_ROOMS_MAX as u64;
    // Bob's index is full with r-ib in it; Cat's takes one more join.
    for (u, newer) in [(user("bob"), max - 1), (user("cat"), max)] {
        join(store, "r-ib", &u).await;
        store
            .remember_room(&u.id, "r-ib", 1)
            .await
            .expect("remember");
        // Newer joins of rooms that are gone since.
        for i in 0..newer {
            store
                .remember_room(&u.id, &format!("r-gone-{i}"), 2 + i)
                .await
                .expect("remember");
        }
    }
    assert_eq!(mine(store, &user("bob")).await.len(), 1, "within the bound");
    assert!(
        mine(store, &user("cat")).await.is_empty(),
        "the oldest join fell out of the index"
    );
}

/// `room.mine`'s role comes from the moderation state on every engine: a
/// named moderator, a hand-over (the new owner, the old one a moderator), a
/// demotion; decided by `service::reads::role` from the facts the store
/// reads with the room.
pub(super) async fn my_rooms_roles_follow_moderation(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob) = (user("ann"), user("bob"));
    let r = create(store, &room("r-mr", "MRL222", 50, false), &ann, "a1").await;
    store
        .remember_room(&ann.id, "r-mr", now_ms())
        .await
        .expect("remember");
    join(store, "r-mr", &bob).await;
    let role_of = async |u: &User| {
        let rooms = mine(store, u).await;
        let m = rooms.iter().find(|m| m.room.id == "r-mr").expect("listed");
        huddle::service::reads::role(&r, &u.id, &m.role)
    };
    assert_eq!(
        (role_of(&ann).await, role_of(&bob).await),
        (Role::Owner, Role::Member)
    );
    let set = async |actor: &User, target: &User, role: Role| {
        assert_eq!(
            store
                .set_role("r-mr", &actor.id, &target.id, role)
                .await
                .expect("role"),
            ModOutcome::Done(())
        );
    };
    set(&ann, &bob, Role::Moderator).await;
    assert_eq!(role_of(&bob).await, Role::Moderator);
    set(&ann, &bob, Role::Owner).await;
    assert_eq!(
        (role_of(&ann).await, role_of(&bob).await),
        (Role::Moderator, Role::Owner),
        "handed over: the old owner is a moderator"
    );
    set(&bob, &ann, Role::Member).await;
    assert_eq!(role_of(&ann).await, Role::Member);
}

/// The owner's close (`room.close`) deletes the read state too: a room made
/// again under the same id has no read positions and counts only its own
/// messages.
pub(super) async fn owner_close_forgets_read_state(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob) = (user("ann"), user("bob"));
    let r = room("r-cr", "CRS222", 50, false);
    create(store, &r, &ann, "a1").await;
    join(store, "r-cr", &bob).await;
    for text in ["one", "two", "three"] {
        appended(send(store, "r-cr", &bob, text, None).await);
    }
    let closed = Event::RoomClosed { by: ann.clone() };
    assert_eq!(
        store
            .close_by_owner("r-cr", &ann.id, &closed)
            .await
            .expect("close"),
        ModOutcome::Done(())
    );
    create(store, &r, &ann, "a2").await;
    store
        .remember_room(&ann.id, "r-cr", now_ms())
        .await
        .expect("remember");
    join(store, "r-cr", &bob).await;
    assert_eq!(
        unread(store, &bob, "r-cr").await,
        (0, 0),
        "bob's old position is gone"
    );
    for text in ["four", "five", "six"] {
        appended(send(store, "r-cr", &bob, text, None).await);
    }
    assert_eq!(
        unread(store, &ann, "r-cr").await.1,
        3,
        "only the new room's messages count"
    );
}

/// With replica acknowledgements on one Redis: `room.read` waits for the
/// replica like every durable write (with the only replica gone it is
/// `Unconfirmed`), and a send the replicas did not confirm moves its
/// author's position without showing it: `room.mine` and receipts stop at
/// the seq readers may see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_read_state_waits_for_replicas() {
    let redis = RedisServer::start().await;
    let mut replica = redis.start_replica().await;
    let store = acks_store(&redis);
    let store: &dyn Store = &store;
    let (ann, bob) = (user("ann"), user("bob"));
    create(store, &room("r-racks", "RAK222", 50, false), &ann, "a1").await;
    store
        .remember_room(&ann.id, "r-racks", now_ms())
        .await
        .expect("index");
    join(store, "r-racks", &bob).await;
    // Every script is loaded while the replica confirms (a first use after
    // it is gone waits twice, for NOSCRIPT and again, and times out).
    appended(send(store, "r-racks", &ann, "confirmed", None).await);
    store.mark_read("r-racks", &bob.id, 1).await.expect("read");
    store.my_rooms(&ann.id, 10).await.expect("mine");
    store.receipts("r-racks", &ann.id).await.expect("receipts");
    let visible = store
        .room("r-racks")
        .await
        .expect("room")
        .expect("exists")
        .last_seq;
    replica.kill();
    let read = store.mark_read("r-racks", &bob.id, visible).await;
    assert!(
        matches!(read, Err(StoreError::Unconfirmed(_))),
        "room.read waits for the replica: {read:?}"
    );
    let sent = store
        .append(
            &msg("r-racks", &ann, MessageKind::Text, "unconfirmed"),
            None,
        )
        .await;
    assert!(
        matches!(sent, Err(StoreError::Unconfirmed(_))),
        "the send is not confirmed: {sent:?}"
    );
    let mine = store.my_rooms(&ann.id, 10).await.expect("mine");
    let r = mine
        .iter()
        .find(|m| m.room.id == "r-racks")
        .expect("listed");
    assert_eq!(r.room.last_seq, visible, "readers see nothing new");
    assert_eq!(r.read_seq, visible, "the author's position stops there");
    match store.receipts("r-racks", &ann.id).await.expect("receipts") {
        ReceiptsOutcome::Reads(reads) => {
            for (u, seq) in reads {
                assert!(seq <= visible, "{} at {seq}, past {visible}", u.id);
            }
        }
        other => panic!("receipts: {other:?}"),
    }
}
