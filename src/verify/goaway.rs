//! HTTP/2 GOAWAY (RFC 9113 §6.8) for connections the HTTP server gives no way to close
//! gracefully: a transparent wrapper around the connection's byte stream that, once verify stops
//! taking connections at the end of its drain (or the connection has lived
//! `VERIFY_H2_MAX_CONNECTION_AGE`), writes a GOAWAY frame between two of the server's frames. The
//! proxy then opens no new stream on the connection and sends its next requests on a new one
//! (to another replica), and the connection closes once its streams are answered, so a stop drops
//! nothing that reached it.
//!
//! Not at the start of the drain: every GOAWAY makes Go's client (Traefik) dial anew, and while
//! it does, requests whose body it forwards (`forwardBody`) and cannot replay may fail
//! (`cannot rewind body after connection loss`). The drain keeps the proxy's connection serving
//! (`/ready` already turned it away) and says GOAWAY once, when this replica takes no more.
//!
//! The wrapper reads frame headers only (9 bytes a frame, RFC 9113 §4.1): outgoing to know where a
//! frame ends and which streams are answered, incoming to know which the client opened. The
//! GOAWAY names the largest stream id (2^31-1, the first step of RFC 9113 §6.8's graceful
//! shutdown): every stream the client sent before it saw the frame is still answered here, so
//! nothing needs a retry (a proxy that forwards the request body cannot retry). The connection
//! is closed once a second has passed since (far more than a round trip: whatever the client
//! sent before reading the GOAWAY has arrived) and every stream is answered. HTTP/1.1
//! connections pass through untouched.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::service::Draining;

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
/// How often an idle HTTP/2 connection looks whether it should say GOAWAY, or close.
const IDLE_LOOK: Duration = Duration::from_millis(200);
/// How long after its GOAWAY a connection stays open for streams the client sent before it
/// read the frame.
const CLOSE_AFTER: Duration = Duration::from_secs(1);
/// "Every stream you sent is processed" (RFC 9113 §6.8).
const ALL_STREAMS: u32 = 0x7fff_ffff;

/// When connections should be told to go away.
#[derive(Debug, Clone)]
pub struct GoAwayWhen {
    pub draining: Arc<Draining>,
    /// A connection older than this is told to go away (the proxy reconnects, possibly to
    /// another replica).
    pub max_age: Option<Duration>,
    /// GOAWAY frames written.
    pub sent: prometheus::IntCounter,
}

/// What the connection speaks, if known when it is accepted (TLS: by ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Http1,
    Http2,
    /// Cleartext: HTTP/2 with prior knowledge when the first bytes are the preface.
    Detect,
}

/// Walks a stream of frames, byte count by byte count.
#[derive(Debug, Default)]
struct Frames {
    header: [u8; FRAME_HEADER],
    filled: usize,
    payload_left: usize,
    /// A whole frame header went by (the server's SETTINGS must be its first frame).
    started: bool,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.filled == 0 && self.payload_left == 0
    }

    /// Advances over `bytes`, calling `seen(type, flags, stream)` for each frame header
    /// completed.
    fn advance(&mut self, mut bytes: &[u8], mut seen: impl FnMut(u8, u8, u32)) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == FRAME_HEADER {
                let h = self.header;
                self.payload_left =
                    usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                seen(h[3], h[4], stream);
                self.filled = 0;
                self.started = true;
            }
        }
    }
}

/// A connection's byte stream, with a GOAWAY written into it when [`GoAwayWhen`] says so.
pub struct GoAwayIo<T> {
    io: T,
    when: GoAwayWhen,
    born: Instant,
    /// `None` until the protocol is known.
    h2: Option<bool>,
    /// Preface bytes matched so far (cleartext detection, then skipping it).
    preface: usize,
    incoming: Frames,
    outgoing: Frames,
    last_stream: u32,
    /// Streams the client opened that the server has not finished (no END_STREAM or
    /// RST_STREAM yet): once GOAWAY is out and none is left, the connection is closed.
    open: std::collections::HashSet<u32>,
    /// The GOAWAY frame and how much of it is written; `Some` once decided.
    goaway: Option<([u8; FRAME_HEADER + 8], usize)>,
    /// When the GOAWAY was all written.
    goaway_out: Option<Instant>,
    idle_look: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> GoAwayIo<T> {
    pub fn new(io: T, known: Known, when: GoAwayWhen) -> Self {
        Self {
            io,
            when,
            born: Instant::now(),
            h2: match known {
                Known::Http1 => Some(false),
                Known::Http2 => Some(true),
                Known::Detect => None,
            },
            preface: 0,
            incoming: Frames::default(),
            outgoing: Frames::default(),
            last_stream: 0,
            open: std::collections::HashSet::new(),
            goaway: None,
            goaway_out: None,
            idle_look: None,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }

    fn should_go_away(&self) -> bool {
        self.h2 == Some(true)
            && self.goaway.is_none()
            && self.preface == PREFACE.len()
            && self.outgoing.started
            && self.outgoing.at_boundary()
            && (self.when.draining.is_closing()
                || self
                    .when
                    .max_age
                    .is_some_and(|age| self.born.elapsed() >= age))
    }

    fn decide(&mut self) {
        if self.should_go_away() {
            let mut frame = [0u8; FRAME_HEADER + 8];
            frame[2] = 8;
            frame[3] = GOAWAY;
            frame[9..13].copy_from_slice(&ALL_STREAMS.to_be_bytes());
            // Error code 0 (NO_ERROR): a graceful shutdown.
            self.goaway = Some((frame, 0));
            self.when.sent.inc();
        }
    }

    /// Reads what the client sent: the preface, then frame headers.
    fn observe_incoming(&mut self, mut bytes: &[u8]) {
        if self.h2 == Some(false) {
            return;
        }
        if self.preface < PREFACE.len() {
            let n = (PREFACE.len() - self.preface).min(bytes.len());
            if bytes[..n] != PREFACE[self.preface..self.preface + n] {
                self.h2 = Some(false);
                return;
            }
            self.preface += n;
            bytes = &bytes[n..];
            if self.preface == PREFACE.len() {
                self.h2 = Some(true);
            }
        }
        let (last, open) = (&mut self.last_stream, &mut self.open);
        self.incoming.advance(bytes, |kind, _, stream| {
            if kind == HEADERS && stream % 2 == 1 && stream > *last {
                *last = stream;
                open.insert(stream);
            } else if kind == RST_STREAM {
                open.remove(&stream);
            }
        });
    }

    /// Follows what the server sent: a stream ends with END_STREAM or RST_STREAM.
    fn observe_outgoing(&mut self, bytes: &[u8]) {
        let open = &mut self.open;
        self.outgoing.advance(bytes, |kind, flags, stream| {
            if ((kind == HEADERS || kind == DATA) && flags & END_STREAM != 0) || kind == RST_STREAM
            {
                open.remove(&stream);
            }
        });
    }

    /// GOAWAY is out and every stream the client opened is answered: nothing more will come
    /// that this connection must serve.
    fn finished(&self) -> bool {
        self.goaway_out
            .is_some_and(|at| at.elapsed() >= CLOSE_AFTER)
            && self.open.is_empty()
    }
}

impl<T: AsyncWrite + Unpin> GoAwayIo<T> {
    /// Writes what is left of the GOAWAY frame; `Ready(Ok)` once it is all written.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((frame, written)) = &mut self.goaway {
            if *written == frame.len() {
                break;
            }
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &frame[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
            if *written == frame.len() {
                self.goaway_out = Some(Instant::now());
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for GoAwayIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.h2 == Some(true) && this.finished() {
            // The end of the connection, as if the client had closed it: the server's
            // connection task ends, and a stopping server is not kept waiting by a proxy
            // that keeps a connection it was told to leave.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &read {
            this.observe_incoming(&buf.filled()[before..]);
        }
        if this.h2 == Some(true) {
            this.decide();
            if let Some((frame, written)) = &this.goaway
                && *written < frame.len()
            {
                // Out now, between two of the server's frames; the flush is retried by the
                // next write or flush if the socket is full.
                if let Poll::Ready(Err(e)) = this.poll_goaway(cx) {
                    return Poll::Ready(Err(e));
                }
                let _ = Pin::new(&mut this.io).poll_flush(cx);
            }
            // An idle connection is looked at again shortly: whether to say GOAWAY, or whether
            // its last stream is answered.
            let look = this
                .idle_look
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(IDLE_LOOK)));
            if look.as_mut().poll(cx).is_ready() {
                look.as_mut().reset(tokio::time::Instant::now() + IDLE_LOOK);
                let _ = look.as_mut().poll(cx);
                cx.waker().wake_by_ref();
            }
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GoAwayIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_goaway(cx))?;
        if this.h2 == Some(true) {
            this.decide();
            std::task::ready!(this.poll_goaway(cx))?;
        }
        let n = std::task::ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        if this.h2 == Some(true) {
            this.observe_outgoing(&buf[..n]);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_goaway(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut f = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            0,
        ];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend(std::iter::repeat_n(0xAB, payload));
        f
    }

    #[test]
    fn frame_headers_are_followed_across_any_split() {
        let mut bytes = frame(0x4, 0, 6);
        bytes.extend(frame(HEADERS, 1, 40));
        bytes.extend(frame(0x0, 1, 300));
        bytes.extend(frame(HEADERS, 7, 3));
        for chunk in [1, 2, 5, 9, 10, 64, bytes.len()] {
            let mut frames = Frames::default();
            let mut seen = Vec::new();
            for piece in bytes.chunks(chunk) {
                frames.advance(piece, |kind, _, stream| seen.push((kind, stream)));
            }
            assert!(frames.at_boundary());
            assert_eq!(seen, vec![(0x4, 0), (HEADERS, 1), (0x0, 1), (HEADERS, 7)]);
        }
        let mut frames = Frames::default();
        frames.advance(&bytes[..12], |_, _, _| {});
        assert!(!frames.at_boundary(), "inside the first frame's payload");
    }

    #[test]
    fn the_client_preface_switches_http2_on_and_anything_else_off() {
        let when = GoAwayWhen {
            draining: Arc::new(Draining::default()),
            max_age: None,
            sent: prometheus::IntCounter::new("t", "t").unwrap(),
        };
        let mut h2 = GoAwayIo::new((), Known::Detect, when.clone());
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, 3, 10));
        h2.observe_incoming(&bytes[..5]);
        h2.observe_incoming(&bytes[5..]);
        assert_eq!((h2.h2, h2.last_stream), (Some(true), 3));
        // The stream ends when the server's answer carries END_STREAM.
        let mut answer = frame(HEADERS, 3, 4);
        answer[4] = END_STREAM;
        h2.observe_outgoing(&frame(0x4, 0, 0));
        assert_eq!(h2.open.len(), 1);
        h2.observe_outgoing(&answer);
        assert!(h2.open.is_empty());
        let mut h1 = GoAwayIo::new((), Known::Detect, when);
        h1.observe_incoming(b"GET /verify HTTP/1.1\r\n");
        assert_eq!(h1.h2, Some(false));
    }
}
