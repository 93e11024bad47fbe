//! The conformance cases: each takes an [`Engine`](super::Engine) and checks
//! one part of the repository contract; `mod.rs` stamps each as a test per
//! engine.

use super::*;

pub(super) async fn rooms_and_codes(t: &Engine) {
    let store = t.store.as_ref();
    let ann = user("ann");
    let created = create(store, &room("r-a", "AAA222", 50, false), &ann, "c1").await;
    assert_eq!(created.last_seq, 1, "creation writes one system message");
    assert_eq!(created.participant_count, 1);
    let read = store.room("r-a").await.expect("read").expect("exists");
    assert_eq!(read.name, "room r-a");
    assert_eq!(read.code, "AAA222");
    assert_eq!(read.last_seq, 1);
    assert_eq!(read.participant_count, 1);
    assert!(!read.private);
    assert_eq!(
        store.room_id_by_code("AAA222").await.expect("code"),
        Some("r-a".into())
    );
    assert_eq!(store.room_id_by_code("ZZZ999").await.expect("code"), None);
    assert_eq!(store.room("r-none").await.expect("read"), None);
    let again = store
        .create_room(
            &room("r-b", "AAA222", 50, false),
            &ann,
            "c1",
            &note("r-b", "x"),
        )
        .await
        .expect("create");
    assert_eq!(again, CreateOutcome::CodeTaken, "codes are unique");
    assert_eq!(
        store.room("r-b").await.expect("read"),
        None,
        "nothing written"
    );
    assert!(store.is_participant("r-a", &ann.id).await.expect("member"));
}

pub(super) async fn membership(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob, cat) = (user("ann"), user("bob"), user("cat"));
    create(store, &room("r-m", "MMM222", 2, false), &ann, "a1").await;
    let j = store
        .join("r-m", &bob, "b1", &note("r-m", "bob joined"))
        .await
        .expect("join");
    assert!(
        matches!(j, JoinOutcome::Joined { first: true, .. }),
        "{j:?}"
    );
    let r = store.room("r-m").await.expect("read").expect("room");
    assert_eq!((r.last_seq, r.participant_count), (2, 2));
    // A second connection of the same user: no capacity, no message.
    let j = store
        .join("r-m", &bob, "b2", &note("r-m", "bob again"))
        .await
        .expect("join");
    assert!(
        matches!(j, JoinOutcome::Joined { first: false, .. }),
        "{j:?}"
    );
    assert_eq!(
        store
            .room("r-m")
            .await
            .expect("read")
            .expect("room")
            .last_seq,
        2
    );
    let full = store
        .join("r-m", &cat, "c1", &note("r-m", "cat joined"))
        .await
        .expect("join");
    assert_eq!(full, JoinOutcome::Full);
    assert!(!store.is_participant("r-m", &cat.id).await.expect("member"));
    let none = store
        .join("r-nope", &cat, "c1", &note("r-nope", "x"))
        .await
        .expect("join");
    assert_eq!(none, JoinOutcome::NoRoom);
    let mut names: Vec<String> = store
        .participants("r-m")
        .await
        .expect("participants")
        .into_iter()
        .map(|u| u.name)
        .collect();
    names.sort();
    assert_eq!(names, ["ann", "bob"]);

    // Leaving: the last connection ends participation.
    let l = store
        .leave("r-m", &bob, "b1", &note("r-m", "left"))
        .await
        .expect("leave");
    assert!(matches!(l, LeaveOutcome::Left { last: false, .. }), "{l:?}");
    assert!(store.is_participant("r-m", &bob.id).await.expect("member"));
    let l = store
        .leave("r-m", &bob, "b2", &note("r-m", "bob left"))
        .await
        .expect("leave");
    assert!(matches!(l, LeaveOutcome::Left { last: true, .. }), "{l:?}");
    assert!(!store.is_participant("r-m", &bob.id).await.expect("member"));
    let r = store.room("r-m").await.expect("read").expect("room");
    assert_eq!(
        (r.last_seq, r.participant_count),
        (3, 1),
        "left message written"
    );
    let l = store
        .leave("r-m", &bob, "b2", &note("r-m", "again"))
        .await
        .expect("leave");
    assert_eq!(l, LeaveOutcome::NotJoined);
    // Now there is room for cat.
    let j = store
        .join("r-m", &cat, "c1", &note("r-m", "cat joined"))
        .await
        .expect("join");
    assert!(
        matches!(j, JoinOutcome::Joined { first: true, .. }),
        "{j:?}"
    );
    let page = store.history("r-m", None, 10).await.expect("history");
    let texts: Vec<&str> = page.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["created", "bob joined", "bob left", "cat joined"]);
    assert!(page.messages.iter().all(|m| m.kind == MessageKind::System));
}

pub(super) async fn messages_and_idempotency(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob) = (user("ann"), user("bob"));
    create(store, &room("r-s", "SSS222", 50, false), &ann, "a1").await;
    assert_eq!(
        send(store, "r-s", &bob, "hi", None).await,
        AppendOutcome::NotMember
    );
    assert_eq!(
        send(store, "r-x", &ann, "hi", None).await,
        AppendOutcome::NoRoom
    );
    let m1 = appended(send(store, "r-s", &ann, "one", Some("k1")).await);
    assert_eq!(m1.seq, 2);
    assert_eq!(m1.content, "one");
    let dup = send(store, "r-s", &ann, "one (retry)", Some("k1")).await;
    match dup {
        AppendOutcome::Duplicate(m) => {
            assert_eq!(
                (m.id.as_str(), m.seq, m.content.as_str()),
                (m1.id.as_str(), 2, "one")
            );
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    let m2 = appended(send(store, "r-s", &ann, "two", Some("k2")).await);
    assert_eq!(m2.seq, 3, "a duplicate takes no seq");
    store
        .join("r-s", &bob, "b1", &note("r-s", "bob joined"))
        .await
        .expect("join");
    // The key is per user: bob's k1 is another message.
    let b1 = appended(send(store, "r-s", &bob, "bob one", Some("k1")).await);
    assert_eq!(b1.seq, 5);
    let room = store.room("r-s").await.expect("read").expect("room");
    assert_eq!(room.last_seq, 5);
}

pub(super) async fn history_pages(t: &Engine) {
    let store = t.store.as_ref();
    let ann = user("ann");
    create(store, &room("r-h", "HHH222", 50, false), &ann, "a1").await;
    for i in 0..9 {
        appended(send(store, "r-h", &ann, &format!("m{i}"), None).await);
    }
    // seqs: 1 = system, 2..=10 = m0..m8
    let page = store.history("r-h", None, 4).await.expect("history");
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [7, 8, 9, 10]);
    assert!(page.has_more);
    let page = store.history("r-h", Some(7), 4).await.expect("history");
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [3, 4, 5, 6]);
    assert!(page.has_more);
    let page = store.history("r-h", Some(3), 4).await.expect("history");
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2]);
    assert!(!page.has_more);
    let page = store.history("r-none", None, 4).await.expect("history");
    assert!(page.messages.is_empty() && !page.has_more);
}

/// Needs a store with `event_log_len` 5.
pub(super) async fn event_log(t: &Engine) {
    let store = t.store.as_ref();
    let ann = user("ann");
    create(store, &room("r-e", "EEE222", 50, false), &ann, "a1").await;
    for i in 0..3 {
        appended(send(store, "r-e", &ann, &format!("m{i}"), None).await);
    }
    // seqs 1..=4 all retained
    let r = store.events_since("r-e", 1).await.expect("since");
    assert!(r.complete);
    assert_eq!(r.last_seq, 4);
    let seqs: Vec<u64> = r.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [2, 3, 4]);
    let decoded = &r.events[0];
    assert_eq!(
        decoded.event.message().map(|m| m.content.as_str()),
        Some("m0")
    );
    assert_eq!(decoded.event.message().map(|m| m.seq), Some(2));
    let r = store.events_since("r-e", 4).await.expect("since");
    assert!(r.complete && r.events.is_empty());
    let r = store.events_since("r-e", 99).await.expect("since");
    assert!(r.complete && r.events.is_empty());
    for i in 3..10 {
        appended(send(store, "r-e", &ann, &format!("m{i}"), None).await);
    }
    // seqs 1..=11; only the last 5 (7..=11) are retained
    let r = store.events_since("r-e", 2).await.expect("since");
    assert!(!r.complete, "events 3..=6 are gone");
    let seqs: Vec<u64> = r.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [7, 8, 9, 10, 11]);
    let r = store.events_since("r-e", 6).await.expect("since");
    assert!(r.complete, "7..=11 are all there");
    assert_eq!(r.events.len(), 5);
}

pub(super) async fn listing(t: &Engine) {
    let store = t.store.as_ref();
    let ann = user("ann");
    create(store, &room("r-l1", "LLL222", 50, false), &ann, "a1").await;
    t.pass(Duration::from_millis(5)).await;
    create(store, &room("r-l2", "LLL333", 50, true), &ann, "a1").await;
    t.pass(Duration::from_millis(5)).await;
    create(store, &room("r-l3", "LLL444", 50, false), &ann, "a1").await;
    t.pass(Duration::from_millis(5)).await;
    appended(send(store, "r-l1", &ann, "bump", None).await);
    let ids: Vec<String> = store
        .list_public(10)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .filter(|id| id.starts_with("r-l"))
        .collect();
    assert_eq!(
        ids,
        ["r-l1", "r-l3"],
        "public only, most recently active first"
    );
    assert_eq!(store.list_public(1).await.expect("list").len(), 1);
}

pub(super) async fn sessions_and_cache(t: &Engine) {
    let store = t.store.as_ref();
    let ann = user("ann");
    let rec = |conn: &str| SessionRecord {
        conn: conn.to_owned(),
        user: ann.clone(),
        node: "n1".into(),
        instance: "n1/boot1".into(),
        connected_at: 42,
    };
    store
        .open(&rec("s1"), Duration::from_secs(60))
        .await
        .expect("open");
    store
        .open(&rec("s2"), Duration::from_secs(60))
        .await
        .expect("open");
    assert_eq!(store.session("s1").await.expect("read"), Some(rec("s1")));
    assert_eq!(
        store.user_sessions(&ann.id).await.expect("list"),
        ["s1", "s2"]
    );
    store.close("s1", &ann.id).await.expect("close");
    assert_eq!(store.session("s1").await.expect("read"), None);
    assert_eq!(store.user_sessions(&ann.id).await.expect("list"), ["s2"]);
    store
        .open(&rec("s3"), Duration::from_millis(200))
        .await
        .expect("open");

    store
        .set("k", b"v1", Duration::from_secs(60))
        .await
        .expect("set");
    assert_eq!(store.get("k").await.expect("get"), Some(b"v1".to_vec()));
    store
        .set("short", b"v", Duration::from_millis(200))
        .await
        .expect("set");
    store.delete("k").await.expect("delete");
    assert_eq!(store.get("k").await.expect("get"), None);
    t.pass(Duration::from_millis(400)).await;
    assert_eq!(store.get("short").await.expect("get"), None, "cache TTL");
    assert_eq!(
        store.session("s3").await.expect("read"),
        None,
        "session TTL"
    );
    store.ping().await.expect("ping");
}

/// A search scan of `messages`, with room to spare in bytes.
fn scan(messages: usize) -> ScanCap {
    ScanCap {
        messages,
        bytes: usize::MAX,
    }
}

pub(super) async fn edits_and_search(t: &Engine) {
    let store = t.store.as_ref();
    let ann = user("ann");
    create(store, &room("r-x", "XXX222", 50, false), &ann, "a1").await;
    let m = appended(send(store, "r-x", &ann, "The Quick brown fox", None).await);
    appended(send(store, "r-x", &ann, "a lazy dog", None).await);
    appended(send(store, "r-x", &ann, "quick dog!", None).await);
    let stored = store
        .message("r-x", &m.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(stored.message, m);
    assert_eq!(store.message("r-x", "nope").await.expect("read"), None);

    let mut edited = m.clone();
    edited.content = "the quick red fox".into();
    edited.edited_at = Some(t.now());
    let out = store
        .replace("r-x", &stored.raw, &Event::MessageUpdated(edited.clone()))
        .await
        .expect("replace");
    assert_eq!(out, ReplaceOutcome::Replaced(5), "an edit is a new event");
    let again = store
        .replace("r-x", &stored.raw, &Event::MessageUpdated(edited.clone()))
        .await
        .expect("replace");
    assert_eq!(
        again,
        ReplaceOutcome::Changed,
        "compare-and-set on the old record"
    );
    let now = store
        .message("r-x", &m.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(now.message.content, "the quick red fox");
    assert_eq!(now.message.seq, m.seq, "a message keeps its creation seq");
    let page = store.history("r-x", None, 10).await.expect("history");
    assert_eq!(
        page.messages[1].content, "the quick red fox",
        "history shows the edit"
    );
    let r = store.events_since("r-x", 4).await.expect("since");
    let ev = &r.events[0];
    assert_eq!(ev.seq, 5);
    assert!(matches!(ev.event, Event::MessageUpdated(ref u) if u.seq == m.seq));

    let words = |q: &str| q.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let found = store
        .search("r-x", &words("quick"), 10, scan(100))
        .await
        .expect("search");
    let texts: Vec<&str> = found.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["quick dog!", "the quick red fox"], "newest first");
    let found = store
        .search("r-x", &words("dog quick"), 10, scan(100))
        .await
        .expect("search");
    assert_eq!(found.len(), 1, "every word must match");
    let found = store
        .search("r-x", &words("quick"), 1, scan(100))
        .await
        .expect("search");
    assert_eq!(found.len(), 1, "limit");
    let found = store
        .search("r-x", &words("fox"), 10, scan(1))
        .await
        .expect("search");
    assert!(found.is_empty(), "the scan cap bounds the work");
    // A byte bound stops the scan as well: one record read, the newest
    // ("quick dog!"), and no further.
    let found = store
        .search(
            "r-x",
            &words("quick"),
            10,
            ScanCap {
                messages: 100,
                bytes: 1,
            },
        )
        .await
        .expect("search");
    let texts: Vec<&str> = found.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["quick dog!"], "the byte bound bounds the work");
    let found = store
        .search("r-x", &words("created"), 10, scan(100))
        .await
        .expect("search");
    assert!(found.is_empty(), "system messages are not searched");

    let mut tomb = now.message.clone();
    tomb.deleted = true;
    tomb.content.clear();
    let out = store
        .replace("r-x", &now.raw, &Event::MessageDeleted(tomb))
        .await
        .expect("delete");
    assert_eq!(out, ReplaceOutcome::Replaced(6));
    let found = store
        .search("r-x", &words("fox"), 10, scan(100))
        .await
        .expect("search");
    assert!(found.is_empty(), "deleted messages are not searched");
    let gone = store
        .replace(
            "r-x",
            b"whatever",
            &Event::MessageUpdated(msg("r-x", &ann, MessageKind::Text, "x")),
        )
        .await
        .expect("replace");
    assert_eq!(gone, ReplaceOutcome::Gone);
}

pub(super) async fn presence_nodes_and_locks(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob) = (user("ann"), user("bob"));
    create(store, &room("r-o", "OOO222", 50, false), &ann, "a1").await;
    store
        .join("r-o", &bob, "b1", &note("r-o", "bob joined"))
        .await
        .expect("join");
    store
        .join("r-o", &bob, "b2", &note("r-o", "bob again"))
        .await
        .expect("join");
    let names = |users: Vec<User>| users.into_iter().map(|u| u.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.online("r-o").await.expect("online")),
        ["ann", "bob"]
    );
    store
        .leave("r-o", &bob, "b1", &note("r-o", "x"))
        .await
        .expect("leave");
    assert_eq!(
        names(store.online("r-o").await.expect("online")),
        ["ann", "bob"]
    );
    store
        .leave("r-o", &bob, "b2", &note("r-o", "bob left"))
        .await
        .expect("leave");
    assert_eq!(names(store.online("r-o").await.expect("online")), ["ann"]);
    // Typing: told when it turns on, then at most once per `repeat`
    // whichever connection repeats it; turning it off is always told.
    let (ttl, repeat) = (Duration::from_secs(5), Duration::from_millis(600));
    let typing = |active| store.set_typing("r-o", &ann.id, active, ttl, repeat);
    assert!(typing(true).await.expect("typing"), "turned on: told");
    assert!(
        !typing(true).await.expect("typing"),
        "repeated at once: not told"
    );
    t.pass(Duration::from_millis(700)).await;
    assert!(typing(true).await.expect("typing"), "repeated later: told");
    assert!(typing(false).await.expect("typing"), "off: told");
    assert!(typing(true).await.expect("typing"), "on again: told");

    // Sessions, rooms they joined, node instances.
    let rec = SessionRecord {
        conn: "c9".into(),
        user: ann.clone(),
        node: "n2".into(),
        instance: "n2/boot".into(),
        connected_at: 1,
    };
    store
        .open(&rec, Duration::from_secs(60))
        .await
        .expect("open");
    store.track_room("c9", "r-o", true).await.expect("track");
    store.track_room("c9", "r-z", true).await.expect("track");
    store.track_room("c9", "r-z", false).await.expect("track");
    assert_eq!(store.session_rooms("c9").await.expect("rooms"), ["r-o"]);
    store
        .heartbeat("n2/boot", Some(Duration::from_secs(60)))
        .await
        .expect("beat");
    t.pass(Duration::from_millis(20)).await;
    let cutoff = t.now();
    t.pass(Duration::from_millis(20)).await;
    store.heartbeat("n3/boot", None).await.expect("beat");
    let dead = store.dead_nodes(cutoff).await.expect("dead");
    assert!(
        dead.contains(&"n2/boot".to_string()) && !dead.contains(&"n3/boot".to_string()),
        "{dead:?}"
    );
    assert_eq!(
        store.node_sessions("n2/boot").await.expect("sessions"),
        ["c9"]
    );
    store.close("c9", &ann.id).await.expect("close");
    assert!(
        store
            .node_sessions("n2/boot")
            .await
            .expect("sessions")
            .is_empty()
    );
    assert!(store.session_rooms("c9").await.expect("rooms").is_empty());
    store.forget_node("n2/boot").await.expect("forget");
    assert!(
        !store
            .dead_nodes(t.now() + 1)
            .await
            .expect("dead")
            .contains(&"n2/boot".to_string())
    );

    // Activity.
    assert_eq!(store.activity("u-nobody").await.expect("activity"), None);
    store
        .record_activity(&ann.id, 0, HOUR)
        .await
        .expect("activity");
    store
        .record_activity(&ann.id, 3, HOUR)
        .await
        .expect("activity");
    let (seen, sent) = store
        .activity(&ann.id)
        .await
        .expect("activity")
        .expect("recorded");
    assert!(seen > 0);
    assert_eq!(sent, 3);
    // A record lives its TTL (a guest's is the session TTL).
    let guest = user("guest");
    store
        .record_activity(&guest.id, 0, Duration::from_millis(500))
        .await
        .expect("activity");
    assert!(store.activity(&guest.id).await.expect("activity").is_some());
    t.pass(Duration::from_millis(700)).await;
    assert!(
        store.activity(&guest.id).await.expect("activity").is_none(),
        "the record expired with its TTL"
    );

    // Locks.
    assert!(
        store
            .try_lock("l", Duration::from_millis(200))
            .await
            .expect("lock")
    );
    assert!(
        !store
            .try_lock("l", Duration::from_millis(200))
            .await
            .expect("lock")
    );
    t.pass(Duration::from_millis(300)).await;
    assert!(
        store
            .try_lock("l", Duration::from_millis(200))
            .await
            .expect("lock")
    );
}

pub(super) async fn idle_rooms_close(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob) = (user("ann"), user("bob"));
    create(store, &room("r-i1", "III222", 50, false), &ann, "a1").await;
    create(store, &room("r-i2", "III333", 50, false), &bob, "b1").await;
    store
        .leave("r-i1", &ann, "a1", &note("r-i1", "ann left"))
        .await
        .expect("leave");
    t.pass(Duration::from_millis(20)).await;
    let cutoff = t.now();
    let idle = store.idle_rooms(cutoff, 100).await.expect("idle");
    assert!(
        idle.contains(&"r-i1".to_string()) && idle.contains(&"r-i2".to_string()),
        "{idle:?}"
    );
    assert!(
        !store.close_room("r-i2", cutoff).await.expect("close"),
        "bob is still connected"
    );
    assert!(
        !store
            .close_room("r-i1", cutoff - 10_000)
            .await
            .expect("close"),
        "not idle that long"
    );
    assert!(store.close_room("r-i1", cutoff).await.expect("close"));
    assert_eq!(store.room("r-i1").await.expect("read"), None);
    assert_eq!(
        store.room_id_by_code("III222").await.expect("code"),
        None,
        "code freed"
    );
    assert!(
        !store
            .idle_rooms(cutoff, 10)
            .await
            .expect("idle")
            .contains(&"r-i1".to_string())
    );
    assert!(store.room("r-i2").await.expect("read").is_some());
    // The code can be used again.
    create(store, &room("r-i3", "III222", 50, false), &ann, "a1").await;
}

/// Needs a store with a 1 s message TTL.
pub(super) async fn message_expiry(t: &Engine) {
    let store = t.store.as_ref();
    let ann = user("ann");
    create(store, &room("r-t", "TTT222", 50, false), &ann, "a1").await;
    appended(send(store, "r-t", &ann, "soon gone", None).await);
    assert_eq!(
        store
            .history("r-t", None, 10)
            .await
            .expect("history")
            .messages
            .len(),
        2
    );
    t.pass(Duration::from_millis(1300)).await;
    let page = store.history("r-t", None, 10).await.expect("history");
    assert!(
        page.messages.is_empty(),
        "expired messages are gone: {page:?}"
    );
    assert!(!page.has_more);
    let r = store.events_since("r-t", 0).await.expect("since");
    assert!(r.events.is_empty(), "their events are gone too");
    assert!(!r.complete, "a client resuming that far back must reload");
    let snap = store
        .snapshot("r-t", 10, Backlog::Newest(10))
        .await
        .expect("snapshot")
        .expect("the room lives on");
    assert!(
        snap.messages.is_empty(),
        "a join shows no expired message: {snap:?}"
    );
    // The room lives on and keeps counting.
    let m = appended(send(store, "r-t", &ann, "fresh", None).await);
    assert_eq!(m.seq, 3);
    let snap = store
        .snapshot("r-t", 10, Backlog::Newest(10))
        .await
        .expect("snapshot")
        .expect("the room lives on");
    let texts: Vec<&str> = snap.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["fresh"]);
}

/// A join by id lets a newcomer into a public room only; a private room
/// takes them by its code, and a participant's further connections by id.
pub(super) async fn private_rooms_by_id(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob) = (user("ann"), user("bob"));
    create(store, &room("r-pv", "PVT222", 50, true), &ann, "a1").await;
    create(store, &room("r-pb", "PUB222", 50, false), &ann, "a2").await;
    let join = |room: &'static str, who: &User, conn: &'static str, entry: Entry| {
        let who = who.clone();
        async move {
            store
                .join_by(room, &who, conn, &note(room, "joined"), entry)
                .await
                .expect("join")
        }
    };
    let first = |j: &JoinOutcome| matches!(j, JoinOutcome::Joined { first: true, .. });
    let again = |j: &JoinOutcome| matches!(j, JoinOutcome::Joined { first: false, .. });

    let before = store.room("r-pv").await.expect("room").expect("exists");
    assert_eq!(
        join("r-pv", &bob, "b1", Entry::ById).await,
        JoinOutcome::Private
    );
    let after = store.room("r-pv").await.expect("room").expect("exists");
    assert_eq!(
        (after.participant_count, after.last_seq),
        (before.participant_count, before.last_seq),
        "a refused join writes nothing"
    );
    assert!(!store.is_participant("r-pv", &bob.id).await.expect("read"));
    // The owner's second connection comes in by id; Bob by the code, and
    // then by id on another connection.
    let steps = [
        (
            "r-pv",
            &ann,
            "a3",
            Entry::ById,
            again as fn(&JoinOutcome) -> bool,
        ),
        ("r-pv", &bob, "b1", Entry::ByCode, first),
        ("r-pv", &bob, "b2", Entry::ById, again),
        // A public room takes anyone by id.
        ("r-pb", &bob, "b3", Entry::ById, first),
    ];
    for (room, who, conn, entry, expected) in steps {
        let j = join(room, who, conn, entry).await;
        assert!(expected(&j), "{room} {} {entry:?}: {j:?}", who.id);
    }
    // No room is no room, whichever way it is named.
    assert_eq!(
        join("r-none", &bob, "b4", Entry::ById).await,
        JoinOutcome::NoRoom
    );
}

pub(super) async fn limit_counters(t: &Engine) {
    let store = t.store.as_ref();
    let window = Duration::from_secs(2);
    let none = store.peek("create:u:ann").await.expect("peek");
    assert_eq!((none.count, none.resets_in), (0, Duration::ZERO));
    for n in 1..=3 {
        let c = store.count("create:u:ann", window).await.expect("count");
        assert_eq!(c.count, n);
        assert!(
            c.resets_in > Duration::ZERO && c.resets_in <= window,
            "{c:?}"
        );
    }
    let seen = store.peek("create:u:ann").await.expect("peek");
    assert_eq!(seen.count, 3, "peeking does not count");
    assert!(seen.resets_in <= window);
    // Counters are independent, and a later count does not extend the window.
    assert_eq!(
        store
            .count("create:u:bob", window)
            .await
            .expect("count")
            .count,
        1
    );
    t.pass(Duration::from_millis(1200)).await;
    let later = store.count("create:u:ann", window).await.expect("count");
    assert_eq!(later.count, 4);
    assert!(later.resets_in <= Duration::from_millis(800), "{later:?}");
    // The window ends: the counter starts again.
    t.pass(Duration::from_millis(1000)).await;
    assert_eq!(store.peek("create:u:ann").await.expect("peek").count, 0);
    assert_eq!(
        store
            .count("create:u:ann", window)
            .await
            .expect("count")
            .count,
        1
    );
}

pub(super) async fn private_rooms_do_not_starve_the_listing(t: &Engine) {
    let store = t.store.as_ref();
    let ann = user("ann");
    create(store, &room("r-pub", "PUB222", 50, false), &ann, "a1").await;
    // More private rooms, all newer, than a listing ever read in pages of
    // the activity index (20 pages of 20 for a limit of 1).
    for i in 0..450 {
        t.pass(Duration::from_millis(1)).await;
        let code = format!("Q{i:05}");
        create(
            store,
            &room(&format!("r-priv-{i}"), &code, 50, true),
            &ann,
            "a1",
        )
        .await;
    }
    let listed: Vec<String> = store
        .list_public(1)
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, ["r-pub"], "the public room is listed");
}
