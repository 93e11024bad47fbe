//! Fault tests with real processes: Redis killed and restarted, Redis
//! frozen, a node killed, a node drained. Each asserts that nothing
//! acknowledged is lost and that no client sees a gap or a reordering;
//! a write refused as `unavailable` while Redis is frozen was not stored.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{
    Client, FAST, FAST_JANITOR, Node, QUIET, RedisServer, event_story, guest, heavy, s,
    two_nodes_on_one_redis, unique,
};

/// Sends `count` messages with client_msg_ids, retrying `unavailable` with
/// the same id as a real client would, until each is acknowledged. Returns
/// (seq, message id) of every acknowledged message.
async fn send_until_acked(
    mut c: Client,
    room: String,
    tag: String,
    count: usize,
) -> (Client, Vec<(u64, String)>) {
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    for i in 0..count {
        let req = json!({"type": "message.send", "room": room, "content": format!("{tag} {i}"),
                         "client_msg_id": format!("{tag}-{i}")});
        loop {
            let reply = c.request(req.clone()).await;
            if reply["ok"] == true {
                let m = &reply["data"]["message"];
                acked.push((
                    m["seq"].as_u64().expect("seq"),
                    m["id"].as_str().expect("id").to_string(),
                ));
                break;
            }
            assert_eq!(
                reply["error"]["code"], "unavailable",
                "only outages may refuse: {reply}"
            );
            assert!(
                Instant::now() < deadline,
                "{tag}: still unavailable after 40 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    (c, acked)
}

/// Collects `message.created` events of `room` until every id in `want` has
/// been seen; asserts the seqs seen are strictly consecutive.
async fn receive_all(c: &mut Client, room: &str, want: &HashSet<String>, what: &str) {
    let mut seen = BTreeMap::new();
    let mut order = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !want
        .iter()
        .all(|id| seen.values().any(|v: &String| v == id))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(ev) = c.next_event(left).await else {
            let missing: Vec<&String> = want
                .iter()
                .filter(|id| !seen.values().any(|v| v == *id))
                .collect();
            panic!(
                "{what}: {} acknowledged messages never arrived: {missing:?}",
                missing.len()
            );
        };
        if ev["room"] != room
            || !ev["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("message."))
        {
            continue;
        }
        let seq = ev["seq"].as_u64().expect("durable events carry seq");
        order.push(seq);
        if ev["event"] == "message.created" {
            seen.insert(seq, ev["message"]["id"].as_str().unwrap_or("").to_string());
        }
    }
    for pair in order.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "{what}: a gap or a reordering in {order:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_with_aof_loses_nothing_acknowledged() {
    let _heavy = heavy(module_path!()).await;
    redis_restart(&["--redis-conn-mode", "pool"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_one_shared_connection_loses_nothing_acknowledged() {
    let _heavy = heavy(module_path!()).await;
    redis_restart(&["--redis-conn-mode", "shared"]).await;
}

async fn redis_restart(mode: &[&str]) {
    let mut redis = RedisServer::start_with(true).await;
    let mut args = FAST.to_vec();
    args.extend(["--redis-timeout-ms", "500"]);
    args.extend(mode);
    let a = Node::start(Some(&redis.url()), "a", &args).await;
    let b = Node::start(Some(&redis.url()), "b", &args).await;
    let mut ra = Client::connect(&a).await;
    ra.hello("watcher-a").await;
    let room = ra.create_room("outage", json!({})).await;
    let rid = room["id"].as_str().expect("id").to_string();
    let mut rb = Client::connect(&b).await;
    rb.hello("watcher-b").await;
    rb.join(&rid).await;
    let mut senders = Vec::new();
    for (node, name) in [(&a, "sa"), (&b, "sb")] {
        let mut c = Client::connect(node).await;
        c.hello(name).await;
        c.join(&rid).await;
        senders.push(tokio::spawn(send_until_acked(
            c,
            rid.clone(),
            unique(name),
            25,
        )));
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.restart().await;

    let mut acked = Vec::new();
    for s in senders {
        let (_c, mine) = s.await.expect("sender");
        acked.extend(mine);
    }
    assert_eq!(acked.len(), 50);
    let ids: HashSet<String> = acked.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), 50, "every acknowledgement names its own message");
    receive_all(&mut ra, &rid, &ids, "watcher on a").await;
    receive_all(&mut rb, &rid, &ids, "watcher on b").await;
    // History holds each acknowledged message exactly once.
    let history = ra.all_messages(&rid).await;
    for (seq, id) in &acked {
        let n = history.iter().filter(|m| m["id"] == id.as_str()).count();
        assert_eq!(n, 1, "message {id} (seq {seq}) once in history");
    }
    let (status, body) = a.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.lines()
            .any(|l| l.starts_with("huddle_pubsub_reconnects_total") && !l.ends_with(" 0")),
        "the pub/sub reconnect is counted:\n{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_fails_fast_fails_readiness_and_recovers_without_a_restart() {
    let _heavy = heavy(module_path!()).await;
    let redis = RedisServer::start().await;
    // Default timeouts: the promises hold as shipped.
    let node = Node::start(Some(&redis.url()), "n", FAST).await;
    let mut c = Client::connect(&node).await;
    c.hello("patient").await;
    let room = c.create_room("frozen", json!({})).await;
    let rid = room["id"].as_str().expect("id").to_string();
    c.send_message(&rid, "before").await;

    redis.pause();
    let paused = Instant::now();
    let reply = c
        .request(json!({"type": "message.send", "room": rid, "content": "during"}))
        .await;
    let answered = paused.elapsed();
    let ready = node.http_get("/readyz").await;
    let refused_again = c
        .request(json!({"type": "message.send", "room": rid, "content": "during 2"}))
        .await;
    redis.resume();
    let resumed = Instant::now();
    assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
    assert!(
        answered < Duration::from_secs(2),
        "unavailable within 2 s, took {answered:?}"
    );
    assert_eq!(ready.0, 503, "not ready while Redis is frozen: {}", ready.1);
    let report: Value = serde_json::from_str(&ready.1).expect("JSON");
    assert_eq!(report["ready"], false);
    assert_eq!(report["checks"]["store"]["ok"], false, "{report}");
    assert_eq!(refused_again["error"]["code"], "unavailable");

    loop {
        let reply = c
            .request(json!({"type": "message.send", "room": rid, "content": "after"}))
            .await;
        if reply["ok"] == true {
            break;
        }
        assert!(
            resumed.elapsed() < Duration::from_secs(5),
            "recovery within 5 s of SIGCONT: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.http_get("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writes that answered `unavailable` were never applied, not even late.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let contents: Vec<String> = c
        .all_messages(&rid)
        .await
        .iter()
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !contents.iter().any(|t| t.starts_with("during")),
        "{contents:?}"
    );
    assert!(contents.contains(&"after".to_string()));
    let metrics = node.http_get("/metrics").await.1;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("huddle_errors_total{code=\"unavailable\"}") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("huddle_breaker_state 0"),
        "breaker closed again:\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_clients_resume_on_another_with_since() {
    let _heavy = heavy(module_path!()).await;
    let redis = RedisServer::start().await;
    let mut a = Node::start(Some(&redis.url()), "a", FAST).await;
    let b = Node::start(Some(&redis.url()), "b", FAST).await;
    let mut sender = Client::connect(&b).await;
    sender.hello("sender").await;
    let room = sender.create_room("survive", json!({})).await;
    let rid = room["id"].as_str().expect("id").to_string();
    let mut watcher = Client::connect(&a).await;
    watcher.hello("watcher").await;
    watcher.join(&rid).await;

    let task = tokio::spawn(send_until_acked(sender, rid.clone(), unique("s"), 40));
    // Watch live until a few messages have arrived, then lose node A.
    let mut seqs = Vec::new();
    let mut ids = HashSet::new();
    while seqs.len() < 8 {
        let ev = watcher.next_message_event(&rid).await;
        seqs.push(ev["seq"].as_u64().expect("seq"));
        ids.insert(ev["message"]["id"].as_str().unwrap_or("").to_string());
    }
    a.kill();
    drop(watcher);
    let last = *seqs.last().expect("seen");
    // The client reconnects through the "balancer" to node B and resumes.
    let mut again = Client::connect(&b).await;
    again.hello("watcher").await;
    let data = again.join_since(&rid, last).await;
    assert_eq!(data["complete"], true, "{data}");
    for e in data["events"].as_array().expect("events") {
        seqs.push(e["seq"].as_u64().expect("seq"));
        if e["event"] == "message.created" {
            ids.insert(e["message"]["id"].as_str().unwrap_or("").to_string());
        }
    }
    let (_s, acked) = task.await.expect("sender");
    let final_seq = acked.iter().map(|(s, _)| *s).max().expect("acked");
    while *seqs.last().expect("seqs") < final_seq {
        let ev = again.next_message_event(&rid).await;
        seqs.push(ev["seq"].as_u64().expect("seq"));
        if ev["event"] == "message.created" {
            ids.insert(ev["message"]["id"].as_str().unwrap_or("").to_string());
        }
    }
    for pair in seqs.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "no gap and no repeat across the move: {seqs:?}"
        );
    }
    for (seq, id) in &acked {
        assert!(
            ids.contains(id),
            "acknowledged message {id} (seq {seq}) reached the client"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_clients_over_the_window_and_exits_in_time() {
    let _heavy = heavy(module_path!()).await;
    let redis = RedisServer::start().await;
    let mut args = FAST.to_vec();
    args.extend(["--drain-window", "1s", "--shutdown-grace", "4s"]);
    let mut node = Node::start(Some(&redis.url()), "d", &args).await;
    let mut clients = Vec::new();
    for i in 0..12 {
        let mut c = Client::connect(&node).await;
        c.hello(&format!("c{i}")).await;
        clients.push(c);
    }
    let room = clients[0].create_room("drain", json!({})).await;
    let rid = room["id"].as_str().expect("id").to_string();
    // A request in flight when SIGTERM lands is answered before the close.
    let id = 777_000;
    clients[0]
        .send_json(&json!({"type": "message.send", "id": id, "room": rid, "content": "last words"}))
        .await;
    let terminated = Instant::now();
    node.terminate();
    let reply = clients[0].wait_reply(id, &json!({})).await;
    assert_eq!(reply["ok"], true, "in-flight request finished: {reply}");

    // Wait for every close at once, timing each as it arrives.
    let closes = futures_util::future::join_all(clients.iter_mut().map(|c| async move {
        let code = c.wait_close(Duration::from_secs(4)).await;
        (code, terminated.elapsed())
    }))
    .await;
    let mut closed_at = Vec::new();
    for (code, at) in closes {
        assert_eq!(code, Some(1012));
        closed_at.push(at);
    }
    let status = node.wait_exit(Duration::from_secs(5)).await.expect("exits");
    let took = terminated.elapsed();
    assert!(status.success(), "a clean drain exits 0: {status}");
    assert!(
        took < Duration::from_secs(4) + Duration::from_millis(500),
        "within the grace: {took:?}"
    );
    closed_at.sort();
    let spread = *closed_at.last().expect("closes") - closed_at[0];
    assert!(
        spread > Duration::from_millis(150),
        "closes spread over the drain window, not all at once: {closed_at:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_does_not_announce_users_who_come_back() {
    let _heavy = heavy(module_path!()).await;
    const SECRET: &str = "rolling-restart-secret-0123";
    let redis = RedisServer::start().await;
    let mut args = FAST.to_vec();
    args.extend([
        "--jwt-secret",
        SECRET,
        "--drain-window",
        "100ms",
        "--shutdown-grace",
        "3s",
    ]);
    args.extend(FAST_JANITOR);
    let mut a = Node::start(Some(&redis.url()), "a", &args).await;
    let b = Node::start(Some(&redis.url()), "b", &args).await;
    let token = crate::common::mint_token(SECRET, "ann", "Ann");
    let mut ann = Client::connect(&a).await;
    ann.hello_token(&token, "Ann").await;
    let room = ann.create_room("deploy", json!({})).await;
    let rid = room["id"].as_str().expect("id").to_string();
    let before = ann.send_message(&rid, "before the deploy").await;
    let mut obs = Client::connect(&b).await;
    obs.hello_token(&crate::common::mint_token(SECRET, "obs", "Obs"), "Obs")
        .await;
    obs.join(&rid).await;
    while obs.next_event(Duration::from_millis(300)).await.is_some() {}

    // Node A is replaced: Ann is closed with 1012 and comes back on B.
    a.terminate();
    assert_eq!(ann.wait_close(Duration::from_secs(5)).await, Some(1012));
    a.wait_exit(Duration::from_secs(5)).await.expect("A exits");
    let mut again = Client::connect(&b).await;
    again.hello_token(&token, "Ann").await;
    let data = again
        .join_since(&rid, before["seq"].as_u64().expect("seq"))
        .await;
    assert_eq!(data["complete"], true, "{data}");
    let about_ann: Vec<&Value> = data["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| {
            e["message"]["content"]
                .as_str()
                .is_some_and(|c| c.starts_with("Ann "))
        })
        .collect();
    assert!(
        about_ann.is_empty(),
        "Ann's move left no trace: {about_ann:?}"
    );

    // Past A's node timeout the janitor removes its old session quietly.
    let quiet_until = Instant::now() + Duration::from_millis(2500);
    while let Some(ev) = obs
        .next_event(quiet_until.saturating_duration_since(Instant::now()))
        .await
    {
        let about_ann = ev["user"]["id"] == "ann";
        let system = ev["message"]["kind"] == "system";
        assert!(
            !about_ann && !system,
            "a user who came back is not announced as leaving or joining: {ev}"
        );
    }
    let online = obs.ok(json!({"type": "presence", "room": rid})).await;
    let ids: Vec<&str> = online["online"]
        .as_array()
        .expect("online")
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    assert!(ids.contains(&"ann"), "Ann is online: {online}");
    let got = obs.ok(json!({"type": "room.get", "room": rid})).await;
    assert_eq!(got["room"]["participant_count"], 2);

    // When Ann really leaves, that is announced.
    drop(again);
    let left = obs
        .wait_event("Ann left", Duration::from_secs(5), |e| {
            e["event"] == "participant.left" && e["user"]["id"] == "ann"
        })
        .await;
    assert_eq!(left["room"], rid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_answers_unavailable_then_recovers() {
    let _heavy = heavy(module_path!()).await;
    let mut args = FAST.to_vec();
    args.extend(["--redis-timeout-ms", "300"]);
    let (redis, a, _b) = two_nodes_on_one_redis(&args).await;
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

/// With one turn (`--max-inflight-requests 1`), a request waits for it
/// behind another that waits on a frozen Redis: the node counts it in
/// `huddle_requests_waiting`, and once Redis is back both are answered and
/// stored. Requests queue at the node; none fails or is lost for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_their_turn_and_none_is_lost() {
    let _heavy = heavy(module_path!()).await;
    let redis = RedisServer::start().await;
    let node = Node::start(
        Some(&redis.url()),
        "n",
        &["--max-inflight-requests", "1", "--redis-timeout-ms", "8000"],
    )
    .await;
    let mut a = Client::connect(&node).await;
    a.hello("first").await;
    let room = a.create_room("turns", json!({})).await;
    let rid = room["id"].as_str().expect("id").to_string();
    let mut b = Client::connect(&node).await;
    b.hello("second").await;
    b.join(&rid).await;

    redis.pause();
    let send = |mut c: Client, text: &'static str, rid: String| {
        tokio::spawn(async move {
            let reply = c
                .request(json!({"type": "message.send", "room": rid, "content": text}))
                .await;
            (c, reply)
        })
    };
    let first = send(a, "one", rid.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = send(b, "two", rid.clone());
    let waiting = |body: &str| {
        body.lines()
            .find(|l| l.starts_with("huddle_requests_waiting "))
            .map(|l| l.trim_start_matches("huddle_requests_waiting ").to_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, body) = node.http_get("/metrics").await;
        if waiting(&body).as_deref() == Some("1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second request waits for the turn: {:?}",
            waiting(&body)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    redis.resume();
    let (mut a, one) = first.await.expect("first sender");
    let (_b, two) = second.await.expect("second sender");
    assert_eq!(one["ok"], true, "{one}");
    assert_eq!(two["ok"], true, "{two}");
    let (_, body) = node.http_get("/metrics").await;
    assert_eq!(
        waiting(&body).as_deref(),
        Some("0"),
        "nobody waits any more"
    );
    let page = a.history(&rid, None, None).await;
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["kind"] != "system")
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(texts, ["one", "two"], "both stored, in turn order");
}

/// A join that is written but whose snapshot cannot be read fails, and is
/// taken back: the client's error is the truth (no participant is left
/// behind), the room sees the join undone, and a retry joins once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_whose_snapshot_fails_is_taken_back() {
    let (redis, a, b) = two_nodes_on_one_redis(FAST).await;
    let mut ann = guest(&a, "Ann").await;
    let room = ann.create_room("undo", json!({})).await;
    let rid = s(&room, "id").to_owned();
    let key = format!("huddle:room:{{{rid}}}");
    // The join script reads nothing of `created_at`; the snapshot cannot
    // parse the room without it.
    redis
        .command(&["HSET", &key, "created_at", "not a time"])
        .await;
    let mut bob = guest(&b, "Bob").await;
    let error = bob.err(json!({"type": "room.join", "room": rid})).await;
    assert_ne!(error["code"], "ok", "{error}");
    let members = format!("huddle:room_members:{{{rid}}}");
    let joined = redis.command(&["HLEN", &members]).await;
    assert_eq!(
        joined,
        redis::Value::Int(1),
        "Ann alone: the join was taken back"
    );
    let story = event_story(&ann.drain_events(QUIET).await);
    assert_eq!(
        story,
        [
            "message Bob joined",
            "participant.joined Bob",
            "message Bob left",
            "participant.left Bob"
        ]
    );

    // Repaired, the same connection joins, once.
    redis
        .command(&["HSET", &key, "created_at", &room["created_at"].to_string()])
        .await;
    let data = bob.join(&rid).await;
    assert_eq!(data["room"]["participant_count"], 2, "{data}");
    assert_eq!(
        redis.command(&["HLEN", &members]).await,
        redis::Value::Int(2)
    );
}

/// Spins Redis for ARGV[1] ms: nothing else is answered meanwhile.
const SPIN: &str = "local function now() local t = redis.call('TIME') \
    return t[1] * 1000 + t[2] / 1000 end \
    local stop = now() + tonumber(ARGV[1]) \
    while now() < stop do end \
    return 1";

/// A Redis that answers later than the redis crate's own 500 ms response
/// timeout, but within `--redis-timeout-ms` (1 s by default), is waited
/// for, on the shared connection and on pooled ones: the read succeeds in
/// one round trip, and no Redis call of the node fails meanwhile. Before,
/// the crate's timeout failed the read's first try (a retry mended it),
/// and on a busy node a few such failures in a row opened the breaker
/// (docs/storm.md).
/// (Guarded writes are still refused once half the timeout has passed in
/// Redis, so that an applied write is answered before the caller gives up.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_slower_than_half_a_second_within_the_timeout_is_waited_for() {
    let _heavy = heavy(module_path!()).await;
    for mode in ["shared", "pool"] {
        let redis = RedisServer::start().await;
        let flags = [FAST, &["--redis-conn-mode", mode]].concat();
        let node = Node::start(Some(&redis.url()), "n", &flags).await;
        let mut c = guest(&node, "Patient").await;
        let room = c.create_room("slow", json!({})).await;
        let rid = s(&room, "id").to_owned();
        c.send_message(&rid, "kept").await;
        let client = redis::Client::open(redis.url()).expect("client");
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        let busy = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connects");
        // The spin must be running when the read arrives; if this machine
        // was too slow for that, the read did not wait and proves nothing,
        // so it is tried again.
        let mut waited = false;
        for _ in 0..3 {
            let mut spin = busy.clone();
            let spinning = tokio::spawn(async move {
                redis::cmd("EVAL")
                    .arg(SPIN)
                    .arg(0)
                    .arg(800)
                    .query_async::<i64>(&mut spin)
                    .await
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            let started = Instant::now();
            let reply = c
                .request(json!({"type": "message.history", "room": rid}))
                .await;
            let took = started.elapsed();
            assert_eq!(spinning.await.expect("joins").expect("spins"), 1);
            assert_eq!(reply["ok"], true, "{mode}: waited {took:?}: {reply}");
            assert_eq!(
                reply["data"]["messages"][1]["content"], "kept",
                "{mode}: {reply}"
            );
            if took > Duration::from_millis(550) {
                waited = true;
                break;
            }
        }
        assert!(waited, "{mode}: no read ever waited for Redis");
        let (_, metrics) = node.http_get("/metrics").await;
        let failed: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("huddle_redis_command_errors_total") && !l.ends_with(" 0"))
            .collect();
        assert!(failed.is_empty(), "{mode}: {failed:?}");
    }
}

/// A connection that closes while Redis is frozen still leaves its rooms
/// once Redis is back: its leave is tried again (with an open breaker
/// too), so the user does not stay a participant, and online, until the
/// node ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_while_redis_is_frozen_leaves_its_rooms_when_it_is_back() {
    let (redis, a, b) = two_nodes_on_one_redis(FAST).await;
    let mut ann = guest(&a, "Ann").await;
    let rid = s(&ann.create_room("frozen", json!({})).await, "id").to_owned();
    let mut bob = guest(&b, "Bob").await;
    bob.join(&rid).await;
    ann.drain_events(QUIET).await;

    redis.pause();
    drop(bob);
    // Longer than the store timeout, long enough for the breaker to open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.resume();
    let left = ann
        .wait_event("Bob's leave", Duration::from_secs(20), |e| {
            e["event"] == "participant.left" && e["user"]["name"] == "Bob"
        })
        .await;
    assert_eq!(left["room"], rid.as_str(), "{left}");
    let members = format!("huddle:room_members:{{{rid}}}");
    assert_eq!(
        redis.command(&["HLEN", &members]).await,
        redis::Value::Int(1)
    );
}
