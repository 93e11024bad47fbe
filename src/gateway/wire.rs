//! The socket under a WebSocket connection, split by direction.
//!
//! Reading is tungstenite's: it parses and unmasks client frames, enforces
//! the size limits and answers pings and closes. Writing is ours: a server's
//! frames are not masked, so a frame is the same bytes for every recipient.
//! The hub renders an event's whole frame (header and JSON) once per node,
//! and each connection hands the kernel slices of those shared bytes with
//! one `writev` per batch: no per-connection write buffer, no copy.
//!
//! `Wire` is the stream tungstenite is given. It reads the bytes hyper read
//! past the upgrade first, then the socket. What tungstenite writes (its
//! pong and close replies) is kept in `control` for the connection to send
//! in order with its own frames.
//!
//! `Socket` drives tungstenite's protocol state (`WebSocketContext`) over a
//! `Wire` itself, so that the state can be replaced. tungstenite's read
//! buffer starts small (`READ_BUFFER_BYTES` in the gateway) and grows to
//! hold the largest frame read; it never shrinks. To give it back, `Wire`
//! follows the client's frame headers as it hands bytes over (`FrameTrack`):
//! once a large frame has been seen it hands over no byte past the end of
//! the frame (or header) in hand, so when that message has been read
//! tungstenite's buffer holds nothing, and `Socket::shrink` starts a fresh
//! state with a small buffer. A client that once sent 64 KiB does not keep
//! 64 KiB for life.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
use tokio_tungstenite::tungstenite::protocol::{
    CloseFrame, Role, WebSocketConfig, WebSocketContext,
};

/// Slices handed to one `writev`.
const MAX_IOV: usize = 64;

/// The connection's TCP stream, as tungstenite's reader sees it.
#[derive(Debug)]
pub struct Wire {
    tcp: TcpStream,
    /// Bytes hyper read past the upgrade request, read before the socket.
    pre: Bytes,
    /// Frames tungstenite wrote (pong and close replies), not yet sent.
    control: Vec<u8>,
    /// Where the bytes handed to tungstenite stand in the client's frames.
    frames: FrameTrack,
}

impl Wire {
    /// The TCP stream under an upgraded hyper connection. `None` when the
    /// connection is not a plain `TcpStream` (the gateway serves only those).
    pub fn from_upgraded(upgraded: Upgraded) -> Option<Wire> {
        let parts = upgraded.downcast::<TokioIo<TcpStream>>().ok()?;
        // Usually empty, but it shares hyper's whole read buffer (8 KiB):
        // keep a copy of what is in it, not the buffer.
        let pre = Bytes::copy_from_slice(&parts.read_buf);
        Some(Wire {
            tcp: parts.io.into_inner(),
            pre,
            control: Vec::new(),
            frames: FrameTrack::default(),
        })
    }

    /// A wire straight on a TCP stream (nothing read past an upgrade).
    pub fn from_tcp(tcp: TcpStream) -> Wire {
        Wire {
            tcp,
            pre: Bytes::new(),
            control: Vec::new(),
            frames: FrameTrack::default(),
        }
    }

    /// The socket, for writing.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The socket, for the half-close at the end.
    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }

    /// Takes what tungstenite wrote since the last call, as one frame batch.
    pub fn take_control(&mut self) -> Option<Bytes> {
        if self.control.is_empty() {
            None
        } else {
            Some(Bytes::from(std::mem::take(&mut self.control)))
        }
    }
}

impl io::Read for Wire {
    /// What tungstenite reads: the bytes past the upgrade, then the socket
    /// (`WouldBlock` when it has nothing), no further than `FrameTrack`
    /// allows.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = self.frames.cap(buf.len());
        let buf = &mut buf[..want];
        let n = if self.pre.is_empty() {
            self.tcp.try_read(buf)?
        } else {
            let n = self.pre.len().min(buf.len());
            buf[..n].copy_from_slice(&self.pre[..n]);
            self.pre.advance(n);
            n
        };
        self.frames.saw(&buf[..n]);
        Ok(n)
    }
}

impl io::Write for Wire {
    /// What tungstenite writes (pong and close replies) waits in `control`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.control.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The longest WebSocket frame header: 2 bytes, an 8-byte length, a mask.
const MAX_HEADER: usize = 14;

/// A frame payload from this size up makes tungstenite's read buffer grow
/// enough to be worth giving back afterwards.
const LARGE_FRAME: u64 = 4096;

/// Where the bytes handed to tungstenite stand in the client's frames: it
/// reads the frame headers as they pass and counts the payloads. Malformed
/// headers are tungstenite's to refuse; at worst the count is lost and the
/// buffer is not given back.
#[derive(Debug, Default)]
struct FrameTrack {
    /// Payload bytes of the frame in hand not handed over yet.
    left: u64,
    /// The next frame's header bytes handed over so far.
    head: [u8; MAX_HEADER],
    /// How many of `head` are filled.
    head_len: usize,
    /// A large frame was seen since tungstenite's state was last replaced:
    /// hand over no byte past the end of the frame or header in hand.
    exact: bool,
}

/// The whole length of the header that starts with `head` (2 bytes at
/// least).
fn header_len(head: &[u8]) -> usize {
    let extended = match head[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if head[1] & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

/// The payload length a whole header gives.
fn payload_len(head: &[u8]) -> u64 {
    match head[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([head[2], head[3]])),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&head[2..10]);
            u64::from_be_bytes(n)
        }
        n => u64::from(n),
    }
}

impl FrameTrack {
    /// Header bytes still missing before the next frame's length is known.
    fn header_missing(&self) -> usize {
        let have = self.head_len;
        let whole = if have < 2 {
            2
        } else {
            header_len(&self.head[..have])
        };
        whole - have
    }

    /// How much of a read of `want` bytes may be handed over.
    fn cap(&self, want: usize) -> usize {
        if !self.exact {
            return want;
        }
        let limit = if self.left > 0 {
            usize::try_from(self.left).unwrap_or(usize::MAX)
        } else {
            self.header_missing()
        };
        want.min(limit)
    }

    /// Follows `bytes`, just handed over.
    fn saw(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.left > 0 {
                let n = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = self.header_missing().min(bytes.len());
            let have = self.head_len;
            self.head[have..have + n].copy_from_slice(&bytes[..n]);
            self.head_len += n;
            bytes = &bytes[n..];
            if self.head_len >= 2 && self.header_missing() == 0 {
                self.left = payload_len(&self.head[..self.head_len]);
                self.head_len = 0;
                if self.left >= LARGE_FRAME {
                    self.exact = true;
                }
            }
        }
    }

    /// A large frame was read and nothing was handed over past the end of
    /// the last frame: tungstenite's buffer is empty between messages.
    fn shrinkable(&self) -> bool {
        self.exact && self.left == 0 && self.head_len == 0
    }
}

/// A connection's WebSocket: tungstenite's protocol state (parsing,
/// unmasking, size limits, ping and close replies) over its `Wire`.
#[derive(Debug)]
pub struct Socket {
    /// tungstenite's state, its read buffer included.
    ctx: WebSocketContext,
    /// The socket and what goes with it.
    wire: Wire,
}

impl Socket {
    /// A server-side WebSocket on `wire`.
    pub fn new(wire: Wire, config: WebSocketConfig) -> Socket {
        Socket {
            ctx: WebSocketContext::new(Role::Server, Some(config)),
            wire,
        }
    }

    /// The wire.
    pub fn get_ref(&self) -> &Wire {
        &self.wire
    }

    /// The wire, to take what tungstenite wrote or to shut it.
    pub fn get_mut(&mut self) -> &mut Wire {
        &mut self.wire
    }

    /// The next message from the client; `None` once the connection is
    /// closed. Cancel-safe: a partly read frame stays in the buffer.
    pub async fn next(&mut self) -> Option<Result<Message, WsError>> {
        loop {
            match self.ctx.read(&mut self.wire) {
                Ok(message) => return Some(Ok(message)),
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.wire.tcp.readable().await {
                        return Some(Err(WsError::Io(e)));
                    }
                }
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Makes tungstenite write its pending pong or close reply (to the
    /// wire's `control`).
    pub fn flush(&mut self) -> Result<(), WsError> {
        self.ctx.flush(&mut self.wire)
    }

    /// Between messages: when a large frame made the read buffer grow and
    /// the buffer holds nothing now, replaces tungstenite's state with a
    /// fresh one (same configuration, small buffer). Whether it did.
    pub fn shrink(&mut self) -> bool {
        if !self.wire.frames.shrinkable() || self.flush().is_err() {
            return false;
        }
        let config = *self.ctx.get_config();
        self.ctx = WebSocketContext::new(Role::Server, Some(config));
        self.wire.frames.exact = false;
        true
    }
}

/// A whole, final, unmasked text frame carrying `text`.
pub fn text_frame(text: &str) -> Bytes {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let len = text.len() as u64;
    let mut out = Vec::with_capacity(header.len(len) + text.len());
    header
        .format(len, &mut out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(text.as_bytes());
    Bytes::from(out)
}

/// A close frame with `code` and a short reason.
pub fn close_frame(code: u16, reason: &'static str) -> Bytes {
    let frame = Frame::close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }));
    let mut out = Vec::with_capacity(frame.len());
    frame
        .format(&mut out)
        .expect("writing to a Vec cannot fail");
    Bytes::from(out)
}

/// An empty ping frame.
pub fn ping_frame() -> Bytes {
    Bytes::from_static(&[0x89, 0x00])
}

/// Reads and throws away what a client sends once its connection is
/// closing, so that no unread bytes make the kernel reset it.
#[derive(Debug)]
pub struct Discard {
    /// Where the bytes go.
    scratch: Vec<u8>,
    /// The client has not hung up yet.
    open: bool,
}

/// Bytes read per `read` while discarding.
const DISCARD_CHUNK: usize = 4096;
/// Reads per `Discard::discard` call, so a client that sends without a pause
/// cannot keep the task from its timers.
const DISCARD_READS: usize = 16;

impl Discard {
    /// Allocates the scratch space (only connections that close need it).
    pub fn new() -> Discard {
        Discard {
            scratch: vec![0; DISCARD_CHUNK],
            open: true,
        }
    }

    /// Whether the client may still send (it has not hung up).
    pub fn open(&self) -> bool {
        self.open
    }

    /// Waits for input, then reads and drops what is there; notes the end
    /// of the input. An error (a reset) means there is nothing more to do.
    pub async fn discard(&mut self, tcp: &TcpStream) -> io::Result<()> {
        tcp.readable().await?;
        for _ in 0..DISCARD_READS {
            match tcp.try_read(&mut self.scratch) {
                Ok(0) => {
                    self.open = false;
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Default for Discard {
    fn default() -> Discard {
        Discard::new()
    }
}

/// Frames waiting to be written, and how much of the first one was.
#[derive(Debug, Default)]
pub struct Outbox {
    frames: VecDeque<Bytes>,
    /// Bytes of the first frame already written.
    offset: usize,
}

impl Outbox {
    /// Queues a whole frame.
    pub fn push(&mut self, frame: Bytes) {
        self.frames.push_back(frame);
    }

    /// Frames waiting, the first counting even if partly written.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Drops every frame not yet started, keeping the rest of one that was
    /// partly written, so that what follows still starts on a frame boundary.
    pub fn discard_unstarted(&mut self) {
        let keep = usize::from(self.offset > 0);
        self.frames.truncate(keep);
    }

    /// Writes every waiting frame to `tcp`, in order, a `writev` of up to
    /// `MAX_IOV` slices at a time. On error (or when the future is dropped)
    /// the outbox holds exactly what was not written.
    pub async fn write_to(&mut self, tcp: &TcpStream) -> io::Result<()> {
        while !self.write_now(tcp)? {
            tcp.writable().await?;
        }
        Ok(())
    }

    /// Writes what the socket takes without waiting; whether all was taken.
    pub fn write_now(&mut self, tcp: &TcpStream) -> io::Result<bool> {
        while !self.frames.is_empty() {
            match self.try_write(tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        // A burst's worth of slots is kept; a huge one is given back.
        if self.frames.capacity() > 4 * MAX_IOV {
            self.frames.shrink_to(MAX_IOV);
        }
        Ok(true)
    }

    /// One `writev` of the waiting frames, if the socket takes it now. The
    /// slice array lives only here, not across an await: it would make
    /// every connection's task a kilobyte larger.
    fn try_write(&self, tcp: &TcpStream) -> io::Result<usize> {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        for (slot, frame) in iov.iter_mut().zip(self.frames.iter()) {
            let start = if count == 0 { self.offset } else { 0 };
            *slot = IoSlice::new(&frame[start..]);
            count += 1;
        }
        tcp.try_write_vectored(&iov[..count])
    }

    /// Marks `n` more bytes written.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.frames.front() else {
                return;
            };
            let left = front.len() - self.offset;
            if n >= left {
                n -= left;
                self.offset = 0;
                self.frames.pop_front();
            } else {
                self.offset += n;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::Control;

    fn parse(bytes: &[u8]) -> (FrameHeader, u64, usize) {
        let mut cursor = io::Cursor::new(bytes);
        let (header, len) = FrameHeader::parse(&mut cursor)
            .expect("valid header")
            .expect("complete header");
        (header, len, cursor.position() as usize)
    }

    #[test]
    fn text_frames_carry_the_text_unmasked_with_every_length_form() {
        for size in [0usize, 125, 126, 65_535, 65_536, 200_000] {
            let text = "é".repeat(size / 2) + &"x".repeat(size % 2);
            let frame = text_frame(&text);
            let (header, len, at) = parse(&frame);
            assert!(header.is_final);
            assert_eq!(header.opcode, OpCode::Data(Data::Text));
            assert_eq!(header.mask, None);
            assert_eq!(len as usize, text.len());
            assert_eq!(&frame[at..], text.as_bytes(), "size {size}");
        }
    }

    #[test]
    fn close_and_ping_frames() {
        let close = close_frame(1013, "outbound queue full");
        let (header, len, at) = parse(&close);
        assert_eq!(header.opcode, OpCode::Control(Control::Close));
        assert_eq!(len as usize, close.len() - at);
        assert_eq!(&close[at..at + 2], &1013u16.to_be_bytes());
        assert_eq!(&close[at + 2..], b"outbound queue full");
        let (header, len, _) = parse(&ping_frame());
        assert_eq!(header.opcode, OpCode::Control(Control::Ping));
        assert_eq!(len, 0);
    }

    /// A masked client frame whose first byte is `first` (FIN and opcode).
    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [9u8, 8, 7, 6];
        let mut frame = vec![first];
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

    #[test]
    fn the_track_follows_headers_split_anywhere() {
        let mut stream = Vec::new();
        for len in [0usize, 5, 125, 126, 300, 65_536, 70_000, 3] {
            stream.extend(masked(0x81, &vec![b'a'; len]));
        }
        for chunk in [1, 2, 3, 7, 512, 1 << 20] {
            let mut track = FrameTrack::default();
            for piece in stream.chunks(chunk) {
                track.saw(piece);
            }
            assert_eq!((track.left, track.head_len), (0, 0), "chunks of {chunk}");
            assert!(track.exact, "a large frame went by (chunks of {chunk})");
            assert!(track.shrinkable());
        }
        let mut small = FrameTrack::default();
        small.saw(&masked(0x81, &[b'a'; 4000]));
        assert!(!small.exact, "4000 bytes are not large");
        assert_eq!(small.cap(512), 512, "reads are free until then");
    }

    #[test]
    fn after_a_large_frame_reads_stop_at_each_frame_and_header_end() {
        let mut track = FrameTrack::default();
        let big = masked(0x81, &[b'a'; 5000]);
        // 2 + 2 length bytes + 4 mask bytes of header, then 592 of payload.
        track.saw(&big[..600]);
        assert!(track.exact && !track.shrinkable());
        assert_eq!(track.cap(512), 512);
        track.saw(&big[600..big.len() - 10]);
        assert_eq!(track.cap(512), 10, "no further than the frame's end");
        track.saw(&big[big.len() - 10..]);
        assert!(track.shrinkable());
        assert_eq!(track.cap(512), 2, "the next header's first two bytes");
        let next = masked(0x81, &[b'b'; 200]);
        track.saw(&next[..2]);
        assert!(!track.shrinkable());
        assert_eq!(track.cap(512), 6, "its length and mask");
        track.saw(&next[2..8]);
        assert_eq!(track.cap(512), 200, "its payload");
        track.saw(&next[8..]);
        assert!(track.shrinkable());
    }

    #[tokio::test]
    async fn a_large_message_gives_its_buffer_back_and_what_follows_arrives_whole() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let config = WebSocketConfig::default()
            .read_buffer_size(512)
            .max_frame_size(Some(1 << 20))
            .max_message_size(Some(1 << 20));
        let mut socket = Socket::new(Wire::from_tcp(server), config);
        let big = "b".repeat(60_000);
        // All in one write: small, large, small, a large message in two
        // fragments with a ping between them, small.
        let mut bytes = masked(0x81, b"first");
        bytes.extend(masked(0x81, big.as_bytes()));
        bytes.extend(masked(0x81, b"second"));
        bytes.extend(masked(0x01, &big.as_bytes()[..30_000]));
        bytes.extend(masked(0x89, b"ping"));
        bytes.extend(masked(0x80, &big.as_bytes()[30_000..]));
        bytes.extend(masked(0x81, b"third"));
        client.write_all(&bytes).await.unwrap();
        async fn text(socket: &mut Socket) -> String {
            match socket.next().await {
                Some(Ok(Message::Text(text))) => text.as_str().to_owned(),
                other => panic!("expected a text message, got {other:?}"),
            }
        }
        assert_eq!(text(&mut socket).await, "first");
        assert!(!socket.shrink(), "nothing large yet");
        assert_eq!(text(&mut socket).await, big);
        assert!(socket.shrink(), "the large frame's buffer is given back");
        assert_eq!(text(&mut socket).await, "second");
        assert!(!socket.shrink(), "given back already");
        let ping = socket.next().await;
        assert!(matches!(ping, Some(Ok(Message::Ping(_)))), "{ping:?}");
        socket.flush().unwrap();
        assert!(socket.get_mut().take_control().is_some(), "the pong");
        assert_eq!(text(&mut socket).await, big);
        assert!(socket.shrink(), "a fragmented large message too");
        assert_eq!(text(&mut socket).await, "third");
        // A close from the client is answered, then the stream ends.
        client
            .write_all(&masked(0x88, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        let close = socket.next().await;
        assert!(matches!(close, Some(Ok(Message::Close(_)))), "{close:?}");
        // The handshake is complete once the reply is written: tungstenite
        // says so with `ConnectionClosed`.
        let _ = socket.flush();
        assert!(socket.get_mut().take_control().is_some(), "the close reply");
        assert!(socket.next().await.is_none());
    }

    fn outbox(frames: &[&'static str]) -> Outbox {
        let mut out = Outbox::default();
        for f in frames {
            out.push(Bytes::from_static(f.as_bytes()));
        }
        out
    }

    #[test]
    fn advance_drops_whole_frames_then_moves_into_the_next() {
        let mut out = outbox(&["abc", "de", "fgh"]);
        out.advance(4);
        assert_eq!((out.len(), out.offset), (2, 1));
        out.advance(1);
        assert_eq!((out.len(), out.offset), (1, 0));
        out.advance(3);
        assert!(out.is_empty());
    }

    #[test]
    fn discarding_keeps_a_partly_written_frame_only() {
        let mut out = outbox(&["abc", "de"]);
        out.discard_unstarted();
        assert!(out.is_empty());
        let mut out = outbox(&["abc", "de"]);
        out.advance(1);
        out.discard_unstarted();
        assert_eq!((out.len(), out.offset), (1, 1));
    }

    #[tokio::test]
    async fn writing_now_stops_at_a_full_socket_and_resumes_where_it_stopped() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut peer = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut out = Outbox::default();
        let mut want = Vec::new();
        // 64 MB: more than any socket buffer holds while the peer sleeps.
        for i in 0..64u8 {
            let frame = vec![i; 1 << 20];
            want.extend_from_slice(&frame);
            out.push(Bytes::from(frame));
        }
        assert!(!out.write_now(&server).unwrap(), "the socket filled up");
        assert!(!out.is_empty());
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        out.write_to(&server).await.unwrap();
        drop(server);
        assert_eq!(reader.await.unwrap(), want);
    }

    #[tokio::test]
    async fn many_frames_arrive_whole_and_in_order_across_partial_writes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let (server, _) = listener.accept().await.unwrap();
        // More slices than one writev takes, and more bytes than a socket
        // buffer holds, so writes are partial and resume mid-frame.
        let mut out = Outbox::default();
        let mut want = Vec::new();
        for i in 0..300u32 {
            let frame = vec![(i % 251) as u8; 1 + (i as usize * 997) % 20_000];
            want.extend_from_slice(&frame);
            out.push(Bytes::from(frame));
        }
        out.write_to(&server).await.unwrap();
        assert!(out.is_empty());
        drop(server);
        assert_eq!(client.await.unwrap(), want);
    }
}
