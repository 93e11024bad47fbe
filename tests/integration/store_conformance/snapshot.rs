//! Conformance of `RoomStore::snapshot`, what a join answers in one read:
//! it must equal the separate reads it replaces (the room, the roster, the
//! standings, the replay after `since`), in a small room and in a big one
//! where only the newest participants are listed.

use huddle::model::{Participant, Role};
use huddle::store::{BIG_ROOM, ModOutcome};

use super::moderation::join_ok;
use super::*;

/// The snapshot of `room` as the separate reads give it.
async fn separately(
    store: &dyn Store,
    room: &str,
    limit: usize,
    since: Option<u64>,
) -> (Room, Vec<Participant>, Option<(Vec<SeqEvent>, u64, bool)>) {
    let found = store.room(room).await.expect("room").expect("exists");
    let users = store.roster(room, limit).await.expect("roster");
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    let standings = store.standings(room, &ids).await.expect("standings");
    let participants = users
        .into_iter()
        .zip(standings)
        .map(|(user, s)| Participant {
            user,
            role: s.role,
            muted_until: s.muted_until,
        })
        .collect();
    let replay = match since {
        Some(since) => {
            let r = store.events_since(room, since).await.expect("replay");
            Some((r.events, r.last_seq, r.complete))
        }
        None => None,
    };
    (found, participants, replay)
}

async fn snapshot(
    store: &dyn Store,
    room: &str,
    limit: usize,
    since: Option<u64>,
) -> (Room, Vec<Participant>, Option<(Vec<SeqEvent>, u64, bool)>) {
    let s = store
        .snapshot(room, limit, since)
        .await
        .expect("snapshot")
        .expect("the room exists");
    let replay = s.replay.map(|r| (r.events, r.last_seq, r.complete));
    (s.room, s.participants, replay)
}

pub(super) async fn join_snapshot(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob, cat, dan) = (user("ann"), user("bob"), user("cat"), user("dan"));
    create(store, &room("r-snap", "SNP222", 50, false), &ann, "a1").await;
    for (who, conn) in [(&bob, "b1"), (&cat, "c1"), (&dan, "d1")] {
        join_ok(store, "r-snap", who, conn).await;
    }
    // Every standing shows: the owner, a moderator, a muted member, a
    // mute that has ended.
    let out = store
        .set_role("r-snap", &ann.id, &bob.id, Role::Moderator)
        .await
        .expect("role");
    assert!(matches!(out, ModOutcome::Done(())), "{out:?}");
    let now = t.now();
    for (who, until) in [(&cat, now + 3_600_000), (&dan, now + 50)] {
        let out = store
            .mute("r-snap", &ann.id, &who.id, Some(until))
            .await
            .expect("mute");
        assert!(matches!(out, ModOutcome::Done(())), "{out:?}");
    }
    t.pass(Duration::from_millis(100)).await;
    for i in 0..5 {
        send(store, "r-snap", &bob, &format!("m{i}"), None).await;
    }
    let last = store
        .room("r-snap")
        .await
        .expect("room")
        .expect("exists")
        .last_seq;
    // Without `since`, a resume from the middle, and from beyond the end.
    for since in [None, Some(0), Some(last - 2), Some(last + 10)] {
        let got = snapshot(store, "r-snap", 100, since).await;
        assert_eq!(
            got,
            separately(store, "r-snap", 100, since).await,
            "{since:?}"
        );
        let (_, participants, replay) = got;
        let roles: Vec<(&str, Role, bool)> = participants
            .iter()
            .map(|p| (p.user.name.as_str(), p.role, p.muted_until.is_some()))
            .collect();
        assert_eq!(
            roles,
            [
                ("ann", Role::Owner, false),
                ("bob", Role::Moderator, false),
                ("cat", Role::Member, true),
                ("dan", Role::Member, false),
            ]
        );
        assert_eq!(replay.is_some(), since.is_some());
    }
    let (_, _, replay) = snapshot(store, "r-snap", 100, Some(last - 2)).await;
    let (events, last_seq, complete) = replay.expect("a replay");
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        (seqs, last_seq, complete),
        (vec![last - 1, last], last, true)
    );
    // A big room lists the newest participants only, as the roster does.
    let big = BIG_ROOM as usize;
    crowd(store, "r-snap-big", "SNB222", big + 5).await;
    assert_eq!(
        snapshot(store, "r-snap-big", big, Some(0)).await,
        separately(store, "r-snap-big", big, Some(0)).await
    );
    let (room_read, participants, _) = snapshot(store, "r-snap-big", big, None).await;
    assert_eq!(participants.len(), big);
    assert_eq!(room_read.participant_count as usize, big + 6);
    // No such room.
    assert!(
        store
            .snapshot("r-nope", 10, Some(0))
            .await
            .expect("snapshot")
            .is_none()
    );
}
