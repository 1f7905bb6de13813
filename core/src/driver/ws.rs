//! The WebSocket upgrade, both ways (`PROTOCOL.md` §3.1), over TLS for TLS hosts; the
//! frames, which Grid reads and writes itself; the socket under the WebSocket.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::client::ClientRequestBuilder;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{StatusCode, Uri};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::io::{AsyncRead, AsyncWrite};

use super::link::Shared;
use super::recycle::Recycler;
use super::runtime::BoxIo;
use crate::codec::{self, Frame, PayloadSplit};

/// Where a host string points: the socket address to connect to, the WebSocket URL of
/// the upgrade, and whether the link to it runs over TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host:port`, as given.
    pub(crate) addr: String,
    /// `ws://host:port<route>` or `wss://host:port<route>`.
    pub(crate) url: String,
    /// Whether the host string is `https://` or `wss://`.
    pub(crate) tls: bool,
}

impl Endpoint {
    /// The host part of the address (a DNS name or an IP address, without the brackets
    /// of an IPv6 literal): the name a TLS server certificate must be valid for.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub(crate) fn server_name(&self) -> &str {
        let a = self.addr.as_str();
        if let Some(rest) = a.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        a.rsplit_once(':').map_or(a, |(h, _)| h)
    }
}

/// Whether `host` names a TLS host (`https://` or `wss://`).
pub(crate) fn is_tls(host: &str) -> bool {
    host.split_once("://")
        .is_some_and(|(scheme, _)| matches!(scheme, "https" | "wss"))
}

/// The endpoint of a host string (`http://h:p` → `h:p`, `ws://h:p<route>`;
/// `https://h:p` → `h:p`, `wss://h:p<route>`, over TLS).
pub(crate) fn endpoint(host: &str, route: &str) -> Result<Endpoint, String> {
    let (scheme, rest) = host
        .split_once("://")
        .ok_or_else(|| format!("host {host:?} has no scheme"))?;
    let (ws_scheme, tls) = match scheme {
        "http" | "ws" => ("ws", false),
        "https" | "wss" => ("wss", true),
        other => return Err(format!("unsupported scheme {other:?} in {host}")),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.is_empty() {
        return Err(format!("host {host:?} has no address"));
    }
    Ok(Endpoint {
        addr: authority.to_owned(),
        url: format!("{ws_scheme}://{authority}{route}"),
        tls,
    })
}

/// Checks that this node can dial `host` on `route`: a host string with a scheme and an
/// address, whose WebSocket URL parses, and for a TLS host a name a certificate can be
/// checked against.
pub(crate) fn check_dialable(host: &str, route: &str) -> Result<(), String> {
    let ep = endpoint(host, route)?;
    let url = &ep.url;
    url.parse::<Uri>()
        .map_err(|e| format!("host {host:?} does not make a URL ({url}): {e}"))?;
    #[cfg(feature = "tls")]
    if ep.tls {
        super::tls::parse_server_name(ep.server_name())
            .map_err(|e| format!("host {host:?}: {e}"))?;
    }
    Ok(())
}

/// Checks that `route` is a URL path an upgrade request can carry as it is: it starts
/// with `/` and holds no query or fragment (the acceptor compares the request's path
/// with it).
pub(crate) fn check_route(route: &str) -> Result<(), String> {
    let why = "a route is a URL path: it starts with '/' and has no query";
    let uri: Uri = format!("ws://localhost{route}")
        .parse()
        .map_err(|e| format!("route {route:?}: {why} ({e})"))?;
    if !route.starts_with('/') || uri.path() != route {
        return Err(format!("route {route:?}: {why}"));
    }
    Ok(())
}

/// Runs the client side of TLS on a connection to a TLS host.
async fn tls_connect(shared: &Shared, ep: &Endpoint, io: BoxIo) -> Result<BoxIo, String> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.tls {
        return tls
            .connect(ep.server_name(), io)
            .await
            .map_err(|e| format!("TLS handshake with {}: {e}", ep.addr));
    }
    // The manager refuses to start without a TLS configuration when a host needs one.
    let _ = (shared, io);
    Err(format!("no TLS configuration to reach {}", ep.url))
}

/// How the acceptor's TLS handshake errors start.
pub(crate) const TLS_FAILED: &str = "TLS handshake: ";

/// Runs the server side of TLS on a connection accepted by a TLS host.
pub(crate) async fn tls_accept(shared: &Shared, io: BoxIo) -> Result<BoxIo, String> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &shared.tls {
        return tls.accept(io).await.map_err(|e| match e.kind() {
            // A dialer that refuses our certificate closes without a word.
            std::io::ErrorKind::UnexpectedEof => format!(
                "{TLS_FAILED}the peer closed the connection (does it trust this node's \
                 certificate?)"
            ),
            _ => format!("{TLS_FAILED}{e}"),
        });
    }
    let _ = (shared, io);
    Err("no TLS configuration to serve TLS".into())
}

/// Connects to `remote` (over TLS for a TLS host) and upgrades to a WebSocket with the
/// auth headers.
pub(crate) async fn dial(shared: &Arc<Shared>, remote: &str) -> Result<Socket, String> {
    let ep = endpoint(remote, &shared.route)?;
    let addr = &ep.addr;
    let mut io = shared
        .rt
        .connect(addr.clone())
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    if ep.tls {
        io = tls_connect(shared, &ep, io).await?;
    }
    let url = &ep.url;
    let uri: Uri = url.parse().map_err(|e| format!("bad url {url}: {e}"))?;
    let now_ns = {
        let t = super::link::wall_now();
        t.as_unix_nanos()
    };
    let req = ClientRequestBuilder::new(uri)
        .with_header("Authorization", format!("Bearer {}", (shared.token)()))
        .with_header("X-Minio-Time", now_ns.to_string());
    let mut io = Metered::new(io);
    io.cut = Some(HeaderCut::default());
    let (ws, _) = async_tungstenite::client_async(req, io)
        .await
        .map_err(|e| match e {
            // A refused upgrade carries its reason in the body.
            WsError::Http(resp) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                format!("upgrade refused by {url}: {}: {body}", resp.status())
            }
            e => format!("upgrade {url}: {e}"),
        })?;
    Ok(Socket::new(ws.into_inner(), true, max_message(shared)))
}

/// The largest message a peer may send: the protocol's frame size limit.
fn max_message(shared: &Shared) -> usize {
    shared.cluster.config.max_frame_size
}

fn reject(status: StatusCode, text: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(text.to_owned()));
    *r.status_mut() = status;
    r
}

/// Accepts the WebSocket upgrade on the manager's route, checking the bearer token.
// The callback's error type is the WebSocket library's HTTP response.
#[allow(clippy::result_large_err)]
pub(crate) async fn accept(
    shared: &Arc<Shared>,
    io: BoxIo,
    peer: Option<SocketAddr>,
) -> Result<Socket, String> {
    let route = shared.route.clone();
    let validate = shared.cluster.validate_token.clone();
    let refused = Arc::new(std::sync::Mutex::new(None::<String>));
    let refused2 = refused.clone();
    let callback = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let (status, text) = if req.uri().path() != route {
            (
                StatusCode::NOT_FOUND,
                format!("no grid route at {}", req.uri().path()),
            )
        } else {
            let token = req
                .headers()
                .get("Authorization")
                .and_then(|v| v.to_str().ok())
                // An empty token arrives as "Bearer" once the header's space is trimmed.
                .and_then(|v| v.strip_prefix("Bearer"))
                .map(str::trim_start);
            match token.map(|t| validate(t)) {
                Some(Ok(())) => return Ok(resp),
                Some(Err(e)) => (StatusCode::FORBIDDEN, format!("auth token: {e}")),
                None => (
                    StatusCode::FORBIDDEN,
                    "auth token: missing bearer token".to_owned(),
                ),
            }
        };
        *refused2.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.clone());
        Err(reject(status, &text))
    };
    let _ = peer;
    let ws = async_tungstenite::accept_hdr_async(Metered::new(io), callback)
        .await
        .map_err(|e| {
            let why = refused.lock().unwrap_or_else(|p| p.into_inner()).take();
            why.unwrap_or_else(|| format!("upgrade: {e}"))
        })?;
    // The library refuses a request followed by anything before its answer, so nothing
    // it read is left behind.
    Ok(Socket::new(ws.into_inner(), false, max_message(shared)))
}

// ---------------------------------------------------------------------------------------
// Frames.
//
// After the upgrade Grid reads and writes the WebSocket frames itself (RFC 6455 §5); the
// WebSocket library only runs the HTTP upgrade. Outbound, the frame header goes in
// front of the message in the buffer the message is encoded into, and the buffer goes
// to the socket as it is (through the library every message would be copied once more).
// Inbound, the socket is read in large chunks into one buffer that stays in cache, and
// each message is copied out of it into a buffer of its own size: one copy per byte,
// where the library zeroes a fresh buffer for every read and copies what it read past
// a message's end, and reads at most its buffer's size per system call.

/// The most bytes a frame header takes: 2, an 8-byte length and a 4-byte masking key.
pub(crate) const MAX_HEADER: usize = 14;

/// Opcodes (RFC 6455 §5.2).
const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xa;

/// The largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

/// Bytes asked of the socket per read. Measured with `grid-bench` on smol (one thread,
/// 64 KiB stream items, that phase run alone), still through the WebSocket library but
/// with a read-ahead buffer in front of it: reads of at most 64 KiB moved about 2.0 GB/s,
/// of 256 KiB or 1 MiB about 3.2 GB/s, the extra copy included; a larger read also
/// returns the TCP window to the sender in a larger step.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

/// Appends the header of one unfragmented binary frame (`FIN`, opcode 2) carrying `len`
/// bytes, masked with `mask` when given (a client's frames are masked, a server's are
/// not). The `len` bytes must follow, masked with [`apply_mask`]; room for them is the
/// caller's to reserve.
pub(crate) fn put_binary_header(out: &mut BytesMut, len: usize, mask: Option<[u8; 4]>) {
    put_header(out, OP_BINARY, len, mask);
}

/// Appends the header of one final frame with `opcode` carrying `len` bytes. Room for
/// the header and the bytes is the caller's to reserve, once: `out` grows as it is
/// written to if the caller did not.
fn put_header(out: &mut BytesMut, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    out.put_u8(0x80 | opcode);
    let masked = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.put_u8(masked | len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.put_u8(masked | 126);
        out.put_u16(n);
    } else {
        out.put_u8(masked | 127);
        out.put_u64(len as u64);
    }
    if let Some(key) = mask {
        out.put_slice(&key);
    }
}

/// Appends a whole final frame with `opcode` and `payload`, masked with `mask` if given.
fn put_frame(out: &mut BytesMut, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.reserve(MAX_HEADER + payload.len());
    put_header(out, opcode, payload.len(), mask);
    let body = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[body..], key);
    }
}

/// XORs `buf` with the masking key, byte `i` with `key[i % 4]` (RFC 6455 §5.3).
pub(crate) fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let k = u32::from_ne_bytes(key) as u64;
    // In memory: the key twice, so that byte `i` of every 8-byte word meets `key[i % 4]`.
    let wide = k | (k << 32);
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        let x = u64::from_ne_bytes(w.try_into().expect("8 bytes")) ^ wide;
        w.copy_from_slice(&x.to_ne_bytes());
    }
    // The words covered a multiple of 4 bytes, so the key starts over at the rest.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// Masking keys for a client's frames: unpredictable to anyone watching the link (each is
/// the SipHash, under keys the standard library draws from the operating system's random
/// source, of a counter), fresh for every frame.
pub(crate) struct MaskKeys {
    keys: RandomState,
    next: u64,
}

impl MaskKeys {
    pub(crate) fn new() -> MaskKeys {
        MaskKeys {
            keys: RandomState::new(),
            next: 0,
        }
    }

    pub(crate) fn next_key(&mut self) -> [u8; 4] {
        self.next += 1;
        (self.keys.hash_one(self.next) as u32).to_ne_bytes()
    }
}

/// What the peer sent, a message or a control frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// A whole binary message (reassembled if it came in fragments).
    Binary(Bytes),
    /// A ping; the pong carries its payload back.
    Ping(Bytes),
    /// The peer closes the WebSocket, with this status code if it gave one.
    Close(Option<u16>),
    /// A pong or a text message: not part of the protocol, skipped.
    Skipped,
}

/// A frame header (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
}

/// Parses the frame header at the start of `b`: the header and its length, or `None`
/// while `b` holds only part of it.
fn parse_header(b: &[u8]) -> Result<Option<(Header, usize)>, String> {
    let [b0, b1, ..] = *b else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err("frame with reserved bits set (no extension was agreed)".into());
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => match b.get(2..4) {
            Some(n) => (u16::from_be_bytes([n[0], n[1]]) as u64, 4),
            None => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(n) => (u64::from_be_bytes(n.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (n as u64, 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let Some(k) = b.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    let h = Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        mask,
        len,
    };
    Ok(Some((h, at)))
}

/// The frame whose payload is being read.
struct Partial {
    header: Header,
    /// Payload bytes still to come.
    left: usize,
    data: Vec<u8>,
}

/// Reads frames from a socket and yields the messages and control frames in them.
///
/// Frames are checked as RFC 6455 asks of an endpoint without extensions: reserved bits
/// and opcodes are refused, a server refuses unmasked frames and a client masked ones,
/// control frames are final and at most 125 bytes, fragments continue a message that
/// was started. A message larger than the limit is refused from its header, before
/// anything is allocated for it.
pub(crate) struct FrameReader {
    /// Bytes read and not yet consumed: `buf[start..end]`. Allocated (and zeroed) with
    /// the reader, and again on the first read after [`FrameReader::trim`] gave it back.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// This side is the server: the peer's frames must be masked, and are not otherwise.
    server: bool,
    /// The largest message accepted.
    max: usize,
    frame: Option<Partial>,
    /// A fragmented message: its opcode and the bytes of its frames so far.
    message: Option<(u8, Vec<u8>)>,
    /// Where large messages' buffers return to be read into again.
    recycler: Arc<Recycler>,
}

impl FrameReader {
    /// A reader for the side that is the server (`server`) or the client, accepting
    /// messages of up to `max` bytes, starting with bytes already read (`read`).
    pub(crate) fn new(server: bool, max: usize, read: &[u8]) -> FrameReader {
        let mut buf = vec![0; READ_CHUNK.max(read.len())];
        buf[..read.len()].copy_from_slice(read);
        FrameReader {
            buf,
            start: 0,
            end: read.len(),
            server,
            max,
            frame: None,
            message: None,
            recycler: Arc::default(),
        }
    }

    /// The next message or control frame, reading from `io` as needed; `Ready(Ok(None))`
    /// when the socket ends between two frames.
    pub(crate) fn poll_next<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Inbound>, String>> {
        loop {
            if let Some(m) = self.parse()? {
                return Poll::Ready(Ok(Some(m)));
            }
            // Everything read went into frames but part of a header (under 14 bytes):
            // it moves to the front, and the rest of the buffer is read into.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.is_empty() {
                self.buf = vec![0; READ_CHUNK];
            }
            match Pin::new(&mut *io).poll_read(cx, &mut self.buf[self.end..]) {
                Poll::Ready(Ok(0)) if self.end == 0 && self.frame.is_none() => {
                    return match self.message {
                        None => Poll::Ready(Ok(None)),
                        Some(_) => Poll::Ready(Err("connection closed inside a message".into())),
                    };
                }
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err("connection closed inside a frame".into()));
                }
                Poll::Ready(Ok(n)) => self.end += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.to_string())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Gives back the read buffer if it holds no unparsed byte (the next read allocates
    /// it again) and the free message buffers. A message being read keeps its buffer.
    pub(crate) fn trim(&mut self) {
        if self.start == self.end {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
        self.recycler.clear();
    }

    /// Bytes of buffer capacity held: the read buffer, the message being read and the
    /// free message buffers.
    pub(crate) fn buffer_bytes(&self) -> usize {
        self.buf.capacity()
            + self.frame.as_ref().map_or(0, |p| p.data.capacity())
            + self.message.as_ref().map_or(0, |(_, m)| m.capacity())
            + self.recycler.kept_bytes()
    }

    /// Consumes the bytes read: the next message or control frame once one is whole.
    /// Otherwise every byte is taken but part of a header.
    fn parse(&mut self) -> Result<Option<Inbound>, String> {
        loop {
            let p = match &mut self.frame {
                Some(p) => p,
                None => {
                    let Some((h, n)) = parse_header(&self.buf[self.start..self.end])? else {
                        return Ok(None);
                    };
                    self.start += n;
                    let left = self.check(&h)?;
                    self.frame.insert(Partial {
                        header: h,
                        left,
                        data: self.recycler.take(left),
                    })
                }
            };
            let take = p.left.min(self.end - self.start);
            p.data
                .extend_from_slice(&self.buf[self.start..self.start + take]);
            self.start += take;
            p.left -= take;
            if p.left > 0 {
                return Ok(None);
            }
            let p = self.frame.take().expect("a frame is being read");
            if let Some(m) = self.complete(p)? {
                return Ok(Some(m));
            }
        }
    }

    /// Checks a frame's header against the rules and the state of the message; returns
    /// its payload length.
    fn check(&self, h: &Header) -> Result<usize, String> {
        match (h.mask.is_some(), self.server) {
            (false, true) => return Err("unmasked frame from a client".into()),
            (true, false) => return Err("masked frame from a server".into()),
            _ => {}
        }
        let len = usize::try_from(h.len).unwrap_or(usize::MAX);
        match h.opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !h.fin {
                    return Err("fragmented control frame".into());
                }
                if len > MAX_CONTROL {
                    return Err(format!("control frame of {len} bytes (at most 125)"));
                }
                return Ok(len);
            }
            OP_CONTINUATION if self.message.is_none() => {
                return Err("continuation frame outside a fragmented message".into());
            }
            OP_TEXT | OP_BINARY if self.message.is_some() => {
                return Err("new message inside a fragmented one".into());
            }
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
            op => return Err(format!("frame with reserved opcode {op:#x}")),
        }
        let before = self.message.as_ref().map_or(0, |(_, m)| m.len());
        if len > self.max.saturating_sub(before) {
            return Err(format!(
                "message of more than {} bytes (at most {})",
                before.saturating_add(len),
                self.max
            ));
        }
        Ok(len)
    }

    /// A frame read whole: the message or control frame it completes, if any.
    fn complete(&mut self, p: Partial) -> Result<Option<Inbound>, String> {
        let Partial {
            header: h,
            mut data,
            ..
        } = p;
        if let Some(key) = h.mask {
            apply_mask(&mut data, key);
        }
        let (opcode, data) = match h.opcode {
            OP_PING => return Ok(Some(Inbound::Ping(data.into()))),
            OP_PONG => return Ok(Some(Inbound::Skipped)),
            OP_CLOSE => {
                let code = match *data {
                    [] => None,
                    [a, b, ..] => Some(u16::from_be_bytes([a, b])),
                    [_] => return Err("close frame with a 1-byte status".into()),
                };
                return Ok(Some(Inbound::Close(code)));
            }
            OP_CONTINUATION => {
                let (op, mut m) = self.message.take().expect("checked: a message is open");
                m.extend_from_slice(&data);
                // The fragment's own buffer may have come from the recycler.
                self.recycler.put(data);
                (op, m)
            }
            op => (op, data),
        };
        if !h.fin {
            self.message = Some((opcode, data));
            return Ok(None);
        }
        Ok(Some(match opcode {
            OP_BINARY => Inbound::Binary(self.recycler.give(data)),
            _ => Inbound::Skipped,
        }))
    }
}

/// Finds the end of an HTTP response head (`\r\n\r\n`) and whether its status is 101.
///
/// The dialer's upgrade is read by the WebSocket library, which would keep any bytes
/// that came with the response: [`Metered`] gives it the head only, and keeps the rest
/// for Grid's frame reader.
#[derive(Default)]
pub(crate) struct HeaderCut {
    seen: usize,
    /// The first 12 bytes: `HTTP/1.1 101`.
    status: [u8; 12],
    /// How much of `\r\n\r\n` the last bytes matched.
    run: u8,
}

impl HeaderCut {
    /// Feeds the next bytes of the response; returns how many of them belong to the head
    /// once it ends among them.
    fn feed(&mut self, b: &[u8]) -> Option<usize> {
        for (i, &c) in b.iter().enumerate() {
            if let Some(s) = self.status.get_mut(self.seen) {
                *s = c;
            }
            self.seen += 1;
            self.run = match (self.run, c) {
                (0 | 2, b'\r') => self.run + 1,
                (_, b'\r') => 1,
                (1 | 3, b'\n') => self.run + 1,
                _ => 0,
            };
            if self.run == 4 {
                return Some(i + 1);
            }
        }
        None
    }

    /// Whether the head read is a `101 Switching Protocols`.
    fn upgraded(&self) -> bool {
        self.status[8] == b' ' && &self.status[9..12] == b"101"
    }
}

/// Payloads from this size up are written from their own buffers instead of being
/// copied behind their headers, where frames are not masked (a server's).
const SPLIT_PAYLOAD: usize = 16 * 1024;

/// Encodes a round of messages onto `out`: the messages are `frames` cut by `counts`
/// (frames, encoded length), each encoded and checksummed straight behind its
/// WebSocket frame header, masked with keys from `mask` when given. Unmasked, payloads
/// of [`SPLIT_PAYLOAD`] bytes or more are not copied: they go out as segments of their
/// own, between the bytes before and after them. The round's last segment ends a frame.
pub(crate) fn encode_round(
    frames: &[Frame],
    counts: impl Iterator<Item = (usize, usize)>,
    mut mask: Option<&mut MaskKeys>,
    buf: &mut BytesMut,
    out: &mut VecDeque<Segment>,
) {
    let mut take = |before: &mut BytesMut, payload: &Bytes| {
        out.push_back(Segment {
            bytes: before.split().freeze(),
            edge: false,
        });
        out.push_back(Segment {
            bytes: payload.clone(),
            edge: false,
        });
    };
    let mut at = 0;
    for (n, len) in counts {
        let message = &frames[at..at + n];
        at += n;
        let Some(keys) = mask.as_deref_mut() else {
            let split = message.iter().map(|f| f.payload.len());
            let split: usize = split.filter(|n| *n >= SPLIT_PAYLOAD).sum();
            buf.reserve(MAX_HEADER + len - split + codec::HEAD_ROOM);
            put_binary_header(buf, len, None);
            let split = &mut PayloadSplit {
                min: SPLIT_PAYLOAD,
                take: &mut take,
            };
            codec::encode_message_split(message, buf, split);
            continue;
        };
        let key = keys.next_key();
        buf.reserve(MAX_HEADER + len + codec::HEAD_ROOM);
        put_binary_header(buf, len, Some(key));
        let body = buf.len();
        codec::encode_message(message, buf);
        debug_assert_eq!(buf.len() - body, len, "Transmit::len is exact");
        apply_mask(&mut buf[body..], key);
    }
    if !buf.is_empty() {
        out.push_back(Segment {
            bytes: buf.split().freeze(),
            edge: true,
        });
    } else if let Some(last) = out.back_mut() {
        // The round ended with a payload: so did its last frame.
        last.edge = true;
    }
}

/// Bytes queued for the socket: part of one or more WebSocket frames.
pub(crate) struct Segment {
    pub(crate) bytes: Bytes,
    /// A frame ends where these bytes end.
    pub(crate) edge: bool,
}

/// The most segments one vectored write is given.
const MAX_SLICES: usize = 64;

/// The socket under a WebSocket, counting the bytes written to it (the socket task tells
/// a slow link that is still moving from a stalled one by this count) and carrying the
/// frames Grid writes itself ([`Metered::poll_write_segments`]).
pub(crate) struct Metered {
    io: BoxIo,
    written: u64,
    read: u64,
    /// The bytes written so far end inside one of Grid's frames: nothing else may be
    /// written until it is finished (a close frame or pong would land inside it).
    mid_batch: bool,
    /// Set while the dialer's upgrade is read: the response head is cut off there.
    cut: Option<HeaderCut>,
    /// Bytes read past the end of the upgrade response.
    after_head: Vec<u8>,
}

impl Metered {
    pub(crate) fn new(io: BoxIo) -> Metered {
        Metered {
            io,
            written: 0,
            read: 0,
            mid_batch: false,
            cut: None,
            after_head: Vec::new(),
        }
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Bytes read from the socket so far.
    pub(crate) fn read(&self) -> u64 {
        self.read
    }

    /// Whether the bytes written so far end inside a frame.
    pub(crate) fn mid_batch(&self) -> bool {
        self.mid_batch
    }

    /// Writes the segments in `out` as far as the socket takes them (several per system
    /// call where it supports vectored writes), removing what it took: `Ready(Ok)` once
    /// `out` is empty, or with `to_edge` once the last byte written ends a frame.
    pub(crate) fn poll_write_segments(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut VecDeque<Segment>,
        to_edge: bool,
    ) -> Poll<io::Result<()>> {
        loop {
            if out.is_empty() || (to_edge && !self.mid_batch) {
                return Poll::Ready(Ok(()));
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = out
                .iter()
                .zip(&mut slices)
                .map(|(s, slice)| *slice = IoSlice::new(&s.bytes))
                .count();
            let mut w = match self.poll_write_counted(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(w)) => w,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            while let Some(s) = out.front_mut() {
                if w < s.bytes.len() {
                    if w > 0 {
                        s.bytes.advance(w);
                        self.mid_batch = true;
                    }
                    break;
                }
                w -= s.bytes.len();
                self.mid_batch = !s.edge;
                out.pop_front();
            }
        }
    }

    /// Writes `slices` to the socket, counting what it took. A lone slice goes out with
    /// a plain write: smol's 512-byte stream items measured faster so than through
    /// `writev`.
    fn poll_write_counted(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let io = Pin::new(&mut self.io);
        let r = match slices {
            [one] => io.poll_write(cx, one),
            some => io.poll_write_vectored(cx, some),
        };
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
    }

    /// Flushes the batches written (a TLS stream holds bytes back until flushed).
    pub(crate) fn poll_flush_frames(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if !this.after_head.is_empty() {
            let n = buf.len().min(this.after_head.len());
            buf[..n].copy_from_slice(&this.after_head[..n]);
            this.after_head.drain(..n);
            return Poll::Ready(Ok(n));
        }
        let n = match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        this.read += n as u64;
        if let Some(cut) = &mut this.cut {
            if let Some(head) = cut.feed(&buf[..n]) {
                // Frames that follow a 101 are Grid's to read; a refusal's body is the
                // library's (it reports the reason).
                if cut.upgraded() {
                    this.after_head.extend_from_slice(&buf[head..n]);
                    this.cut = None;
                    return Poll::Ready(Ok(head));
                }
                this.cut = None;
            }
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_counted(cx, &[IoSlice::new(buf)])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

/// An upgraded WebSocket: the socket, the reader of its frames, and the masking keys of
/// the frames this side writes (`None` on the server, whose frames are not masked).
pub(crate) struct Socket {
    pub(crate) io: Metered,
    pub(crate) reader: FrameReader,
    pub(crate) mask: Option<MaskKeys>,
}

impl Socket {
    /// The WebSocket over an upgraded socket, for the client (`client`) or the server.
    pub(crate) fn new(mut io: Metered, client: bool, max: usize) -> Socket {
        let reader = FrameReader::new(!client, max, &std::mem::take(&mut io.after_head));
        Socket {
            io,
            reader,
            mask: client.then(MaskKeys::new),
        }
    }

    /// Gives back the buffers a quiet socket does not need (see [`FrameReader::trim`]).
    pub(crate) fn trim(&mut self) {
        self.reader.trim();
    }

    /// The next message or control frame; `Ok(None)` when the socket ends.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Inbound>, String>> {
        self.reader.poll_next(&mut self.io, cx)
    }

    /// Appends the pong that answers a ping carrying `payload`.
    pub(crate) fn put_pong(&mut self, out: &mut BytesMut, payload: &[u8]) {
        let key = self.mask.as_mut().map(MaskKeys::next_key);
        put_frame(out, OP_PONG, payload, key);
    }

    /// Writes `frames` whole, then flushes.
    async fn write_all(&mut self, frames: Bytes) -> io::Result<()> {
        let mut out = VecDeque::from([Segment {
            bytes: frames,
            edge: true,
        }]);
        std::future::poll_fn(|cx| self.io.poll_write_segments(cx, &mut out, false)).await?;
        std::future::poll_fn(|cx| self.io.poll_flush_frames(cx)).await
    }

    /// Sends the pong that answers a ping carrying `payload`.
    pub(crate) async fn pong(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut b = BytesMut::new();
        self.put_pong(&mut b, payload);
        self.write_all(b.freeze()).await
    }

    /// Sends one binary message.
    pub(crate) async fn send(&mut self, message: &[u8]) -> io::Result<()> {
        let mut b = BytesMut::new();
        let key = self.mask.as_mut().map(MaskKeys::next_key);
        put_frame(&mut b, OP_BINARY, message, key);
        self.write_all(b.freeze()).await
    }

    /// Sends a close frame with `code` (none if a batch was left partly written: it
    /// would land inside a frame), then closes the socket.
    pub(crate) async fn close(&mut self, code: Option<u16>) {
        if !self.io.mid_batch {
            let mut b = BytesMut::new();
            let key = self.mask.as_mut().map(MaskKeys::next_key);
            let payload = code.map(u16::to_be_bytes);
            put_frame(&mut b, OP_CLOSE, payload.as_ref().map_or(&[], |p| p), key);
            let _ = self.write_all(b.freeze()).await;
        }
        let _ = std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_close(cx)).await;
    }
}

/// The status code of a normal closure (RFC 6455 §7.4.1).
pub(crate) const CLOSE_NORMAL: u16 = 1000;

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_tungstenite::tungstenite::Message;
    use async_tungstenite::tungstenite::protocol::{Role, WebSocket};

    use super::*;

    fn header(len: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_binary_header(&mut b, len, mask);
        b.to_vec()
    }

    #[test]
    fn binary_headers_follow_rfc_6455() {
        assert_eq!(header(0, None), [0x82, 0]);
        assert_eq!(header(125, None), [0x82, 125]);
        assert_eq!(header(126, None), [0x82, 126, 0, 126]);
        assert_eq!(header(65535, None), [0x82, 126, 0xff, 0xff]);
        assert_eq!(header(65536, None), [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        let k = Some([1, 2, 3, 4]);
        assert_eq!(header(5, k), [0x82, 0x85, 1, 2, 3, 4]);
        assert_eq!(header(300, k), [0x82, 0x80 | 126, 1, 44, 1, 2, 3, 4]);
        let long = header(1 << 32, k);
        assert_eq!(long, [0x82, 0x80 | 127, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(long.len(), MAX_HEADER);
    }

    /// `n` bytes, different at every size.
    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + n) as u8).collect()
    }

    /// One frame with `opcode` and `body`, final or not, masked with `mask` if given.
    fn framed(opcode: u8, fin: bool, body: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut b = BytesMut::new();
        put_frame(&mut b, opcode, body, mask);
        if !fin {
            b[0] &= 0x7f;
        }
        b.to_vec()
    }

    /// One batch of frames as the socket task writes them: `sizes` messages, masked
    /// when `keys` is given.
    fn batch(sizes: &[usize], mut keys: Option<&mut MaskKeys>) -> Vec<u8> {
        let mut b = BytesMut::new();
        for &n in sizes {
            let key = keys.as_deref_mut().map(MaskKeys::next_key);
            put_binary_header(&mut b, n, key);
            let body = b.len();
            b.extend_from_slice(&payload(n));
            if let Some(key) = key {
                apply_mask(&mut b[body..], key);
            }
        }
        b.to_vec()
    }

    /// Reads `count` messages of `bytes` with the WebSocket library in `role`.
    fn read_back(bytes: Vec<u8>, role: Role, count: usize) -> Result<Vec<Vec<u8>>, String> {
        let mut ws = WebSocket::from_raw_socket(std::io::Cursor::new(bytes), role, None);
        (0..count)
            .map(|_| match ws.read() {
                Ok(Message::Binary(b)) => Ok(b.to_vec()),
                Ok(other) => Err(format!("not a binary message: {other:?}")),
                Err(e) => Err(e.to_string()),
            })
            .collect()
    }

    /// Batches written as a client (masked) read back on a server, and as a server
    /// (unmasked) on a client, at every length class; the library refuses a client's
    /// frames left unmasked.
    #[test]
    fn frames_read_back_through_the_websocket_library() {
        let sizes = [0, 1, 7, 125, 126, 127, 1000, 65535, 65536, 200_003];
        let want: Vec<Vec<u8>> = sizes.iter().map(|&n| payload(n)).collect();
        let mut keys = MaskKeys::new();
        let masked = batch(&sizes, Some(&mut keys));
        assert_eq!(
            read_back(masked, Role::Server, sizes.len()),
            Ok(want.clone())
        );
        let plain = batch(&sizes, None);
        assert_eq!(
            read_back(plain.clone(), Role::Client, sizes.len()),
            Ok(want)
        );
        let refused = read_back(plain, Role::Server, 1).expect_err("unmasked from a client");
        assert!(refused.contains("mask"), "{refused}");
    }

    #[test]
    fn mask_is_a_bytewise_xor_with_the_key() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for n in 0..80 {
            let data = payload(n);
            let mut masked = data.clone();
            apply_mask(&mut masked, key);
            let naive: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(masked, naive, "length {n}");
            apply_mask(&mut masked, key);
            assert_eq!(masked, data, "length {n}");
        }
    }

    #[test]
    fn mask_keys_are_fresh_per_frame_and_per_socket() {
        let (mut a, mut b) = (MaskKeys::new(), MaskKeys::new());
        let ka: Vec<[u8; 4]> = (0..100).map(|_| a.next_key()).collect();
        let kb: Vec<[u8; 4]> = (0..100).map(|_| b.next_key()).collect();
        let distinct: std::collections::HashSet<&[u8; 4]> = ka.iter().collect();
        assert!(
            distinct.len() >= 99,
            "{} distinct keys of 100",
            distinct.len()
        );
        assert_ne!(ka, kb, "two sockets, one key sequence");
    }

    /// A socket that takes at most `budget` bytes until it is given more, and records
    /// what it took.
    #[derive(Clone, Default)]
    struct Trickle(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Trickle {
        fn allow(&self, n: usize) {
            self.0.lock().unwrap().1 = n;
        }
        fn taken(&self) -> Vec<u8> {
            self.0.lock().unwrap().0.clone()
        }
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let mut g = self.0.lock().unwrap();
            let n = buf.len().min(g.1);
            if n == 0 {
                return Poll::Pending;
            }
            g.1 -= n;
            g.0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        /// Takes from several slices at once, up to the allowance.
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut g = self.0.lock().unwrap();
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(g.1);
                g.1 -= k;
                g.0.extend_from_slice(&b[..k]);
                n += k;
            }
            if n == 0 {
                return Poll::Pending;
            }
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A round of messages reads back through the WebSocket library as the messages
    /// encoded whole, masked or not. Unmasked, the large payloads are the frames' own
    /// buffers, each segment marked as ending a frame does, and so does the last.
    #[test]
    fn rounds_read_back_as_their_messages() {
        use crate::codec::{Flags, Op, SubrouteId};
        let frame = |len: usize, crc: bool, sub: bool| {
            let mut f = Frame::new(Op::MuxServerMsg);
            f.mux_id = 5;
            f.flags = if crc { Flags::CRC } else { Flags::default() };
            f.payload = (0..len).map(|i| (i * 7) as u8).collect::<Vec<_>>().into();
            f.subroute = sub.then(|| SubrouteId::new(3, "r"));
            f
        };
        let messages = [
            vec![frame(20_000, true, false)],
            vec![
                frame(100, true, false),
                frame(40_000, true, true),
                frame(SPLIT_PAYLOAD, false, false),
                frame(5, true, false),
            ],
            vec![frame(SPLIT_PAYLOAD - 1, true, false)],
            vec![frame(70_000, false, false)],
        ];
        let whole: Vec<Vec<u8>> = messages
            .iter()
            .map(|m| {
                let mut b = BytesMut::new();
                codec::encode_message(m, &mut b);
                b.to_vec()
            })
            .collect();
        let frames: Vec<Frame> = messages.concat();
        let counts = messages.iter().zip(&whole).map(|(m, w)| (m.len(), w.len()));
        for masked in [false, true] {
            let mut keys = MaskKeys::new();
            let (mut buf, mut out) = (BytesMut::new(), VecDeque::new());
            let mask = masked.then_some(&mut keys);
            encode_round(&frames, counts.clone(), mask, &mut buf, &mut out);
            let wire: Vec<u8> = out.iter().flat_map(|s| s.bytes.to_vec()).collect();
            let role = if masked { Role::Server } else { Role::Client };
            assert_eq!(
                read_back(wire.clone(), role, whole.len()),
                Ok(whole.clone())
            );

            let mut ends = Vec::new();
            let mut at = 0;
            while at < wire.len() {
                let (h, n) = parse_header(&wire[at..]).unwrap().unwrap();
                at += n + h.len as usize;
                ends.push(at);
            }
            let mut at = 0;
            for s in &out {
                at += s.bytes.len();
                assert!(
                    !s.edge || ends.contains(&at),
                    "edge at {at}, frames end at {ends:?}"
                );
            }
            assert!(out.back().is_some_and(|s| s.edge));
            let own: Vec<*const u8> = out.iter().map(|s| s.bytes.as_ptr()).collect();
            let large = frames.iter().filter(|f| f.payload.len() >= SPLIT_PAYLOAD);
            let large: Vec<*const u8> = large.map(|f| f.payload.as_ptr()).collect();
            assert_eq!(large.len(), 4);
            for p in large {
                assert_eq!(own.contains(&p), !masked, "masked: {masked}");
            }
        }
    }

    /// A message is written into the room reserved for it before its first byte: the
    /// buffer grows once, to that room, and is not moved (copying what the round wrote
    /// before) while the message's frames are written, each head in place.
    #[test]
    fn a_message_is_written_in_the_room_reserved_for_it() {
        use crate::codec::{Flags, Op};
        let small = |len: usize, mux_id: u64| {
            let mut f = Frame::new(Op::MuxServerMsg);
            (f.mux_id, f.seq, f.flags) = (mux_id, u32::MAX, Flags::CRC);
            f.payload = Bytes::from(vec![3; len]);
            f
        };
        let messages = [
            vec![small(0, u64::MAX)],
            vec![small(500, 1), small(0, u64::MAX), small(0, u64::MAX)],
        ];
        for message in &messages {
            let len = match &message[..] {
                [f] => f.encoded_len(),
                many => codec::merged_len(many),
            };
            for masked in [false, true] {
                let mut keys = MaskKeys::new();
                let (mut buf, mut out) = (BytesMut::new(), VecDeque::new());
                encode_round(
                    message,
                    [(message.len(), len)].into_iter(),
                    masked.then_some(&mut keys),
                    &mut buf,
                    &mut out,
                );
                let mut room = BytesMut::new();
                room.reserve(MAX_HEADER + len + codec::HEAD_ROOM);
                let wire: usize = out.iter().map(|s| s.bytes.len()).sum();
                assert!(
                    wire > len && wire <= MAX_HEADER + len,
                    "{wire} bytes for {len}"
                );
                assert_eq!(out.len(), 1);
                assert_eq!(buf.capacity(), room.capacity() - wire, "masked: {masked}");
            }
        }
    }

    /// No room is reserved in the batch for a payload written from its own buffer: a
    /// round of one 1 MiB payload leaves the batch buffer with little capacity.
    #[test]
    fn payloads_written_from_their_own_buffers_get_no_room_in_the_batch() {
        use crate::codec::{Flags, Op};
        let mut f = Frame::new(Op::MuxServerMsg);
        f.flags = Flags::CRC;
        f.payload = Bytes::from(vec![1; 1 << 20]);
        let len = f.encoded_len();
        let (mut buf, mut out) = (BytesMut::new(), VecDeque::new());
        encode_round(&[f], [(1, len)].into_iter(), None, &mut buf, &mut out);
        assert_eq!(out.len(), 3);
        assert!(buf.capacity() < 4096, "{} bytes reserved", buf.capacity());
    }

    /// Segments go out several per write where the socket takes them so, and after
    /// every write the socket knows whether it stopped inside a frame: at the end of a
    /// segment only if that segment does not end a frame. Writing to the next frame's
    /// edge stops there; a close frame waits for the edge.
    #[test]
    fn segments_are_written_together_and_frame_edges_are_known() {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let seg = |n: usize, fill: u8, edge: bool| Segment {
            bytes: Bytes::from(vec![fill; n]),
            edge,
        };
        let queue = || {
            VecDeque::from([
                seg(10, 1, false),
                seg(1000, 2, false),
                seg(5, 3, true),
                seg(20, 4, true),
            ])
        };
        let all: Vec<u8> = queue().iter().flat_map(|s| s.bytes.to_vec()).collect();

        // One write takes every segment the socket has room for.
        let sock = Trickle::default();
        let mut io = Metered::new(Box::new(sock.clone()));
        let mut out = queue();
        sock.allow(usize::MAX);
        assert!(io.poll_write_segments(&mut cx, &mut out, false).is_ready());
        assert!(out.is_empty() && !io.mid_batch());
        assert_eq!(sock.taken(), all);
        assert_eq!(io.written(), all.len() as u64);

        // A trickle: (bytes allowed, whether a frame is cut there, segments left).
        let sock = Trickle::default();
        let mut ws = Socket::new(Metered::new(Box::new(sock.clone())), false, 1 << 20);
        let mut out = queue();
        for (allow, mid, left) in [
            (5, true, 4),   // inside the first segment
            (10, true, 3),  // across into the second
            (995, true, 2), // the second's end, which is no frame's end
            (5, false, 1),  // the first frame's end
        ] {
            sock.allow(allow);
            assert!(
                ws.io
                    .poll_write_segments(&mut cx, &mut out, false)
                    .is_pending()
            );
            assert_eq!((ws.io.mid_batch(), out.len()), (mid, left), "after {allow}");
        }
        // At an edge already: nothing to write to reach one.
        assert!(
            ws.io
                .poll_write_segments(&mut cx, &mut out, true)
                .is_ready()
        );
        assert_eq!(sock.taken(), all[..1015]);

        // Cut inside the last frame, then written to its edge.
        sock.allow(7);
        assert!(
            ws.io
                .poll_write_segments(&mut cx, &mut out, false)
                .is_pending()
        );
        assert!(ws.io.mid_batch());
        sock.allow(1000);
        assert!(
            ws.io
                .poll_write_segments(&mut cx, &mut out, true)
                .is_ready()
        );
        assert!(!ws.io.mid_batch() && out.is_empty());
        use futures_util::FutureExt;
        assert!(ws.close(Some(CLOSE_NORMAL)).now_or_never().is_some());
        let mut want = all;
        want.extend_from_slice(&[0x88, 2, 0x03, 0xe8]);
        assert_eq!(sock.taken(), want);

        // An empty segment is passed over, its edge kept.
        let sock = Trickle::default();
        let mut io = Metered::new(Box::new(sock.clone()));
        let mut out = VecDeque::from([seg(3, 5, false), seg(0, 0, true)]);
        sock.allow(3);
        assert!(matches!(
            io.poll_write_segments(&mut cx, &mut out, false),
            Poll::Ready(Ok(()))
        ));
        assert!(out.is_empty() && !io.mid_batch());
    }

    /// A batch partly written when the socket task stops gets no close frame after it
    /// (it would land inside a frame); a socket between batches does.
    #[test]
    fn a_close_never_lands_inside_a_batch() {
        let sock = Trickle::default();
        let mut ws = Socket::new(Metered::new(Box::new(sock.clone())), false, 1 << 20);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let frames = batch(&[300], None);
        let whole = |b: &[u8]| {
            VecDeque::from([Segment {
                bytes: Bytes::copy_from_slice(b),
                edge: true,
            }])
        };
        let mut b = whole(&frames);

        sock.allow(100);
        assert!(
            ws.io
                .poll_write_segments(&mut cx, &mut b, false)
                .is_pending()
        );
        sock.allow(1000);
        use futures_util::FutureExt;
        assert!(ws.close(Some(CLOSE_NORMAL)).now_or_never().is_some());
        assert_eq!(
            sock.taken(),
            frames[..100],
            "a close frame went into the frame"
        );

        let sock = Trickle::default();
        let mut ws = Socket::new(Metered::new(Box::new(sock.clone())), false, 1 << 20);
        let mut b = whole(&frames);
        sock.allow(1000);
        assert!(ws.io.poll_write_segments(&mut cx, &mut b, false).is_ready());
        assert!(ws.close(Some(CLOSE_NORMAL)).now_or_never().is_some());
        let mut want = frames;
        want.extend_from_slice(&[0x88, 2, 0x03, 0xe8]);
        assert_eq!(sock.taken(), want);
        assert_eq!(ws.io.written(), want.len() as u64);
    }

    /// `bytes`, handed out at most `chunk` at a time, then the end of the stream.
    struct Chunks {
        bytes: Vec<u8>,
        at: usize,
        chunk: usize,
        /// Offsets no read goes past, in order.
        cuts: VecDeque<usize>,
    }

    impl Chunks {
        fn new(bytes: Vec<u8>, chunk: usize) -> Chunks {
            Chunks {
                bytes,
                at: 0,
                chunk,
                cuts: VecDeque::new(),
            }
        }

        /// `bytes` read whole up to each of `cuts`, then up to the next.
        fn cut_at(bytes: Vec<u8>, cuts: &[usize]) -> Chunks {
            Chunks {
                cuts: cuts.iter().copied().collect(),
                ..Chunks::new(bytes, usize::MAX)
            }
        }
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let end = self.cuts.front().copied().unwrap_or(self.bytes.len());
            let n = buf.len().min(self.chunk).min(end - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            if self.cuts.front() == Some(&self.at) {
                self.cuts.pop_front();
            }
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Chunks {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Everything a reader yields from `bytes` read `chunk` at a time, up to the end of
    /// the stream or the first error.
    fn read_all(
        bytes: Vec<u8>,
        chunk: usize,
        server: bool,
        max: usize,
    ) -> (Vec<Inbound>, Option<String>) {
        let mut r = FrameReader::new(server, max, &[]);
        let mut io = Chunks::new(bytes, chunk);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        loop {
            match r.poll_next(&mut io, &mut cx) {
                Poll::Ready(Ok(Some(m))) => got.push(m),
                Poll::Ready(Ok(None)) => return (got, None),
                Poll::Ready(Err(e)) => return (got, Some(e)),
                Poll::Pending => unreachable!("the bytes never run dry"),
            }
        }
    }

    /// The next message `r` reads from `io`, which must be a binary one.
    fn next_binary(r: &mut FrameReader, io: &mut Chunks) -> Bytes {
        let waker = futures_util::task::noop_waker();
        match r.poll_next(io, &mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(Some(Inbound::Binary(b)))) => b,
            other => panic!("{other:?}"),
        }
    }

    fn binaries(sizes: &[usize]) -> Vec<Inbound> {
        sizes
            .iter()
            .map(|&n| Inbound::Binary(payload(n).into()))
            .collect()
    }

    /// Grid's batches read back by Grid's reader, masked by a client and plain from a
    /// server, however the socket splits them: byte by byte, in odd chunks, across the
    /// reader's buffer, all at once.
    #[test]
    fn batches_read_back_in_any_chunking() {
        let sizes = [
            0,
            1,
            7,
            125,
            126,
            127,
            1000,
            65535,
            65536,
            200_003,
            READ_CHUNK + 5,
        ];
        let want = binaries(&sizes);
        let mut keys = MaskKeys::new();
        let masked = batch(&sizes, Some(&mut keys));
        let plain = batch(&sizes, None);
        for chunk in [1, 3, 13, 4096, 65537, READ_CHUNK, usize::MAX] {
            if chunk == 1 {
                // Byte by byte is slow for the large ones.
                let small = batch(&sizes[..7], Some(&mut keys));
                assert_eq!(
                    read_all(small, 1, true, 1 << 20),
                    (binaries(&sizes[..7]), None)
                );
                continue;
            }
            let got = read_all(masked.clone(), chunk, true, 1 << 20);
            assert_eq!(got, (want.clone(), None), "masked, chunks of {chunk}");
            let got = read_all(plain.clone(), chunk, false, 1 << 20);
            assert_eq!(got, (want.clone(), None), "plain, chunks of {chunk}");
        }
    }

    /// A large message is copied into the buffer of one read and dropped before it and
    /// holds exactly its own bytes, masked or not; the buffer of a message still held
    /// is not used.
    #[test]
    fn large_messages_use_the_buffers_of_dropped_ones() {
        for server in [true, false] {
            let mut keys = MaskKeys::new();
            let sizes = [70_000, 65_536, 65_536, 100_000, 1000, 65_536];
            let bytes = batch(&sizes, server.then_some(&mut keys));
            let mut r = FrameReader::new(server, 1 << 20, &[]);
            let mut io = Chunks::new(bytes, 4096);
            let mut next = |want: usize| {
                let b = next_binary(&mut r, &mut io);
                assert_eq!(b, payload(want), "message of {want} bytes");
                b
            };
            let first = next(70_000);
            let at = first.as_ptr();
            drop(first);
            // A smaller message in the larger buffer: none of the old bytes show.
            let second = next(65_536);
            assert_eq!(
                second.as_ptr(),
                at,
                "the dropped message's buffer was not used"
            );
            let third = next(65_536);
            let third_at = third.as_ptr();
            assert_ne!(third_at, at, "a held message's buffer was read into");
            drop(second);
            drop(third);
            // 100,000 bytes fit neither kept buffer; 1000 are below the size kept.
            let (fourth, fifth) = (next(100_000), next(1000));
            assert!(![at, third_at].contains(&fourth.as_ptr()));
            assert!(![at, third_at].contains(&fifth.as_ptr()));
            // The buffer returned last is taken first.
            assert_eq!(next(65_536).as_ptr(), third_at);
        }
    }

    /// `trim` gives back the read buffer once everything read is parsed, and the free
    /// message buffers; bytes read and not yet parsed (here part of a header) keep the
    /// read buffer, and reading goes on correctly either way.
    #[test]
    fn a_trimmed_reader_gives_back_its_buffers_and_reads_on() {
        let frames: Vec<Vec<u8>> = [70_000, 100, 65_536, 10]
            .iter()
            .map(|&n| framed(OP_BINARY, true, &payload(n), None))
            .collect();
        // Reads end after the first frame, 5 bytes into the third, and after it.
        let ends: Vec<usize> = frames
            .iter()
            .scan(0, |at, f| {
                *at += f.len();
                Some(*at)
            })
            .collect();
        let mut io = Chunks::cut_at(frames.concat(), &[ends[0], ends[1] + 5, ends[2]]);
        let mut r = FrameReader::new(false, 1 << 20, &[]);
        let waker = futures_util::task::noop_waker();
        let mut next =
            |r: &mut FrameReader| match r.poll_next(&mut io, &mut Context::from_waker(&waker)) {
                Poll::Ready(Ok(Some(Inbound::Binary(b)))) => b,
                other => panic!("{other:?}"),
            };
        drop(next(&mut r));
        // The read buffer, and the dropped message's buffer kept for the next.
        assert!(
            r.buffer_bytes() >= READ_CHUNK + 70_000,
            "{}",
            r.buffer_bytes()
        );
        r.trim();
        assert_eq!(r.buffer_bytes(), 0);
        assert_eq!(next(&mut r), payload(100));
        // Five bytes of the next header wait in the read buffer.
        r.trim();
        assert_eq!(r.buffer_bytes(), READ_CHUNK);
        let held = next(&mut r);
        assert_eq!(held, payload(65_536));
        assert_eq!(next(&mut r), payload(10));
        r.trim();
        assert_eq!(
            r.buffer_bytes(),
            0,
            "a message still held is not the reader's"
        );
        assert_eq!(held, payload(65_536));
        let end = r.poll_next(&mut io, &mut Context::from_waker(&waker));
        assert!(matches!(end, Poll::Ready(Ok(None))), "{end:?}");
    }

    /// The buffers large fragments were read into go back to the recycler once their
    /// bytes are appended to the message.
    #[test]
    fn fragment_buffers_return_to_the_recycler() {
        let body = payload(150_000);
        let mut bytes = framed(OP_BINARY, false, &body[..50_000], None);
        bytes.extend(framed(OP_CONTINUATION, false, &body[50_000..90_000], None));
        bytes.extend(framed(OP_CONTINUATION, true, &body[90_000..], None));
        let mut r = FrameReader::new(false, 1 << 20, &[]);
        let mut io = Chunks::new(bytes, 4096);
        let message = next_binary(&mut r, &mut io);
        assert_eq!(message, body);
        // The first fragment's buffer grew into the message, which is still held; the
        // other two are kept.
        let (n, kept) = r.recycler.kept();
        assert_eq!(n, 2);
        assert!(kept >= 40_000 + 60_000, "{kept} bytes kept");
        drop(message);
    }

    /// What the WebSocket library writes as a client, Grid's reader takes as the server:
    /// messages, pings with their payload, pongs and text skipped, a fragmented message
    /// with a ping between its fragments, a close with its code.
    #[test]
    fn reads_what_the_websocket_library_writes() {
        use async_tungstenite::tungstenite::protocol::CloseFrame;
        use async_tungstenite::tungstenite::protocol::frame::Frame as WsFrame;
        use async_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

        let mut ws =
            WebSocket::from_raw_socket(std::io::Cursor::new(Vec::new()), Role::Client, None);
        let fragment = |data: &[u8], op: Data, fin: bool| {
            Message::Frame(WsFrame::message(data.to_vec(), OpCode::Data(op), fin))
        };
        let msgs = [
            Message::Binary(payload(300).into()),
            Message::Ping(Bytes::from_static(b"are you there")),
            Message::Pong(Bytes::from_static(b"late")),
            Message::Text("not grid".into()),
            fragment(&payload(70_000), Data::Binary, false),
            Message::Ping(Bytes::from_static(b"mid")),
            fragment(b"two", Data::Continue, false),
            fragment(b"", Data::Continue, false),
            fragment(b"three", Data::Continue, true),
            Message::Binary(Bytes::new()),
            Message::Close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: "bye".into(),
            })),
        ];
        for m in msgs {
            ws.write(m).expect("write");
        }
        ws.flush().expect("flush");
        let bytes = ws.get_ref().get_ref().clone();
        let mut joined = payload(70_000);
        joined.extend_from_slice(b"twothree");
        let want = vec![
            Inbound::Binary(payload(300).into()),
            Inbound::Ping(Bytes::from_static(b"are you there")),
            Inbound::Skipped,
            Inbound::Skipped,
            Inbound::Ping(Bytes::from_static(b"mid")),
            Inbound::Binary(joined.into()),
            Inbound::Binary(Bytes::new()),
            Inbound::Close(Some(1001)),
        ];
        for chunk in [5, 1000, usize::MAX] {
            assert_eq!(
                read_all(bytes.clone(), chunk, true, 1 << 20),
                (want.clone(), None)
            );
        }
    }

    /// Frames against RFC 6455 (or over the size limit) end the read with an error that
    /// says what was wrong; a message over the limit is refused from its header alone.
    #[test]
    fn frames_against_the_rules_are_refused() {
        let key = [9, 8, 7, 6];
        let m = Some(key);
        let cases: Vec<(&str, Vec<u8>, bool, &str)> = vec![
            (
                "rsv1",
                {
                    let mut b = framed(OP_BINARY, true, b"x", m);
                    b[0] |= 0x40;
                    b
                },
                true,
                "reserved bits",
            ),
            (
                "opcode 3",
                framed(0x3, true, b"x", m),
                true,
                "reserved opcode 0x3",
            ),
            (
                "opcode 0xb",
                framed(0xb, true, b"", m),
                true,
                "reserved opcode 0xb",
            ),
            (
                "unmasked to a server",
                framed(OP_BINARY, true, b"x", None),
                true,
                "unmasked",
            ),
            (
                "masked to a client",
                framed(OP_BINARY, true, b"x", m),
                false,
                "masked frame from a server",
            ),
            (
                "fragmented ping",
                framed(OP_PING, false, b"", m),
                true,
                "fragmented control",
            ),
            (
                "long ping",
                framed(OP_PING, true, &[0; 126], m),
                true,
                "126 bytes",
            ),
            (
                "stray continuation",
                framed(OP_CONTINUATION, true, b"x", m),
                true,
                "continuation",
            ),
            (
                "message in a message",
                {
                    let mut b = framed(OP_BINARY, false, b"a", m);
                    b.extend(framed(OP_TEXT, true, b"b", m));
                    b
                },
                true,
                "new message inside",
            ),
            (
                "1-byte close",
                framed(OP_CLOSE, true, &[3], m),
                true,
                "1-byte status",
            ),
            (
                "over the limit",
                {
                    // Only the header: the refusal must not wait for (or allocate) the rest.
                    let mut b = BytesMut::new();
                    put_header(&mut b, OP_BINARY, 1001, m);
                    b.to_vec()
                },
                true,
                "message of more than 1001 bytes (at most 1000)",
            ),
            (
                "64-bit length",
                {
                    let mut b = vec![0x82, 0x80 | 127];
                    b.extend_from_slice(&u64::MAX.to_be_bytes());
                    b.extend_from_slice(&key);
                    b
                },
                true,
                "(at most 1000)",
            ),
            (
                "fragments over the limit",
                {
                    let mut b = framed(OP_BINARY, false, &[1; 600], m);
                    b.extend(framed(OP_CONTINUATION, true, &[2; 401], m));
                    b
                },
                true,
                "message of more than 1001 bytes",
            ),
            (
                "end inside a frame",
                framed(OP_BINARY, true, b"abc", m)[..7].to_vec(),
                true,
                "inside a frame",
            ),
            (
                "end inside a header",
                framed(OP_BINARY, true, b"abc", m)[..3].to_vec(),
                true,
                "inside a frame",
            ),
            (
                "end inside a message",
                framed(OP_BINARY, false, b"abc", m),
                true,
                "inside a message",
            ),
        ];
        for (name, bytes, server, want) in cases {
            let (got, err) = read_all(bytes, usize::MAX, server, 1000);
            assert_eq!(got, [], "{name}");
            let err = err.unwrap_or_else(|| panic!("{name}: accepted"));
            assert!(err.contains(want), "{name}: {err}");
        }
        // At the limit, and fragments adding up to it, pass.
        let mut b = framed(OP_BINARY, true, &[0; 1000], m);
        b.extend(framed(OP_BINARY, false, &[1; 600], m));
        b.extend(framed(OP_CONTINUATION, true, &[1; 400], m));
        let (got, err) = read_all(b, usize::MAX, true, 1000);
        assert_eq!(err, None);
        assert_eq!(
            got,
            [
                Inbound::Binary(vec![0; 1000].into()),
                Inbound::Binary(vec![1; 1000].into())
            ]
        );
    }

    /// Pongs and closes as Grid writes them, read by the WebSocket library: a client's
    /// masked, a server's plain.
    #[test]
    fn control_frames_read_back_through_the_websocket_library() {
        use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
        for client in [true, false] {
            let mut ws = Socket::new(Metered::new(Box::new(Trickle::default())), client, 1 << 20);
            let mut b = BytesMut::new();
            ws.put_pong(&mut b, b"echo");
            put_frame(
                &mut b,
                OP_CLOSE,
                &1001u16.to_be_bytes(),
                ws.mask.as_mut().map(MaskKeys::next_key),
            );
            let role = if client { Role::Server } else { Role::Client };
            let mut lib = WebSocket::from_raw_socket(std::io::Cursor::new(b.to_vec()), role, None);
            assert_eq!(
                lib.read().expect("pong"),
                Message::Pong(Bytes::from_static(b"echo"))
            );
            match lib.read().expect("close") {
                Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Reads a dialer's socket with the upgrade cut set, `chunk` bytes at a time: what
    /// reads return until the one that ends the head, then what they return after it
    /// (what Grid's frame reader gets).
    fn cut_reads(response: &[u8], chunk: usize) -> (Vec<u8>, Vec<u8>) {
        let mut m = Metered::new(Box::new(Chunks::new(response.to_vec(), chunk)));
        m.cut = Some(HeaderCut::default());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let (mut head, mut rest) = (Vec::new(), Vec::new());
        let mut buf = [0u8; 64];
        loop {
            let cut = m.cut.is_some();
            match Pin::new(&mut m).poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(0)) => return (head, rest),
                Poll::Ready(Ok(n)) if cut => head.extend_from_slice(&buf[..n]),
                Poll::Ready(Ok(n)) => rest.extend_from_slice(&buf[..n]),
                other => panic!("{other:?}"),
            }
        }
    }

    /// The dialer's socket hands the WebSocket library a 101 response up to its blank
    /// line, and the frames that came with it to Grid's reader; a refusal goes to the
    /// library whole, body and all.
    #[test]
    fn the_upgrade_response_is_cut_at_its_head() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n";
        let frames = batch(&[5, 300], None);
        let mut all = head.to_vec();
        all.extend_from_slice(&frames);
        for chunk in [1, 2, 3, 7, 64, 1000] {
            assert_eq!(
                cut_reads(&all, chunk),
                (head.to_vec(), frames.clone()),
                "chunks of {chunk}"
            );
        }
        // The bytes read with the head start the frame reader.
        let mut m = Metered::new(Box::new(Chunks::new(all, 1000)));
        m.cut = Some(HeaderCut::default());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut buf = [0u8; 1000];
        assert_eq!(
            Pin::new(&mut m)
                .poll_read(&mut cx, &mut buf)
                .map(Result::ok),
            Poll::Ready(Some(head.len()))
        );
        let mut ws = Socket::new(m, true, 1000);
        for want in binaries(&[5, 300]) {
            assert_eq!(ws.poll_next(&mut cx), Poll::Ready(Ok(Some(want))));
        }
        assert_eq!(ws.poll_next(&mut cx), Poll::Ready(Ok(None)));

        let refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nno token!";
        let (h, rest) = cut_reads(refusal, 64);
        assert_eq!(
            (&h[..], &rest[..]),
            (&refusal[..], &b""[..]),
            "the body stays with the response"
        );
        // A lone '\r' or '\n' inside the head does not end it.
        let odd = b"HTTP/1.1 101 OK\r\nX: a\rb\n\r\r\n\r\nZ";
        assert_eq!(
            cut_reads(odd, 4),
            (odd[..odd.len() - 1].to_vec(), b"Z".to_vec())
        );
    }

    #[test]
    fn endpoints_follow_the_host_string() {
        let ep = endpoint("http://127.0.0.1:9000", "/minio/grid/v1").unwrap();
        assert_eq!(ep.addr, "127.0.0.1:9000");
        assert_eq!(ep.url, "ws://127.0.0.1:9000/minio/grid/v1");
        assert!(!ep.tls);
        assert!(!endpoint("ws://a:1/ignored", "/r").unwrap().tls);
        assert!(endpoint("a:1", "/r").is_err());
        assert!(endpoint("ftp://a:1", "/r").is_err());
        assert!(endpoint("https://", "/r").is_err());
    }

    #[test]
    fn dialable_hosts_make_urls() {
        assert_eq!(
            check_dialable("http://127.0.0.1:9000", "/minio/grid/v1"),
            Ok(())
        );
        assert_eq!(check_dialable("https://node1.example:9000/x", "/r"), Ok(()));
        for (host, why) in [
            ("127.0.0.1:9000", "has no scheme"),
            ("ftp://127.0.0.1:9000", "unsupported scheme"),
            ("http://", "has no address"),
            ("http://a b:9000", "does not make a URL"),
        ] {
            let err = check_dialable(host, "/r").expect_err(host);
            assert!(err.contains(why) && err.contains(host), "{host}: {err}");
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_dialable_tls_host_names_a_certificate() {
        for host in [
            "https://node1.example:9000",
            "https://127.0.0.1:9000",
            "wss://[::1]:1",
        ] {
            assert_eq!(check_dialable(host, "/r"), Ok(()), "{host}");
        }
        let err = check_dialable("https://no_such!name:9000", "/r").unwrap_err();
        assert!(
            err.starts_with("host \"https://no_such!name:9000\": \"no_such!name\" is not a valid TLS server name"),
            "{err}"
        );
        // The same name on a plain link is only an address.
        assert_eq!(check_dialable("http://no_such!name:9000", "/r"), Ok(()));
    }

    #[test]
    fn routes_are_url_paths() {
        for route in ["/", "/minio/grid/v1", "/minio/grid/lock/v1"] {
            assert_eq!(check_route(route), Ok(()), "{route}");
        }
        for route in [
            "",
            "grid",
            "minio/grid/v1",
            "/grid?x=1",
            "/grid#top",
            "/a b",
        ] {
            let err = check_route(route).expect_err(route);
            assert!(err.starts_with(&format!("route {route:?}: ")), "{err}");
        }
    }

    #[test]
    fn tls_hosts_dial_wss_and_name_the_server() {
        for host in ["https://node1.example:9000", "wss://node1.example:9000/x"] {
            let ep = endpoint(host, "/minio/grid/v1").unwrap();
            assert!(ep.tls, "{host}");
            assert!(is_tls(host), "{host}");
            assert_eq!(ep.addr, "node1.example:9000");
            assert_eq!(ep.url, "wss://node1.example:9000/minio/grid/v1");
            assert_eq!(ep.server_name(), "node1.example");
        }
        let ep = endpoint("https://127.0.0.1:9000", "/r").unwrap();
        assert_eq!(ep.server_name(), "127.0.0.1");
        let ep = endpoint("wss://[::1]:9000", "/r").unwrap();
        assert_eq!((ep.addr.as_str(), ep.server_name()), ("[::1]:9000", "::1"));
        assert_eq!(ep.url, "wss://[::1]:9000/r");
        let ep = endpoint("https://node", "/r").unwrap();
        assert_eq!(ep.server_name(), "node");
        for host in ["http://a:1", "ws://a:1", "a:1", "httpsx://a:1", "HTTPS-ish"] {
            assert!(!is_tls(host), "{host}");
        }
    }
}
