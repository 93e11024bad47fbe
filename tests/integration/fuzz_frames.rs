//! Property test against a real node: hundreds of generated frames —
//! request-shaped objects with fields of every JSON type, and arbitrary
//! text — on one connection. Every frame with an id gets exactly one reply
//! whose error code (if any) is one of the protocol's; no frame closes the
//! connection; the node still answers afterwards.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::common::{Client, FAST, Node, heavy};

const TYPES: &[&str] = &[
    "hello",
    "ping",
    "room.create",
    "room.join",
    "room.leave",
    "room.get",
    "room.list",
    "message.send",
    "message.edit",
    "message.delete",
    "message.history",
    "message.search",
    "typing",
    "presence",
    "nope",
    "",
];
const FIELDS: &[&str] = &[
    "room",
    "code",
    "since",
    "name",
    "max_participants",
    "private",
    "limit",
    "kind",
    "content",
    "attachment",
    "client_msg_id",
    "message",
    "before",
    "query",
    "active",
    "token",
    "image",
];
const CODES: &[&str] = &[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "rate_limited",
    "too_large",
    "unavailable",
];

fn field_value(room: Value) -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (0u64..200).prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,30}".prop_map(Value::String),
        Just(room),
        Just(json!({"url": "https://x.example/a.png", "name": "a.png"})),
        Just(json!({"url": "ftp://x"})),
        Just(json!([1, "two", null])),
        Just(json!({"nested": {"deep": [1]}})),
    ]
}

fn frame(room: Value) -> impl Strategy<Value = Value> {
    (
        prop::sample::select(TYPES),
        prop::collection::vec((prop::sample::select(FIELDS), field_value(room)), 0..5),
    )
        .prop_map(|(ty, fields)| {
            let mut map: serde_json::Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            map.insert("type".into(), json!(ty));
            Value::Object(map)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_frames_always_get_one_answer_and_never_close() {
    let _heavy = heavy(module_path!()).await;
    let node = Node::start(None, "fuzz", FAST).await;
    let mut c = Client::connect(&node).await;
    c.hello("Fuzzer").await;
    let room = c.create_room("fuzz", json!({})).await;
    let rid = room["id"].clone();

    let mut runner = TestRunner::deterministic();
    let frames = frame(rid.clone());
    for i in 0..400u64 {
        let mut f = frames.new_tree(&mut runner).expect("generate").current();
        f["id"] = json!(10_000 + i);
        let reply = c.request(f.clone()).await;
        assert_eq!(reply["type"], "reply", "{f} → {reply}");
        if reply["ok"] == false {
            let code = reply["error"]["code"].as_str().unwrap_or("");
            assert!(CODES.contains(&code), "{f} → unexpected code {reply}");
            assert!(
                reply["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{f} → an error says why: {reply}"
            );
        }
    }
    // Arbitrary text frames: an error frame each, the connection stays.
    let texts = "\\PC{0,60}";
    for _ in 0..100 {
        let text = texts.new_tree(&mut runner).expect("generate").current();
        if serde_json::from_str::<Value>(&text)
            .is_ok_and(|v| v.is_object() && v.get("type").is_some())
        {
            continue;
        }
        c.send_text(text.clone()).await;
        let err = c.next_error_frame(crate::common::EVENT_TIMEOUT).await;
        assert_eq!(err["error"]["code"], "bad_request", "{text:?} → {err}");
    }
    c.ping().await;
}
