//! Multi-node behaviour: every test here (except the memory-engine one)
//! starts its own `redis-server` and at least two `huddle` nodes sharing it,
//! then checks the delivery, recovery and persistence promises of
//! `PROTOCOL.md` across nodes.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{
    Client, EVENT_TIMEOUT, FAST, FAST_JANITOR, Node, QUIET, RedisServer, assert_consecutive, ids,
    is_message_event, mint_token, s, seq, seqs, unique,
};
use serde_json::{Value, json};

/// Starts Redis and two nodes (`n1`, `n2`) on it with `extra` flags.
async fn two_nodes(extra: &[&str]) -> (RedisServer, Node, Node) {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let a = Node::start(Some(&url), "n1", extra).await;
    let b = Node::start(Some(&url), "n2", extra).await;
    (redis, a, b)
}

/// A connected guest client that has said hello.
async fn guest(node: &Node, name: &str) -> Client {
    let mut client = Client::connect(node).await;
    client.hello(name).await;
    client
}

/// Consumes `message.*` events of `room` until the one whose message id is
/// `id`, and returns all of them (the target last).
async fn message_events_until(client: &mut Client, room: &str, id: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let ev = client.next_message_event(room).await;
        let done = ev["message"]["id"] == id;
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

/// Collects `n` `message.*` events of `room` whose seq is above `after`.
async fn collect_after(client: &mut Client, room: &str, after: u64, n: usize) -> Vec<Value> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let ev = client.next_message_event(room).await;
        if seq(&ev) > after {
            got.push(ev);
        }
    }
    got
}

fn kinds(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["kind"].as_str().unwrap_or("<no kind>").to_string())
        .collect()
}

fn system_count(messages: &[Value]) -> usize {
    messages.iter().filter(|m| m["kind"] == "system").count()
}

// ---------------------------------------------------------------------------
// 1. Fan-out across nodes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_reaches_every_client_on_both_nodes_with_next_seq() {
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut a1 = guest(&a, "a1").await;
    let mut a2 = guest(&a, "a2").await;
    let mut b1 = guest(&b, "b1").await;
    let mut b2 = guest(&b, "b2").await;

    let room = a1.create_room("fan-out", json!({})).await;
    let rid = s(&room, "id").to_string();
    for c in [&mut a2, &mut b1, &mut b2] {
        let data = c.join(&rid).await;
        assert_eq!(
            data["room"]["id"], rid,
            "{}: join reply names another room",
            c.label
        );
    }
    let before = a1.room_get(&rid).await["last_seq"]
        .as_u64()
        .expect("room.last_seq is an integer");

    // First message: from node A.
    let m1 = a1.send_message(&rid, "hello from A").await;
    assert_eq!(seq(&m1), before + 1, "reply seq must be last_seq + 1: {m1}");
    assert_eq!(m1["room"], rid, "message.room: {m1}");
    assert_eq!(m1["kind"], "text", "default kind is text: {m1}");
    assert_eq!(m1["content"], "hello from A");
    assert_eq!(
        m1["user"]["id"],
        a1.user_id().as_str(),
        "message.user is the sender"
    );
    assert_eq!(m1["deleted"], false);
    assert!(
        m1["edited_at"].is_null(),
        "fresh message has edited_at null: {m1}"
    );
    common::assert_recent_ms(&m1["created_at"], "message.created_at");
    common::assert_recent_ms(&room["created_at"], "room.created_at");
    let m1_id = s(&m1, "id").to_string();

    for c in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let events = message_events_until(c, &rid, &m1_id).await;
        assert_consecutive(&seqs(&events), &format!("{}: message events", c.label));
        let ev = events.last().expect("target event");
        assert_eq!(ev["type"], "event");
        assert_eq!(ev["event"], "message.created", "{}: {ev}", c.label);
        assert_eq!(ev["room"], rid, "{}: event.room: {ev}", c.label);
        assert_eq!(
            seq(ev),
            before + 1,
            "{}: event seq must be last_seq + 1: {ev}",
            c.label
        );
        assert_eq!(
            ev["message"], m1,
            "{}: the event carries the acknowledged message",
            c.label
        );
    }

    // Second message: from node B, must be the very next message event
    // everywhere with seq + 1.
    let m2 = b1.send_message(&rid, "hello from B").await;
    assert_eq!(seq(&m2), before + 2, "second reply seq: {m2}");
    for c in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let ev = c.next_message_event(&rid).await;
        assert_eq!(ev["event"], "message.created", "{}: {ev}", c.label);
        assert_eq!(
            seq(&ev),
            before + 2,
            "{}: next event must be seq + 1: {ev}",
            c.label
        );
        assert_eq!(ev["message"]["id"], m2["id"], "{}: {ev}", c.label);
        c.expect_no_message_event(QUIET).await;
    }
}

// ---------------------------------------------------------------------------
// 2. Total order under concurrent senders on both nodes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_on_two_nodes_yield_one_gap_free_order() {
    const TOTAL: usize = 200;
    let (_redis, a, b) = two_nodes(FAST).await;

    let mut senders = vec![
        guest(&a, "s1").await,
        guest(&b, "s2").await,
        guest(&a, "s3").await,
    ];
    let mut receivers = [
        guest(&a, "ra1").await,
        guest(&a, "ra2").await,
        guest(&b, "rb1").await,
        guest(&b, "rb2").await,
    ];
    let room = senders[0]
        .create_room("busy", json!({"max_participants": 100}))
        .await;
    let rid = s(&room, "id").to_string();
    for c in senders.iter_mut().skip(1).chain(receivers.iter_mut()) {
        c.join(&rid).await;
    }
    let base = senders[0].room_get(&rid).await["last_seq"]
        .as_u64()
        .expect("last_seq");

    // Three senders at once, 67 + 67 + 66 messages.
    let shares = [67usize, 67, 66];
    let mut tasks = Vec::new();
    for (i, (mut client, share)) in senders.drain(..).zip(shares).enumerate() {
        let rid = rid.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::with_capacity(share);
            for k in 0..share {
                acked.push(client.send_message(&rid, &format!("s{i}-{k}")).await);
            }
            (client, acked)
        }));
    }
    let mut acked: Vec<Vec<Value>> = Vec::new();
    for task in tasks {
        let (client, messages) = task.await.expect("sender task panicked");
        senders.push(client);
        acked.push(messages);
    }
    assert_eq!(acked.iter().map(Vec::len).sum::<usize>(), TOTAL);

    // Every client (senders included) sees the same 200 events.
    let mut orders: Vec<(String, Vec<(u64, String)>)> = Vec::new();
    for c in senders.iter_mut().chain(receivers.iter_mut()) {
        let events = collect_after(c, &rid, base, TOTAL).await;
        for ev in &events {
            assert_eq!(ev["event"], "message.created", "{}: {ev}", c.label);
            assert_eq!(
                seq(ev),
                seq(&ev["message"]),
                "{}: event seq = message seq: {ev}",
                c.label
            );
        }
        let order: Vec<(u64, String)> = events
            .iter()
            .map(|ev| (seq(ev), s(&ev["message"], "id").to_string()))
            .collect();
        let got: Vec<u64> = order.iter().map(|(q, _)| *q).collect();
        let want: Vec<u64> = (base + 1..=base + TOTAL as u64).collect();
        assert_eq!(
            got, want,
            "{}: seqs must be base+1..=base+200 in order, no gap, no duplicate",
            c.label
        );
        c.expect_no_message_event(QUIET).await;
        orders.push((c.label.clone(), order));
    }
    let (first_label, first) = &orders[0];
    for (label, order) in &orders[1..] {
        assert_eq!(
            order, first,
            "{label} saw a different order than {first_label}"
        );
    }

    // Every acknowledged message was delivered under its acknowledged seq,
    // and each sender's messages appear in the order it sent them.
    let delivered: HashMap<&str, u64> = first.iter().map(|(q, id)| (id.as_str(), *q)).collect();
    for (i, messages) in acked.iter().enumerate() {
        let mut last = 0;
        for m in messages {
            let id = s(m, "id");
            let got = delivered
                .get(id)
                .unwrap_or_else(|| panic!("acknowledged message {m} was never delivered"));
            assert_eq!(
                *got,
                seq(m),
                "delivered seq differs from acknowledged seq for {m}"
            );
            assert!(*got > last, "sender s{i}'s messages out of order at {m}");
            last = *got;
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Resuming with `since`
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_since_replays_exactly_the_missed_events() {
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut creator = guest(&b, "creator").await;
    let room = creator.create_room("resume", json!({})).await;
    let rid = s(&room, "id").to_string();

    // X on node A sees the room up to its own message, then disconnects.
    let mut x = guest(&a, "x").await;
    x.join(&rid).await;
    let mark = x.send_message(&rid, "last thing X saw").await;
    let mark_id = s(&mark, "id").to_string();
    let last_seen = seq(&message_events_until(&mut x, &rid, &mark_id)
        .await
        .pop()
        .expect("X's own event"));
    drop(x);

    // Meanwhile, on node B.
    let mut missed = Vec::new();
    for k in 0..5 {
        missed.push(creator.send_message(&rid, &format!("missed {k}")).await);
    }
    let mut pushed = Vec::new();
    for m in &missed {
        let mut evs = message_events_until(&mut creator, &rid, s(m, "id")).await;
        pushed.push(evs.pop().expect("pushed event"));
    }

    // X comes back (a fresh guest) on node B.
    let mut y = guest(&b, "x-again").await;
    let data = y.join_since(&rid, last_seen).await;
    assert_eq!(data["room"]["id"], rid, "join reply room: {data}");
    assert!(
        data["participants"].is_array(),
        "join+since reply has participants: {data}"
    );
    assert_eq!(
        data["complete"],
        json!(true),
        "5 missed events are within the log: {data}"
    );
    let events = data["events"]
        .as_array()
        .unwrap_or_else(|| panic!("join+since reply has events array: {data}"))
        .clone();
    assert!(!events.is_empty(), "events must not be empty: {data}");
    let event_seqs = seqs(&events);
    assert_eq!(
        event_seqs[0],
        last_seen + 1,
        "events start right after `since`: {data}"
    );
    assert_consecutive(&event_seqs, "join+since events");
    for ev in &events {
        assert!(
            is_message_event(ev),
            "every replayed event is a message.* event frame: {ev}"
        );
        assert_eq!(ev["room"], rid, "replayed event room: {ev}");
    }
    // The missed user messages, exactly and in order (system messages the
    // server wrote meanwhile, e.g. for Y's first join, may be interleaved).
    let user_events: Vec<&Value> = events
        .iter()
        .filter(|ev| ev["message"]["kind"] != "system")
        .collect();
    let got_ids: Vec<&str> = user_events
        .iter()
        .map(|ev| s(&ev["message"], "id"))
        .collect();
    let want_ids: Vec<&str> = missed.iter().map(|m| s(m, "id")).collect();
    assert_eq!(
        got_ids, want_ids,
        "replayed user messages must be exactly the missed ones: {data}"
    );
    // Same shape as the pushed frames.
    for (replayed, live) in user_events.iter().zip(&pushed) {
        let keys = |v: &Value| -> BTreeSet<String> {
            v.as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        assert_eq!(
            keys(replayed),
            keys(live),
            "replayed vs pushed event keys:\n{replayed}\n{live}"
        );
        assert_eq!(replayed["event"], "message.created");
        assert_eq!(seq(replayed), seq(live));
        assert_eq!(
            replayed["message"], live["message"],
            "replayed vs pushed message"
        );
    }

    // Y is subscribed now: new messages arrive live with the next seq.
    let last_replayed = *event_seqs.last().expect("non-empty");
    let next = creator.send_message(&rid, "after resume").await;
    let ev = y.next_message_event(&rid).await;
    assert_eq!(
        ev["message"]["id"], next["id"],
        "live event after resume: {ev}"
    );
    assert!(
        seq(&ev) > last_replayed,
        "live seq after replayed ones: {ev}"
    );

    // Nothing missed: `since` = the latest seq replays nothing, completely.
    let mut z = guest(&a, "up-to-date").await;
    let now = z.room_get(&rid).await["last_seq"]
        .as_u64()
        .expect("last_seq");
    let data = z.join_since(&rid, now).await;
    assert_eq!(data["complete"], true, "{data}");
    let extra: Vec<&Value> = data["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["message"]["kind"] != "system")
        .collect();
    assert!(
        extra.is_empty(),
        "since = last_seq replays no user message: {data}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_since_older_than_retained_log_is_incomplete() {
    let mut args = FAST.to_vec();
    args.extend(["--event-log-len", "10"]);
    let (_redis, a, b) = two_nodes(&args).await;
    let mut creator = guest(&b, "creator").await;
    let room = creator.create_room("short-log", json!({})).await;
    let rid = s(&room, "id").to_string();

    let mut x = guest(&a, "x").await;
    x.join(&rid).await;
    let mark = x.send_message(&rid, "mark").await;
    let last_seen = seq(&mark);
    drop(x);

    // A few missed events fit in the log of 10: complete.
    for k in 0..3 {
        creator.send_message(&rid, &format!("few {k}")).await;
    }
    let mut y1 = guest(&b, "y1").await;
    let data = y1.join_since(&rid, last_seen).await;
    assert_eq!(
        data["complete"],
        json!(true),
        "3 missed events fit in a log of 10: {data}"
    );
    let replayed = data["events"].as_array().cloned().unwrap_or_default();
    assert!(
        replayed
            .iter()
            .filter(|e| e["message"]["kind"] != "system")
            .count()
            == 3,
        "the 3 missed messages are replayed: {data}"
    );

    // 30 more: far beyond the 10 retained events.
    let mut sent = Vec::new();
    for k in 0..30 {
        sent.push(creator.send_message(&rid, &format!("many {k}")).await);
    }
    let mut y2 = guest(&a, "y2").await;
    let data = y2.join_since(&rid, last_seen).await;
    assert_eq!(
        data["complete"],
        json!(false),
        "33 missed events with a log of 10: {data}"
    );
    assert!(
        data["events"].is_array(),
        "events is still an array: {data}"
    );
    let partial = seqs(data["events"].as_array().expect("array"));
    assert_consecutive(&partial, "events of an incomplete replay");
    assert!(
        partial.first().is_none_or(|first| *first > last_seen),
        "events after `since` only: {partial:?}"
    );

    // The client then reloads with message.history: everything is there.
    let messages = y2.all_messages(&rid).await;
    let hist_ids: Vec<String> = messages.iter().map(|m| s(m, "id").to_string()).collect();
    for m in &sent {
        assert!(
            hist_ids.contains(&s(m, "id").to_string()),
            "history lacks {m}"
        );
    }
}

// ---------------------------------------------------------------------------
// 4. Idempotent send
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_msg_id_makes_send_idempotent() {
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut sender = guest(&a, "sender").await;
    let mut watcher = guest(&b, "watcher").await;
    let room = sender.create_room("dedupe", json!({})).await;
    let rid = s(&room, "id").to_string();
    watcher.join(&rid).await;
    sender.drain_events(QUIET).await;
    watcher.drain_events(QUIET).await;

    let cmid = unique("retry");
    let send =
        json!({"type": "message.send", "room": rid, "content": "once", "client_msg_id": cmid});
    let first = sender.ok(send.clone()).await["message"].clone();
    let ev = watcher.next_message_event(&rid).await;
    assert_eq!(
        ev["message"]["id"], first["id"],
        "watcher sees the first send: {ev}"
    );
    let own = sender.next_message_event(&rid).await;
    assert_eq!(
        own["message"]["id"], first["id"],
        "sender sees its own event: {own}"
    );

    let second = sender.ok(send.clone()).await["message"].clone();
    assert_eq!(
        second["id"], first["id"],
        "a retry returns the original message id"
    );
    assert_eq!(
        seq(&second),
        seq(&first),
        "a retry returns the original seq"
    );
    watcher.expect_no_event(Duration::from_millis(600)).await;
    sender.expect_no_event(Duration::from_millis(100)).await;

    // Also idempotent through the other node.
    let third = sender.ok(send).await["message"].clone();
    assert_eq!(third["id"], first["id"]);
    watcher.expect_no_event(QUIET).await;

    // The same client_msg_id from another user is another message.
    let other = watcher
        .ok(json!({"type": "message.send", "room": rid, "content": "once", "client_msg_id": cmid}))
        .await["message"]
        .clone();
    assert_ne!(other["id"], first["id"], "idempotency is per user");
    assert_eq!(seq(&other), seq(&first) + 1);

    let history = sender.all_messages(&rid).await;
    let count = history.iter().filter(|m| m["id"] == first["id"]).count();
    assert_eq!(
        count, 1,
        "history holds the deduplicated message once: {history:?}"
    );
}

// ---------------------------------------------------------------------------
// 5. Persistence across a full restart
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_history_survive_restarting_every_node() {
    let (redis, mut a, mut b) = two_nodes(FAST).await;
    let url = redis.url();
    let mut ca = guest(&a, "ann").await;
    let mut cb = guest(&b, "bob").await;
    let public = ca.create_room("persistent", json!({})).await;
    let private = ca.create_room("secret", json!({"private": true})).await;
    let pid = s(&public, "id").to_string();
    cb.join(&pid).await;
    let mut sent = Vec::new();
    for k in 0..3 {
        sent.push(ca.send_message(&pid, &format!("before restart A{k}")).await);
    }
    for k in 0..2 {
        sent.push(cb.send_message(&pid, &format!("before restart B{k}")).await);
    }
    let old_last = seq(sent.last().expect("sent"));
    drop(ca);
    drop(cb);

    a.kill();
    b.kill();
    let c = Node::start(Some(&url), "n3", FAST).await;
    let d = Node::start(Some(&url), "n4", FAST).await;

    let mut cc = guest(&c, "carol").await;
    let got = cc.room_get(&pid).await;
    assert_eq!(
        got["name"], "persistent",
        "room survives the restart: {got}"
    );
    assert_eq!(got["code"], public["code"], "room code survives: {got}");
    // (>=: the server may have written "left" system messages meanwhile.)
    assert!(
        got["last_seq"].as_u64().is_some_and(|q| q >= old_last),
        "last_seq survives: {got}, was {old_last}"
    );

    let data = cc.join_code(s(&public, "code")).await;
    assert_eq!(
        data["room"]["id"], pid,
        "join by code on a new node: {data}"
    );
    let history = cc.all_messages(&pid).await;
    let hist_seqs = seqs(&history);
    assert!(
        hist_seqs.windows(2).all(|w| w[0] < w[1]),
        "history ascending by seq: {hist_seqs:?}"
    );
    let user_msgs: Vec<&Value> = history.iter().filter(|m| m["kind"] != "system").collect();
    let got_ids: Vec<&str> = user_msgs.iter().map(|m| s(m, "id")).collect();
    let want_ids: Vec<&str> = sent.iter().map(|m| s(m, "id")).collect();
    assert_eq!(
        got_ids, want_ids,
        "old messages in order after restart: {history:?}"
    );
    for (m, original) in user_msgs.iter().zip(&sent) {
        assert_eq!(m["content"], original["content"]);
        assert_eq!(m["seq"], original["seq"]);
    }

    // The private room by code on the other new node; seq keeps counting.
    let mut cd = guest(&d, "dan").await;
    let data = cd.join_code(s(&private, "code")).await;
    assert_eq!(
        data["room"]["id"], private["id"],
        "private room by code after restart"
    );
    cd.join(&pid).await;
    let last_before = cd.room_get(&pid).await["last_seq"]
        .as_u64()
        .expect("last_seq");
    assert!(
        last_before >= old_last,
        "seq never goes back: {last_before} < {old_last}"
    );
    let new = cd.send_message(&pid, "after restart").await;
    assert_eq!(
        seq(&new),
        last_before + 1,
        "seq continues after the restart: {new}"
    );
}

// ---------------------------------------------------------------------------
// 6. Participants, capacity, privacy, listing, system messages
// ---------------------------------------------------------------------------

const SECRET: &str = "cluster-test-secret";

/// Two nodes that require HS256 tokens, so one user can hold several
/// connections (guests get a fresh id on every hello).
async fn two_jwt_nodes() -> (RedisServer, Node, Node) {
    let mut args = FAST.to_vec();
    args.extend(["--jwt-secret", SECRET]);
    two_nodes(&args).await
}

/// A client authenticated as `sub`.
async fn user(node: &Node, sub: &str, name: &str) -> Client {
    let mut client = Client::connect(node).await;
    let token = mint_token(SECRET, sub, name);
    let u = client.hello_token(&token, name).await;
    assert_eq!(u["id"], sub, "the token's sub is the user id: {u}");
    client
}

fn participant_ids(data: &Value) -> Vec<String> {
    let mut list = ids(&data["participants"]);
    list.sort();
    list
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_events_cross_nodes_and_count_distinct_users() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut u1a = user(&a, "u1", "Una").await;
    let room = u1a.create_room("people", json!({})).await;
    let rid = s(&room, "id").to_string();
    assert_eq!(room["created_by"], "u1", "created_by: {room}");
    assert_eq!(
        room["participant_count"], 1,
        "the creator has joined: {room}"
    );

    // u2 joins on node B: u1 on node A hears about it.
    let mut u2b = user(&b, "u2", "Udo").await;
    let data = u2b.join(&rid).await;
    assert_eq!(data["room"]["participant_count"], 2, "{data}");
    assert_eq!(participant_ids(&data), strings(&["u1", "u2"]), "{data}");
    assert!(
        data["messages"].is_array(),
        "plain join returns messages: {data}"
    );
    let ev = u1a
        .wait_event("participant.joined of u2", EVENT_TIMEOUT, |e| {
            e["event"] == "participant.joined" && e["user"]["id"] == "u2"
        })
        .await;
    assert_eq!(ev["room"], rid, "{ev}");
    assert!(
        ev.get("seq").is_none(),
        "participant events are ephemeral, no seq: {ev}"
    );

    // u3 joins on node A: u2 on node B hears about it.
    let mut u3a = user(&a, "u3", "Ute").await;
    assert_eq!(u3a.join(&rid).await["room"]["participant_count"], 3);
    u2b.wait_event("participant.joined of u3", EVENT_TIMEOUT, |e| {
        e["event"] == "participant.joined" && e["user"]["id"] == "u3" && e["room"] == rid
    })
    .await;

    // u1 again from a second connection on the other node: still 3 users.
    let mut u1b = user(&b, "u1", "Una").await;
    let data = u1b.join(&rid).await;
    assert_eq!(
        data["room"]["participant_count"], 3,
        "participant_count counts distinct users, not connections: {data}"
    );
    assert_eq!(
        participant_ids(&data),
        strings(&["u1", "u2", "u3"]),
        "{data}"
    );
    let got = u2b.ok(json!({"type": "room.get", "room": rid})).await;
    assert_eq!(got["room"]["participant_count"], 3, "{got}");
    assert_eq!(participant_ids(&got), strings(&["u1", "u2", "u3"]), "{got}");

    // u3 leaves on node A: u2 on node B hears about it; the count drops.
    u3a.ok(json!({"type": "room.leave", "room": rid})).await;
    u2b.wait_event("participant.left of u3", EVENT_TIMEOUT, |e| {
        e["event"] == "participant.left" && e["user"]["id"] == "u3" && e["room"] == rid
    })
    .await;
    let got = u1a.room_get(&rid).await;
    assert_eq!(got["participant_count"], 2, "after u3 left: {got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_typing_span_nodes() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut u1a = user(&a, "u1", "Una").await;
    let room = u1a.create_room("who is here", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut u2b = user(&b, "u2", "Udo").await;
    u2b.join(&rid).await;
    let mut u1b = user(&b, "u1", "Una").await;
    u1b.join(&rid).await;

    for c in [&mut u1a, &mut u2b] {
        let presence = c.ok(json!({"type": "presence", "room": rid})).await;
        let mut online = ids(&presence["online"]);
        online.sort();
        assert_eq!(
            online,
            strings(&["u1", "u2"]),
            "{}: presence lists each online user once, across nodes: {presence}",
            c.label
        );
    }

    // Typing on node B reaches node A; it is ephemeral (no seq).
    u2b.ok(json!({"type": "typing", "room": rid, "active": true}))
        .await;
    let ev = u1a
        .wait_event("typing of u2", EVENT_TIMEOUT, |e| {
            e["event"] == "typing" && e["user"]["id"] == "u2"
        })
        .await;
    assert_eq!(ev["room"], rid, "{ev}");
    assert_eq!(ev["active"], true, "{ev}");
    assert!(ev.get("seq").is_none(), "typing has no seq: {ev}");
    // An active indicator lapses by itself after 5 s unless repeated.
    let started = std::time::Instant::now();
    let lapse = u1a
        .wait_event("typing of u2 lapsing", Duration::from_secs(8), |e| {
            e["event"] == "typing" && e["user"]["id"] == "u2" && e["active"] == false
        })
        .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "typing lapsed after only {waited:?}, expected about 5 s: {lapse}"
    );
    // Stopping explicitly is announced too.
    u2b.ok(json!({"type": "typing", "room": rid, "active": true}))
        .await;
    u2b.ok(json!({"type": "typing", "room": rid, "active": false}))
        .await;
    u1a.wait_event("typing stop of u2", EVENT_TIMEOUT, |e| {
        e["event"] == "typing" && e["user"]["id"] == "u2" && e["active"] == false
    })
    .await;
    // Typing writes no message.
    let history = u1a.all_messages(&rid).await;
    assert!(
        history.iter().all(|m| m["kind"] == "system"),
        "typing stores nothing: {history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_room_answers_conflict_to_a_new_user() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut u1 = user(&a, "u1", "Una").await;
    let room = u1.create_room("pair", json!({"max_participants": 2})).await;
    let rid = s(&room, "id").to_string();
    assert_eq!(room["max_participants"], 2, "{room}");

    let mut u2 = user(&b, "u2", "Udo").await;
    u2.join(&rid).await;
    let mut u3 = user(&b, "u3", "Ute").await;
    u3.expect_err(json!({"type": "room.join", "room": rid}), "conflict")
        .await;
    u3.expect_err(
        json!({"type": "room.join", "code": room["code"]}),
        "conflict",
    )
    .await;
    u3.ping().await;

    // A member's second connection is not a new participant.
    let mut u2_again = user(&a, "u2", "Udo").await;
    let data = u2_again.join(&rid).await;
    assert_eq!(data["room"]["participant_count"], 2, "{data}");

    let got = u1.room_get(&rid).await;
    assert_eq!(
        got["participant_count"], 2,
        "a refused join adds nobody: {got}"
    );
    // The refused user may not send either.
    u3.expect_err(
        json!({"type": "message.send", "room": rid, "content": "let me in"}),
        "forbidden",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_room_is_forbidden_by_id_and_joinable_by_code() {
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut owner = guest(&a, "owner").await;
    let room = owner.create_room("hideout", json!({"private": true})).await;
    let rid = s(&room, "id").to_string();
    assert_eq!(room["private"], true, "{room}");
    let code = s(&room, "code").to_string();
    assert!(
        (6..=8).contains(&code.chars().count()),
        "join code is 6-8 characters: {code:?}"
    );
    assert!(
        !code.contains(['0', 'O', '1', 'I', 'l']),
        "join codes use an unambiguous alphabet: {code:?}"
    );

    let mut guest_b = guest(&b, "visitor").await;
    guest_b
        .expect_err(json!({"type": "room.join", "room": rid}), "forbidden")
        .await;
    assert_eq!(
        owner.room_get(&rid).await["participant_count"],
        1,
        "refused join adds nobody"
    );
    let data = guest_b.join_code(&code).await;
    assert_eq!(data["room"]["id"], rid, "{data}");
    assert_eq!(data["room"]["participant_count"], 2, "{data}");

    // Events flow to the code-joined member on the other node.
    let m = owner.send_message(&rid, "psst").await;
    let ev = guest_b.next_message_event(&rid).await;
    let ev = if ev["message"]["id"] == m["id"] {
        ev
    } else {
        guest_b.next_message_event(&rid).await
    };
    assert_eq!(ev["message"]["id"], m["id"], "{ev}");

    // An unknown code is not_found.
    guest_b
        .expect_err(json!({"type": "room.join", "code": "ZZZZZZZ"}), "not_found")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_list_shows_public_rooms_most_recently_active_first() {
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut owner = guest(&a, "owner").await;
    let pause = Duration::from_millis(25);
    let mut rooms = Vec::new();
    for name in ["r1", "r2", "r3"] {
        rooms.push(s(&owner.create_room(name, json!({})).await, "id").to_string());
        tokio::time::sleep(pause).await;
    }
    let hidden = owner.create_room("hidden", json!({"private": true})).await;
    tokio::time::sleep(pause).await;
    // Activity order: r2, then r3, then r1 (most recent).
    for i in [1, 2, 0] {
        owner.send_message(&rooms[i], "activity").await;
        tokio::time::sleep(pause).await;
    }

    let mut viewer = guest(&b, "viewer").await;
    let data = viewer.ok(json!({"type": "room.list"})).await;
    let listed = ids(&data["rooms"]);
    assert!(
        !listed.contains(&s(&hidden, "id").to_string()),
        "private room listed: {data}"
    );
    let expected = vec![rooms[0].clone(), rooms[2].clone(), rooms[1].clone()];
    assert_eq!(
        listed, expected,
        "public rooms, most recently active first: {data}"
    );
    for room in data["rooms"].as_array().expect("rooms") {
        for key in [
            "id",
            "code",
            "name",
            "created_by",
            "created_at",
            "max_participants",
            "private",
            "participant_count",
            "last_seq",
        ] {
            assert!(room.get(key).is_some(), "room object lacks `{key}`: {room}");
        }
        assert_eq!(room["private"], false, "{room}");
    }
    let data = viewer.ok(json!({"type": "room.list", "limit": 2})).await;
    assert_eq!(
        ids(&data["rooms"]),
        expected[..2].to_vec(),
        "limit 2: {data}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_messages_mark_room_creation_and_first_join() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut u1 = user(&a, "u1", "Una").await;
    let room = u1.create_room("announced", json!({})).await;
    let rid = s(&room, "id").to_string();
    let initial = u1.all_messages(&rid).await;
    assert!(
        !initial.is_empty(),
        "room creation writes a system message: {initial:?}"
    );
    assert!(
        initial.iter().all(|m| m["kind"] == "system"),
        "a new room holds system messages only: {:?}",
        kinds(&initial)
    );
    let k0 = system_count(&initial);

    let mut u2 = user(&b, "u2", "Udo").await;
    u2.join(&rid).await;
    let after_join = u2.all_messages(&rid).await;
    assert_eq!(
        system_count(&after_join),
        k0 + 1,
        "a first join adds one system message: {after_join:?}"
    );
    assert_eq!(
        after_join.last().map(|m| &m["kind"]),
        Some(&json!("system"))
    );

    // The same user joining again (another connection, other node) is not a first join.
    let mut u2_again = user(&a, "u2", "Udo").await;
    u2_again.join(&rid).await;
    let again = u1.all_messages(&rid).await;
    assert_eq!(
        system_count(&again),
        k0 + 1,
        "a second join adds nothing: {again:?}"
    );
    // A system message is a message with a seq like any other.
    assert!(again.iter().all(|m| m["seq"].is_u64()), "{again:?}");
}

// ---------------------------------------------------------------------------
// 7. Memory engine
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_engine_single_node_end_to_end() {
    let node = Node::start(None, "solo", FAST).await;
    let mut ann = guest(&node, "ann").await;
    let mut bob = guest(&node, "bob").await;
    let room = ann
        .create_room("in memory", json!({"max_participants": 5}))
        .await;
    let rid = s(&room, "id").to_string();
    assert_eq!(room["name"], "in memory");
    assert_eq!(room["max_participants"], 5);
    assert_eq!(room["private"], false);

    let data = bob.join_code(s(&room, "code")).await;
    assert_eq!(data["room"]["id"], rid);
    assert_eq!(data["room"]["participant_count"], 2);

    let m1 = ann.send_message(&rid, "hi bob").await;
    let ev = bob
        .wait_event("ann's message", EVENT_TIMEOUT, |e| {
            e["message"]["id"] == m1["id"]
        })
        .await;
    assert_eq!(ev["event"], "message.created");
    assert_eq!(seq(&ev), seq(&m1));
    let m2 = bob.send_message(&rid, "hi ann").await;
    assert_eq!(seq(&m2), seq(&m1) + 1, "seq +1 on the memory engine too");
    let ev = ann
        .wait_event("bob's message", EVENT_TIMEOUT, |e| {
            e["message"]["id"] == m2["id"]
        })
        .await;
    assert_eq!(seq(&ev), seq(&m2));

    let history = bob.all_messages(&rid).await;
    let user_msgs: Vec<&Value> = history.iter().filter(|m| m["kind"] != "system").collect();
    assert_eq!(user_msgs.len(), 2, "{history:?}");
    assert_eq!(user_msgs[0]["id"], m1["id"]);
    assert_eq!(user_msgs[1]["id"], m2["id"]);
    assert!(
        seqs(&history).windows(2).all(|w| w[0] < w[1]),
        "ascending: {history:?}"
    );

    let (status, _) = node.http_get("/healthz").await;
    assert_eq!(status, 200, "/healthz on the memory engine");
}

// ---------------------------------------------------------------------------
// 8. History paging
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_backwards_with_before_and_limit() {
    const SENT: usize = 60;
    const PAGE: usize = 25;
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut writer = guest(&a, "writer").await;
    let room = writer.create_room("long", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut reader = guest(&b, "reader").await;
    reader.join(&rid).await;
    let mut sent = Vec::new();
    for k in 0..SENT {
        sent.push(writer.send_message(&rid, &format!("line {k}")).await);
    }
    let last = reader.room_get(&rid).await["last_seq"]
        .as_u64()
        .expect("last_seq");
    assert_eq!(last, seq(sent.last().expect("sent")));

    // Default limit is 50: the newest 50, ascending.
    let data = reader.history(&rid, None, None).await;
    let default_page = data["messages"].as_array().expect("messages").clone();
    assert_eq!(
        default_page.len(),
        50,
        "default limit 50: {} messages",
        default_page.len()
    );
    assert_eq!(data["has_more"], true);
    assert_eq!(seq(default_page.last().expect("page")), last, "newest last");

    // Walk back with before + limit.
    let mut pages: Vec<Vec<Value>> = Vec::new();
    let mut before = None;
    loop {
        assert!(pages.len() < 20, "paging does not terminate");
        let data = reader.history(&rid, before, Some(PAGE as u64)).await;
        let page = data["messages"].as_array().expect("messages").clone();
        let page_seqs = seqs(&page);
        assert!(page.len() <= PAGE, "limit respected: {page_seqs:?}");
        assert!(
            page_seqs.windows(2).all(|w| w[0] < w[1]),
            "ascending: {page_seqs:?}"
        );
        if let Some(b) = before {
            assert!(
                page_seqs.iter().all(|q| *q < b),
                "before={b} is exclusive: {page_seqs:?}"
            );
        }
        if let (Some(prev), Some(newest)) = (pages.last(), page_seqs.last()) {
            assert_eq!(*newest + 1, seq(&prev[0]), "pages are contiguous");
        }
        let has_more = data["has_more"] == json!(true);
        if has_more {
            assert_eq!(page.len(), PAGE, "a page with has_more is full");
        }
        pages.push(page);
        if !has_more {
            break;
        }
        before = Some(seq(&pages.last().expect("page")[0]));
    }
    assert_eq!(
        seq(&pages[0][pages[0].len() - 1]),
        last,
        "first page ends at the newest"
    );
    let all: Vec<Value> = pages.into_iter().rev().flatten().collect();
    // The whole room in one call (it holds fewer than 100 messages).
    let data = reader.history(&rid, None, Some(100)).await;
    assert_eq!(
        data["has_more"], false,
        "limit 100 returns everything: {data}"
    );
    let everything = data["messages"].as_array().expect("messages").clone();
    let all_seqs = seqs(&all);
    assert_eq!(
        all_seqs,
        seqs(&everything),
        "the pages together are exactly the whole history"
    );
    assert_consecutive(&all_seqs, "history without edits has no seq gap");
    assert_eq!(all_seqs.last(), Some(&last));
    let user_ids: Vec<&str> = all
        .iter()
        .filter(|m| m["kind"] != "system")
        .map(|m| s(m, "id"))
        .collect();
    let sent_ids: Vec<&str> = sent.iter().map(|m| s(m, "id")).collect();
    assert_eq!(user_ids, sent_ids, "all sent messages, in order");

    // Nothing before the first message.
    let data = reader.history(&rid, Some(all_seqs[0]), Some(10)).await;
    assert_eq!(data["messages"], json!([]), "{data}");
    assert_eq!(data["has_more"], false, "{data}");

    // A plain join returns the last 50 messages, ascending.
    let mut late = guest(&a, "late").await;
    let data = late.join(&rid).await;
    let snapshot = data["messages"].as_array().expect("messages").clone();
    assert_eq!(snapshot.len(), 50, "room.join returns the last 50 messages");
    assert_consecutive(&seqs(&snapshot), "join snapshot");
    assert!(
        seq(snapshot.last().expect("snapshot")) >= last,
        "the join snapshot ends at the newest message"
    );
}

// ---------------------------------------------------------------------------
// HTTP endpoints
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_report_health_readiness_and_metrics() {
    let (mut redis, a, b) = two_nodes(FAST).await;
    for node in [&a, &b] {
        let (status, _) = node.http_get("/healthz").await;
        assert_eq!(status, 200, "/healthz on {}", node.node_id);
        let (status, body) = node.http_get("/readyz").await;
        assert_eq!(
            status, 200,
            "/readyz on {} with Redis up: {body}",
            node.node_id
        );
        assert!(
            serde_json::from_str::<Value>(&body).is_ok_and(|v| v.is_object()),
            "/readyz answers a JSON report: {body:?}"
        );
    }
    // Some traffic, then metrics.
    let mut c = guest(&a, "metered").await;
    let room = c.create_room("metrics", json!({})).await;
    c.send_message(s(&room, "id"), "count me").await;
    let (status, body) = a.http_get("/metrics").await;
    assert_eq!(status, 200, "/metrics");
    assert!(
        body.contains("huddle_"),
        "metrics are prefixed huddle_: {body}"
    );

    // Redis goes away: readiness turns 503, liveness stays 200.
    redis.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = b.http_get("/readyz").await;
        if status == 503 {
            assert!(
                serde_json::from_str::<Value>(&body).is_ok_and(|v| v.is_object()),
                "503 /readyz still carries the JSON report: {body:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz still {status} 10 s after Redis died: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _) = b.http_get("/healthz").await;
    assert_eq!(status, 200, "/healthz stays 200 while the process runs");
}

// ---------------------------------------------------------------------------
// Joining under traffic, faults and shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_during_traffic_leaves_no_gap_between_snapshot_and_events() {
    const SENT: usize = 300;
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut sender = guest(&a, "sender").await;
    let room = sender.create_room("rush hour", json!({})).await;
    let rid = s(&room, "id").to_string();

    let task_rid = rid.clone();
    let traffic = tokio::spawn(async move {
        let mut acked = Vec::with_capacity(SENT);
        for k in 0..SENT {
            acked.push(sender.send_message(&task_rid, &format!("rush {k}")).await);
        }
        (sender, acked)
    });
    // Clients join on both nodes while messages flow.
    let mut joiners = Vec::new();
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(15)).await;
        let node = if i % 2 == 0 { &b } else { &a };
        let mut c = guest(node, &format!("late{i}")).await;
        let data = c.join(&rid).await;
        joiners.push((c, data));
    }
    let (mut sender, acked) = traffic.await.expect("sender task");
    let traffic_last = seq(acked.last().expect("acked"));
    assert!(
        joiners.iter().any(|(_, data)| data["room"]["last_seq"]
            .as_u64()
            .is_some_and(|q| q < traffic_last)),
        "no client joined while the traffic was still flowing: the test proves nothing"
    );
    // A final marker: every joiner reads up to it.
    let last = seq(&sender.send_message(&rid, "end of rush").await);

    for (c, data) in &mut joiners {
        let snapshot = data["messages"].as_array().cloned().unwrap_or_default();
        let snapshot_seqs = seqs(&snapshot);
        assert_consecutive(&snapshot_seqs, &format!("{}: join snapshot", c.label));
        let room_last = data["room"]["last_seq"].as_u64().expect("last_seq");
        let snap_last = snapshot_seqs.last().copied().unwrap_or(0);
        assert!(
            room_last >= snap_last,
            "{}: room.last_seq {room_last} behind its own snapshot {snap_last}",
            c.label
        );
        // Everything after the snapshot must arrive as events, in order,
        // without gap or duplicate (events the snapshot already holds may
        // be repeated; a client drops those by seq).
        let mut after = Vec::new();
        loop {
            let ev = c.next_message_event(&rid).await;
            let q = seq(&ev);
            if q > snap_last {
                after.push(q);
            }
            if q >= last {
                break;
            }
        }
        let want: Vec<u64> = (snap_last + 1..=last).collect();
        assert_eq!(
            after,
            want,
            "{}: joined at last_seq {room_last} (snapshot up to {snap_last}); events after it must be \
             exactly {}..={last}",
            c.label,
            snap_last + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_pubsub_connections_lose_no_event() {
    let (redis, a, b) = two_nodes(FAST).await;
    let mut ca = guest(&a, "ca").await;
    let room = ca.create_room("flaky bus", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut ca2 = guest(&a, "ca2").await;
    ca2.join(&rid).await;
    let mut cb = guest(&b, "cb").await;
    cb.join(&rid).await;
    for c in [&mut ca, &mut ca2, &mut cb] {
        c.drain_events(Duration::from_millis(200)).await;
    }

    // Both nodes lose their pub/sub connection; messages keep coming.
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    assert!(
        matches!(killed, redis::Value::Int(n) if n >= 2),
        "each node holds a pub/sub connection to kill, CLIENT KILL said {killed:?}"
    );
    let mut acked = Vec::new();
    for k in 0..20 {
        acked.push(ca.send_message(&rid, &format!("during the drop {k}")).await);
    }
    let first = seq(&acked[0]);
    let last = seq(acked.last().expect("acked"));
    for c in [&mut ca, &mut ca2, &mut cb] {
        let mut got = Vec::new();
        while got.last().is_none_or(|q| *q < last) {
            let ev = tokio::time::timeout(Duration::from_secs(15), c.next_message_event(&rid))
                .await
                .unwrap_or_else(|_| panic!("{}: events stopped at {got:?}", c.label));
            got.push(seq(&ev));
        }
        assert_eq!(
            got,
            (first..=last).collect::<Vec<u64>>(),
            "{}: every acknowledged message, in order, despite the pub/sub drop",
            c.label
        );
    }
    // And live delivery works again.
    let m = cb.send_message(&rid, "after the drop").await;
    for c in [&mut ca, &mut ca2, &mut cb] {
        let ev = c.next_message_event(&rid).await;
        assert_eq!(ev["message"]["id"], m["id"], "{}: {ev}", c.label);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1012_and_they_resume_elsewhere() {
    let (_redis, mut a, b) = two_nodes(FAST).await;
    let mut ca = guest(&a, "leaving").await;
    let room = ca.create_room("migration", json!({})).await;
    let rid = s(&room, "id").to_string();
    let m = ca.send_message(&rid, "before shutdown").await;
    let mut cb = guest(&b, "staying").await;
    cb.join(&rid).await;

    a.terminate();
    assert_eq!(
        ca.wait_close(Duration::from_secs(10)).await,
        Some(1012),
        "SIGTERM closes clients with 1012 (service restart)"
    );
    let status = a.wait_exit(Duration::from_secs(10)).await;
    assert!(status.is_some(), "the node exits after SIGTERM");

    // The other node is unaffected; the client resumes there with `since`.
    cb.ping().await;
    let m2 = cb.send_message(&rid, "while A is gone").await;
    let mut again = guest(&b, "leaving-again").await;
    let data = again.join_since(&rid, seq(&m)).await;
    assert_eq!(data["complete"], true, "{data}");
    let events = data["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| e["message"]["id"] == m2["id"]),
        "resume on the other node replays what was missed: {data}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_answers_unavailable_then_recovers() {
    let mut args = FAST.to_vec();
    args.extend(["--redis-timeout-ms", "300"]);
    let (redis, a, _b) = two_nodes(&args).await;
    let mut c = guest(&a, "patient").await;
    let room = c.create_room("outage", json!({})).await;
    let rid = s(&room, "id").to_string();
    c.send_message(&rid, "before the outage").await;

    redis.pause();
    let cmid = unique("outage");
    let send = json!({"type": "message.send", "room": rid, "content": "during the outage",
                      "client_msg_id": cmid});
    let reply = c.request(send.clone()).await;
    // Whatever happens next, Redis must run again before this test ends.
    redis.resume();
    assert_eq!(
        reply["ok"], false,
        "a write with Redis frozen cannot succeed: {reply}"
    );
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    c.ping().await;

    // Recovery: writes succeed again within a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = c
            .request(json!({"type": "message.send", "room": rid, "content": "after the outage"}))
            .await;
        if reply["ok"] == true {
            break;
        }
        assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
        assert!(
            std::time::Instant::now() < deadline,
            "still unavailable 10 s after Redis came back: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // `unavailable` promises nothing was written.
    let history = c.all_messages(&rid).await;
    let during: Vec<&Value> = history
        .iter()
        .filter(|m| m["content"] == "during the outage")
        .collect();
    assert!(
        during.is_empty(),
        "`unavailable` means nothing was written, but history holds {during:?}"
    );
    // The client's retry with the same client_msg_id yields exactly one message.
    c.ok(send).await;
    let history = c.all_messages(&rid).await;
    let count = history
        .iter()
        .filter(|m| m["content"] == "during the outage")
        .count();
    assert_eq!(count, 1, "retry after unavailable: exactly one message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_history_endpoint_matches_message_history() {
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut writer = guest(&a, "writer").await;
    let room = writer.create_room("over http", json!({})).await;
    let rid = s(&room, "id").to_string();
    for k in 0..12 {
        writer.send_message(&rid, &format!("http {k}")).await;
    }
    let ws = writer.history(&rid, None, Some(5)).await;
    let before = seq(&ws["messages"][0]);

    // Guest mode: the endpoint is open. Read on the other node.
    let (status, body) = b
        .http_get(&format!("/api/rooms/{rid}/messages?limit=5"))
        .await;
    assert_eq!(status, 200, "GET messages: {body}");
    let http: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET messages answers JSON ({e}): {body}"));
    assert_eq!(
        http["messages"], ws["messages"],
        "HTTP page = WebSocket page"
    );
    assert_eq!(http["has_more"], ws["has_more"]);

    let (status, body) = b
        .http_get(&format!(
            "/api/rooms/{rid}/messages?before={before}&limit=5"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let older: Value = serde_json::from_str(&body).expect("JSON");
    let ws_older = writer.history(&rid, Some(before), Some(5)).await;
    assert_eq!(
        older["messages"], ws_older["messages"],
        "`before` over HTTP"
    );

    let (status, body) = b
        .http_get(&format!("/api/rooms/{}/messages", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(status, 404, "unknown room over HTTP: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_messages_are_gone_from_history_and_search() {
    let mut args = FAST.to_vec();
    args.extend(["--message-ttl", "1s"]);
    let (_redis, a, b) = two_nodes(&args).await;
    let mut ca = guest(&a, "ephemeral").await;
    let room = ca.create_room("mayfly", json!({})).await;
    let rid = s(&room, "id").to_string();
    let old = ca.send_message(&rid, "short lived words").await;
    let found = ca
        .ok(json!({"type": "message.search", "room": rid, "query": "lived"}))
        .await;
    assert_eq!(ids(&found["messages"]), vec![s(&old, "id").to_string()]);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    let fresh = ca.send_message(&rid, "fresh words").await;
    let mut cb = guest(&b, "reader").await;
    cb.join(&rid).await;
    let history = cb.all_messages(&rid).await;
    assert!(
        history.iter().all(|m| m["id"] != old["id"]),
        "an expired message is gone from history: {history:?}"
    );
    assert!(
        history.iter().any(|m| m["id"] == fresh["id"]),
        "a fresh message is in history: {history:?}"
    );
    let found = cb
        .ok(json!({"type": "message.search", "room": rid, "query": "words"}))
        .await;
    assert_eq!(
        ids(&found["messages"]),
        vec![s(&fresh, "id").to_string()],
        "an expired message is gone from search: {found}"
    );
    // The room itself lives on, and seq keeps counting.
    assert!(seq(&fresh) > seq(&old));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_never_overfill_a_room() {
    const CAPACITY: usize = 5;
    const JOINERS: usize = 12;
    let (_redis, a, b) = two_nodes(FAST).await;
    let mut owner = guest(&a, "owner").await;
    let room = owner
        .create_room("tight", json!({"max_participants": CAPACITY}))
        .await;
    let rid = s(&room, "id").to_string();
    let mut clients = Vec::new();
    for i in 0..JOINERS {
        let node = if i % 2 == 0 { &a } else { &b };
        clients.push(guest(node, &format!("j{i}")).await);
    }
    let mut tasks = Vec::new();
    for mut c in clients {
        let rid = rid.clone();
        tasks.push(tokio::spawn(async move {
            let reply = c.request(json!({"type": "room.join", "room": rid})).await;
            (c, reply)
        }));
    }
    let mut admitted = 0;
    let mut clients = Vec::new();
    for task in tasks {
        let (c, reply) = task.await.expect("join task");
        if reply["ok"] == true {
            admitted += 1;
        } else {
            assert_eq!(reply["error"]["code"], "conflict", "{}: {reply}", c.label);
        }
        clients.push(c);
    }
    assert_eq!(
        admitted,
        CAPACITY - 1,
        "exactly max_participants - 1 of {JOINERS} concurrent joiners fit beside the owner"
    );
    let got = owner.room_get(&rid).await;
    assert_eq!(got["participant_count"], CAPACITY, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_one_client_msg_id_make_one_message() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut owner = user(&a, "u1", "Una").await;
    let room = owner.create_room("retry storm", json!({})).await;
    let rid = s(&room, "id").to_string();
    // The same user on both nodes retries the same send at once.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let node = if i % 2 == 0 { &a } else { &b };
        let mut c = user(node, "u1", "Una").await;
        c.join(&rid).await;
        let rid = rid.clone();
        tasks.push(tokio::spawn(async move {
            let send = json!({"type": "message.send", "room": rid, "content": "once only",
                              "client_msg_id": "storm-1"});
            let message = c.ok(send).await["message"].clone();
            (c, message)
        }));
    }
    let mut messages = Vec::new();
    let mut clients = Vec::new();
    for task in tasks {
        let (c, m) = task.await.expect("send task");
        messages.push(m);
        clients.push(c);
    }
    for m in &messages[1..] {
        assert_eq!(
            m["id"], messages[0]["id"],
            "every retry returns one message"
        );
        assert_eq!(m["seq"], messages[0]["seq"]);
    }
    let history = owner.all_messages(&rid).await;
    let count = history
        .iter()
        .filter(|m| m["content"] == "once only")
        .count();
    assert_eq!(count, 1, "one message stored: {history:?}");
    // Exactly one message.created for it.
    let ev = owner
        .wait_event("the one message", EVENT_TIMEOUT, |e| {
            e["message"]["id"] == messages[0]["id"]
        })
        .await;
    assert_eq!(ev["event"], "message.created");
    owner.expect_no_message_event(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_are_replayed_and_update_search() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut u1 = user(&a, "u1", "Una").await;
    let room = u1.create_room("changes", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut u2 = user(&b, "u2", "Udo").await;
    u2.join(&rid).await;
    let mut u3 = user(&a, "u3", "Ute").await;
    u3.join(&rid).await;
    let since = u3.room_get(&rid).await["last_seq"]
        .as_u64()
        .expect("last_seq");
    drop(u3);
    u2.drain_events(QUIET).await;

    let m1 = u1.send_message(&rid, "apple pie").await;
    let m2 = u2.send_message(&rid, "cherry cake").await;
    let edited = u1
        .ok(json!({"type": "message.edit", "room": rid, "message": m1["id"], "content": "banana split"}))
        .await["message"]
        .clone();
    assert_eq!(edited["content"], "banana split", "{edited}");
    assert!(edited["edited_at"].is_u64(), "{edited}");
    let gone = u2
        .ok(json!({"type": "message.delete", "room": rid, "message": m2["id"]}))
        .await["message"]
        .clone();
    assert_eq!(gone["deleted"], true, "{gone}");

    // Live, on the other node: created, created, updated, deleted.
    let want = [
        ("message.created", &m1["id"]),
        ("message.created", &m2["id"]),
        ("message.updated", &m1["id"]),
        ("message.deleted", &m2["id"]),
    ];
    let mut live = Vec::new();
    while live.len() < want.len() {
        let ev = u2.next_message_event(&rid).await;
        if ev["message"]["kind"] != "system" {
            live.push(ev);
        }
    }
    for (ev, (name, id)) in live.iter().zip(want) {
        assert_eq!(ev["event"], name, "live event order: {ev}");
        assert_eq!(&ev["message"]["id"], id, "live event order: {ev}");
    }
    assert_consecutive(&seqs(&live), "created, created, updated, deleted");
    assert_eq!(live[2]["message"]["content"], "banana split");
    assert_eq!(
        live[3]["message"]["content"], "",
        "a deleted event carries a tombstone"
    );
    assert!(live[3]["message"]["attachment"].is_null());

    // Replayed the same way to a user resuming with `since` on node B.
    let mut u3 = user(&b, "u3", "Ute").await;
    let data = u3.join_since(&rid, since).await;
    assert_eq!(data["complete"], true, "{data}");
    let events = data["events"].as_array().expect("events").clone();
    assert_consecutive(&seqs(&events), "replayed events");
    let replayed: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"]["kind"] != "system")
        .collect();
    assert_eq!(replayed.len(), 4, "{data}");
    for (ev, (name, id)) in replayed.iter().zip(want) {
        assert_eq!(ev["event"], name, "replayed event order: {ev}");
        assert_eq!(&ev["message"]["id"], id, "replayed event order: {ev}");
    }
    assert_eq!(replayed[3]["message"]["content"], "", "replayed tombstone");

    // History and search see the current state.
    let history = u3.all_messages(&rid).await;
    let h1 = history
        .iter()
        .find(|m| m["id"] == m1["id"])
        .expect("edited message in history");
    assert_eq!(h1["content"], "banana split", "{h1}");
    assert!(h1["edited_at"].is_u64(), "{h1}");
    assert_eq!(h1["seq"], m1["seq"], "an edit keeps the message's seq");
    for m in history.iter().filter(|m| m["id"] == m2["id"]) {
        assert_eq!(
            m["deleted"], true,
            "a deleted message in history is a tombstone: {m}"
        );
        assert_eq!(m["content"], "", "a tombstone has no content: {m}");
    }
    for (query, expected) in [
        ("apple", vec![]),
        ("banana", vec![s(&m1, "id").to_string()]),
        ("cherry", vec![]),
    ] {
        let found = u3
            .ok(json!({"type": "message.search", "room": rid, "query": query}))
            .await;
        assert_eq!(
            ids(&found["messages"]),
            expected,
            "search {query:?} after edit and delete: {found}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_drops_users_whose_connections_end() {
    let mut args = FAST.to_vec();
    args.extend(["--jwt-secret", SECRET]);
    args.extend(FAST_JANITOR);
    let (_redis, mut a, b) = two_nodes(&args).await;
    let mut u1a = user(&a, "u1", "Una").await;
    let room = u1a.create_room("who is left", json!({})).await;
    let rid = s(&room, "id").to_string();
    let mut u1b = user(&b, "u1", "Una").await;
    u1b.join(&rid).await;
    let mut u2a = user(&a, "u2", "Udo").await;
    u2a.join(&rid).await;
    let mut u3b = user(&b, "u3", "Ute").await;
    u3b.join(&rid).await;

    async fn online(c: &mut Client, rid: &str) -> Vec<String> {
        let presence = c.ok(json!({"type": "presence", "room": rid})).await;
        let mut list = ids(&presence["online"]);
        list.sort();
        list
    }
    assert_eq!(online(&mut u3b, &rid).await, strings(&["u1", "u2", "u3"]));

    // u1 closes one of its two connections: still online.
    drop(u1a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        online(&mut u3b, &rid).await,
        strings(&["u1", "u2", "u3"]),
        "a user with one live connection left is still online"
    );

    // Node A dies: u2 had no other connection.
    a.kill();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = online(&mut u3b, &rid).await;
        if now == strings(&["u1", "u3"]) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "10 s after node A died, presence still says {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(u2a);
}
