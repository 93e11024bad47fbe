//! One conformance suite, run against both store engines: the in-memory one
//! and the Redis one on a private `redis-server`. Both must behave the same
//! for every repository operation, including the atomic append-and-publish
//! of durable events in seq order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use huddle::codec;
use huddle::events::EventSink;
use huddle::layout::Keys;
use huddle::metrics::Metrics;
use huddle::model::{Event, Message, MessageKind, Room, SeqEvent, User, now_ms};
use huddle::store::redis::ConnMode;
use huddle::store::{
    AppendOutcome, CreateOutcome, JoinOutcome, LeaveOutcome, MemoryStore, RedisStore,
    ReplaceOutcome, SessionRecord, Store, StoreSettings,
};

use crate::common::RedisServer;

/// Records what the memory engine publishes.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, Vec<u8>)>>,
}

impl EventSink for Recorder {
    fn deliver(&self, room: &str, envelope: &[u8]) {
        self.seen
            .lock()
            .expect("recorder lock")
            .push((room.to_owned(), envelope.to_vec()));
    }
}

fn settings(log_len: u32, ttl: Duration) -> StoreSettings {
    StoreSettings {
        message_ttl: ttl,
        event_log_len: log_len,
        dedupe_ttl: Duration::from_secs(86_400),
        session_ttl: Duration::from_secs(3600),
    }
}

fn memory(log_len: u32, ttl: Duration) -> (Arc<dyn Store>, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let store = MemoryStore::new(settings(log_len, ttl), rec.clone());
    (Arc::new(store), rec)
}

fn redis_store(redis: &RedisServer, prefix: &str, log_len: u32, ttl: Duration) -> Arc<dyn Store> {
    let store = RedisStore::connect(
        &redis.url(),
        4,
        Duration::from_secs(2),
        Keys::new(prefix),
        settings(log_len, ttl),
        Arc::new(Metrics::new()),
    )
    .expect("redis store");
    Arc::new(store)
}

/// An envelope as the store's replay hands it out.
fn decoded(envelope: &[u8]) -> SeqEvent {
    let env = codec::decode(envelope).expect("decodes");
    SeqEvent {
        seq: env.seq,
        event: env.event,
    }
}

fn user(name: &str) -> User {
    User {
        id: format!("u-{name}"),
        name: name.to_owned(),
        image: None,
    }
}

fn room(id: &str, code: &str, max: u32, private: bool) -> Room {
    Room {
        id: id.to_owned(),
        code: code.to_owned(),
        name: format!("room {id}"),
        created_by: user("ann").id,
        created_at: now_ms(),
        max_participants: max,
        private,
        participant_count: 0,
        last_seq: 0,
    }
}

fn msg(room: &str, author: &User, kind: MessageKind, text: &str) -> Message {
    Message {
        id: uuid::Uuid::now_v7().to_string(),
        room: room.to_owned(),
        seq: 0,
        user: author.clone(),
        kind,
        content: text.to_owned(),
        attachment: None,
        created_at: now_ms(),
        edited_at: None,
        deleted: false,
    }
}

fn note(room: &str, text: &str) -> Message {
    msg(
        room,
        &huddle::model::system_user(),
        MessageKind::System,
        text,
    )
}

async fn create(store: &dyn Store, r: &Room, creator: &User, conn: &str) -> Room {
    match store
        .create_room(r, creator, conn, &note(&r.id, "created"))
        .await
        .expect("create")
    {
        CreateOutcome::Created(room) => room,
        other => panic!("create {}: {other:?}", r.id),
    }
}

async fn send(
    store: &dyn Store,
    room: &str,
    author: &User,
    text: &str,
    cmid: Option<&str>,
) -> AppendOutcome {
    store
        .append(&msg(room, author, MessageKind::Text, text), cmid)
        .await
        .expect("append")
}

fn appended(o: AppendOutcome) -> Message {
    match o {
        AppendOutcome::Appended(m) => m,
        other => panic!("expected Appended, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

async fn rooms_and_codes(t: &Engine) {
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

async fn membership(t: &Engine) {
    let store = t.store.as_ref();
    let (ann, bob, cat) = (user("ann"), user("bob"), user("cat"));
    create(store, &room("r-m", "MMM222", 2, false), &ann, "a1").await;
    let j = store
        .join("r-m", &bob, "b1", &note("r-m", "bob joined"))
        .await
        .expect("join");
    assert_eq!(j, JoinOutcome::Joined { first: true });
    let r = store.room("r-m").await.expect("read").expect("room");
    assert_eq!((r.last_seq, r.participant_count), (2, 2));
    // A second connection of the same user: no capacity, no message.
    let j = store
        .join("r-m", &bob, "b2", &note("r-m", "bob again"))
        .await
        .expect("join");
    assert_eq!(j, JoinOutcome::Joined { first: false });
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
    assert_eq!(l, LeaveOutcome::Left { last: false });
    assert!(store.is_participant("r-m", &bob.id).await.expect("member"));
    let l = store
        .leave("r-m", &bob, "b2", &note("r-m", "bob left"))
        .await
        .expect("leave");
    assert_eq!(l, LeaveOutcome::Left { last: true });
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
    assert_eq!(j, JoinOutcome::Joined { first: true });
    let page = store.history("r-m", None, 10).await.expect("history");
    let texts: Vec<&str> = page.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["created", "bob joined", "bob left", "cat joined"]);
    assert!(page.messages.iter().all(|m| m.kind == MessageKind::System));
}

async fn messages_and_idempotency(t: &Engine) {
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

async fn history_pages(t: &Engine) {
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
async fn event_log(t: &Engine) {
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

async fn listing(t: &Engine) {
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

async fn sessions_and_cache(t: &Engine) {
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

async fn edits_and_search(t: &Engine) {
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
        .search("r-x", &words("quick"), 10, 100)
        .await
        .expect("search");
    let texts: Vec<&str> = found.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(texts, ["quick dog!", "the quick red fox"], "newest first");
    let found = store
        .search("r-x", &words("dog quick"), 10, 100)
        .await
        .expect("search");
    assert_eq!(found.len(), 1, "every word must match");
    let found = store
        .search("r-x", &words("quick"), 1, 100)
        .await
        .expect("search");
    assert_eq!(found.len(), 1, "limit");
    let found = store
        .search("r-x", &words("fox"), 10, 1)
        .await
        .expect("search");
    assert!(found.is_empty(), "the scan cap bounds the work");
    let found = store
        .search("r-x", &words("created"), 10, 100)
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
        .search("r-x", &words("fox"), 10, 100)
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

async fn presence_nodes_and_locks(t: &Engine) {
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
    store
        .set_typing("r-o", &ann.id, true, Duration::from_secs(5))
        .await
        .expect("typing");
    store
        .set_typing("r-o", &ann.id, false, Duration::from_secs(5))
        .await
        .expect("typing");

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
    store.record_activity(&ann.id, 0).await.expect("activity");
    store.record_activity(&ann.id, 3).await.expect("activity");
    let (seen, sent) = store
        .activity(&ann.id)
        .await
        .expect("activity")
        .expect("recorded");
    assert!(seen > 0);
    assert_eq!(sent, 3);

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

async fn idle_rooms_close(t: &Engine) {
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
async fn message_expiry(t: &Engine) {
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
    // The room lives on and keeps counting.
    let m = appended(send(store, "r-t", &ann, "fresh", None).await);
    assert_eq!(m.seq, 3);
}

// ---------------------------------------------------------------------------
// Engines: every case runs on its own store, once per engine, as its own test
// ---------------------------------------------------------------------------

/// A store under test and the clock its TTLs run on.
struct Engine {
    /// The store.
    store: Arc<dyn Store>,
    /// The memory engine's clock (Unix ms), which the test moves; `None` for
    /// Redis, whose TTLs run on real time.
    manual: Option<Arc<AtomicU64>>,
    /// Keeps the Redis engine's server alive for the test.
    _redis: Option<RedisServer>,
}

impl Engine {
    /// The memory engine on a clock the test moves.
    fn memory(log_len: u32, ttl: Duration) -> Engine {
        let manual = Arc::new(AtomicU64::new(now_ms()));
        let clock = manual.clone();
        let store = MemoryStore::with_clock(
            settings(log_len, ttl),
            Arc::new(Recorder::default()),
            Arc::new(move || clock.load(Ordering::SeqCst)),
        );
        Engine {
            store: Arc::new(store),
            manual: Some(manual),
            _redis: None,
        }
    }

    /// The Redis engine on a private `redis-server`.
    async fn redis(mode: ConnMode, log_len: u32, ttl: Duration) -> Engine {
        let redis = RedisServer::start().await;
        let store = RedisStore::connect_with(
            &redis.url(),
            4,
            Duration::from_secs(2),
            Keys::new("t:"),
            settings(log_len, ttl),
            Arc::new(Metrics::new()),
            mode,
        )
        .expect("redis store");
        Engine {
            store: Arc::new(store),
            manual: None,
            _redis: Some(redis),
        }
    }

    /// Now, Unix ms, by the store's clock.
    fn now(&self) -> u64 {
        match &self.manual {
            Some(clock) => clock.load(Ordering::SeqCst),
            None => now_ms(),
        }
    }

    /// Lets `d` pass: moves the memory engine's clock, sleeps for Redis.
    async fn pass(&self, d: Duration) {
        match &self.manual {
            Some(clock) => {
                clock.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
            }
            None => tokio::time::sleep(d).await,
        }
    }
}

/// Stamps each case as a test per engine: `memory_engine::case`,
/// `redis_pooled::case` and `redis_shared::case` (one shared connection).
macro_rules! conformance {
    ($($case:ident($log_len:expr, $ttl:expr);)*) => {
        mod memory_engine {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&Engine::memory($log_len, $ttl)).await;
                }
            )*
        }
        mod redis_pooled {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&Engine::redis(ConnMode::Pool, $log_len, $ttl).await).await;
                }
            )*
        }
        mod redis_shared {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&Engine::redis(ConnMode::Shared, $log_len, $ttl).await).await;
                }
            )*
        }
    };
}

const HOUR: Duration = Duration::from_secs(3600);

conformance! {
    rooms_and_codes(1000, HOUR);
    membership(1000, HOUR);
    messages_and_idempotency(1000, HOUR);
    history_pages(1000, HOUR);
    listing(1000, HOUR);
    sessions_and_cache(1000, HOUR);
    edits_and_search(1000, HOUR);
    presence_nodes_and_locks(1000, HOUR);
    idle_rooms_close(1000, HOUR);
    event_log(5, HOUR);
    message_expiry(1000, Duration::from_secs(1));
}

/// Durable events are published in seq order with the same envelope the log
/// keeps: memory engine to its sink, Redis engine on `events:{R}`.
#[tokio::test]
async fn memory_engine_publishes_in_seq_order() {
    let (store, rec) = memory(1000, Duration::from_secs(3600));
    let ann = user("ann");
    create(
        store.as_ref(),
        &room("r-p", "PPP222", 50, false),
        &ann,
        "a1",
    )
    .await;
    for i in 0..20 {
        appended(send(store.as_ref(), "r-p", &ann, &format!("m{i}"), None).await);
    }
    let seen = rec.seen.lock().expect("lock").clone();
    let seqs: Vec<u64> = seen
        .iter()
        .map(|(_, e)| codec::peek_seq(e).expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=21).collect::<Vec<u64>>());
    assert!(seen.iter().all(|(r, _)| r == "r-p"));
    let log = store.events_since("r-p", 0).await.expect("log");
    assert_eq!(
        log.events,
        seen.iter().map(|(_, e)| decoded(e)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_publishes_in_seq_order() {
    let redis = RedisServer::start().await;
    let store = redis_store(&redis, "pub:", 1000, Duration::from_secs(3600));
    let client = redis::Client::open(redis.url()).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    let channel = Keys::new("pub:").channel("r-p");
    pubsub.subscribe(&channel).await.expect("subscribe");
    let ann = user("ann");
    create(
        store.as_ref(),
        &room("r-p", "PPP222", 50, false),
        &ann,
        "a1",
    )
    .await;
    // Concurrent senders: the script serializes them; publish order = seq order.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let store = store.clone();
        let ann = ann.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                appended(send(store.as_ref(), "r-p", &ann, &format!("t{t}m{i}"), None).await);
            }
        }));
    }
    for t in tasks {
        t.await.expect("sender");
    }
    let mut stream = pubsub.on_message();
    let mut seen = Vec::new();
    while seen.len() < 41 {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("published in time")
            .expect("stream open");
        seen.push(msg.get_payload_bytes().to_vec());
    }
    let seqs: Vec<u64> = seen
        .iter()
        .map(|e| codec::peek_seq(e).expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=41).collect::<Vec<u64>>());
    let log = store.events_since("r-p", 0).await.expect("log");
    assert_eq!(
        log.events,
        seen.iter().map(|e| decoded(e)).collect::<Vec<_>>(),
        "the log keeps exactly what was published"
    );
}

/// A Redis that is down is `Unavailable`, not a hang and not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_reports_unavailable() {
    let mut redis = RedisServer::start().await;
    let store = redis_store(&redis, "down:", 1000, Duration::from_secs(3600));
    store.ping().await.expect("up");
    redis.kill();
    let started = std::time::Instant::now();
    let err = store.room("r").await.expect_err("down");
    assert!(err.is_unavailable(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
