//! Conformance of `RoomStore::snapshot`, what a join answers in one read:
//! it must equal the separate reads it replaces (the room, the roster, the
//! standings, the replay after `since` or the newest messages), in a small
//! room and in a big one where only the newest participants are listed.

use huddle::model::Message;
use huddle::model::{Participant, Role};
use huddle::store::{BIG_ROOM, Backlog, ModOutcome};

use super::moderation::join_ok;
use super::*;

/// The snapshot of `room` as the separate reads give it.
async fn separately(store: &dyn Store, room: &str, limit: usize, backlog: Backlog) -> Read {
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
    let (replay, messages) = match backlog {
        Backlog::Since(since) => {
            let r = store.events_since(room, since).await.expect("replay");
            (Some((r.events, r.last_seq, r.complete)), Vec::new())
        }
        Backlog::Newest(n) => {
            let page = store
                .history(room, Some(found.last_seq + 1), n)
                .await
                .expect("history");
            (None, page.messages)
        }
    };
    (found, participants, replay, messages)
}

/// A snapshot's parts: the room, the participants, the replay (events,
/// last seq, complete) and the newest messages.
type Read = (
    Room,
    Vec<Participant>,
    Option<(Vec<SeqEvent>, u64, bool)>,
    Vec<Message>,
);

async fn snapshot(store: &dyn Store, room: &str, limit: usize, backlog: Backlog) -> Read {
    let s = store
        .snapshot(room, limit, backlog)
        .await
        .expect("snapshot")
        .expect("the room exists");
    let replay = s.replay.map(|r| (r.events, r.last_seq, r.complete));
    (s.room, s.participants, replay, s.messages)
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
    // The newest messages (some, all, more than there are), a resume from
    // the start, the middle, and from beyond the end.
    let backlogs = [
        Backlog::Newest(3),
        Backlog::Newest(50),
        Backlog::Since(0),
        Backlog::Since(last - 2),
        Backlog::Since(last + 10),
    ];
    for backlog in backlogs {
        let got = snapshot(store, "r-snap", 100, backlog).await;
        assert_eq!(
            got,
            separately(store, "r-snap", 100, backlog).await,
            "{backlog:?}"
        );
        let (_, participants, replay, messages) = got;
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
        match backlog {
            Backlog::Since(_) => assert!(replay.is_some() && messages.is_empty()),
            Backlog::Newest(_) => assert!(replay.is_none()),
        }
    }
    let (_, _, _, messages) = snapshot(store, "r-snap", 100, Backlog::Newest(3)).await;
    let texts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["m2", "m3", "m4"], "the newest, oldest first");
    let (_, _, replay, _) = snapshot(store, "r-snap", 100, Backlog::Since(last - 2)).await;
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
        snapshot(store, "r-snap-big", big, Backlog::Since(0)).await,
        separately(store, "r-snap-big", big, Backlog::Since(0)).await
    );
    let (room_read, participants, _, _) =
        snapshot(store, "r-snap-big", big, Backlog::Newest(50)).await;
    assert_eq!(participants.len(), big);
    assert_eq!(room_read.participant_count as usize, big + 6);
    // No such room.
    assert!(
        store
            .snapshot("r-nope", 10, Backlog::Since(0))
            .await
            .expect("snapshot")
            .is_none()
    );
}
