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

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

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
        })
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

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().control.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
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
