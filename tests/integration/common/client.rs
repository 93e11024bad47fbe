//! The protocol client: a WebSocket (tokio-tungstenite) whose frames a
//! background task reads into a queue, with typed helpers for requests,
//! replies, errors, events and close codes (`PROTOCOL.md`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::assertions::{assert_error_shape, assert_recent_ms, brief, is_message_event};
use super::node::Node;
use super::{EVENT_TIMEOUT, REPLY_TIMEOUT};

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the background reader saw on the socket.
#[derive(Debug, Clone)]
pub(crate) enum Incoming {
    /// A text frame holding a JSON object.
    Frame(Value),
    /// A text frame that is not a JSON object (a server bug).
    BadText(String),
    /// A binary frame (the protocol never sends one).
    Binary(Vec<u8>),
    /// A close frame and its code (`None` for a close frame without code).
    Close(Option<u16>),
    /// The stream ended or failed; no more frames will come.
    Gone(String),
}

/// A protocol client. A background task reads every frame into an unbounded
/// channel, so the server never sees this client as a slow reader; frames
/// read while waiting for something else are queued in arrival order.
pub(crate) struct Client {
    /// The writing half of the socket.
    sink: SplitSink<WsStream, Message>,
    /// What the background reader saw, in arrival order.
    rx: mpsc::UnboundedReceiver<Incoming>,
    /// Frames received but not consumed yet, in arrival order.
    queue: VecDeque<Incoming>,
    /// The `id` of the next request, so every reply can be matched.
    next_id: u64,
    /// The background reader, aborted when the client drops.
    reader: JoinHandle<()>,
    /// `data.user` of the successful `hello` reply.
    pub(crate) user: Option<Value>,
    /// For assertion messages: who this client is and where it connected.
    pub(crate) label: String,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Opens a WebSocket to the node's `/ws`.
    pub(crate) async fn connect(node: &Node) -> Client {
        Client::connect_url(&node.ws_url(), &node.node_id).await
    }

    pub(crate) async fn connect_url(url: &str, label: &str) -> Client {
        let connected = tokio::time::timeout(REPLY_TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("WebSocket connect to {url}: timed out"))
            .unwrap_or_else(|e| panic!("WebSocket connect to {url}: {e}"));
        let (sink, mut stream) = connected.0.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let incoming = match item {
                    Ok(Message::Text(text)) => match serde_json::from_str::<Value>(&text) {
                        Ok(v) if v.is_object() => Incoming::Frame(v),
                        _ => Incoming::BadText(text.to_string()),
                    },
                    Ok(Message::Binary(bytes)) => Incoming::Binary(bytes.to_vec()),
                    Ok(Message::Close(frame)) => Incoming::Close(frame.map(|f| u16::from(f.code))),
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Incoming::Gone(e.to_string()));
                        return;
                    }
                };
                if tx.send(incoming).is_err() {
                    return;
                }
            }
            let _ = tx.send(Incoming::Gone("stream ended".into()));
        });
        Client {
            sink,
            rx,
            queue: VecDeque::new(),
            next_id: 1,
            reader,
            user: None,
            label: format!("client@{label}"),
        }
    }

    // -- raw frames ---------------------------------------------------------

    pub(crate) async fn send_text(&mut self, text: impl Into<String>) {
        let text: String = text.into();
        let sent = tokio::time::timeout(REPLY_TIMEOUT, self.sink.send(Message::text(text))).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{}: sending a text frame failed: {e}", self.label),
            Err(_) => panic!("{}: sending a text frame timed out", self.label),
        }
    }

    /// Like [`Client::send_text`] but returns the error instead of
    /// panicking (the server may already have closed the socket).
    pub(crate) async fn try_send_text(&mut self, text: impl Into<String>) -> Result<(), String> {
        let text: String = text.into();
        match tokio::time::timeout(REPLY_TIMEOUT, self.sink.send(Message::text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    pub(crate) async fn send_json(&mut self, frame: &Value) {
        self.send_text(frame.to_string()).await;
    }

    pub(crate) async fn send_binary(&mut self, bytes: Vec<u8>) {
        let sent =
            tokio::time::timeout(REPLY_TIMEOUT, self.sink.send(Message::binary(bytes))).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{}: sending a binary frame failed: {e}", self.label),
            Err(_) => panic!("{}: sending a binary frame timed out", self.label),
        }
    }

    /// Receives the next item from the socket, or `None` at the deadline.
    async fn recv_until(&mut self, deadline: Instant) -> Option<Incoming> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.rx.recv()).await {
            Ok(Some(item)) => Some(item),
            // The reader task is gone; it always sends `Gone` first.
            Ok(None) => Some(Incoming::Gone("reader finished".into())),
            Err(_) => None,
        }
    }

    fn describe_queue(&self) -> String {
        if self.queue.is_empty() {
            return "(nothing)".into();
        }
        self.queue
            .iter()
            .map(|i| match i {
                Incoming::Frame(v) => brief(v),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
            .join("\n    ")
    }

    /// Panics on a queued or received item that ends the frame stream.
    fn fail_on_end(&self, item: &Incoming, waiting_for: &str) {
        match item {
            Incoming::Close(code) => panic!(
                "{}: connection closed (close code {code:?}) while waiting for {waiting_for}; \
                 queued frames:\n    {}",
                self.label,
                self.describe_queue()
            ),
            Incoming::Gone(why) => panic!(
                "{}: connection lost ({why}) while waiting for {waiting_for}; queued frames:\n    {}",
                self.label,
                self.describe_queue()
            ),
            Incoming::BadText(text) => panic!(
                "{}: server sent a text frame that is not a JSON object: {text:?}",
                self.label
            ),
            Incoming::Binary(bytes) => panic!(
                "{}: server sent a binary frame ({} bytes); the protocol only uses text frames",
                self.label,
                bytes.len()
            ),
            Incoming::Frame(_) => {}
        }
    }

    /// Removes and returns the first frame (JSON object) matching `pred`,
    /// waiting until `timeout`; frames that do not match stay queued in
    /// order. `None` on timeout.
    pub(crate) async fn take_frame(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Option<Value> {
        let position = self
            .queue
            .iter()
            .position(|i| matches!(i, Incoming::Frame(v) if pred(v)));
        if let Some(pos) = position {
            match self.queue.remove(pos) {
                Some(Incoming::Frame(v)) => return Some(v),
                _ => unreachable!("position points at a frame"),
            }
        }
        // Anything that ends the stream must not be silently skipped.
        if let Some(end) = self
            .queue
            .iter()
            .find(|i| !matches!(i, Incoming::Frame(_)))
            .cloned()
        {
            self.fail_on_end(&end, what);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let item = self.recv_until(deadline).await?;
            match item {
                Incoming::Frame(v) if pred(&v) => return Some(v),
                Incoming::Frame(_) => self.queue.push_back(item),
                other => self.fail_on_end(&other, what),
            }
        }
    }

    /// Moves everything already received into the queue without waiting;
    /// returns `Some(close code)` once the connection has ended (`Some(None)`
    /// when it ended without a close code).
    pub(crate) fn closed_with(&mut self) -> Option<Option<u16>> {
        while let Ok(item) = self.rx.try_recv() {
            self.queue.push_back(item);
        }
        self.queue.iter().find_map(|i| match i {
            Incoming::Close(code) => Some(*code),
            Incoming::Gone(_) => Some(None),
            _ => None,
        })
    }

    /// Removes and returns the first already-queued frame matching `pred`
    /// (see [`Client::closed_with`]); never waits.
    pub(crate) fn take_queued(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Option<Value> {
        let pos = self
            .queue
            .iter()
            .position(|i| matches!(i, Incoming::Frame(v) if pred(v)))?;
        match self.queue.remove(pos) {
            Some(Incoming::Frame(v)) => Some(v),
            _ => None,
        }
    }

    /// The next frame that is not an event: a `reply` or an `error`.
    /// Events that arrive meanwhile stay queued.
    pub(crate) async fn next_response(&mut self, timeout: Duration) -> Value {
        match self
            .take_frame("a reply or error frame", timeout, |v| v["type"] != "event")
            .await
        {
            Some(v) => v,
            None => panic!(
                "{}: no reply/error frame within {timeout:?}; queued frames:\n    {}",
                self.label,
                self.describe_queue()
            ),
        }
    }

    /// The next `{"type":"error"}` frame (an id-less failure).
    pub(crate) async fn next_error_frame(&mut self, timeout: Duration) -> Value {
        match self
            .take_frame("an error frame", timeout, |v| v["type"] == "error")
            .await
        {
            Some(v) => v,
            None => panic!(
                "{}: no {{\"type\":\"error\"}} frame within {timeout:?}; queued frames:\n    {}",
                self.label,
                self.describe_queue()
            ),
        }
    }

    /// Waits for the close frame and returns its code: `Some(code)`, or
    /// `None` when the connection ended without a close code. Frames that
    /// arrive before it are queued. Panics if the connection stays open.
    pub(crate) async fn wait_close(&mut self, timeout: Duration) -> Option<u16> {
        if let Some(pos) = self
            .queue
            .iter()
            .position(|i| matches!(i, Incoming::Close(_) | Incoming::Gone(_)))
        {
            return match self.queue.remove(pos) {
                Some(Incoming::Close(code)) => code,
                _ => None,
            };
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.recv_until(deadline).await {
                None => panic!(
                    "{}: connection still open {timeout:?} later, expected a close; frames:\n    {}",
                    self.label,
                    self.describe_queue()
                ),
                Some(Incoming::Close(code)) => return code,
                Some(Incoming::Gone(_)) => return None,
                Some(other) => self.queue.push_back(other),
            }
        }
    }

    // -- requests ----------------------------------------------------------

    /// Sends `req` with a fresh integer `id` and returns the whole reply
    /// frame; other frames seen meanwhile are queued in order.
    pub(crate) async fn request(&mut self, mut req: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        req["id"] = json!(id);
        self.send_json(&req).await;
        self.wait_reply(id, &req).await
    }

    /// Waits for the reply carrying `id` (for a frame sent by hand).
    pub(crate) async fn wait_reply(&mut self, id: u64, req: &Value) -> Value {
        let what = format!("the reply to {}", brief(req));
        let reply = self
            .take_frame(&what, REPLY_TIMEOUT, |v| {
                v["type"] == "reply" && v["id"] == json!(id)
            })
            .await;
        let Some(reply) = reply else {
            panic!(
                "{}: no reply with id {id} within {REPLY_TIMEOUT:?} to {}; frames seen:\n    {}",
                self.label,
                brief(req),
                self.describe_queue()
            );
        };
        assert!(
            reply["ok"].is_boolean(),
            "{}: reply without boolean `ok` to {}: {}",
            self.label,
            brief(req),
            brief(&reply)
        );
        reply
    }

    /// Sends `req`, asserts `ok: true` and returns `data`.
    pub(crate) async fn ok(&mut self, req: Value) -> Value {
        let reply = self.request(req.clone()).await;
        assert_eq!(
            reply["ok"],
            json!(true),
            "{}: expected success for {}, got {}",
            self.label,
            brief(&req),
            brief(&reply)
        );
        assert!(
            reply["data"].is_object(),
            "{}: successful reply without object `data` for {}: {}",
            self.label,
            brief(&req),
            brief(&reply)
        );
        reply["data"].clone()
    }

    /// Sends `req`, asserts `ok: false` and returns the `error` object
    /// (checked to carry a string `code` and `message`).
    pub(crate) async fn err(&mut self, req: Value) -> Value {
        let reply = self.request(req.clone()).await;
        assert_eq!(
            reply["ok"],
            json!(false),
            "{}: expected a failure for {}, got {}",
            self.label,
            brief(&req),
            brief(&reply)
        );
        assert_error_shape(&reply["error"], &reply);
        reply["error"].clone()
    }

    /// Sends `req` and asserts it fails with `code`.
    pub(crate) async fn expect_err(&mut self, req: Value, code: &str) -> Value {
        let error = self.err(req.clone()).await;
        assert_eq!(
            error["code"],
            code,
            "{}: wrong error code for {}: {}",
            self.label,
            brief(&req),
            brief(&error)
        );
        error
    }

    /// `ping` must succeed with a numeric `server_time`.
    pub(crate) async fn ping(&mut self) {
        let data = self.ok(json!({"type": "ping"})).await;
        assert_recent_ms(
            &data["server_time"],
            &format!("{}: ping server_time", self.label),
        );
    }

    // -- session & rooms -----------------------------------------------------

    /// Guest `hello`; returns `data.user` and remembers it.
    pub(crate) async fn hello(&mut self, name: &str) -> Value {
        let data = self.ok(json!({"type": "hello", "name": name})).await;
        self.accept_hello(data, name)
    }

    /// `hello` with a token; returns `data.user`.
    pub(crate) async fn hello_token(&mut self, token: &str, name: &str) -> Value {
        let data = self
            .ok(json!({"type": "hello", "token": token, "name": name}))
            .await;
        self.accept_hello(data, name)
    }

    fn accept_hello(&mut self, data: Value, name: &str) -> Value {
        let user = data["user"].clone();
        assert!(
            user["id"].as_str().is_some_and(|s| !s.is_empty()),
            "{}: hello reply without user.id: {data}",
            self.label
        );
        assert!(
            data["session"].is_string(),
            "{}: hello reply without session: {data}",
            self.label
        );
        assert!(
            data["node"].is_string(),
            "{}: hello reply without node: {data}",
            self.label
        );
        assert_recent_ms(
            &data["server_time"],
            &format!("{}: hello server_time", self.label),
        );
        self.label = format!("{name}{}", self.label.trim_start_matches("client"));
        self.user = Some(user.clone());
        user
    }

    pub(crate) fn user_id(&self) -> String {
        self.user
            .as_ref()
            .and_then(|u| u["id"].as_str())
            .unwrap_or_else(|| panic!("{}: no hello yet", self.label))
            .to_string()
    }

    /// `room.create` with `name` plus `extra` fields; returns the room.
    pub(crate) async fn create_room(&mut self, name: &str, extra: Value) -> Value {
        let mut req = json!({"type": "room.create", "name": name});
        if let Value::Object(fields) = extra {
            for (k, v) in fields {
                req[k] = v;
            }
        }
        let data = self.ok(req).await;
        let room = data["room"].clone();
        assert!(
            room["id"].is_string() && room["code"].is_string(),
            "{}: room.create reply without room id/code: {data}",
            self.label
        );
        room
    }

    /// `room.join` by id; returns `data`.
    pub(crate) async fn join(&mut self, room: &str) -> Value {
        self.ok(json!({"type": "room.join", "room": room})).await
    }

    /// `room.join` by code; returns `data`.
    pub(crate) async fn join_code(&mut self, code: &str) -> Value {
        self.ok(json!({"type": "room.join", "code": code})).await
    }

    /// `room.join` by id with `since`; returns `data`.
    pub(crate) async fn join_since(&mut self, room: &str, since: u64) -> Value {
        self.ok(json!({"type": "room.join", "room": room, "since": since}))
            .await
    }

    /// `room.get`; returns the room object.
    pub(crate) async fn room_get(&mut self, room: &str) -> Value {
        self.ok(json!({"type": "room.get", "room": room})).await["room"].clone()
    }

    /// A text `message.send`; returns the message.
    pub(crate) async fn send_message(&mut self, room: &str, content: &str) -> Value {
        let data = self
            .ok(json!({"type": "message.send", "room": room, "content": content}))
            .await;
        let message = data["message"].clone();
        assert!(
            message["id"].is_string() && message["seq"].is_u64(),
            "{}: message.send reply without message id/seq: {data}",
            self.label
        );
        message
    }

    /// `message.history`; returns `data` (`messages`, `has_more`).
    pub(crate) async fn history(
        &mut self,
        room: &str,
        before: Option<u64>,
        limit: Option<u64>,
    ) -> Value {
        let mut req = json!({"type": "message.history", "room": room});
        if let Some(before) = before {
            req["before"] = json!(before);
        }
        if let Some(limit) = limit {
            req["limit"] = json!(limit);
        }
        let data = self.ok(req).await;
        assert!(
            data["messages"].is_array() && data["has_more"].is_boolean(),
            "{}: history reply without messages/has_more: {data}",
            self.label
        );
        data
    }

    /// All of a room's messages (up to 100) via `message.history`.
    pub(crate) async fn all_messages(&mut self, room: &str) -> Vec<Value> {
        let data = self.history(room, None, Some(100)).await;
        data["messages"].as_array().cloned().unwrap_or_default()
    }

    // -- events ------------------------------------------------------------

    /// The next event frame, or `None` at the timeout. Replies and error
    /// frames that arrive meanwhile stay queued.
    pub(crate) async fn next_event(&mut self, timeout: Duration) -> Option<Value> {
        self.take_frame("an event", timeout, |v| v["type"] == "event")
            .await
    }

    /// Consumes events until one matches `pred` and returns it. Events that
    /// do not match are discarded (listed in the panic message on timeout).
    pub(crate) async fn wait_event(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(ev) if pred(&ev) => return ev,
                Some(ev) => skipped.push(brief(&ev)),
                None => panic!(
                    "{}: no event matching `{what}` within {timeout:?}; skipped events:\n    {}",
                    self.label,
                    if skipped.is_empty() {
                        "(none)".to_string()
                    } else {
                        skipped.join("\n    ")
                    }
                ),
            }
        }
    }

    /// The next durable `message.*` event of `room` (ephemeral events such
    /// as `participant.*` and `typing` are skipped).
    pub(crate) async fn next_message_event(&mut self, room: &str) -> Value {
        self.wait_event(
            &format!("a message.* event of room {room}"),
            EVENT_TIMEOUT,
            |e| {
                e["room"] == room
                    && e["event"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("message."))
            },
        )
        .await
    }

    /// Asserts that no event at all arrives within `duration`.
    pub(crate) async fn expect_no_event(&mut self, duration: Duration) {
        if let Some(ev) = self.next_event(duration).await {
            panic!(
                "{}: expected no event for {duration:?}, got {ev}",
                self.label
            );
        }
    }

    /// Asserts that no `message.*` event arrives within `duration`
    /// (ephemeral events are ignored).
    pub(crate) async fn expect_no_message_event(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                None => return,
                Some(ev) if is_message_event(&ev) => panic!(
                    "{}: expected no message event for {duration:?}, got {ev}",
                    self.label
                ),
                Some(_) => {}
            }
        }
    }

    /// Discards the events that arrive within `duration` and returns them.
    pub(crate) async fn drain_events(&mut self, duration: Duration) -> Vec<Value> {
        let deadline = Instant::now() + duration;
        let mut drained = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                Some(ev) => drained.push(ev),
                None => return drained,
            }
        }
    }
}
