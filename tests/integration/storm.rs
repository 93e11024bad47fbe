//! Reconnection storms at a size CI can afford: a node holding many users is
//! killed, and they all come back through another node at once, resuming
//! with `since`. Nothing is lost and nobody is announced as leaving or
//! joining. (The full-size storm is `huddle bench`'s business.)

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

const SECRET: &str = "storm-test-secret-0123456789";
const ROOMS: usize = 4;
const USERS: usize = 160;
const NODE_TIMEOUT: &str = "5s";

fn token(sub: &str) -> String {
    mint_token(SECRET, sub, sub)
}

async fn user_on(node: &Node, sub: &str) -> Client {
    let mut c = Client::connect(node).await;
    c.hello_token(&token(sub), sub).await;
    c
}

/// The `message.created` events of `room` in `events`: seq → content.
fn messages_in(events: &[Value], room: &str) -> BTreeMap<u64, String> {
    events
        .iter()
        .filter(|e| e["room"] == room && e["event"] == "message.created")
        .map(|e| (seq(e), s(&e["message"], "content").to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_users_all_come_back_without_loss_or_announcements() {
    let _heavy = heavy(module_path!()).await;
    let backend = Backend::start().await;
    let mut args = FAST.to_vec();
    args.extend(["--jwt-secret", SECRET]);
    // A dead node is noticed after 5 s (20 s by default): the users must be
    // back within that window, as they must within 20 s in production.
    args.extend([
        "--heartbeat-interval",
        "200ms",
        "--node-timeout",
        NODE_TIMEOUT,
        "--janitor-interval",
        "200ms",
    ]);
    let mut a = backend.node("a", &args).await;
    let b = backend.node("b", &args).await;

    // Rooms made on B; an observer per room on B.
    let mut owner = user_on(&b, "owner").await;
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let room = owner.create_room(&format!("storm {r}"), json!({})).await;
        rooms.push(s(&room, "id").to_owned());
    }
    let mut watchers = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        let mut w = user_on(&b, &format!("watch-{r}")).await;
        w.join(room).await;
        watchers.push(w);
    }

    // The users, all on A, a room each.
    let mut users = Vec::new();
    for i in 0..USERS {
        let mut c = user_on(&a, &format!("u{i}")).await;
        c.join(&rooms[i % ROOMS]).await;
        users.push(c);
    }
    for room in &rooms {
        owner.send_message(room, "before").await;
    }
    // Each user's last seq seen before the crash.
    let mut last_seen = Vec::new();
    for (i, c) in users.iter_mut().enumerate() {
        let room = &rooms[i % ROOMS];
        // Later users' "joined" messages come first.
        let ev = c
            .wait_event("the message before the crash", EVENT_TIMEOUT, |e| {
                e["room"] == *room && e["message"]["content"] == "before"
            })
            .await;
        last_seen.push(seq(&ev));
    }
    for w in &mut watchers {
        while w.next_event(Duration::from_millis(200)).await.is_some() {}
    }

    // A dies with every user on it; messages keep coming on B.
    a.kill();
    let killed = Instant::now();
    for c in &mut users {
        assert!(
            c.wait_close(Duration::from_secs(5))
                .await
                .is_none_or(|code| code != 1000)
        );
    }
    drop(users);
    for round in 0..3 {
        for room in &rooms {
            owner.send_message(room, &format!("during {round}")).await;
        }
    }

    // Everyone comes back through B at once, resuming with `since`.
    let started = Instant::now();
    let mut back = Vec::new();
    for (i, since) in last_seen.iter().copied().enumerate() {
        let addr = b.ws_url();
        let room = rooms[i % ROOMS].clone();
        back.push(tokio::spawn(async move {
            let sub = format!("u{i}");
            let mut c = Client::connect_url(&addr, &sub).await;
            c.hello_token(&token(&sub), &sub).await;
            let data = c.join_since(&room, since).await;
            assert_eq!(data["complete"], true, "{sub}: {data}");
            let events = data["events"].as_array().cloned().unwrap_or_default();
            (c, messages_in(&events, &room))
        }));
    }
    let mut resumed = Vec::new();
    for task in back {
        resumed.push(task.await.expect("a user came back"));
    }
    let took = started.elapsed();
    for room in &rooms {
        owner.send_message(room, "after").await;
    }

    // Each user has every message after its last seq exactly once, in order:
    // the resume, then live. (The clients stay connected to the end.)
    let mut connected = Vec::new();
    for (i, (mut c, mut got)) in resumed.into_iter().enumerate() {
        let room = &rooms[i % ROOMS];
        let live = c.next_message_event(room).await;
        assert!(
            got.insert(seq(&live), s(&live["message"], "content").to_owned())
                .is_none(),
            "u{i}: seq {} twice",
            seq(&live)
        );
        let texts: Vec<&str> = got.values().map(String::as_str).collect();
        assert_eq!(
            texts,
            ["during 0", "during 1", "during 2", "after"],
            "u{i}: {got:?}"
        );
        let seqs: Vec<u64> = got.keys().copied().collect();
        assert_eq!(
            seqs[0],
            last_seen[i] + 1,
            "u{i}: resumed right after its last seq"
        );
        assert_consecutive(&seqs, &format!("u{i}"));
        c.ping().await;
        connected.push(c);
    }

    // Past A's node timeout the janitor removes the dead sessions: nobody
    // is announced as leaving (they are all back) or joining.
    let quiet_until = killed + Duration::from_secs(5) + Duration::from_millis(2000);
    for w in &mut watchers {
        while let Some(ev) = w
            .next_event(quiet_until.saturating_duration_since(Instant::now()))
            .await
        {
            let participant = ev["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("participant"));
            let system = ev["message"]["kind"] == "system";
            assert!(
                !participant && !system,
                "a user who came back was announced: {ev}"
            );
        }
    }
    let mut counts = HashMap::new();
    for room in &rooms {
        let got = owner.room_get(room).await;
        counts.insert(room.clone(), got["participant_count"].clone());
    }
    let per_room = USERS / ROOMS + 2;
    assert!(
        counts.values().all(|c| *c == json!(per_room)),
        "every user is still a participant, once: {counts:?}"
    );
    eprintln!("storm: {USERS} users resumed through one node in {took:?}");
    drop(connected);
}
