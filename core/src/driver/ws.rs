//! The WebSocket upgrade, both ways (`PROTOCOL.md` §3.1), over TLS for TLS hosts.

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

/// The socket under a WebSocket, counting the bytes written to it: the socket task tells
/// a slow link that is still moving from a stalled one by this count.
pub(crate) struct Metered {
    io: BoxIo,
    written: u64,
}

impl Metered {
    pub(crate) fn new(io: BoxIo) -> Metered {
        Metered { io, written: 0 }
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
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
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written += n as u64;
        }
        r
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
    use super::*;

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
