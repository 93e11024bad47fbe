//! The client side shared by every mode: opening a connection, one
//! request/answer exchange, and the rooms a run sets up.

use std::borrow::Cow;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// One client connection.
pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// tungstenite's read buffer for the load generator's connections. Its
/// default (128 KiB) is zeroed on every read: with thousands of clients each
/// reading small frames, that memset cost the load generator more CPU than
/// the frames themselves, on the cores the nodes under test share.
const READ_BUFFER_BYTES: usize = 4096;

/// Opens a connection (at most 10 s).
pub(super) async fn connect(url: &str) -> Result<Ws, String> {
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async_with_config(url, Some(config), false),
    )
    .await
    .map_err(|_| format!("{url}: connect timed out"))?
    .map_err(|e| format!("{url}: {e}"))?;
    Ok(ws)
}

/// Sends a request and waits for its reply, skipping other frames; an
/// error reply or a close is an `Err`.
pub(super) async fn call(
    ws: &mut Ws,
    id: u64,
    req: serde_json::Value,
) -> Result<serde_json::Value, String> {
    call_as(ws, id, req).await
}

/// [`call`] that reads the reply's data as `T` (`IgnoredAny` to skip it).
pub(super) async fn call_as<T: DeserializeOwned>(
    ws: &mut Ws,
    id: u64,
    req: serde_json::Value,
) -> Result<T, String> {
    match exchange(ws, id, &req).await? {
        Answer::Ok(data) => Ok(data),
        Answer::Refused { error, .. } => Err(format!("{} failed: {error}", req["type"])),
        Answer::Closed(_) => Err("connection closed".into()),
    }
}

/// Sends `req` with `id` and waits (at most 10 s) for its reply, skipping
/// other frames. `Err` means the exchange failed in a way the server did
/// not choose (no answer in time, a frame that is not JSON).
pub(super) async fn exchange<T: DeserializeOwned>(
    ws: &mut Ws,
    id: u64,
    req: &serde_json::Value,
) -> Result<Answer<T>, String> {
    let mut req = req.clone();
    req["id"] = json!(id);
    if ws
        .send(WsMessage::Text(req.to_string().into()))
        .await
        .is_err()
    {
        // The server may have closed it already: read the close frame.
        return Ok(read_close(ws).await);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(format!("{}: no reply within 10 s", req["type"])),
            Ok(None) | Ok(Some(Err(_))) => return Ok(Answer::Closed(None)),
            Ok(Some(Ok(msg))) => msg,
        };
        match msg {
            WsMessage::Close(frame) => return Ok(Answer::Closed(frame.map(|f| u16::from(f.code)))),
            WsMessage::Text(text) => {
                // Most frames while waiting are other clients' events, and a
                // join's reply is large: read the head alone, and the body
                // only of the reply waited for.
                let head: Head<'_> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                if head.kind != "reply" || head.id != Some(id) {
                    continue;
                }
                if head.ok == Some(true) {
                    let data = serde_json::from_str(raw(head.data)).map_err(|e| e.to_string())?;
                    return Ok(Answer::Ok(data));
                }
                let error: serde_json::Value =
                    serde_json::from_str(raw(head.error)).map_err(|e| e.to_string())?;
                return Ok(Answer::Refused {
                    code: error["code"].as_str().unwrap_or("unknown").to_owned(),
                    retry_after: error["retry_after_ms"].as_u64().map(Duration::from_millis),
                    error,
                });
            }
            _ => {}
        }
    }
}

/// What `exchange` reads of every frame: its type and id, and the reply's
/// parts unparsed.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    id: Option<u64>,
    ok: Option<bool>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

/// The text of an optional raw JSON value, `null` when absent.
fn raw(value: Option<&RawValue>) -> &str {
    value.map_or("null", RawValue::get)
}

/// After a failed send: the close code the server sent, if it sent one
/// within a second.
async fn read_close<T>(ws: &mut Ws) -> Answer<T> {
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(until, ws.next()).await {
        if let WsMessage::Close(frame) = msg {
            return Answer::Closed(frame.map(|f| u16::from(f.code)));
        }
    }
    Answer::Closed(None)
}

/// Creates `count` rooms named `prefix N` from one connection, which the
/// caller keeps open for the run (closing it would post "left" messages).
pub(super) async fn create_rooms(
    url: &str,
    count: usize,
    prefix: &str,
) -> Result<(Ws, Vec<String>), String> {
    let mut admin = connect(url).await?;
    call(
        &mut admin,
        1,
        json!({"type": "hello", "name": "bench-admin"}),
    )
    .await?;
    let mut rooms = Vec::with_capacity(count);
    for r in 0..count {
        let data = call(
            &mut admin,
            2 + r as u64,
            json!({"type": "room.create", "name": format!("{prefix} {r}"), "max_participants": 10000}),
        )
        .await?;
        rooms.push(data["room"]["id"].as_str().unwrap_or_default().to_owned());
    }
    Ok((admin, rooms))
}

/// How the server answered one request of a [`Session`].
#[derive(Debug)]
pub(super) enum Answer<T = serde_json::Value> {
    /// `ok: true`, with the reply's `data`.
    Ok(T),
    /// `ok: false`.
    Refused {
        /// The protocol error code (`rate_limited`, `not_found`, …).
        code: String,
        /// `retry_after_ms`, when the server gave one.
        retry_after: Option<Duration>,
        /// The whole `error` object, for messages.
        error: serde_json::Value,
    },
    /// The server closed the connection before answering, with this close
    /// code (none when the stream just ended).
    Closed(Option<u16>),
}

/// A guest connection that survives being closed: the next request after a
/// close opens a new connection and says `hello` again (as an abusive
/// client would), and the caller counts the closes and reconnections.
pub(super) struct Session {
    /// Where to connect.
    url: String,
    /// The display name sent in `hello`.
    name: String,
    /// The open connection, if any.
    ws: Option<Ws>,
    /// The next request id on this connection.
    next_id: u64,
    /// Connections opened after the first.
    pub(super) reconnects: u64,
}

impl Session {
    /// A session that connects on its first request.
    pub(super) fn new(url: &str, name: &str) -> Session {
        Session {
            url: url.to_owned(),
            name: name.to_owned(),
            ws: None,
            next_id: 1,
            reconnects: 0,
        }
    }

    /// Connects and says `hello` if there is no open connection.
    pub(super) async fn open(&mut self) -> Result<(), String> {
        if self.ws.is_some() {
            return Ok(());
        }
        let mut ws = connect(&self.url).await?;
        if self.next_id > 1 {
            self.reconnects += 1;
        }
        call(
            &mut ws,
            self.next_id,
            json!({"type": "hello", "name": self.name}),
        )
        .await?;
        self.next_id += 1;
        self.ws = Some(ws);
        Ok(())
    }

    /// Sends `req` and waits for its reply (see [`exchange`]); a close
    /// leaves the session without a connection until the next request.
    pub(super) async fn ask(&mut self, req: serde_json::Value) -> Result<Answer, String> {
        self.open().await?;
        let id = self.next_id;
        self.next_id += 1;
        let Some(ws) = self.ws.as_mut() else {
            return Err("no connection".into());
        };
        let answer = exchange(ws, id, &req).await?;
        if matches!(answer, Answer::Closed(_)) {
            self.ws = None;
        }
        Ok(answer)
    }

    /// Closes the connection politely, if one is open.
    pub(super) async fn close(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
    }
}
