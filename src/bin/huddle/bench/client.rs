//! The client side shared by every mode: opening a connection, one
//! request/answer exchange, and the rooms a run sets up.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// One client connection.
pub(super) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(super) async fn connect(url: &str) -> Result<Ws, String> {
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .map_err(|_| format!("{url}: connect timed out"))?
    .map_err(|e| format!("{url}: {e}"))?;
    Ok(ws)
}

/// Sends a request and waits for its reply, skipping other frames.
pub(super) async fn call(
    ws: &mut Ws,
    id: u64,
    mut req: serde_json::Value,
) -> Result<serde_json::Value, String> {
    req["id"] = json!(id);
    ws.send(WsMessage::Text(req.to_string().into()))
        .await
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no reply within 10 s".to_string())?
            .ok_or("connection closed")?
            .map_err(|e| e.to_string())?;
        if let WsMessage::Text(text) = msg {
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            if v["type"] == "reply" && v["id"] == id {
                if v["ok"] == true {
                    return Ok(v["data"].clone());
                }
                return Err(format!("{} failed: {}", req["type"], v["error"]));
            }
        }
    }
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
