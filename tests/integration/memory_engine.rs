//! The in-memory engine end to end: one node without Redis serves rooms,
//! live events, history and `/healthz` on its own.

use serde_json::{Value, json};

use crate::common::{EVENT_TIMEOUT, FAST, Node, guest, s, seq, seqs};

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
