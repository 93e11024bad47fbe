//! Big rooms (protocol 1.1) on two nodes: the 100-participant threshold
//! both ways, bounded join and get replies, `room.members` paging and the
//! rate of `participants.changed` across nodes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{
    Client, EVENT_TIMEOUT, FAST, Node, QUIET, RedisServer, guest, ids, s, two_jwt_nodes, user,
};

/// Joins users `f<from>`..`f<to>` (exclusive), alternating between the two
/// nodes; the clients stay connected.
async fn fill(a: &Node, b: &Node, rid: &str, from: usize, to: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in from..to {
        let node = if i % 2 == 0 { a } else { b };
        let mut c = user(node, &format!("f{i:03}"), &format!("Filler {i:03}")).await;
        c.join(rid).await;
        clients.push(c);
    }
    clients
}

/// Every member over the pages of `room.members` with `limit`, asserting
/// that no page is over the limit.
async fn all_members(c: &mut Client, rid: &str, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let mut req = json!({"type": "room.members", "room": rid, "limit": limit});
        if !cursor.is_null() {
            req["cursor"] = cursor.clone();
        }
        let page = c.ok(req).await;
        let members = ids(&page["members"]);
        assert!(members.len() <= limit, "a page over its limit: {page}");
        seen.extend(members);
        cursor = page["cursor"].clone();
        if cursor.is_null() {
            return seen;
        }
        assert!(cursor.is_string(), "cursor is a string or null: {page}");
    }
}

fn is_system(ev: &Value) -> bool {
    ev["event"] == "message.created" && ev["message"]["kind"] == "system"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_101st_participant_is_coalesced_and_the_100th_is_not() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut owner = user(&a, "owner", "Owner").await;
    let room = owner
        .create_room("crowd", json!({"max_participants": 1000}))
        .await;
    let rid = s(&room, "id").to_string();
    let mut watch = user(&b, "watch", "Watcher").await;
    watch.join(&rid).await;
    // 100 participants: owner, watcher and 98 more.
    let mut crowd = fill(&a, &b, &rid, 0, 98).await;
    let got = owner.ok(json!({"type": "room.get", "room": rid})).await;
    assert_eq!(got["room"]["participant_count"], 100, "{got}");
    owner.drain_events(QUIET).await;
    watch.drain_events(QUIET).await;

    // The 101st joins on node B: no system message, no participant.joined,
    // one participants.changed on both nodes; the reply is bounded.
    let mut extra = user(&b, "late", "Late").await;
    let data = extra.join(&rid).await;
    assert_eq!(data["room"]["participant_count"], 101, "{data}");
    let listed = ids(&data["participants"]);
    assert_eq!(listed.len(), 100, "at most 100 participants: {data}");
    assert_eq!(listed[0], "late", "the newest first: {data}");
    assert_eq!(listed.iter().collect::<HashSet<_>>().len(), 100);
    assert!(
        !data["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .any(|m| m["content"] == "Late joined"),
        "no system message for the 101st: {data}"
    );
    for (who, c) in [("owner", &mut owner), ("watch", &mut watch)] {
        let ev = c
            .wait_event("participants.changed", EVENT_TIMEOUT, |e| {
                assert!(!is_system(e), "{who}: a system message above 100: {e}");
                assert_ne!(e["event"], "participant.joined", "{who}: {e}");
                e["event"] == "participants.changed"
            })
            .await;
        assert_eq!(ev["room"], rid.as_str(), "{ev}");
        assert_eq!(ev["participant_count"], 101, "{ev}");
        assert_eq!(ids(&ev["joined"]), ["late"], "{ev}");
        assert_eq!(ids(&ev["left"]), Vec::<String>::new(), "{ev}");
        assert!(ev.get("seq").is_none(), "ephemeral: {ev}");
    }
    let got = watch.ok(json!({"type": "room.get", "room": rid})).await;
    assert_eq!(ids(&got["participants"]).len(), 100, "{got}");
    assert_eq!(got["room"]["participant_count"], 101, "{got}");

    // Every member exactly once over the pages; non-members may not list.
    let mut everyone = all_members(&mut watch, &rid, 30).await;
    assert_eq!(everyone.len(), 101, "{everyone:?}");
    everyone.sort();
    everyone.dedup();
    assert_eq!(everyone.len(), 101, "nobody twice");
    let mut stranger = user(&a, "stranger", "Stranger").await;
    stranger
        .expect_err(json!({"type": "room.members", "room": rid}), "forbidden")
        .await;
    watch
        .expect_err(
            json!({"type": "room.members", "room": rid, "limit": 501}),
            "bad_request",
        )
        .await;

    // The 101st leaves: as quiet as it came (after the 1 s window).
    extra.ok(json!({"type": "room.leave", "room": rid})).await;
    let ev = owner
        .wait_event("participants.changed (left)", EVENT_TIMEOUT, |e| {
            assert!(!is_system(e), "a system message for the 101st leaving: {e}");
            assert_ne!(e["event"], "participant.left", "{e}");
            e["event"] == "participants.changed"
        })
        .await;
    assert_eq!(ev["participant_count"], 100, "{ev}");
    assert_eq!(ids(&ev["left"]), ["late"], "{ev}");

    // Back at 100: 1.0 again, a participant.left and a system message.
    let mut last = crowd.pop().expect("a filler");
    last.ok(json!({"type": "room.leave", "room": rid})).await;
    // The system message is durable (published by the leave itself), the
    // participant.left follows it: both arrive, in that order.
    let note = watch
        .wait_event("system message", EVENT_TIMEOUT, is_system)
        .await;
    assert_eq!(note["message"]["content"], "Filler 097 left", "{note}");
    let left = watch
        .wait_event("participant.left", EVENT_TIMEOUT, |e| {
            e["event"] == "participant.left"
        })
        .await;
    assert_eq!(left["user"]["id"], "f097", "{left}");
    let got = watch.ok(json!({"type": "room.get", "room": rid})).await;
    assert_eq!(got["room"]["participant_count"], 99, "{got}");
    assert_eq!(ids(&got["participants"]).len(), 99, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_changed_is_told_at_most_once_a_second_across_nodes() {
    let (_redis, a, b) = two_jwt_nodes().await;
    let mut owner = user(&a, "owner", "Owner").await;
    let room = owner
        .create_room("busy", json!({"max_participants": 1000}))
        .await;
    let rid = s(&room, "id").to_string();
    let mut watch = user(&b, "watch", "Watcher").await;
    watch.join(&rid).await;
    let _crowd = fill(&a, &b, &rid, 0, 100).await;
    owner.drain_events(Duration::from_millis(1500)).await;
    watch.drain_events(QUIET).await;

    // For about 3.5 s, a user joins every 100 ms, alternating nodes.
    let churn = tokio::spawn({
        let (a, b) = (a.ws_url(), b.ws_url());
        async move {
            let mut joined = Vec::new();
            for i in 0..35 {
                let url = if i % 2 == 0 { &a } else { &b };
                let mut c = Client::connect_url(url, &format!("churn{i}")).await;
                let token = crate::common::mint_token(
                    crate::common::JWT_SECRET,
                    &format!("c{i:02}"),
                    &format!("Churn {i:02}"),
                );
                c.hello_token(&token, "Churn").await;
                c.join(&rid).await;
                joined.push(c);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            joined
        }
    });
    let rid_now = room["id"].as_str().expect("id").to_string();
    let start = Instant::now();
    let mut times = Vec::new();
    let mut told: HashSet<String> = HashSet::new();
    let mut count = 0;
    while start.elapsed() < Duration::from_secs(7) {
        let Some(ev) = owner.next_event(Duration::from_millis(200)).await else {
            continue;
        };
        assert!(!is_system(&ev), "no system messages above 100: {ev}");
        assert_ne!(ev["event"], "participant.joined", "{ev}");
        if ev["event"] == "participants.changed" {
            assert_eq!(ev["room"], rid_now.as_str());
            times.push(Instant::now());
            told.extend(ids(&ev["joined"]));
            count = ev["participant_count"].as_u64().expect("count");
        }
    }
    let _churned = churn.await.expect("churn");
    assert!(
        times.len() >= 3,
        "changes were told: {} events",
        times.len()
    );
    assert!(
        times.len() <= 8,
        "at most one a second: {} events in 7 s",
        times.len()
    );
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        // The gate holds for 1 s of Redis time; what the client sees adds
        // delivery jitter, which reached several hundred ms on a loaded CI
        // machine (one failure at load 9 with an 850 ms bound). Two events
        // let through at once would arrive within a few ms.
        assert!(
            gap >= Duration::from_millis(400),
            "two participants.changed {gap:?} apart"
        );
    }
    let expected: HashSet<String> = (0..35).map(|i| format!("c{i:02}")).collect();
    assert_eq!(told, expected, "every join was told, from both nodes");
    assert_eq!(count, 137, "the last count is exact");
    let got = watch.ok(json!({"type": "room.get", "room": rid_now})).await;
    assert_eq!(got["room"]["participant_count"], 137, "{got}");
}

/// How often each Redis command ran since the last `CONFIG RESETSTAT`
/// (commands run by scripts included).
async fn command_calls(redis: &RedisServer) -> std::collections::HashMap<String, u64> {
    let info: String = redis::from_redis_value(redis.command(&["INFO", "commandstats"]).await)
        .expect("INFO commandstats is text");
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_into_a_big_room_reads_no_member_list_from_redis() {
    let redis = RedisServer::start().await;
    let node = Node::start(Some(&redis.url()), "n1", FAST).await;
    let mut owner = guest(&node, "Owner").await;
    let room = owner
        .create_room("arena", json!({"max_participants": 1000}))
        .await;
    let rid = s(&room, "id").to_string();
    let mut crowd = Vec::new();
    for i in 0..150 {
        let mut c = guest(&node, &format!("Fan {i}")).await;
        c.join(&rid).await;
        crowd.push(c);
    }
    let mut late = guest(&node, "Late").await;
    redis.command(&["CONFIG", "RESETSTAT"]).await;
    let data = late.join(&rid).await;
    let calls = command_calls(&redis).await;
    assert!(
        calls.get("evalsha").copied().unwrap_or(0) >= 2,
        "the join and roster scripts were counted: {calls:?}"
    );
    // Nothing that reads every member or every connection of the room.
    for whole in [
        "hvals",
        "hkeys",
        "hscan",
        "smembers",
        "zrange",
        "zrangebyscore",
    ] {
        assert!(
            !calls.contains_key(whole),
            "a join ran {whole} {:?} times: {calls:?}",
            calls.get(whole)
        );
    }
    // The roster reads presence in pages of 100 (at most 4) and the members
    // it picked with one HMGET; their roles (1.1) take three more, bounded
    // by the page: the room's owner, the page's roles and mutes.
    assert!(
        calls.get("zrevrange").copied().unwrap_or(0) <= 4,
        "{calls:?}"
    );
    assert!(calls.get("hmget").copied().unwrap_or(0) <= 5, "{calls:?}");
    assert_eq!(data["room"]["participant_count"], 152, "{data}");
    assert_eq!(ids(&data["participants"]).len(), 100, "{data}");
}
