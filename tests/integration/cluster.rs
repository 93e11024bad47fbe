//! Multi-node behaviour: every test here starts its own `redis-server` and
//! at least two `huddle` nodes sharing it, then checks the delivery,
//! ordering, resume and persistence promises of `PROTOCOL.md` across nodes:
//! fan-out, one total order under concurrent senders, `room.join` with
//! `since`, a full restart, joining under traffic, a dropped pub/sub
//! connection and a node shut down under its clients.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{
    Client, FAST, Node, QUIET, assert_consecutive, assert_recent_ms, guest, heavy,
    is_message_event, s, seq, seqs, two_nodes, two_nodes_on_one_redis,
};

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

// ---------------------------------------------------------------------------
// Fan-out across nodes
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
    assert_recent_ms(&m1["created_at"], "message.created_at");
    assert_recent_ms(&room["created_at"], "room.created_at");
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
// Total order under concurrent senders on both nodes
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_on_two_nodes_yield_one_gap_free_order() {
    let _heavy = heavy(module_path!()).await;
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
// Resuming with `since`
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
// Persistence across a full restart
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_history_survive_restarting_every_node() {
    let (redis, mut a, mut b) = two_nodes_on_one_redis(FAST).await;
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
// Joining under traffic, a dropped bus connection, shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_during_traffic_leaves_no_gap_between_snapshot_and_events() {
    let _heavy = heavy(module_path!()).await;
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
    let _heavy = heavy(module_path!()).await;
    let (redis, a, b) = two_nodes_on_one_redis(FAST).await;
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
