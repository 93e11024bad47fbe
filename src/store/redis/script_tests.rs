//! Focused tests of the scripts against a real `redis-server` started here:
//! the expiry trim, the late-write refusal, the deferred publish, the
//! participant events published with the join and leave messages, and the
//! conditional removal from a user's room index.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Script, Value};

use super::scripts::{
    Bound, Create, CreateReply, EventKeys, Join, JoinReply, Leave, LeaveReply, MemberKeys, Note,
    Publish, Published, Release, Replace, ReplaceReply, ScriptArgs, ScriptReply, Scripts, Send,
    SendReply, Since, SinceReply, Trim, Trimmed, Unindex, Unindexed,
};
use crate::codec;
use crate::error::{StoreError, StoreResult};
use crate::layout::Keys;
use crate::model::{Event, Message, MessageKind, Room, User};

/// A `redis-server` on a free port, killed on drop.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn server() -> (Server, MultiplexedConnection) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("/usr/bin/redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let server = Server { child, port };
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", server.port)).expect("client");
    for _ in 0..200 {
        if let Ok(conn) = client.get_multiplexed_async_connection().await {
            return (server, conn);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("redis-server did not come up on {}", server.port);
}

async fn run<R: ScriptReply>(
    conn: &mut MultiplexedConnection,
    script: &Script,
    args: &impl ScriptArgs,
) -> StoreResult<R> {
    let _: String = script.load_async(conn).await.expect("script loads");
    let value: Value = Bound::of(args)
        .evalsha(script)
        .query_async(conn)
        .await
        .expect("script runs");
    R::parse(value)
}

/// Redis time, ms.
async fn redis_now(conn: &mut MultiplexedConnection) -> i64 {
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    secs * 1000 + micros / 1000
}

const ROOM: &str = "r1";
const FAR: i64 = i64::MAX;

fn ann() -> User {
    User {
        id: "ann".into(),
        name: "Ann".into(),
        image: None,
    }
}

fn message(id: &str, text: &str) -> Message {
    Message {
        id: id.into(),
        room: ROOM.into(),
        seq: 0,
        user: ann(),
        kind: MessageKind::Text,
        content: text.into(),
        attachment: None,
        created_at: 1,
        edited_at: None,
        deleted: false,
    }
}

fn tail(m: &Message) -> Vec<u8> {
    codec::encode_tail(&Event::MessageCreated(m.clone()), 1)
}

fn event_keys(k: &Keys) -> EventKeys {
    EventKeys {
        room: k.room(ROOM),
        events: k.room_events(ROOM),
        channel: k.channel(ROOM),
    }
}

/// Creates `ROOM` with `ann` joined; its system message lives `note_ttl_ms`.
async fn create(conn: &mut MultiplexedConnection, scripts: &Scripts, k: &Keys, note_ttl_ms: u64) {
    let event = event_keys(k);
    let room = Room {
        id: ROOM.into(),
        code: "ABC234".into(),
        name: "r".into(),
        created_by: "ann".into(),
        created_at: 1,
        max_participants: 10,
        private: false,
        participant_count: 0,
        last_seq: 0,
    };
    let note = message("note", "created");
    let note_tail = tail(&note);
    let args = Create {
        keys: MemberKeys {
            event: &event,
            members: k.room_members(ROOM),
            member_conns: k.member_conns(ROOM, "ann"),
            presence: k.presence(ROOM),
            messages: k.room_messages(ROOM),
            message: k.message(ROOM, "note"),
            member_ids: k.member_ids(ROOM),
        },
        room: &room,
        user_id: "ann",
        user_json: r#"{"id":"ann","name":"Ann","image":null}"#,
        conn: "c1",
        presence_member: "ann:c1",
        note: Note {
            id: "note",
            tail: &note_tail,
            ttl_ms: note_ttl_ms,
            log_len: 100,
        },
        now: 1,
        deadline: FAR,
    };
    let reply: CreateReply = run(conn, &scripts.create, &args).await.expect("create");
    assert_eq!(reply, CreateReply::Created(1));
}

async fn send(
    conn: &mut MultiplexedConnection,
    scripts: &Scripts,
    k: &Keys,
    id: &str,
    ttl_ms: u64,
    deadline: i64,
) -> StoreResult<SendReply> {
    let event = event_keys(k);
    let m = message(id, id);
    let t = tail(&m);
    let args = Send {
        event: &event,
        members: k.room_members(ROOM),
        messages: k.room_messages(ROOM),
        message: k.message(ROOM, id),
        dedupe: &k.dedupe(ROOM, "ann", ""),
        mutes: k.mutes(ROOM),
        countable: k.countable(ROOM),
        reads: k.reads(ROOM),
        user: "ann",
        msg_id: id,
        tail: &t,
        ttl_ms,
        log_len: 100,
        now: 2,
        dedupe_mode: 0,
        dedupe_ttl_ms: 1000,
        deadline,
    };
    run(conn, &scripts.send, &args).await
}

fn is_late(r: &StoreResult<impl std::fmt::Debug>) -> bool {
    matches!(r, Err(StoreError::Unavailable(reason)) if reason.contains("deadline"))
}

#[tokio::test]
async fn a_write_past_its_deadline_is_refused_and_never_applied() {
    let (_server, mut conn) = server().await;
    let scripts = Scripts::new(Publish::Classic, false);
    let k = Keys::new("t:");
    create(&mut conn, &scripts, &k, 60_000).await;
    let seq_before: u64 = conn.hget(k.room(ROOM), "seq").await.expect("seq");

    // One ms past in Redis time: refused.
    let past = redis_now(&mut conn).await - 1;
    let late = send(&mut conn, &scripts, &k, "m-late", 60_000, past).await;
    assert!(is_late(&late), "{late:?}");

    // An edit past its deadline is refused the same way.
    let stored: Vec<u8> = conn.get(k.message(ROOM, "note")).await.expect("note");
    let event = event_keys(&k);
    let edit_tail = codec::encode_tail(&Event::MessageUpdated(message("note", "edited")), 1);
    let edit = Replace {
        event: &event,
        message: k.message(ROOM, "note"),
        countable: k.countable(ROOM),
        msg_id: "note",
        deleting: false,
        expected: &stored,
        tail: &edit_tail,
        log_len: 100,
        now: 3,
        mutes: k.mutes(ROOM),
        muted_user: "ann",
        deadline: past,
    };
    let late_edit = run::<ReplaceReply>(&mut conn, &scripts.replace, &edit).await;
    assert!(is_late(&late_edit), "{late_edit:?}");

    // Nothing of either was written, then or later.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let exists: bool = conn
        .exists(k.message(ROOM, "m-late"))
        .await
        .expect("exists");
    assert!(!exists, "the refused message was not stored");
    let seq_after: u64 = conn.hget(k.room(ROOM), "seq").await.expect("seq");
    assert_eq!(seq_after, seq_before, "no seq was taken");
    let indexed: Option<f64> = conn
        .zscore(k.room_messages(ROOM), "m-late")
        .await
        .expect("zscore");
    assert_eq!(indexed, None);
    let events: u64 = conn.zcard(k.room_events(ROOM)).await.expect("zcard");
    assert_eq!(events, 1, "only the creation event is logged");
    let now_stored: Vec<u8> = conn.get(k.message(ROOM, "note")).await.expect("note");
    assert_eq!(now_stored, stored, "the refused edit changed nothing");

    // The same write within its deadline is applied.
    let future = redis_now(&mut conn).await + 5_000;
    let ok = send(&mut conn, &scripts, &k, "m-ok", 60_000, future).await;
    assert_eq!(ok.expect("sent"), SendReply::Sent(seq_before + 1));
}

#[tokio::test]
async fn the_expiry_trim_drops_expired_messages_and_their_events() {
    let (_server, mut conn) = server().await;
    let scripts = Scripts::new(Publish::Classic, false);
    let k = Keys::new("t:");
    // seq 1 (the note), 2, 3 expire soon; 4 and 5 live.
    create(&mut conn, &scripts, &k, 30).await;
    for id in ["short-1", "short-2"] {
        send(&mut conn, &scripts, &k, id, 30, FAR)
            .await
            .expect("send");
    }
    for id in ["long-1", "long-2"] {
        send(&mut conn, &scripts, &k, id, 60_000, FAR)
            .await
            .expect("send");
    }
    tokio::time::sleep(Duration::from_millis(80)).await;

    let trim = Trim {
        messages: k.room_messages(ROOM),
        events: k.room_events(ROOM),
        countable: k.countable(ROOM),
        message_prefix: k.message_prefix(ROOM),
    };
    let removed: Trimmed = run(&mut conn, &scripts.trim, &trim).await.expect("trim");
    assert_eq!(removed, Trimmed(3));
    let ids: Vec<String> = conn
        .zrange(k.room_messages(ROOM), 0, -1)
        .await
        .expect("index");
    assert_eq!(ids, ["long-1", "long-2"]);
    let counted: Vec<String> = conn
        .zrange(k.countable(ROOM), 0, -1)
        .await
        .expect("countable");
    assert_eq!(
        counted,
        ["long-1", "long-2"],
        "expired messages stop counting"
    );
    let scores: Vec<(Vec<u8>, u64)> = conn
        .zrange_withscores(k.room_events(ROOM), 0, -1)
        .await
        .expect("events");
    let seqs: Vec<u64> = scores.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, [4, 5], "events about expired messages are gone");
    let again: Trimmed = run(&mut conn, &scripts.trim, &trim).await.expect("trim");
    assert_eq!(again, Trimmed(0), "a second trim finds nothing");

    // A replay after the trim starts at the oldest live message.
    let since = Since {
        room: k.room(ROOM),
        events: k.room_events(ROOM),
        messages: k.room_messages(ROOM),
        countable: k.countable(ROOM),
        since: 0,
        message_prefix: k.message_prefix(ROOM),
    };
    let replay: SinceReply = run(&mut conn, &scripts.since, &since).await.expect("since");
    assert_eq!(replay.last_seq, 5);
    let seqs: Vec<u64> = replay
        .envelopes
        .iter()
        .map(|e| codec::peek_seq(e).expect("seq"))
        .collect();
    assert_eq!(seqs, [4, 5]);

    // When every message has expired, the whole log goes.
    conn.del::<_, ()>(k.message(ROOM, "long-1"))
        .await
        .expect("del");
    conn.del::<_, ()>(k.message(ROOM, "long-2"))
        .await
        .expect("del");
    let removed: Trimmed = run(&mut conn, &scripts.trim, &trim).await.expect("trim");
    assert_eq!(removed, Trimmed(2));
    let events: u64 = conn.zcard(k.room_events(ROOM)).await.expect("zcard");
    assert_eq!(events, 0);
}

#[tokio::test]
async fn with_replica_acks_events_are_published_only_when_released_and_in_order() {
    let (server, mut conn) = server().await;
    let scripts = Scripts::new(Publish::Classic, true);
    let k = Keys::new("t:");
    // A subscriber on the room's channel, on its own connection.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", server.port)).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe(k.channel(ROOM)).await.expect("subscribe");
    let mut messages = pubsub.into_on_message();

    create(&mut conn, &scripts, &k, 60_000).await;
    for id in ["m-2", "m-3"] {
        send(&mut conn, &scripts, &k, id, 60_000, FAR)
            .await
            .expect("send");
    }
    // Written, not published, and invisible to readers: the mark starts
    // before the room's first event.
    let mark: u64 = conn.hget(k.room(ROOM), "published").await.expect("mark");
    assert_eq!(mark, 0);
    let since = Since {
        room: k.room(ROOM),
        events: k.room_events(ROOM),
        messages: k.room_messages(ROOM),
        countable: k.countable(ROOM),
        since: 0,
        message_prefix: k.message_prefix(ROOM),
    };
    let replay: SinceReply = run(&mut conn, &scripts.since, &since).await.expect("since");
    assert_eq!(replay.last_seq, 0, "nothing is visible before its release");
    assert!(replay.envelopes.is_empty());
    let quiet = tokio::time::timeout(Duration::from_millis(100), messages.next()).await;
    assert!(quiet.is_err(), "nothing was published yet");

    // Releasing 2 publishes 1 and 2, in order; 3 stays back.
    let event = event_keys(&k);
    let release = Release {
        event: &event,
        upto: 2,
    };
    let published: Published = run(&mut conn, &scripts.release, &release)
        .await
        .expect("release");
    assert_eq!(published.0, 2);
    for want in [1, 2] {
        let msg = tokio::time::timeout(Duration::from_secs(2), messages.next())
            .await
            .expect("published")
            .expect("stream open");
        assert_eq!(codec::peek_seq(msg.get_payload_bytes()).expect("seq"), want);
    }
    let replay: SinceReply = run(&mut conn, &scripts.since, &since).await.expect("since");
    assert_eq!(replay.last_seq, 2);
    assert_eq!(replay.envelopes.len(), 2);

    // A release at or below the mark publishes nothing again.
    let again: Published = run(&mut conn, &scripts.release, &release)
        .await
        .expect("release");
    assert_eq!(again.0, 0);
    let release3 = Release {
        event: &event,
        upto: 3,
    };
    let published: Published = run(&mut conn, &scripts.release, &release3)
        .await
        .expect("release");
    assert_eq!(published.0, 1);
    let msg = tokio::time::timeout(Duration::from_secs(2), messages.next())
        .await
        .expect("published")
        .expect("stream open");
    assert_eq!(codec::peek_seq(msg.get_payload_bytes()).expect("seq"), 3);
    let mark: u64 = conn.hget(k.room(ROOM), "published").await.expect("mark");
    assert_eq!(mark, 3);

    // Back without acknowledgements: the mark goes, every event is visible.
    let classic = Scripts::new(Publish::Classic, false);
    send(&mut conn, &classic, &k, "m-4", 60_000, FAR)
        .await
        .expect("send");
    let mark: Option<u64> = conn.hget(k.room(ROOM), "published").await.expect("mark");
    assert_eq!(mark, None);
    let msg = tokio::time::timeout(Duration::from_secs(2), messages.next())
        .await
        .expect("published at once")
        .expect("stream open");
    assert_eq!(codec::peek_seq(msg.get_payload_bytes()).expect("seq"), 4);
}

#[tokio::test]
async fn a_room_leaves_a_users_index_only_if_not_joined_again() {
    let (_server, mut conn) = server().await;
    let scripts = Scripts::new(Publish::Classic, false);
    let k = Keys::new("t:");
    let index = k.user_rooms("ann");
    let _: () = conn
        .zadd_multiple(&index, &[(100, "old"), (200, "rejoined"), (300, "kept")])
        .await
        .expect("zadd");
    // `room.mine` read "rejoined" at 150 (before another tab joined it
    // again at 200), and "old" at 100: only "old" goes. "gone" is not
    // there at all.
    let Unindexed(n) = run(
        &mut conn,
        &scripts.unindex,
        &Unindex {
            index: index.clone(),
            rooms: &[("old", 101), ("rejoined", 151), ("gone", 1_000)],
        },
    )
    .await
    .expect("unindex");
    assert_eq!(n, 1);
    let left: Vec<String> = conn.zrange(&index, 0, -1).await.expect("zrange");
    assert_eq!(left, ["rejoined", "kept"]);
    // The bound is strict: a join in the same millisecond stays.
    let Unindexed(n) = run(
        &mut conn,
        &scripts.unindex,
        &Unindex {
            index: index.clone(),
            rooms: &[("kept", 300)],
        },
    )
    .await
    .expect("unindex");
    assert_eq!(n, 0);
}

fn bob() -> User {
    User {
        id: "bob".into(),
        name: "Bob".into(),
        image: None,
    }
}

/// Runs `join.lua` (`leave` false) or `leave.lua` for bob's connection
/// `conn`, with `announcement` as the participant event to publish.
async fn membership(
    conn: &mut MultiplexedConnection,
    scripts: &Scripts,
    k: &Keys,
    (leave, bob_conn): (bool, &str),
    note_id: &str,
    announcement: &[u8],
) -> Option<u64> {
    let event = event_keys(k);
    let note = message(note_id, if leave { "Bob left" } else { "Bob joined" });
    let note_tail = tail(&note);
    let keys = MemberKeys {
        event: &event,
        members: k.room_members(ROOM),
        member_conns: k.member_conns(ROOM, "bob"),
        presence: k.presence(ROOM),
        messages: k.room_messages(ROOM),
        message: k.message(ROOM, note_id),
        member_ids: k.member_ids(ROOM),
    };
    let note = Note {
        id: note_id,
        tail: &note_tail,
        ttl_ms: 60_000,
        log_len: 100,
    };
    let presence = format!("bob:{bob_conn}");
    if leave {
        let args = Leave {
            keys,
            user_id: "bob",
            conn: bob_conn,
            presence_member: &presence,
            now: 3,
            note,
            deadline: FAR,
            announcement,
        };
        match run(conn, &scripts.leave, &args).await.expect("leave") {
            LeaveReply::Left { seq, .. } => seq,
            other => panic!("leave said {other:?}"),
        }
    } else {
        let args = Join {
            keys,
            user_id: "bob",
            user_json: r#"{"id":"bob","name":"Bob","image":null}"#,
            conn: bob_conn,
            presence_member: &presence,
            now: 2,
            note,
            bans: k.bans(ROOM),
            deadline: FAR,
            by_id: false,
            announcement,
        };
        match run(conn, &scripts.join, &args).await.expect("join") {
            JoinReply::Joined { seq, .. } => seq,
            other => panic!("join said {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_first_join_and_a_last_leave_publish_the_participant_event_right_after_the_message() {
    let (server, mut conn) = server().await;
    let k = Keys::new("t:");
    let client = redis::Client::open(format!("redis://127.0.0.1:{}", server.port)).expect("client");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe(k.channel(ROOM)).await.expect("subscribe");
    let mut messages = pubsub.into_on_message();
    let mut next = async || {
        let msg = tokio::time::timeout(Duration::from_secs(2), messages.next())
            .await
            .expect("published")
            .expect("stream open");
        msg.get_payload_bytes().to_vec()
    };
    let scripts = Scripts::new(Publish::Classic, false);
    create(&mut conn, &scripts, &k, 60_000).await;
    assert_eq!(codec::peek_seq(&next().await).expect("seq"), 1, "created");

    let joined = codec::encode(0, &Event::ParticipantJoined(bob()), 7);
    let left = codec::encode(0, &Event::ParticipantLeft(bob()), 8);
    // Bob's first connection: the system message, then the announcement.
    let seq = membership(&mut conn, &scripts, &k, (false, "b1"), "j1", &joined).await;
    assert_eq!(seq, Some(2));
    assert_eq!(codec::peek_seq(&next().await).expect("seq"), 2);
    assert_eq!(next().await, joined);
    // His second connection, and its leave, publish nothing; the last
    // leave publishes its message and then `participant.left`.
    assert_eq!(
        membership(&mut conn, &scripts, &k, (false, "b2"), "j2", &joined).await,
        None
    );
    assert_eq!(
        membership(&mut conn, &scripts, &k, (true, "b2"), "l2", &left).await,
        None
    );
    let seq = membership(&mut conn, &scripts, &k, (true, "b1"), "l1", &left).await;
    assert_eq!(seq, Some(3));
    assert_eq!(codec::peek_seq(&next().await).expect("seq"), 3);
    assert_eq!(
        next().await,
        left,
        "nothing came between the join and the leave"
    );

    // An empty announcement publishes the message alone.
    membership(&mut conn, &scripts, &k, (false, "b3"), "j3", b"").await;
    assert_eq!(codec::peek_seq(&next().await).expect("seq"), 4);

    // With replica acks nothing is published by the scripts: the message
    // waits for its release, the announcement for the caller.
    let deferred = Scripts::new(Publish::Classic, true);
    membership(&mut conn, &deferred, &k, (true, "b3"), "l3", &left).await;
    membership(&mut conn, &deferred, &k, (false, "b4"), "j4", &joined).await;
    let quiet = tokio::time::timeout(Duration::from_millis(200), next()).await;
    assert!(quiet.is_err(), "the deferred scripts published {quiet:?}");
}
