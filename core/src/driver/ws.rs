//! The WebSocket upgrade, both ways (`PROTOCOL.md` §3.1).

use std::net::SocketAddr;
use std::sync::Arc;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::client::ClientRequestBuilder;
use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{StatusCode, Uri};

use super::link::Shared;
use super::runtime::BoxIo;

/// The socket address and WebSocket URL of a host string (`http://h:p` → `h:p`,
/// `ws://h:p<route>`).
pub(crate) fn endpoint(host: &str, route: &str) -> Result<(String, String), String> {
    let (scheme, rest) = host
        .split_once("://")
        .ok_or_else(|| format!("host {host:?} has no scheme"))?;
    let ws_scheme = match scheme {
        "http" | "ws" => "ws",
        "https" | "wss" => return Err(format!("TLS hosts are not supported yet: {host}")),
        other => return Err(format!("unsupported scheme {other:?} in {host}")),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.is_empty() {
        return Err(format!("host {host:?} has no address"));
    }
    Ok((
        authority.to_owned(),
        format!("{ws_scheme}://{authority}{route}"),
    ))
}

/// Connects to `remote` and upgrades to a WebSocket with the auth headers.
pub(crate) async fn dial(
    shared: &Arc<Shared>,
    remote: &str,
) -> Result<WebSocketStream<BoxIo>, String> {
    let (addr, url) = endpoint(remote, &shared.route)?;
    let io = shared
        .rt
        .connect(addr.clone())
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let uri: Uri = url.parse().map_err(|e| format!("bad url {url}: {e}"))?;
    let now_ns = {
        let t = super::link::wall_now();
        t.as_unix_nanos()
    };
    let req = ClientRequestBuilder::new(uri)
        .with_header("Authorization", format!("Bearer {}", (shared.token)()))
        .with_header("X-Minio-Time", now_ns.to_string());
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
) -> Result<WebSocketStream<BoxIo>, String> {
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
    async_tungstenite::accept_hdr_async_with_config(io, callback, Some(shared.ws_config))
        .await
        .map_err(|e| {
            let why = refused.lock().unwrap_or_else(|p| p.into_inner()).take();
            why.unwrap_or_else(|| format!("upgrade: {e}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_the_host_string() {
        assert_eq!(
            endpoint("http://127.0.0.1:9000", "/minio/grid/v1").unwrap(),
            (
                "127.0.0.1:9000".into(),
                "ws://127.0.0.1:9000/minio/grid/v1".into()
            )
        );
        assert!(endpoint("https://a:1", "/r").is_err());
        assert!(endpoint("a:1", "/r").is_err());
        assert!(endpoint("ftp://a:1", "/r").is_err());
    }
}
