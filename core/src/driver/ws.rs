//! The WebSocket upgrade, both ways (`PROTOCOL.md` §3.1), over TLS for TLS hosts; the
//! frames Grid writes itself; the socket under the WebSocket.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::client::ClientRequestBuilder;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{StatusCode, Uri};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::io::{AsyncRead, AsyncWrite};

use super::link::Shared;
use super::runtime::BoxIo;

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
    let io = Metered::new(io);
    let (ws, _) = async_tungstenite::client_async_with_config(req, io, Some(shared.ws_config))
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
    Ok(ws)
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
    async_tungstenite::accept_hdr_async_with_config(
        Metered::new(io),
        callback,
        Some(shared.ws_config),
    )
    .await
    .map_err(|e| {
        let why = refused.lock().unwrap_or_else(|p| p.into_inner()).take();
        why.unwrap_or_else(|| format!("upgrade: {e}"))
    })
}

// ---------------------------------------------------------------------------------------
// Outbound frames.
//
// Grid writes its own binary messages as WebSocket frames (RFC 6455 §5.2): the frame
// header goes in front of the message in the buffer the message is encoded into, and the
// buffer goes to the socket as it is. Through the WebSocket library every message would
// be copied once more, into the library's write buffer, which for 64 KiB messages cost
// more than encoding them. The library still reads, answers pings and closes; `Metered`
// keeps its frames and Grid's from interleaving.

/// The most bytes a frame header takes: 2, an 8-byte length and a 4-byte masking key.
pub(crate) const MAX_HEADER: usize = 14;

/// Appends the header of one unfragmented binary frame (`FIN`, opcode 2) carrying `len`
/// bytes, masked with `mask` when given (a client's frames are masked, a server's are
/// not). The `len` bytes must follow, masked with [`apply_mask`].
pub(crate) fn put_binary_header(out: &mut BytesMut, len: usize, mask: Option<[u8; 4]>) {
    out.reserve(MAX_HEADER + len);
    out.put_u8(0x80 | 0x2);
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

/// The socket under a WebSocket, counting the bytes written to it (the socket task tells
/// a slow link that is still moving from a stalled one by this count) and carrying the
/// frames Grid writes itself ([`Metered::poll_write_frames`]).
pub(crate) struct Metered {
    io: BoxIo,
    written: u64,
    /// A batch of Grid's frames is partly written: until it is complete, the WebSocket
    /// library's own writes (pongs, a close) wait, so that no frame is cut by another.
    mid_batch: bool,
}

impl Metered {
    pub(crate) fn new(io: BoxIo) -> Metered {
        Metered {
            io,
            written: 0,
            mid_batch: false,
        }
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Whether a batch of frames is partly written.
    pub(crate) fn mid_batch(&self) -> bool {
        self.mid_batch
    }

    /// Writes `batch`, whole WebSocket frames, advancing it past what the socket took;
    /// `Ready(Ok)` once all of it is written. Call it only when the library's writes are
    /// flushed; a batch once started must be finished before any other.
    pub(crate) fn poll_write_frames(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut Bytes,
    ) -> Poll<io::Result<()>> {
        while !batch.is_empty() {
            match self.poll_write_counted(cx, batch) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    batch.advance(n);
                    self.mid_batch = !batch.is_empty();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes to the socket, counting what it took.
    fn poll_write_counted(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
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
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.mid_batch {
            // The library takes this as "would block": a pong waiting here is sent again
            // with its next read or flush, and the socket task flushes the library before
            // every batch it starts.
            return Poll::Pending;
        }
        self.poll_write_counted(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_close(cx)
    }
}

/// A WebSocket over a [`Metered`] socket.
pub(crate) type Socket = WebSocketStream<Metered>;

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
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// While a batch is partly written, the WebSocket library's own writes (a pong)
    /// wait; they go out after the batch's last byte, so no frame is cut.
    #[test]
    fn library_writes_wait_for_a_started_batch() {
        let sock = Trickle::default();
        let mut m = Metered::new(Box::new(sock.clone()));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let frames = batch(&[300], None);
        let mut b = Bytes::from(frames.clone());
        let pong = [0x8a, 0];

        sock.allow(100);
        assert!(m.poll_write_frames(&mut cx, &mut b).is_pending());
        assert!(m.mid_batch());
        assert_eq!(b.len(), frames.len() - 100);
        sock.allow(1000);
        assert!(Pin::new(&mut m).poll_write(&mut cx, &pong).is_pending());
        assert_eq!(sock.taken().len(), 100, "the pong went into the frame");

        assert!(matches!(
            m.poll_write_frames(&mut cx, &mut b),
            Poll::Ready(Ok(()))
        ));
        assert!(!m.mid_batch());
        assert!(matches!(
            Pin::new(&mut m).poll_write(&mut cx, &pong),
            Poll::Ready(Ok(2))
        ));
        let mut want = frames;
        want.extend_from_slice(&pong);
        assert_eq!(sock.taken(), want);
        assert_eq!(m.written(), want.len() as u64);
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
