//! Conformance cases of `ModerationStore` at its edges (issue 14): the
//! hand-over to someone absent or muted, unmute and unban refusals and an
//! unban by a moderator, kicks and bans in a big room (no system message),
//! the bounded `room.bans` listing, an edit after a close and a send retried
//! after a mute. Plus, outside the engine matrix,
//! every moderation write on Redis waiting for its replica acknowledgements.

use huddle::model::Role;
use huddle::store::moderation::MAX_BANS_LISTED;
use huddle::store::{BIG_ROOM, ModOutcome, Removal, RoomChanges, StoreError};

use super::moderation::{forbidden, join_ok, remove, roles_of};
use super::*;

pub(super) async fn handover_to_the_absent_and_the_muted(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob, cat, zed) = (user("ann"), user("bob"), user("cat"), user("zed"));
    create(store, &room("r-hand", "HND222", 50, false), &ann, "a1").await;
    join_ok(store, "r-hand", &bob, "b1").await;
    join_ok(store, "r-hand", &cat, "c1").await;
    // Someone who never joined, and someone who left: refused, nothing
    // changes.
    store
        .leave("r-hand", &bob, "b1", &note("r-hand", "left"))
        .await
        .expect("leave");
    for absent in [&zed, &bob] {
        assert_eq!(
            store
                .set_role("r-hand", &ann.id, &absent.id, Role::Owner)
                .await
                .expect("role"),
            ModOutcome::NotParticipant,
            "{}",
            absent.id
        );
    }
    assert_eq!(
        roles_of(store, "r-hand", &[&ann, &bob, &zed]).await,
        [Role::Owner, Role::Member, Role::Member]
    );
    // A muted participant takes the room over: the mute goes with the
    // hand-over (nobody could lift it from an owner).
    store
        .mute("r-hand", &ann.id, &cat.id, Some(t.now() + 600_000))
        .await
        .expect("mute");
    assert_eq!(
        store
            .set_role("r-hand", &ann.id, &cat.id, Role::Owner)
            .await
            .expect("role"),
        ModOutcome::Done(())
    );
    assert_eq!(
        roles_of(store, "r-hand", &[&ann, &cat]).await,
        [Role::Moderator, Role::Owner]
    );
    let standing = store
        .standings("r-hand", std::slice::from_ref(&cat.id))
        .await
        .expect("standings");
    assert_eq!(standing[0].muted_until, None, "the new owner is not muted");
    appended(send(store, "r-hand", &cat, "mine now", None).await);
    // And the old owner, a moderator now, may not touch the new one.
    forbidden(
        store
            .mute("r-hand", &ann.id, &cat.id, Some(t.now() + 600_000))
            .await
            .expect("mute"),
    );
}

pub(super) async fn unmute_and_unban_refusals(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob, cat, dan) = (user("ann"), user("bob"), user("cat"), user("dan"));
    create(store, &room("r-lift", "LFT222", 50, false), &ann, "a1").await;
    for (who, conn) in [(&bob, "b1"), (&cat, "c1"), (&dan, "d1")] {
        join_ok(store, "r-lift", who, conn).await;
    }
    store
        .set_role("r-lift", &ann.id, &bob.id, Role::Moderator)
        .await
        .expect("role");
    // A member may not unmute: the mute stays.
    let until = t.now() + 600_000;
    store
        .mute("r-lift", &ann.id, &dan.id, Some(until))
        .await
        .expect("mute");
    forbidden(
        store
            .mute("r-lift", &cat.id, &dan.id, None)
            .await
            .expect("unmute"),
    );
    let muted = |s: Vec<huddle::store::Standing>| s[0].muted_until;
    assert_eq!(
        muted(
            store
                .standings("r-lift", std::slice::from_ref(&dan.id))
                .await
                .expect("s")
        ),
        Some(until)
    );
    // A moderator may not unmute another moderator (muted by the owner).
    store
        .set_role("r-lift", &ann.id, &cat.id, Role::Moderator)
        .await
        .expect("role");
    store
        .mute("r-lift", &ann.id, &cat.id, Some(until))
        .await
        .expect("mute");
    forbidden(
        store
            .mute("r-lift", &bob.id, &cat.id, None)
            .await
            .expect("unmute"),
    );
    assert_eq!(
        muted(
            store
                .standings("r-lift", std::slice::from_ref(&cat.id))
                .await
                .expect("s")
        ),
        Some(until)
    );
    // A moderator unmutes a member.
    assert_eq!(
        store
            .mute("r-lift", &bob.id, &dan.id, None)
            .await
            .expect("unmute"),
        ModOutcome::Done(())
    );
    assert_eq!(
        muted(
            store
                .standings("r-lift", std::slice::from_ref(&dan.id))
                .await
                .expect("s")
        ),
        None
    );
    // Unbans: a member may not, and the ban holds; a moderator may, once.
    store
        .set_role("r-lift", &ann.id, &cat.id, Role::Member)
        .await
        .expect("role");
    assert_eq!(
        remove(store, "r-lift", &ann, &dan, Some(-1)).await,
        ModOutcome::Done(Removal::Left)
    );
    forbidden(
        store
            .unban("r-lift", &cat.id, &dan.id)
            .await
            .expect("unban"),
    );
    assert_eq!(
        store
            .join("r-lift", &dan, "d2", &note("r-lift", "joined"))
            .await
            .expect("join"),
        JoinOutcome::Banned { until: -1 }
    );
    let ModOutcome::Done(bans) = store.bans("r-lift", &bob.id).await.expect("bans") else {
        panic!("a moderator lists bans")
    };
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(
        store
            .unban("r-lift", &bob.id, &dan.id)
            .await
            .expect("unban"),
        ModOutcome::Done(true)
    );
    assert_eq!(
        store
            .unban("r-lift", &bob.id, &dan.id)
            .await
            .expect("unban"),
        ModOutcome::Done(false),
        "nothing left to lift"
    );
    join_ok(store, "r-lift", &dan, "d3").await;
}

pub(super) async fn big_room_kick_and_ban(t: &Engine) {
    let store = t.store.as_ref();
    let ann = user("ann");
    let id = "r-bigmod";
    create(store, &room(id, "BGM222", 1000, false), &ann, "a1").await;
    let crowd: Vec<User> = (1..=BIG_ROOM as usize + 1)
        .map(|i| User {
            id: format!("u-{i:04}"),
            name: format!("user {i:04}"),
            image: None,
        })
        .collect();
    for u in &crowd {
        // Quietly past BIG_ROOM.
        store
            .join(id, u, &format!("c-{}", u.id), &note(id, "joined"))
            .await
            .expect("join");
    }
    let before = store.room(id).await.expect("room").expect("exists");
    assert_eq!(before.participant_count, BIG_ROOM + 2);
    // More than BIG_ROOM participants: removed quietly, no system message.
    assert_eq!(
        remove(store, id, &ann, &crowd[0], None).await,
        ModOutcome::Done(Removal::LeftQuietly(BIG_ROOM + 1))
    );
    assert_eq!(
        remove(store, id, &ann, &crowd[1], Some(-1)).await,
        ModOutcome::Done(Removal::LeftQuietly(BIG_ROOM))
    );
    let after = store.room(id).await.expect("room").expect("exists");
    assert_eq!(after.last_seq, before.last_seq, "no system message");
    assert_eq!(after.participant_count, BIG_ROOM);
    for u in &crowd[..2] {
        assert!(!store.is_participant(id, &u.id).await.expect("p"));
    }
    assert_eq!(
        store
            .join(id, &crowd[1], "c-again", &note(id, "joined"))
            .await
            .expect("join"),
        JoinOutcome::Banned { until: -1 }
    );
    // At BIG_ROOM participants the room is small again: a system message.
    assert_eq!(
        remove(store, id, &ann, &crowd[2], None).await,
        ModOutcome::Done(Removal::Left)
    );
    let last = store.room(id).await.expect("room").expect("exists");
    assert_eq!(last.last_seq, before.last_seq + 1);
}

pub(super) async fn ban_listing_is_bounded(t: &Engine) {
    let store = t.store.as_ref();
    let ann = user("ann");
    let id = "r-manybans";
    create(store, &room(id, "MNB222", 50, false), &ann, "a1").await;
    let base = (t.now() + 3_600_000) as i64;
    // One open-ended ban, then MAX_BANS_LISTED timed ones, of users who
    // never joined: the open-ended one is left out of the listing.
    let open = user("open");
    remove(store, id, &ann, &open, Some(-1)).await;
    for i in 0..MAX_BANS_LISTED {
        let u = user(&format!("b{i:04}"));
        // Later users end sooner: the listing is not in ban order by chance.
        let until = base + (MAX_BANS_LISTED - i) as i64;
        assert_eq!(
            remove(store, id, &ann, &u, Some(until)).await,
            ModOutcome::Done(Removal::Absent)
        );
    }
    let ModOutcome::Done(bans) = store.bans(id, &ann.id).await.expect("bans") else {
        panic!("the owner lists bans")
    };
    assert_eq!(bans.len(), MAX_BANS_LISTED);
    assert!(bans.iter().all(|b| b.user.id != open.id), "open-ended last");
    let ids: Vec<&str> = bans.iter().map(|b| b.user.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ordered by user id");
    // One more ban ending soonest pushes out the one ending last (b0000).
    let soon = user("soon");
    remove(store, id, &ann, &soon, Some(base)).await;
    let ModOutcome::Done(bans) = store.bans(id, &ann.id).await.expect("bans") else {
        panic!("the owner lists bans")
    };
    assert_eq!(bans.len(), MAX_BANS_LISTED);
    assert!(bans.iter().any(|b| b.user.id == soon.id));
    assert!(bans.iter().all(|b| b.user.id != user("b0000").id));
    // Every ban still holds, listed or not.
    assert_eq!(
        store
            .join(id, &open, "o1", &note(id, "joined"))
            .await
            .expect("join"),
        JoinOutcome::Banned { until: -1 }
    );
}

/// With replica acknowledgements, every moderation write waits for them:
/// with the only replica gone each one is `Unconfirmed`, whatever the script
/// answered (a refusal, a ban of someone absent, a close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_moderation_writes_wait_for_replicas() {
    let redis = RedisServer::start().await;
    let mut replica = redis.start_replica().await;
    let store = acks_store(&redis);
    let store: &dyn Store = &store;
    let (ann, bob, zed) = (user("ann"), user("bob"), user("zed"));
    create(store, &room("r-acks", "ACK222", 50, false), &ann, "a1").await;
    join_ok(store, "r-acks", &bob, "b1").await;
    // Every script is loaded while the replica confirms (a first use after
    // it is gone would wait twice, for NOSCRIPT and again, and time out).
    let warm = RoomChanges {
        name: Some("warm".into()),
        ..RoomChanges::default()
    };
    store
        .update_room("r-acks", &ann.id, &warm)
        .await
        .expect("update");
    store
        .set_role("r-acks", &ann.id, &bob.id, Role::Member)
        .await
        .expect("role");
    store
        .mute("r-acks", &ann.id, &bob.id, None)
        .await
        .expect("unmute");
    store
        .unban("r-acks", &ann.id, &zed.id)
        .await
        .expect("unban");
    remove(store, "r-acks", &ann, &user("yan"), Some(-1)).await;
    let closed = Event::RoomClosed { by: ann.clone() };
    forbidden(
        store
            .close_by_owner("r-acks", &bob.id, &closed)
            .await
            .expect("close"),
    );
    replica.kill();
    let changes = RoomChanges {
        name: Some("renamed".into()),
        ..RoomChanges::default()
    };
    unconfirmed(
        "room.update",
        store.update_room("r-acks", &ann.id, &changes).await.err(),
    );
    unconfirmed(
        "member.role",
        store
            .set_role("r-acks", &ann.id, &bob.id, Role::Moderator)
            .await
            .err(),
    );
    unconfirmed(
        "a refused member.role",
        store
            .set_role("r-acks", &bob.id, &ann.id, Role::Member)
            .await
            .err(),
    );
    unconfirmed(
        "member.mute",
        store
            .mute("r-acks", &ann.id, &bob.id, Some(now_ms() + 60_000))
            .await
            .err(),
    );
    unconfirmed(
        "member.unmute",
        store.mute("r-acks", &ann.id, &bob.id, None).await.err(),
    );
    let ban = huddle::store::BanRecord {
        user: zed.clone(),
        until: -1,
        by: ann.clone(),
        reason: None,
    };
    let removed = Event::MemberRemoved {
        user: zed.clone(),
        by: ann.clone(),
        reason: None,
        banned_until: Some(-1),
    };
    unconfirmed(
        "member.ban of someone absent",
        store
            .remove_member(
                "r-acks",
                huddle::store::RemoveRequest {
                    actor: &ann.id,
                    target: &zed,
                    ban: Some(&ban),
                    event: &removed,
                    note: &note("r-acks", "removed"),
                },
            )
            .await
            .err(),
    );
    unconfirmed(
        "member.unban",
        store.unban("r-acks", &ann.id, &zed.id).await.err(),
    );
    unconfirmed(
        "room.close",
        store.close_by_owner("r-acks", &ann.id, &closed).await.err(),
    );
    // The close went through on the master: the code and index are freed.
    assert_eq!(store.room("r-acks").await.expect("room"), None);
    assert_eq!(store.room_id_by_code("ACK222").await.expect("code"), None);
}

/// An edit or deletion landing after the owner closed the room is `Gone`,
/// and does not bring a partial room back (on Redis it would recreate the
/// room hash, and every later verb would fail).
pub(super) async fn replace_after_close(t: &Engine) {
    let store = t.store.as_ref();
    let ann = user("ann");
    let r = room("r-late-edit", "LTE222", 50, false);
    create(store, &r, &ann, "a1").await;
    let said = appended(send(store, "r-late-edit", &ann, "before", None).await);
    let stored = store
        .message("r-late-edit", &said.id)
        .await
        .expect("read")
        .expect("exists");
    let closed = Event::RoomClosed { by: ann.clone() };
    assert_eq!(
        store
            .close_by_owner("r-late-edit", &ann.id, &closed)
            .await
            .expect("close"),
        ModOutcome::Done(())
    );
    let mut edited = said.clone();
    edited.content = "too late".into();
    let mut deleted = said.clone();
    deleted.deleted = true;
    for event in [
        Event::MessageUpdated(edited),
        Event::MessageDeleted(deleted),
    ] {
        assert_eq!(
            store
                .replace("r-late-edit", &stored.raw, &event)
                .await
                .expect("replace"),
            ReplaceOutcome::Gone,
            "{}",
            event.name()
        );
    }
    assert_eq!(store.room("r-late-edit").await.expect("room"), None);
    // The room can be made again under its id, whole.
    create(store, &r, &ann, "a2").await;
    appended(send(store, "r-late-edit", &ann, "again", None).await);
}

/// A send retried with its `client_msg_id` after its author was muted gets
/// the message stored before the mute; a new send is refused.
pub(super) async fn retry_after_mute(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob) = (user("ann"), user("bob"));
    create(
        store,
        &room("r-retry-mute", "RTM222", 50, false),
        &ann,
        "a1",
    )
    .await;
    join_ok(store, "r-retry-mute", &bob, "b1").await;
    let first = appended(send(store, "r-retry-mute", &bob, "hello", Some("c1")).await);
    let until = t.now() + 600_000;
    store
        .mute("r-retry-mute", &ann.id, &bob.id, Some(until))
        .await
        .expect("mute");
    match send(store, "r-retry-mute", &bob, "hello", Some("c1")).await {
        AppendOutcome::Duplicate(m) => assert_eq!(m.id, first.id),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    let before = store
        .room("r-retry-mute")
        .await
        .expect("room")
        .expect("exists");
    assert_eq!(
        send(store, "r-retry-mute", &bob, "new", Some("c2")).await,
        AppendOutcome::Muted(until)
    );
    let after = store
        .room("r-retry-mute")
        .await
        .expect("room")
        .expect("exists");
    assert_eq!(after.last_seq, before.last_seq, "nothing was written");
}

/// `EventLog::presence`, what a node re-checks after a pub/sub loss: which
/// users are no longer participants (with their ban), and whether the room
/// is gone.
pub(super) async fn presence_for_a_resync(t: &Engine) {
    use huddle::events::{EventLog, Presence};
    let store = t.store.as_ref();
    let (ann, bob, cat, zed) = (user("ann"), user("bob"), user("cat"), user("zed"));
    create(store, &room("r-pres", "PRS222", 50, false), &ann, "a1").await;
    join_ok(store, "r-pres", &bob, "b1").await;
    join_ok(store, "r-pres", &cat, "c1").await;
    let ids: Vec<String> = [&ann, &bob, &cat, &zed]
        .iter()
        .map(|u| u.id.clone())
        .collect();
    assert_eq!(
        EventLog::presence(store, "r-pres", &ids)
            .await
            .expect("presence"),
        Presence {
            exists: true,
            gone: vec![None, None, None, Some(None)],
        },
        "zed never joined"
    );
    // Bob kicked, cat banned for good.
    remove(store, "r-pres", &ann, &bob, None).await;
    remove(store, "r-pres", &ann, &cat, Some(-1)).await;
    let after = EventLog::presence(store, "r-pres", &ids)
        .await
        .expect("presence");
    assert!(after.exists);
    assert_eq!(after.gone[0], None, "the owner stays");
    assert_eq!(after.gone[1], Some(None), "kicked, no ban");
    let Some(Some(ban)) = &after.gone[2] else {
        panic!("cat is banned: {after:?}")
    };
    assert_eq!(
        (&ban.user, ban.until, &ban.by.id),
        (&cat, -1, &ann.id),
        "{ban:?}"
    );
    assert_eq!(after.gone[3], Some(None));
    // Closed: the room is gone.
    store
        .close_by_owner("r-pres", &ann.id, &Event::RoomClosed { by: ann.clone() })
        .await
        .expect("close");
    let closed = EventLog::presence(store, "r-pres", &ids)
        .await
        .expect("presence");
    assert!(!closed.exists, "{closed:?}");
}

/// With replica acknowledgements, a join or leave that writes no event (a
/// second connection of a member; a big room's quiet path) still waits for
/// them: with the only replica gone each is `Unconfirmed`, not a success
/// the replicas may never have seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_joins_and_leaves_without_an_event_wait_for_replicas() {
    let redis = RedisServer::start().await;
    let mut replica = redis.start_replica().await;
    let store = acks_store(&redis);
    let store: &dyn Store = &store;
    let (ann, bob) = (user("ann"), user("bob"));
    create(store, &room("r-qa", "QAK222", 50, false), &ann, "a1").await;
    // Both scripts are loaded while the replica confirms.
    join_ok(store, "r-qa", &bob, "b1").await;
    let left = store
        .leave("r-qa", &bob, "b1", &note("r-qa", "left"))
        .await
        .expect("leave");
    assert!(
        matches!(left, LeaveOutcome::Left { last: true, .. }),
        "{left:?}"
    );
    join_ok(store, "r-qa", &bob, "b1").await;
    replica.kill();
    unconfirmed(
        "a second connection's join",
        store
            .join("r-qa", &bob, "b2", &note("r-qa", "joined"))
            .await
            .err(),
    );
    unconfirmed(
        "a leave of one of two connections",
        store
            .leave("r-qa", &bob, "b2", &note("r-qa", "left"))
            .await
            .err(),
    );
    // After a restart the scripts are gone: the first use reloads the
    // script, and its second `WAIT` gets only what is left of the first's
    // time. The first `WAIT` used it all (no replica), so the script, run
    // past its deadline, refuses itself: a clear "nothing was written",
    // not a timeout that leaves the write in doubt.
    redis.command(&["SCRIPT", "FLUSH"]).await;
    match store
        .join("r-qa", &bob, "b3", &note("r-qa", "joined"))
        .await
        .err()
    {
        Some(StoreError::Unavailable(why)) if why.contains("nothing was written") => {}
        Some(StoreError::Unconfirmed(_)) => {}
        other => panic!("a join whose script had to be loaded again: {other:?}"),
    }
    unconfirmed(
        "the same join tried again",
        store
            .join("r-qa", &bob, "b3", &note("r-qa", "joined"))
            .await
            .err(),
    );
}
