//! Huddle on a real Redis Cluster (`--redis-cluster`): room events on shard
//! channels inside the owning shard only, a master killed under load with
//! replica acknowledgements (no acknowledged message lost, seqs gap-free),
//! and a busy room's slot migrated while messages flow.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch;

use crate::common::*;

fn slot_of(key: &str) -> u16 {
    RedisCluster::slot_of(key)
}

/// The flags of a node on `cluster`, plus `extra`.
fn cluster_args(seeds: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = FAST.iter().map(|s| s.to_string()).collect();
    args.extend(["--redis-cluster".to_string(), seeds.to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

async fn cluster_node(seeds: &str, id: &str, extra: &[&str]) -> Node {
    let args = cluster_args(seeds, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start(None, id, &args).await
}

/// The channel of a room under the default key prefix.
fn channel(room: &str) -> String {
    format!("huddle:events:{{{room}}}")
}

/// Creates rooms on `node` until every master owns at least `per_master` of
/// them; returns room id → master port.
async fn rooms_on_every_master(
    cluster: &RedisCluster,
    creator: &mut Client,
    per_master: usize,
) -> BTreeMap<String, u16> {
    let masters: HashSet<u16> = cluster.master_ports().await.into_iter().collect();
    let mut rooms = BTreeMap::new();
    for i in 0..200 {
        let mut count: HashMap<u16, usize> = HashMap::new();
        for port in rooms.values() {
            *count.entry(*port).or_default() += 1;
        }
        if masters
            .iter()
            .all(|m| count.get(m).copied().unwrap_or(0) >= per_master)
        {
            return rooms;
        }
        let room = creator.create_room(&format!("room {i}"), json!({})).await;
        let id = s(&room, "id").to_owned();
        let port = cluster.master_of_slot(slot_of(&id)).await;
        if count.get(&port).copied().unwrap_or(0) < per_master {
            rooms.insert(id, port);
        }
    }
    panic!("200 rooms did not cover every master {per_master} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_travel_on_shard_channels_of_the_owning_master_only() {
    let _heavy = heavy(module_path!()).await;
    let cluster = RedisCluster::start_masters_only(3).await;
    let seeds = cluster.seeds();
    let a = cluster_node(&seeds, "a", &[]).await;
    let b = cluster_node(&seeds, "b", &[]).await;
    let mut ann = guest(&a, "Ann").await;
    let mut bob = guest(&b, "Bob").await;
    let rooms = rooms_on_every_master(&cluster, &mut ann, 1).await;
    for room in rooms.keys() {
        bob.join(room).await;
    }
    let mut before: HashMap<u16, HashMap<String, u64>> = HashMap::new();
    for port in cluster.master_ports().await {
        before.insert(port, cluster.commandstats(port).await);
    }

    // Every room's channel is a shard channel on its own master, and on no
    // other; no classic channel carries room events.
    for (port, channels) in cluster.shard_channels().await {
        for (room, owner) in &rooms {
            let listed = channels.contains(&channel(room));
            assert_eq!(
                listed,
                port == *owner,
                "room {room} (slot {}, master {owner}) on master {port}: {channels:?}",
                slot_of(room)
            );
        }
    }
    for (port, channels) in cluster.classic_channels().await {
        assert!(
            channels.iter().all(|c| !c.contains("events:")),
            "classic channels on {port}: {channels:?}"
        );
    }

    // Messages cross nodes, each published once, on its room's master.
    for room in rooms.keys() {
        let sent = ann.send_message(room, &format!("hello {room}")).await;
        let got = bob.next_message_event(room).await;
        assert_eq!(got["message"]["id"], sent["id"], "{got}");
    }
    for (room, owner) in &rooms {
        let _ = room;
        let after = cluster.commandstats(*owner).await;
        let spublished = after.get("spublish").copied().unwrap_or(0)
            - before[owner].get("spublish").copied().unwrap_or(0);
        assert!(
            spublished >= 1,
            "master {owner} published nothing: {after:?}"
        );
    }
    for port in cluster.master_ports().await {
        let stats = cluster.commandstats(port).await;
        assert_eq!(
            stats.get("publish").copied().unwrap_or(0),
            0,
            "nothing is broadcast with PUBLISH on {port}: {stats:?}"
        );
    }

    // After the last local member leaves, the node drops the channel.
    let (gone, owner) = rooms.iter().next().expect("a room");
    bob.ok(json!({"type": "room.leave", "room": gone})).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listed: Vec<String> = cluster
            .shard_channels()
            .await
            .into_iter()
            .filter(|(p, _)| p == owner)
            .flat_map(|(_, c)| c)
            .collect();
        // Ann (node a) is still in it: still listed once; Bob's node
        // dropped its subscription.
        let subscribers = cluster.shard_subscribers(*owner, &channel(gone)).await;
        if subscribers == 1 {
            assert!(listed.contains(&channel(gone)));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node b still subscribed to {gone}: {subscribers} subscribers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A message the server acknowledged: id and seq.
#[derive(Debug, Clone)]
struct Acked {
    id: String,
    seq: u64,
    at: Instant,
}

/// Sends messages to `room` one after another until `stop`, each with its
/// own `client_msg_id`, retrying an `unavailable` one with the same id as a
/// client should. Returns what was acknowledged.
async fn send_until(
    mut client: Client,
    room: String,
    label: String,
    stop: watch::Receiver<bool>,
) -> (Vec<Acked>, usize) {
    let mut acked = Vec::new();
    let mut refusals = 0;
    let mut i = 0u64;
    while !*stop.borrow() {
        i += 1;
        let cmid = format!("{label}-{i}");
        let req =
            json!({"type": "message.send", "room": room, "content": cmid, "client_msg_id": cmid});
        let mut tries = 0;
        loop {
            let reply = client.request(req.clone()).await;
            if reply["ok"] == json!(true) {
                let m = &reply["data"]["message"];
                acked.push(Acked {
                    id: s(m, "id").to_owned(),
                    seq: seq(m),
                    at: Instant::now(),
                });
                break;
            }
            let code = reply["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert_eq!(code, "unavailable", "{label}: {reply}");
            refusals += 1;
            tries += 1;
            assert!(tries < 200, "{label}: {cmid} refused 200 times: {reply}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    (acked, refusals)
}

/// Collects every message event `client` receives until `stop`:
/// room → seq → message id.
async fn observe(
    mut client: Client,
    stop: watch::Receiver<bool>,
    seen: Arc<Mutex<HashMap<String, BTreeMap<u64, String>>>>,
) -> Client {
    loop {
        if *stop.borrow() {
            return client;
        }
        let Some(ev) = client.next_event(Duration::from_millis(200)).await else {
            continue;
        };
        if is_message_event(&ev) && ev["event"] == "message.created" {
            let room = s(&ev, "room").to_owned();
            let mut seen = seen.lock().expect("lock");
            let got = seen.entry(room).or_default();
            // Live events arrive once each, in seq order.
            if let Some((last, _)) = got.last_key_value() {
                assert!(seq(&ev) > *last, "seq {} after {last}: {ev}", seq(&ev));
            }
            got.insert(seq(&ev), s(&ev["message"], "id").to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_loses_no_acknowledged_message() {
    let _heavy = heavy(module_path!()).await;
    let mut cluster = RedisCluster::start().await;
    let seeds = cluster.seeds();
    let extra = ["--redis-replica-acks", "1"];
    let a = cluster_node(&seeds, "a", &extra).await;
    let b = cluster_node(&seeds, "b", &extra).await;
    let mut ann = guest(&a, "Ann").await;
    let rooms = rooms_on_every_master(&cluster, &mut ann, 1).await;
    let (victim_room, victim) = rooms
        .iter()
        .next()
        .map(|(r, p)| (r.clone(), *p))
        .expect("a room");

    // An observer on node a, in every room, connected throughout.
    let mut watcher = guest(&a, "Watcher").await;
    for room in rooms.keys() {
        watcher.join(room).await;
    }
    let (stop_tx, stop) = watch::channel(false);
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let observer = tokio::spawn(observe(watcher, stop.clone(), seen.clone()));

    // A sender on each node in every room.
    let mut senders = Vec::new();
    for (n, room) in rooms.keys().enumerate() {
        for (node, name) in [(&a, "a"), (&b, "b")] {
            let mut c = guest(node, &format!("S{n}{name}")).await;
            c.join(room).await;
            senders.push((
                room.clone(),
                tokio::spawn(send_until(
                    c,
                    room.clone(),
                    format!("r{n}-{name}"),
                    stop.clone(),
                )),
            ));
        }
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    cluster.kill_master_of_slot(slot_of(&victim_room)).await;
    // Both nodes stay ready throughout: one master failing over is not the
    // store being gone.
    let (probe_stop, probe_until) = watch::channel(false);
    let probes: Vec<_> = [a.addr.to_string(), b.addr.to_string()]
        .into_iter()
        .map(|addr| {
            let until = probe_until.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !*until.borrow() {
                    statuses.push(http_get_at(&addr, "/readyz").await.0);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                statuses
            })
        })
        .collect();
    let promoted = cluster
        .wait_failover(slot_of(&victim_room), Duration::from_secs(30))
        .await;
    probe_stop.send(true).expect("stop probes");
    for probe in probes {
        let statuses = probe.await.expect("probe");
        assert!(
            !statuses.is_empty() && statuses.iter().all(|s| *s == 200),
            "/readyz during the failover: {statuses:?}"
        );
    }
    let failed_over_at = Instant::now();
    assert_ne!(promoted, victim);
    // The promoted replica has no replica of its own, so with acks = 1 its
    // rooms' writes stay unconfirmed (`unavailable`) until the old master
    // comes back as its replica, as an operator or Kubernetes would bring
    // it back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart(victim).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_tx.send(true).expect("stop");

    let mut acked: HashMap<String, Vec<Acked>> = HashMap::new();
    let mut refusals = 0;
    for (room, task) in senders {
        let (got, refused) = task.await.expect("sender");
        refusals += refused;
        acked.entry(room).or_default().extend(got);
    }
    let mut watcher = observer.await.expect("observer");

    // Rooms on the surviving masters kept working while the victim's slot
    // was failing over.
    let during: usize = acked
        .iter()
        .filter(|(room, _)| **room != victim_room && rooms[*room] != victim)
        .flat_map(|(_, list)| list)
        .filter(|m| m.at > killed_at && m.at < failed_over_at)
        .count();
    assert!(
        during > 0,
        "no room on a surviving master acknowledged anything during the failover"
    );
    // The victim's room works again after the failover.
    assert!(
        acked[&victim_room].iter().any(|m| m.at > failed_over_at),
        "the failed-over room never worked again"
    );

    let mut reader = guest(&b, "Reader").await;
    for room in rooms.keys() {
        reader.join(room).await;
        // History: every acknowledged message exactly once, seqs strictly
        // increasing.
        let mut history = Vec::new();
        let mut before = None;
        loop {
            let page = reader.history(room, before, Some(100)).await;
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            before = messages.first().map(seq);
            history.splice(0..0, messages);
            if page["has_more"] != json!(true) {
                break;
            }
        }
        let seqs: Vec<u64> = history.iter().map(seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{room}: seqs not strictly increasing: {seqs:?}"
        );
        let ids: Vec<&str> = history.iter().map(|m| s(m, "id")).collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{room}: a message twice in history"
        );
        for m in &acked[room] {
            assert!(
                unique.contains(m.id.as_str()),
                "{room}: acknowledged {} (seq {}) is not in history",
                m.id,
                m.seq
            );
            let at = history.iter().find(|h| s(h, "id") == m.id).map(seq);
            assert_eq!(at, Some(m.seq), "{room}: {} moved seq", m.id);
        }

        // The observer has every acknowledged message: live events plus at
        // most one `since` resume from its last seq.
        let mut got = seen.lock().expect("lock").remove(room).unwrap_or_default();
        let missing = acked[room].iter().any(|m| got.get(&m.seq) != Some(&m.id));
        if missing {
            let from = got.keys().next_back().copied().unwrap_or(0);
            let resumed = watcher.join_since(room, from).await;
            for ev in resumed["events"].as_array().cloned().unwrap_or_default() {
                if ev["event"] == "message.created" {
                    got.insert(seq(&ev), s(&ev["message"], "id").to_owned());
                }
            }
        }
        for m in &acked[room] {
            assert_eq!(
                got.get(&m.seq),
                Some(&m.id),
                "{room}: the observer never got acknowledged seq {}",
                m.seq
            );
        }
    }
    let total: usize = acked.values().map(Vec::len).sum();
    eprintln!(
        "failover: {total} acknowledged, {refusals} unavailable refusals retried, failover took {:?}",
        failed_over_at - killed_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_rooms_slot_migrated_mid_stream_loses_reorders_and_duplicates_nothing() {
    let _heavy = heavy(module_path!()).await;
    let cluster = RedisCluster::start_masters_only(3).await;
    let seeds = cluster.seeds();
    let a = cluster_node(&seeds, "a", &[]).await;
    let b = cluster_node(&seeds, "b", &[]).await;
    let mut ann = guest(&a, "Ann").await;
    let room = ann.create_room("busy", json!({})).await;
    let room = s(&room, "id").to_owned();
    let slot = slot_of(&room);
    let from = cluster.master_of_slot(slot).await;
    let to = cluster
        .master_ports()
        .await
        .into_iter()
        .find(|p| *p != from)
        .expect("another master");

    let mut watchers = Vec::new();
    let (stop_tx, stop) = watch::channel(false);
    for (node, name) in [(&a, "Wa"), (&b, "Wb")] {
        let mut w = guest(node, name).await;
        w.join(&room).await;
        let seen = Arc::new(Mutex::new(HashMap::new()));
        watchers.push((seen.clone(), tokio::spawn(observe(w, stop.clone(), seen))));
    }
    let mut senders = Vec::new();
    for (node, name) in [(&a, "a"), (&b, "b")] {
        let mut c = guest(node, &format!("S{name}")).await;
        c.join(&room).await;
        senders.push(tokio::spawn(send_until(
            c,
            room.clone(),
            format!("m-{name}"),
            stop.clone(),
        )));
    }

    tokio::time::sleep(Duration::from_millis(700)).await;
    let migration = SlotMigration::begin(&cluster, slot, to).await;
    // Keys move in small batches while sends continue (ASK redirects).
    while migration.move_keys(3).await > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    migration.finish().await;
    assert_eq!(cluster.master_of_slot(slot).await, to, "the slot moved");
    // Redis dropped the nodes' subscriptions to the moved slot's channel;
    // each node subscribed again on the new master (and repaired the room).
    for node in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (_, metrics) = node.http_get("/metrics").await;
            let resubscribed = metrics
                .lines()
                .find_map(|l| l.strip_prefix("huddle_pubsub_resubscribes_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0);
            if resubscribed >= 1.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} never subscribed the moved channel again",
                node.node_id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(cluster.shard_subscribers(to, &channel(&room)).await, 2);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_tx.send(true).expect("stop");

    let mut acked = Vec::new();
    for task in senders {
        let (got, _) = task.await.expect("sender");
        acked.extend(got);
    }
    acked.sort_by_key(|m| m.seq);
    assert!(acked.len() > 20, "too few messages flowed: {}", acked.len());
    let seqs: Vec<u64> = acked.iter().map(|m| m.seq).collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    assert_eq!(
        unique.len(),
        seqs.len(),
        "a seq acknowledged twice: {seqs:?}"
    );
    assert!(
        acked.iter().any(|m| m.seq > 0) && acked.last().is_some(),
        "messages were acknowledged"
    );

    for (seen, task) in watchers {
        let mut watcher = task.await.expect("observer");
        let got = seen.lock().expect("lock").remove(&room).unwrap_or_default();
        // Live delivery only: every acknowledged message, each once (the
        // observer asserts no seq arrives twice), in seq order.
        let mut missing: Vec<u64> = acked
            .iter()
            .filter(|m| got.get(&m.seq) != Some(&m.id))
            .map(|m| m.seq)
            .collect();
        if !missing.is_empty() {
            // Only a tail still in flight at the stop may be missing.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let late = watcher.drain_events(Duration::from_millis(300)).await;
            let late: HashMap<u64, String> = late
                .iter()
                .filter(|e| is_message_event(e))
                .map(|e| (seq(e), s(&e["message"], "id").to_owned()))
                .collect();
            missing.retain(|sq| !late.contains_key(sq));
        }
        assert!(missing.is_empty(), "never delivered: {missing:?}");
        let order: Vec<u64> = got.keys().copied().collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_its_replicas_cannot_confirm_is_refused_invisible_then_stored_once_on_retry() {
    let _heavy = heavy(module_path!()).await;
    let mut cluster = RedisCluster::start().await;
    let seeds = cluster.seeds();
    // WAIT may block half the timeout.
    let extra = ["--redis-replica-acks", "1", "--redis-timeout-ms", "600"];
    let a = cluster_node(&seeds, "a", &extra).await;
    let b = cluster_node(&seeds, "b", &extra).await;
    let mut ann = guest(&a, "Ann").await;
    let mut bob = guest(&b, "Bob").await;
    let room = ann.create_room("acks", json!({})).await;
    let room = s(&room, "id").to_owned();
    bob.join(&room).await;
    ann.send_message(&room, "before").await;
    bob.next_message_event(&room).await;
    let last_seq = seq_of_room(&bob.room_get(&room).await);

    // The room's master loses its only replica.
    let master = cluster.master_of_slot(slot_of(&room)).await;
    let master_id = cluster.id_of(master).await;
    let replica = cluster
        .nodes()
        .await
        .into_iter()
        .find(|n| n.role == Role::Replica && n.master_id.as_deref() == Some(master_id.as_str()))
        .expect("the master's replica")
        .port;
    cluster.kill(replica);

    let send = json!({"type": "message.send", "room": room, "content": "unconfirmed", "client_msg_id": "x1"});
    let error = ann.err(send.clone()).await;
    assert_eq!(error["code"], "unavailable", "{error}");
    let text = error["message"].as_str().unwrap_or_default();
    assert!(
        text.contains("may have been applied") && text.contains("client_msg_id"),
        "{text}"
    );
    // Nobody sees it: no event, not in history, not in last_seq.
    bob.expect_no_message_event(QUIET).await;
    let contents: Vec<String> = bob
        .all_messages(&room)
        .await
        .iter()
        .map(|m| s(m, "content").to_owned())
        .collect();
    assert!(
        !contents.contains(&"unconfirmed".to_owned()),
        "{contents:?}"
    );
    let room_now = bob.room_get(&room).await;
    assert_eq!(seq_of_room(&room_now), last_seq, "{room_now}");

    // The replica is back: the same client_msg_id is stored once, and only
    // now does anyone see it.
    cluster.restart(replica).await;
    let data = ann.ok(send).await;
    assert_eq!(data["message"]["content"], "unconfirmed");
    let event = bob.next_message_event(&room).await;
    assert_eq!(event["message"]["id"], data["message"]["id"]);
    assert_eq!(seq(&event), last_seq + 1, "the next seq, no gap: {event}");
    bob.expect_no_message_event(QUIET).await;
    let again = ann
        .ok(json!({"type": "message.send", "room": room, "content": "unconfirmed", "client_msg_id": "x1"}))
        .await;
    assert_eq!(again["message"]["id"], data["message"]["id"], "stored once");
    let stored = bob
        .all_messages(&room)
        .await
        .iter()
        .filter(|m| m["content"] == "unconfirmed")
        .count();
    assert_eq!(stored, 1);
}

/// A `room.get` room's `last_seq`.
fn seq_of_room(room: &serde_json::Value) -> u64 {
    room["last_seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("room without last_seq: {room}"))
}

/// Waits until `want` clients of the master on `port` hold `channel`.
async fn shard_subscribers_become(cluster: &RedisCluster, port: u16, channel: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = cluster.shard_subscribers(port, channel).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{channel} on {port}: {got} subscribers, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Bob posts in `rid`, Ann reads it on `reader`; whether `listener` (Ann's
/// tab in no room) hears within a second.
async fn read_heard(
    reader: &mut Client,
    bob: &mut Client,
    listener: &mut Client,
    rid: &str,
) -> bool {
    let seq = bob.send_message(rid, "news").await["seq"]
        .as_u64()
        .expect("seq");
    reader
        .ok(json!({"type": "room.read", "room": rid, "seq": seq}))
        .await;
    listener
        .drain_events(Duration::from_secs(1))
        .await
        .into_iter()
        .any(|e| e["event"] == "read" && e["read_seq"] == seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_shard_channel_follows_its_slot_to_another_master() {
    let _heavy = heavy(module_path!()).await;
    let cluster = RedisCluster::start_masters_only(3).await;
    let seeds = cluster.seeds();
    let jwt = ["--jwt-secret", JWT_SECRET];
    let a = cluster_node(&seeds, "a", &jwt).await;
    let b = cluster_node(&seeds, "b", &jwt).await;
    let mut ann = user(&a, "ann", "Ann").await;
    let room = ann.create_room("reads", json!({})).await;
    let rid = s(&room, "id").to_owned();
    let mut list_b = user(&b, "ann", "Ann").await;
    let mut bob = user(&b, "bob", "Bob").await;
    bob.join(&rid).await;

    // Ann's channel is a shard channel in her slot, held by both nodes.
    let channel = "huddle:user_events:{ann}";
    let slot = slot_of(channel);
    assert_eq!(slot, slot_of("ann"), "hashed by the user id");
    let from = cluster.master_of_slot(slot).await;
    shard_subscribers_become(&cluster, from, channel, 2).await;
    assert!(read_heard(&mut ann, &mut bob, &mut list_b, &rid).await);

    // The slot moves: Redis drops the subscriptions; both nodes subscribe
    // again on the new master and Ann's tab hears her reads again.
    let to = cluster
        .master_ports()
        .await
        .into_iter()
        .find(|p| *p != from)
        .expect("another master");
    cluster.migrate_slot(slot, to).await;
    shard_subscribers_become(&cluster, to, channel, 2).await;
    assert!(read_heard(&mut ann, &mut bob, &mut list_b, &rid).await);

    // When Ann's last connection on a node closes, that node lets go.
    drop(list_b);
    shard_subscribers_become(&cluster, to, channel, 1).await;
}

/// Without replica acks the membership scripts publish `participant.joined`
/// and `participant.left` right after their system message; with them the
/// node publishes both after the replicas confirm. Either way each is seen
/// once, after its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_acks_a_join_and_a_leave_are_announced_once_after_their_message() {
    let _heavy = heavy(module_path!()).await;
    let cluster = RedisCluster::start().await;
    let seeds = cluster.seeds();
    let extra = ["--redis-replica-acks", "1"];
    let a = cluster_node(&seeds, "a", &extra).await;
    let b = cluster_node(&seeds, "b", &extra).await;
    let mut ann = guest(&a, "Ann").await;
    // A fresh cluster's replicas may not confirm the first write yet: the
    // room is created once they do (an `unavailable` meanwhile wrote
    // nothing).
    let started = Instant::now();
    let room = loop {
        let reply = ann
            .request(json!({"type": "room.create", "name": "acks"}))
            .await;
        if reply["ok"] == true {
            break s(&reply["data"]["room"], "id").to_owned();
        }
        assert_eq!(reply["error"]["code"], "unavailable", "{reply}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no write confirmed in 20 s: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut bob = guest(&b, "Bob").await;
    bob.join(&room).await;
    bob.ok(json!({"type": "room.leave", "room": room})).await;

    let events = ann.drain_events(QUIET).await;
    assert_eq!(
        event_story(&events),
        [
            "message Bob joined",
            "participant.joined Bob",
            "message Bob left",
            "participant.left Bob"
        ],
        "{events:#?}"
    );
}
