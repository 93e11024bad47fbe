//! The conformance cases of protocol 1.1 "Big rooms": the 100-participant
//! threshold decided by the join and leave operations, the bounded roster,
//! member pages and the coalescing gate of `participants.changed`.

use huddle::store::{BIG_ROOM, CHANGED_LIST_MAX, Change, Coalesced};

use super::*;

fn crowd_user(i: usize) -> User {
    User {
        id: format!("u-{i:04}"),
        name: format!("user {i:04}"),
        image: None,
    }
}

/// Creates `id` (capacity 1000) by `ann` and joins users 1..`extra` (each on
/// connection `c-<id>`): `extra + 1` participants.
pub(super) async fn crowd(store: &dyn Store, id: &str, code: &str, extra: usize) -> User {
    let ann = user("ann");
    create(store, &room(id, code, 1000, false), &ann, "a1").await;
    for i in 1..=extra {
        let u = crowd_user(i);
        store
            .join(id, &u, &format!("c-{}", u.id), &note(id, "joined"))
            .await
            .expect("join");
    }
    ann
}

async fn last_seq(store: &dyn Store, id: &str) -> (u64, u32) {
    let r = store.room(id).await.expect("read").expect("room");
    (r.last_seq, r.participant_count)
}

pub(super) async fn big_room_threshold(t: &Engine) {
    let store = t.store.as_ref();
    let big = BIG_ROOM as usize;
    crowd(store, "r-big", "BIG222", big - 2).await;
    let (seq, count) = last_seq(store, "r-big").await;
    assert_eq!((seq, count), (big as u64 - 1, BIG_ROOM - 1));
    // The 100th participant: still 1.0 (a system message).
    let hundredth = crowd_user(big - 1);
    let j = store
        .join("r-big", &hundredth, "h1", &note("r-big", "joined"))
        .await
        .expect("join");
    assert!(
        matches!(j, JoinOutcome::Joined { first: true, .. }),
        "{j:?}"
    );
    assert_eq!(last_seq(store, "r-big").await, (seq + 1, BIG_ROOM));
    // The 101st: quiet, no system message.
    let extra = crowd_user(big);
    let j = store
        .join("r-big", &extra, "x1", &note("r-big", "joined"))
        .await
        .expect("join");
    assert_eq!(
        j,
        JoinOutcome::JoinedQuietly {
            count: BIG_ROOM + 1
        }
    );
    assert_eq!(last_seq(store, "r-big").await, (seq + 1, BIG_ROOM + 1));
    // Another connection of a participant is never a change.
    let j = store
        .join("r-big", &extra, "x2", &note("r-big", "again"))
        .await
        .expect("join");
    assert!(
        matches!(j, JoinOutcome::Joined { first: false, .. }),
        "{j:?}"
    );
    store
        .leave("r-big", &extra, "x2", &note("r-big", "x"))
        .await
        .expect("leave");
    // The 101st leaving is as quiet as its join.
    let l = store
        .leave("r-big", &extra, "x1", &note("r-big", "left"))
        .await
        .expect("leave");
    assert_eq!(l, LeaveOutcome::LeftQuietly { count: BIG_ROOM });
    assert_eq!(last_seq(store, "r-big").await, (seq + 1, BIG_ROOM));
    assert!(
        !store
            .is_participant("r-big", &extra.id)
            .await
            .expect("member")
    );
    // Back at 100: a leave is 1.0 again.
    let l = store
        .leave("r-big", &hundredth, "h1", &note("r-big", "left"))
        .await
        .expect("leave");
    assert!(matches!(l, LeaveOutcome::Left { last: true, .. }), "{l:?}");
    assert_eq!(last_seq(store, "r-big").await, (seq + 2, BIG_ROOM - 1));
    let page = store.history("r-big", None, 2).await.expect("history");
    let texts: Vec<&str> = page.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["joined", "left"], "only the 1.0 changes wrote");
}

pub(super) async fn bounded_roster(t: &Engine) {
    let store = t.store.as_ref();
    // A small room: everyone, sorted as `participants`.
    crowd(store, "r-few", "FEW222", 5).await;
    assert_eq!(
        store.roster("r-few", 100).await.expect("roster"),
        store.participants("r-few").await.expect("participants")
    );
    // A big one: at most the limit, distinct participants, newest first.
    let big = BIG_ROOM as usize;
    crowd(store, "r-many", "MNY222", big + 20).await;
    t.pass(Duration::from_millis(5)).await;
    let late = user("zed");
    store
        .join("r-many", &late, "z1", &note("r-many", "joined"))
        .await
        .expect("join");
    let roster = store.roster("r-many", big).await.expect("roster");
    assert_eq!(roster.len(), big);
    assert_eq!(roster[0].id, late.id, "the newest join comes first");
    let ids: HashSet<&str> = roster.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids.len(), big, "no user twice");
    for u in &roster {
        assert!(store.is_participant("r-many", &u.id).await.expect("member"));
    }
    assert!(store.roster("r-nope", 10).await.expect("roster").is_empty());
}

pub(super) async fn member_pages(t: &Engine) {
    let store = t.store.as_ref();
    let ann = crowd(store, "r-pg", "PGS222", 150).await;
    let mut expected: Vec<String> = (1..=150).map(|i| crowd_user(i).id).collect();
    expected.push(ann.id.clone());
    expected.sort();
    // Everyone exactly once, in id order, pages never over the limit.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .members("r-pg", after.as_deref(), 7)
            .await
            .expect("page");
        assert!(page.users.len() <= 7);
        pages += 1;
        seen.extend(page.users.into_iter().map(|u| u.id));
        // Changes mid-walk: one member not listed yet leaves, one joins.
        if pages == 3 {
            let gone = crowd_user(140);
            store
                .leave("r-pg", &gone, &format!("c-{}", gone.id), &note("r-pg", "x"))
                .await
                .expect("leave");
            expected.retain(|id| *id != gone.id);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, expected, "every member present throughout, once");
    let one = store.members("r-pg", None, 500).await.expect("page");
    assert_eq!(one.users.len(), expected.len());
    assert_eq!(one.next, None);
    let nope = store.members("r-nope", None, 10).await.expect("page");
    assert!(nope.users.is_empty() && nope.next.is_none());
}

pub(super) async fn participants_changed_gate(t: &Engine) {
    let store = t.store.as_ref();
    crowd(store, "r-ch", "CHG222", 3).await;
    let window = Duration::from_secs(1);
    let (a, b, c) = (crowd_user(1), crowd_user(2), crowd_user(3));
    assert_eq!(
        store
            .participants_changed("r-ch", &[], window)
            .await
            .expect("changed"),
        Coalesced::Nothing,
        "nothing waits"
    );
    let first = store
        .participants_changed("r-ch", &[Change::Joined(a.clone())], window)
        .await
        .expect("changed");
    assert_eq!(
        first,
        Coalesced::Publish {
            count: 4,
            joined: vec![a.clone()],
            left: vec![]
        }
    );
    // Within the window: the changes wait, whoever hands them over.
    let second = store
        .participants_changed(
            "r-ch",
            &[Change::Left(b.clone()), Change::Joined(c.clone())],
            window,
        )
        .await
        .expect("changed");
    let Coalesced::Wait(d) = second else {
        panic!("the window is taken: {second:?}")
    };
    assert!(d <= window);
    let third = store
        .participants_changed("r-ch", &[Change::Left(c.clone())], window)
        .await
        .expect("changed");
    assert!(matches!(third, Coalesced::Wait(_)), "{third:?}");
    t.pass(window + Duration::from_millis(100)).await;
    // A user's last change wins.
    let (count, joined, left) = match store
        .participants_changed("r-ch", &[], window)
        .await
        .expect("changed")
    {
        Coalesced::Publish {
            count,
            joined,
            left,
        } => (count, joined, left),
        other => panic!("the window opened: {other:?}"),
    };
    assert_eq!(count, last_seq(store, "r-ch").await.1, "the count is exact");
    assert!(joined.is_empty());
    assert_eq!(left, [b, c]);
    t.pass(window + Duration::from_millis(100)).await;
    assert_eq!(
        store
            .participants_changed("r-ch", &[], window)
            .await
            .expect("changed"),
        Coalesced::Nothing
    );
    // Lists are capped, keeping the newest.
    let many: Vec<Change> = (10..10 + 2 * CHANGED_LIST_MAX)
        .map(|i| Change::Joined(crowd_user(i)))
        .collect();
    let Coalesced::Publish { joined, .. } = store
        .participants_changed("r-ch", &many, window)
        .await
        .expect("changed")
    else {
        panic!("the window was open")
    };
    assert_eq!(joined.len(), CHANGED_LIST_MAX);
    assert_eq!(
        joined.last().map(|u| u.id.clone()),
        Some(crowd_user(9 + 2 * CHANGED_LIST_MAX).id)
    );
}
