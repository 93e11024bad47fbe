//! Conformance cases of `ModerationStore` (protocol 1.1): roles and the
//! hand-over, kicks, bans (timed and open-ended, by id, expiring by
//! themselves), mutes inside the send and edit paths, room updates, and the
//! owner's close deleting everything. Every refusal shows that nothing
//! changed.

use huddle::model::Role;
use huddle::store::{BanRecord, ModOutcome, Removal, RemoveRequest, RoomChanges};

use super::*;

pub(super) fn forbidden<T: std::fmt::Debug>(out: ModOutcome<T>) {
    assert!(
        matches!(out, ModOutcome::Forbidden { .. }),
        "expected Forbidden, got {out:?}"
    );
}

pub(super) async fn roles_of(store: &dyn Store, room: &str, users: &[&User]) -> Vec<Role> {
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    store.roles(room, &ids).await.expect("roles")
}

pub(super) async fn join_ok(store: &dyn Store, room: &str, who: &User, conn: &str) {
    let out = store
        .join(room, who, conn, &note(room, "joined"))
        .await
        .expect("join");
    assert!(
        matches!(out, JoinOutcome::Joined { .. }),
        "{} should join: {out:?}",
        who.id
    );
}

/// A kick or ban of `target` by `actor`.
pub(super) async fn remove(
    store: &dyn Store,
    room: &str,
    actor: &User,
    target: &User,
    until: Option<i64>,
) -> ModOutcome<Removal> {
    let ban = until.map(|until| BanRecord {
        user: target.clone(),
        until,
        by: actor.clone(),
        reason: Some("spam".into()),
    });
    let event = Event::MemberRemoved {
        user: target.clone(),
        by: actor.clone(),
        reason: Some("spam".into()),
        banned_until: until,
    };
    store
        .remove_member(
            room,
            RemoveRequest {
                actor: &actor.id,
                target,
                ban: ban.as_ref(),
                event: &event,
                note: &note(room, "removed"),
            },
        )
        .await
        .expect("remove")
}

pub(super) async fn roles_and_handover(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob, cat) = (user("ann"), user("bob"), user("cat"));
    create(store, &room("r-roles", "RLS222", 50, false), &ann, "a1").await;
    join_ok(store, "r-roles", &bob, "b1").await;
    join_ok(store, "r-roles", &cat, "c1").await;
    assert_eq!(
        roles_of(store, "r-roles", &[&ann, &bob, &cat]).await,
        [Role::Owner, Role::Member, Role::Member]
    );
    // A member may not appoint anyone: nothing changes.
    forbidden(
        store
            .set_role("r-roles", &cat.id, &bob.id, Role::Moderator)
            .await
            .expect("role"),
    );
    assert_eq!(roles_of(store, "r-roles", &[&bob]).await, [Role::Member]);
    assert_eq!(
        store
            .set_role("r-roles", &ann.id, &bob.id, Role::Moderator)
            .await
            .expect("role"),
        ModOutcome::Done(())
    );
    assert_eq!(roles_of(store, "r-roles", &[&bob]).await, [Role::Moderator]);
    // Only the owner sets roles; nobody acts on the owner.
    forbidden(
        store
            .set_role("r-roles", &bob.id, &cat.id, Role::Moderator)
            .await
            .expect("role"),
    );
    forbidden(remove(store, "r-roles", &bob, &ann, None).await);
    assert!(store.is_participant("r-roles", &ann.id).await.expect("p"));
    // A moderator may not act on another moderator.
    store
        .set_role("r-roles", &ann.id, &cat.id, Role::Moderator)
        .await
        .expect("role");
    forbidden(remove(store, "r-roles", &bob, &cat, None).await);
    assert!(store.is_participant("r-roles", &cat.id).await.expect("p"));
    store
        .set_role("r-roles", &ann.id, &cat.id, Role::Member)
        .await
        .expect("role");
    assert_eq!(roles_of(store, "r-roles", &[&cat]).await, [Role::Member]);
    // Promoting someone who is not a participant is refused.
    let zed = user("zed");
    assert_eq!(
        store
            .set_role("r-roles", &ann.id, &zed.id, Role::Moderator)
            .await
            .expect("role"),
        ModOutcome::NotParticipant
    );
    // The hand-over: bob owns the room, ann moderates it.
    assert_eq!(
        store
            .set_role("r-roles", &ann.id, &bob.id, Role::Owner)
            .await
            .expect("role"),
        ModOutcome::Done(())
    );
    assert_eq!(
        roles_of(store, "r-roles", &[&ann, &bob, &cat]).await,
        [Role::Moderator, Role::Owner, Role::Member]
    );
    forbidden(
        store
            .set_role("r-roles", &ann.id, &cat.id, Role::Moderator)
            .await
            .expect("role"),
    );
    forbidden(remove(store, "r-roles", &ann, &bob, None).await);
    // The owner stays owner after leaving (roles are durable).
    store
        .leave("r-roles", &bob, "b1", &note("r-roles", "left"))
        .await
        .expect("leave");
    assert_eq!(roles_of(store, "r-roles", &[&bob]).await, [Role::Owner]);
}

pub(super) async fn kicks_and_bans(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob, cat) = (user("ann"), user("bob"), user("cat"));
    create(store, &room("r-ban", "BAN222", 50, false), &ann, "a1").await;
    join_ok(store, "r-ban", &bob, "b1").await;
    join_ok(store, "r-ban", &bob, "b2").await;
    join_ok(store, "r-ban", &cat, "c1").await;
    // A member may not kick: nothing changes.
    let before = store.room("r-ban").await.expect("room").expect("exists");
    forbidden(remove(store, "r-ban", &cat, &bob, None).await);
    assert!(store.is_participant("r-ban", &bob.id).await.expect("p"));
    assert_eq!(
        store.room("r-ban").await.expect("room").expect("exists"),
        before
    );
    // A kick removes every connection and writes the system message.
    assert_eq!(
        remove(store, "r-ban", &ann, &bob, None).await,
        ModOutcome::Done(Removal::Left)
    );
    assert!(!store.is_participant("r-ban", &bob.id).await.expect("p"));
    let online = store.online("r-ban").await.expect("online");
    assert!(online.iter().all(|u| u.id != bob.id), "{online:?}");
    let after = store.room("r-ban").await.expect("room").expect("exists");
    assert_eq!(after.last_seq, before.last_seq + 1, "one system message");
    assert_eq!(after.participant_count, 2);
    // Kicked, not banned: back in.
    join_ok(store, "r-ban", &bob, "b3").await;
    // A timed ban.
    let until = (t.now() + 1500) as i64;
    assert_eq!(
        remove(store, "r-ban", &ann, &bob, Some(until)).await,
        ModOutcome::Done(Removal::Left)
    );
    let refused = store
        .join("r-ban", &bob, "b4", &note("r-ban", "joined"))
        .await
        .expect("join");
    assert_eq!(refused, JoinOutcome::Banned { until });
    assert!(!store.is_participant("r-ban", &bob.id).await.expect("p"));
    let ModOutcome::Done(bans) = store.bans("r-ban", &ann.id).await.expect("bans") else {
        panic!("the owner lists bans")
    };
    assert_eq!(bans.len(), 1);
    assert_eq!(
        (bans[0].user.id.as_str(), bans[0].until),
        (bob.id.as_str(), until)
    );
    assert_eq!(bans[0].by.id, ann.id);
    assert_eq!(bans[0].reason.as_deref(), Some("spam"));
    forbidden(store.bans("r-ban", &cat.id).await.expect("bans"));
    // It ends by itself.
    t.pass(Duration::from_millis(1700)).await;
    join_ok(store, "r-ban", &bob, "b5").await;
    let ModOutcome::Done(bans) = store.bans("r-ban", &ann.id).await.expect("bans") else {
        panic!("the owner lists bans")
    };
    assert!(bans.is_empty(), "expired bans are not listed: {bans:?}");
    // An open-ended ban of someone who never joined.
    let zed = user("zed");
    assert_eq!(
        remove(store, "r-ban", &ann, &zed, Some(-1)).await,
        ModOutcome::Done(Removal::Absent)
    );
    let refused = store
        .join("r-ban", &zed, "z1", &note("r-ban", "joined"))
        .await
        .expect("join");
    assert_eq!(refused, JoinOutcome::Banned { until: -1 });
    // Unbanning: a member may not; the owner may.
    forbidden(store.unban("r-ban", &cat.id, &zed.id).await.expect("unban"));
    assert!(matches!(
        store
            .join("r-ban", &zed, "z1", &note("r-ban", "joined"))
            .await
            .expect("join"),
        JoinOutcome::Banned { .. }
    ));
    assert_eq!(
        store.unban("r-ban", &ann.id, &zed.id).await.expect("unban"),
        ModOutcome::Done(true)
    );
    join_ok(store, "r-ban", &zed, "z1").await;
    // Banning a moderator takes the role away.
    store
        .set_role("r-ban", &ann.id, &cat.id, Role::Moderator)
        .await
        .expect("role");
    remove(store, "r-ban", &ann, &cat, Some(-1)).await;
    assert_eq!(roles_of(store, "r-ban", &[&cat]).await, [Role::Member]);
    assert_eq!(
        store.unban("r-ban", &ann.id, &cat.id).await.expect("unban"),
        ModOutcome::Done(true)
    );
}

pub(super) async fn mutes_in_the_send_path(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob) = (user("ann"), user("bob"));
    create(store, &room("r-mute", "MUT222", 50, false), &ann, "a1").await;
    join_ok(store, "r-mute", &bob, "b1").await;
    let said = appended(send(store, "r-mute", &bob, "before", None).await);
    let until = t.now() + 60_000;
    // A member may not mute anyone (here: the owner).
    forbidden(
        store
            .mute("r-mute", &bob.id, &ann.id, Some(until))
            .await
            .expect("mute"),
    );
    assert_eq!(
        store
            .mute("r-mute", &ann.id, &bob.id, Some(until))
            .await
            .expect("mute"),
        ModOutcome::Done(())
    );
    let standing = store
        .standings("r-mute", &[bob.id.clone(), ann.id.clone()])
        .await
        .expect("standings");
    assert_eq!(standing[0].muted_until, Some(until));
    assert_eq!(standing[1].muted_until, None);
    let before = store.room("r-mute").await.expect("room").expect("exists");
    assert_eq!(
        send(store, "r-mute", &bob, "while muted", None).await,
        AppendOutcome::Muted(until)
    );
    // An edit is refused too; nothing is written.
    let stored = store
        .message("r-mute", &said.id)
        .await
        .expect("read")
        .expect("exists");
    let mut edited = said.clone();
    edited.content = "edited while muted".into();
    let out = store
        .replace("r-mute", &stored.raw, &Event::MessageUpdated(edited))
        .await
        .expect("replace");
    assert_eq!(out, ReplaceOutcome::Muted(until));
    let after = store.room("r-mute").await.expect("room").expect("exists");
    assert_eq!(after.last_seq, before.last_seq, "nothing was written");
    let page = store.history("r-mute", None, 50).await.expect("history");
    assert!(page.messages.iter().all(|m| m.content != "while muted"));
    assert_eq!(
        store
            .message("r-mute", &said.id)
            .await
            .expect("read")
            .expect("exists")
            .message
            .content,
        "before"
    );
    // Others still send; unmuted, bob sends again.
    appended(send(store, "r-mute", &ann, "hello", None).await);
    store
        .mute("r-mute", &ann.id, &bob.id, None)
        .await
        .expect("unmute");
    appended(send(store, "r-mute", &bob, "after", None).await);
    // A timed mute ends by itself.
    let until = t.now() + 1000;
    store
        .mute("r-mute", &ann.id, &bob.id, Some(until))
        .await
        .expect("mute");
    assert_eq!(
        send(store, "r-mute", &bob, "muted again", None).await,
        AppendOutcome::Muted(until)
    );
    t.pass(Duration::from_millis(1200)).await;
    appended(send(store, "r-mute", &bob, "free again", None).await);
}

pub(super) async fn room_updates(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob, cat) = (user("ann"), user("bob"), user("cat"));
    create(store, &room("r-upd", "UPD222", 50, false), &ann, "a1").await;
    join_ok(store, "r-upd", &bob, "b1").await;
    join_ok(store, "r-upd", &cat, "c1").await;
    let before = store.room("r-upd").await.expect("room").expect("exists");
    let rename = RoomChanges {
        name: Some("renamed".into()),
        ..RoomChanges::default()
    };
    forbidden(
        store
            .update_room("r-upd", &cat.id, &rename)
            .await
            .expect("update"),
    );
    let too_small = RoomChanges {
        max_participants: Some(2),
        name: Some("renamed".into()),
        ..RoomChanges::default()
    };
    assert_eq!(
        store
            .update_room("r-upd", &ann.id, &too_small)
            .await
            .expect("update"),
        ModOutcome::TooSmall(3)
    );
    assert_eq!(
        store.room("r-upd").await.expect("room").expect("exists"),
        before,
        "refusals change nothing"
    );
    store
        .set_role("r-upd", &ann.id, &bob.id, Role::Moderator)
        .await
        .expect("role");
    let change = RoomChanges {
        name: Some("renamed".into()),
        max_participants: Some(3),
        private: Some(true),
    };
    let ModOutcome::Done(updated) = store
        .update_room("r-upd", &bob.id, &change)
        .await
        .expect("update")
    else {
        panic!("a moderator updates the room")
    };
    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.max_participants, 3);
    assert!(updated.private);
    assert_eq!(
        store.room("r-upd").await.expect("room").expect("exists"),
        updated
    );
    let listed = store.list_public(50).await.expect("list");
    assert!(listed.iter().all(|r| r.id != "r-upd"), "private now");
    assert_eq!(
        store
            .update_room("r-none", &ann.id, &rename)
            .await
            .expect("update"),
        ModOutcome::NoRoom
    );
}

pub(super) async fn owner_close_deletes_everything(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob, zed) = (user("ann"), user("bob"), user("zed"));
    let r = room("r-close", "CLS222", 50, false);
    create(store, &r, &ann, "a1").await;
    join_ok(store, "r-close", &bob, "b1").await;
    store
        .set_role("r-close", &ann.id, &bob.id, Role::Moderator)
        .await
        .expect("role");
    remove(store, "r-close", &ann, &zed, Some(-1)).await;
    store
        .mute("r-close", &ann.id, &bob.id, Some(t.now() + 60_000))
        .await
        .expect("mute");
    let closed = Event::RoomClosed { by: ann.clone() };
    // A moderator may not close the room: it stays.
    forbidden(
        store
            .close_by_owner("r-close", &bob.id, &closed)
            .await
            .expect("close"),
    );
    assert!(store.room("r-close").await.expect("room").is_some());
    assert_eq!(
        store
            .close_by_owner("r-close", &ann.id, &closed)
            .await
            .expect("close"),
        ModOutcome::Done(())
    );
    assert_eq!(store.room("r-close").await.expect("room"), None);
    assert_eq!(store.room_id_by_code("CLS222").await.expect("code"), None);
    assert!(!store.is_participant("r-close", &bob.id).await.expect("p"));
    assert!(store.online("r-close").await.expect("online").is_empty());
    assert_eq!(
        store
            .join("r-close", &bob, "b2", &note("r-close", "joined"))
            .await
            .expect("join"),
        JoinOutcome::NoRoom
    );
    assert_eq!(
        store.bans("r-close", &ann.id).await.expect("bans"),
        ModOutcome::NoRoom
    );
    assert_eq!(
        store
            .close_by_owner("r-close", &ann.id, &closed)
            .await
            .expect("close"),
        ModOutcome::NoRoom
    );
    // Made again under the same id and code, nothing of the old room is
    // left: no roles, bans or mutes.
    create(store, &r, &bob, "b3").await;
    join_ok(store, "r-close", &zed, "z1").await;
    assert_eq!(
        roles_of(store, "r-close", &[&ann, &bob]).await,
        [Role::Owner, Role::Member],
        "the owner is the creator again (created_by); bob is no moderator"
    );
    appended(send(store, "r-close", &bob, "not muted", None).await);
}

pub(super) async fn idle_close_forgets_moderation(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob, zed) = (user("ann"), user("bob"), user("zed"));
    let r = room("r-idle-mod", "IDM222", 50, false);
    create(store, &r, &ann, "a1").await;
    join_ok(store, "r-idle-mod", &bob, "b1").await;
    store
        .set_role("r-idle-mod", &ann.id, &bob.id, Role::Moderator)
        .await
        .expect("role");
    remove(store, "r-idle-mod", &ann, &zed, Some(-1)).await;
    store
        .mute("r-idle-mod", &ann.id, &bob.id, Some(t.now() + 600_000))
        .await
        .expect("mute");
    for (who, conn) in [(&ann, "a1"), (&bob, "b1")] {
        store
            .leave("r-idle-mod", who, conn, &note("r-idle-mod", "left"))
            .await
            .expect("leave");
    }
    assert!(
        store
            .close_room("r-idle-mod", t.now() + 10_000)
            .await
            .expect("close"),
        "the idle sweep closes the empty room"
    );
    // Made again under the same id: no role, ban or mute of the old one.
    create(store, &r, &ann, "a2").await;
    join_ok(store, "r-idle-mod", &zed, "z1").await;
    join_ok(store, "r-idle-mod", &bob, "b2").await;
    assert_eq!(roles_of(store, "r-idle-mod", &[&bob]).await, [Role::Member]);
    appended(send(store, "r-idle-mod", &bob, "not muted", None).await);
}
