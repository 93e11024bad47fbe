//! A minimal hand-made WebSocket client over a plain TCP stream, for tests
//! about clients that misbehave at the transport level (frames built by
//! hand, pings never answered, a receive buffer that fills up).

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::REPLY_TIMEOUT;
use super::node::Node;

/// A minimal hand-made WebSocket client over a plain TCP stream, for tests
/// about clients that misbehave at the transport level: it never reads
/// unless asked and never answers pings (tungstenite would answer them by
/// itself, and fail on the pending pong once the server has hung up, hiding
/// the close frame that is already in the socket buffer).
pub(crate) struct RawClient {
    /// The socket, read only when a test asks.
    stream: TcpStream,
    /// Bytes read from the socket but not parsed into frames yet.
    buf: Vec<u8>,
}

/// Opcodes of RFC 6455.
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// One masked, final client frame.
pub(crate) fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

impl RawClient {
    /// Connects to the node's `/ws`; `recv_buffer` sets SO_RCVBUF (small
    /// values make the server's outbound queue fill quickly).
    pub(crate) async fn connect(node: &Node, recv_buffer: Option<u32>) -> RawClient {
        RawClient::connect_with(node, recv_buffer, None).await
    }

    /// Like `connect`, and sends `early` as a text frame in the same write
    /// as the upgrade request, before the server has answered it.
    pub(crate) async fn connect_with(
        node: &Node,
        recv_buffer: Option<u32>,
        early: Option<&str>,
    ) -> RawClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("tcp socket");
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let mut stream = tokio::time::timeout(REPLY_TIMEOUT, socket.connect(node.addr))
            .await
            .expect("tcp connect in time")
            .expect("tcp connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            node.addr
        );
        let mut first = request.into_bytes();
        if let Some(text) = early {
            first.extend_from_slice(&client_frame(OP_TEXT, text.as_bytes()));
        }
        stream.write_all(&first).await.expect("send handshake");
        let mut buf = Vec::new();
        let handshake = async {
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return end;
                }
                let mut chunk = [0u8; 1024];
                let n = stream.read(&mut chunk).await.expect("read handshake");
                assert!(n > 0, "connection closed during the WebSocket handshake");
                buf.extend_from_slice(&chunk[..n]);
            }
        };
        let end = tokio::time::timeout(REPLY_TIMEOUT, handshake)
            .await
            .expect("handshake answer in time");
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "WebSocket upgrade refused: {head}"
        );
        buf.drain(..end + 4);
        RawClient { stream, buf }
    }

    /// Sends one masked text frame.
    pub(crate) async fn send_text(&mut self, text: &str) {
        self.send_frame(OP_TEXT, text.as_bytes()).await;
    }

    /// Writes bytes as they are (a hand-made frame, valid or not).
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(REPLY_TIMEOUT, self.stream.write_all(bytes))
            .await
            .expect("raw send in time")
            .expect("raw send");
    }

    /// Writes bytes as they are, reporting a failed or stalled write
    /// (`timeout`) instead of panicking: for clients still sending when the
    /// server closes.
    pub(crate) async fn try_send_raw(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("write failed: {e}")),
            Err(_) => Err(format!("write stalled for {timeout:?}")),
        }
    }

    /// Sends one masked frame with any opcode.
    pub(crate) async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let frame = client_frame(opcode, payload);
        tokio::time::timeout(REPLY_TIMEOUT, self.stream.write_all(&frame))
            .await
            .expect("raw send in time")
            .expect("raw send");
    }

    /// Parses one complete frame from the buffer: (opcode, payload).
    fn parse_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        let mask_at = at;
        if masked {
            at += 4;
        }
        if b.len() < at + len {
            return None;
        }
        let mut payload = b[at..at + len].to_vec();
        if masked {
            let mask = [b[mask_at], b[mask_at + 1], b[mask_at + 2], b[mask_at + 3]];
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
        }
        self.buf.drain(..at + len);
        Some((opcode, payload))
    }

    /// The next frame, `Ok(None)` at the deadline, `Err(why)` when the
    /// connection ended without a close frame.
    pub(crate) async fn next_frame(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<(u8, Vec<u8>)>, String> {
        loop {
            if let Some(frame) = self.parse_frame() {
                return Ok(Some(frame));
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => return Err("connection ended without a close frame".into()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(format!("read failed: {e}")),
            }
        }
    }

    /// Sends `req` with `id` and reads until its reply (skipping other frames).
    pub(crate) async fn call(&mut self, mut req: Value, id: u64) -> Value {
        req["id"] = json!(id);
        self.send_text(&req.to_string()).await;
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            match self.next_frame(deadline).await {
                Ok(Some((OP_TEXT, payload))) => {
                    let v: Value = serde_json::from_slice(&payload).expect("JSON text frame");
                    if v["type"] == "reply" && v["id"] == id {
                        return v;
                    }
                }
                Ok(Some((OP_CLOSE, payload))) => {
                    panic!("raw client: closed ({payload:?}) while waiting for reply {id}")
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("raw client: no reply {id} within {REPLY_TIMEOUT:?}"),
                Err(why) => panic!("raw client: {why} while waiting for reply {id}"),
            }
        }
    }

    /// Reads whatever is left until the connection ends or `timeout`:
    /// (`message.created` events read, close code if a close frame came,
    /// how it ended or `None` if it is still open then).
    pub(crate) async fn read_to_end(
        &mut self,
        timeout: Duration,
    ) -> (usize, Option<u16>, Option<String>) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut events = 0;
        loop {
            match self.next_frame(deadline).await {
                Ok(None) => return (events, None, None),
                Err(why) => return (events, None, Some(why)),
                Ok(Some((OP_CLOSE, payload))) => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return (events, code, Some("close frame".into()));
                }
                Ok(Some((OP_TEXT, payload))) => {
                    if String::from_utf8_lossy(&payload).contains("\"message.created\"") {
                        events += 1;
                    }
                }
                Ok(Some(_)) => {}
            }
        }
    }
}
