//! Async scenarios of the typed layer ([`grid_core::typed`]) over real loopback sockets,
//! written once and run on every runtime with [`typed_suite_tests!`](crate::typed_suite_tests).
//!
//! The clusters are the async suite's ([`crate::suite`]) with the typed handlers below
//! added on IDs 20 and up; some scenarios put an untyped handler on the same ID on one
//! node, to see the exact bytes a typed peer sends or to answer with bytes as Go writes
//! them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use grid_core::driver::{ManagerBuilder, RemoteError, Request, Runtime, StreamCtx};
use grid_core::proto::CallError;
use grid_core::typed::{
    self, BytesPayload, Json, Mss, NoPayload, SingleHandler, StreamHandler, Tuple, UrlValues,
};
use serde::{Deserialize, Serialize};

use crate::suite::{cluster_with, within};

/// A request shaped like MinIO's grid test type: a msgp map with the Go field names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRequest {
    /// Go's `Num int`.
    #[serde(rename = "Num")]
    pub num: i64,
    /// Go's `String string`.
    #[serde(rename = "String")]
    pub string: String,
}

/// A response shaped like MinIO's grid test type, with a nested struct.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResponse {
    /// Go's `OrgNum int`.
    #[serde(rename = "OrgNum")]
    pub org_num: i64,
    /// Go's `OrgString string`.
    #[serde(rename = "OrgString")]
    pub org_string: String,
    /// Go's `Embedded testRequest`.
    #[serde(rename = "Embedded")]
    pub embedded: TestRequest,
}

/// Every helper payload type in one struct, to cross the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Helpers {
    /// Bytes or nil.
    #[serde(rename = "B")]
    pub bytes: BytesPayload,
    /// A string map or nil.
    #[serde(rename = "M")]
    pub mss: Mss,
    /// URL values.
    #[serde(rename = "U")]
    pub values: UrlValues,
    /// JSON or nil.
    #[serde(rename = "J")]
    pub json: Json<Vec<String>>,
}

/// A value whose encoding always fails.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("unencodable value"))
    }
}

/// Echo: answers `OrgNum = Num`, `OrgString = <prefix>String`, `Embedded = request`
/// (the prefix tells the routes apart); fails for a negative `Num`.
pub const T_ECHO: SingleHandler<TestRequest, TestResponse> = SingleHandler::new(20);
/// [`T_ECHO`] on its definition's subroute [`T_ROUTE`] (prefix `sub:`).
pub const T_ECHO_SUB: SingleHandler<TestRequest, TestResponse> = T_ECHO.subroute(T_ROUTE);
/// The definition-level subroute.
pub const T_ROUTE: &str = "typed/sub";
/// A route known at run time (a drive path, in MinIO), registered with `register_on`.
pub const T_DRIVE: &str = "drive/1";
/// Stream (2/2), payload + input: answers each item `I` with `OrgNum = P.Num + I.Num`,
/// `OrgString = P.String + I.String`, `Embedded = I`.
pub const T_STREAM: StreamHandler<TestRequest, TestRequest, TestResponse> =
    StreamHandler::new(21, 2, 2);
/// [`T_STREAM`] on [`T_ROUTE`]: the same, with `OrgString` prefixed `sub:`.
pub const T_STREAM_SUB: StreamHandler<TestRequest, TestRequest, TestResponse> =
    T_STREAM.subroute(T_ROUTE);
/// Stream without input (0/1): sends `0..payload`.
pub const T_COUNT: StreamHandler<u32, NoPayload, u32> = StreamHandler::no_input(22, 1);
/// Stream without payload (1/1): answers each item with the running sum.
pub const T_SUM: StreamHandler<NoPayload, i64, i64> = StreamHandler::no_payload(23, 1, 1);
/// Echoes every helper payload type.
pub const T_HELPERS: SingleHandler<Helpers, Helpers> = SingleHandler::new(24);
/// [`T_ECHO`]'s behaviour with tuple (array) encodings.
pub const T_TUPLE: SingleHandler<Tuple<TestRequest>, Tuple<TestResponse>> = SingleHandler::new(25);
/// Typed on node 0 (answers like [`T_ECHO`] without prefix); on node 1 an untyped
/// handler records the request bytes and answers with bytes as Go's msgp writes them.
pub const T_RAW: SingleHandler<TestRequest, TestResponse> = SingleHandler::new(26);
/// Answers a value that cannot be encoded.
pub const T_BAD_RESPONSE: SingleHandler<TestRequest, Unencodable> = SingleHandler::new(27);
/// Never registered.
pub const T_MISSING: SingleHandler<TestRequest, TestResponse> = SingleHandler::new(29);

/// The response [`T_ECHO`] gives to `req` with `prefix`.
pub fn echo_response(prefix: &str, req: &TestRequest) -> TestResponse {
    TestResponse {
        org_num: req.num,
        org_string: format!("{prefix}{}", req.string),
        embedded: req.clone(),
    }
}

fn echo_with(
    prefix: &'static str,
) -> impl Fn(TestRequest) -> std::future::Ready<Result<TestResponse, RemoteError>> + Send + Sync + 'static
{
    move |req: TestRequest| {
        std::future::ready(if req.num < 0 {
            Err(RemoteError(format!("negative: {}", req.num)))
        } else {
            Ok(echo_response(prefix, &req))
        })
    }
}

fn stream_with(
    prefix: &'static str,
) -> impl Fn(
    typed::StreamCtx<TestRequest, TestRequest, TestResponse>,
) -> grid_core::driver::BoxFuture<'static, Result<(), RemoteError>>
+ Send
+ Sync
+ 'static {
    move |mut ctx| {
        Box::pin(async move {
            let mut input = ctx.input.take().expect("T_STREAM takes input");
            while let Some(item) = input.next().await {
                if item.num < 0 {
                    return Err(RemoteError(format!("negative item: {}", item.num)));
                }
                let out = TestResponse {
                    org_num: ctx.payload.num + item.num,
                    org_string: format!("{prefix}{}{}", ctx.payload.string, item.string),
                    embedded: item,
                };
                ctx.output
                    .send(&out)
                    .await
                    .map_err(|e| RemoteError(e.to_string()))?;
            }
            Ok(())
        })
    }
}

/// Registers the typed handlers every node of a typed test cluster serves.
pub fn typed_handlers(b: ManagerBuilder) -> ManagerBuilder {
    let b = T_ECHO.register(b, echo_with("")).expect("register");
    let b = T_ECHO_SUB.register(b, echo_with("sub:")).expect("register");
    let b = T_ECHO
        .register_on(b, T_DRIVE, echo_with("drive:"))
        .expect("register");
    let b = T_ECHO_SUB
        .register_on(b, T_DRIVE, echo_with("drive+sub:"))
        .expect("register");
    let b = T_STREAM.register(b, stream_with("")).expect("register");
    let b = T_STREAM_SUB
        .register(b, stream_with("sub:"))
        .expect("register");
    let b = T_COUNT
        .register(b, |ctx| async move {
            assert!(ctx.input.is_none(), "T_COUNT has no input");
            for i in 0..ctx.payload {
                ctx.output
                    .send(&i)
                    .await
                    .map_err(|e| RemoteError(e.to_string()))?;
            }
            Ok(())
        })
        .expect("register");
    let b = T_HELPERS
        .register(b, |h: Helpers| async move { Ok(h) })
        .expect("register");
    let b = T_TUPLE
        .register(b, |Tuple(req): Tuple<TestRequest>| async move {
            Ok(Tuple(echo_response("", &req)))
        })
        .expect("register");
    T_BAD_RESPONSE
        .register(b, |_req: TestRequest| async move { Ok(Unencodable) })
        .expect("register")
}

fn register_sum(b: ManagerBuilder) -> ManagerBuilder {
    T_SUM
        .register(b, |mut ctx| async move {
            let NoPayload = ctx.payload;
            let mut input = ctx.input.take().expect("T_SUM takes input");
            let mut sum = 0i64;
            while let Some(x) = input.next().await {
                sum += x;
                ctx.output
                    .send(&sum)
                    .await
                    .map_err(|e| RemoteError(e.to_string()))?;
            }
            Ok(())
        })
        .expect("register")
}

/// Starts an `n`-node cluster with the suite's and the typed handlers; `tweak` adds
/// more per node.
async fn typed_cluster(
    rt: &Arc<dyn Runtime>,
    n: usize,
    tweak: impl Fn(usize, ManagerBuilder) -> ManagerBuilder,
) -> crate::suite::TestCluster {
    cluster_with(rt, n, |i, b| tweak(i, typed_handlers(b))).await
}

const LIMIT: Duration = Duration::from_secs(20);

fn req(num: i64, string: &str) -> TestRequest {
    TestRequest {
        num,
        string: string.to_owned(),
    }
}

/// The remote error text of a typed call's failure.
fn remote_text<T: std::fmt::Debug>(r: Result<T, typed::Error>) -> String {
    match r {
        Err(typed::Error::Call(CallError::Remote(text))) => text,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

// ----------------------------------------------------------------------------------
// Scenarios.

/// Typed single round trips in both directions: a MinIO-style struct, a deadline, every
/// helper payload type (nil and non-nil) and a tuple-encoded type.
pub async fn typed_single_roundtrip(rt: Arc<dyn Runtime>) {
    let c = typed_cluster(&rt, 2, |_, b| b).await;
    within(&rt, LIMIT, async {
        for (from, to) in [(0, 1), (1, 0)] {
            let conn = c.conn(from, to);
            for r in [req(0, ""), req(7, "hi"), req(1 << 40, &"x".repeat(70_000))] {
                assert_eq!(T_ECHO.call(&conn, &r).await.unwrap(), echo_response("", &r));
            }
            let r = req(3, "deadline");
            let got = T_ECHO
                .call_with_deadline(&conn, &r, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(got, echo_response("", &r));
            // The call future owns everything it needs: it can be spawned.
            let call = T_ECHO.call(&conn, &req(4, "owned"));
            drop(conn);
            assert_eq!(call.await.unwrap().org_num, 4);

            let conn = c.conn(from, to);
            let nil = Helpers::default();
            assert_eq!(T_HELPERS.call(&conn, &nil).await.unwrap(), nil);
            let mut values = UrlValues::new();
            values.add("k", "a");
            values.add("k", "b");
            let full = Helpers {
                bytes: BytesPayload::from(vec![0u8, 1, 2, 255]),
                mss: Mss::from_iter([("a", "1"), ("b", "")]),
                values,
                json: Json::new(vec!["<x>".to_owned(), String::new()]),
            };
            assert_eq!(T_HELPERS.call(&conn, &full).await.unwrap(), full);
            let empty = Helpers {
                bytes: BytesPayload::new(Bytes::new()),
                mss: Mss::new(),
                values: UrlValues::new(),
                json: Json::new(Vec::new()),
            };
            let back = T_HELPERS.call(&conn, &empty).await.unwrap();
            assert_eq!(back, empty);
            assert!(
                !back.bytes.is_nil() && !back.mss.is_nil(),
                "empty is not nil"
            );

            let r = req(9, "tuple");
            let Tuple(got) = T_TUPLE.call(&conn, &Tuple(r.clone())).await.unwrap();
            assert_eq!(got, echo_response("", &r));
        }
    })
    .await;
    c.shutdown().await;
}

/// Handler errors reach the typed caller as remote errors (single and stream); an
/// unknown handler is the call error it is untyped; the link survives.
pub async fn typed_remote_error(rt: Arc<dyn Runtime>) {
    let c = typed_cluster(&rt, 2, |_, b| b).await;
    within(&rt, LIMIT, async {
        let conn = c.conn(0, 1);
        let err = T_ECHO.call(&conn, &req(-3, "x")).await.unwrap_err();
        assert_eq!(
            err,
            typed::Error::Call(CallError::Remote("negative: -3".into()))
        );
        assert_eq!(err.remote(), Some("negative: -3"));
        assert_eq!(err.to_string(), "negative: -3");

        let err = T_MISSING.call(&conn, &req(1, "x")).await.unwrap_err();
        let typed::Error::Call(e) = &err else {
            panic!("{err:?}")
        };
        assert!(e.is_unknown_handler(), "{e:?}");
        assert_eq!(err.remote(), None);

        let mut s = T_STREAM.call(&conn, &req(0, "")).unwrap();
        let mut tx = s.requests.take().unwrap();
        tx.send(&req(1, "a")).await.unwrap();
        assert_eq!(s.responses.next().await.unwrap().unwrap().org_num, 1);
        tx.send(&req(-1, "a")).await.unwrap();
        assert_eq!(
            s.responses.next().await,
            Some(Err(typed::Error::Call(CallError::Remote(
                "negative item: -1".into()
            ))))
        );
        assert!(s.responses.next().await.is_none());

        let r = req(5, "after");
        assert_eq!(T_ECHO.call(&conn, &r).await.unwrap(), echo_response("", &r));
    })
    .await;
    c.shutdown().await;
}

/// Subroutes: the definition's own (`subroute`), one chosen at run time
/// (`register_on` + `Connection::subroute`), both nested, for singles and streams; a
/// route nobody registered is an unknown handler.
pub async fn typed_subroute(rt: Arc<dyn Runtime>) {
    let c = typed_cluster(&rt, 2, |_, b| b).await;
    within(&rt, LIMIT, async {
        let conn = c.conn(1, 0);
        let drive = conn.subroute(T_DRIVE);
        let r = req(11, "r");
        for (def, on, prefix) in [
            (T_ECHO, &conn, ""),
            (T_ECHO_SUB, &conn, "sub:"),
            (T_ECHO, &drive, "drive:"),
            (T_ECHO_SUB, &drive, "drive+sub:"),
        ] {
            let got = def.call(on, &r).await.unwrap();
            assert_eq!(got, echo_response(prefix, &r), "{def:?}");
        }
        // `T_ECHO_SUB` on "drive/1" is "drive/1/typed/sub", the same as spelling it out.
        let spelled = conn.subroute("drive/1/typed/sub");
        assert_eq!(
            T_ECHO.call(&spelled, &r).await.unwrap().org_string,
            "drive+sub:r"
        );
        let err = T_ECHO
            .call(&conn.subroute("nowhere"), &r)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, typed::Error::Call(e) if e.is_unknown_handler()),
            "{err:?}"
        );

        for (def, prefix) in [(T_STREAM, ""), (T_STREAM_SUB, "sub:")] {
            let mut s = def.call(&conn, &req(100, "p-")).unwrap();
            let mut tx = s.requests.take().unwrap();
            tx.send(&req(1, "i")).await.unwrap();
            let got = s.responses.next().await.unwrap().unwrap();
            assert_eq!(got.org_num, 101);
            assert_eq!(got.org_string, format!("{prefix}p-i"));
            tx.close();
            assert!(s.responses.next().await.is_none());
        }
    })
    .await;
    c.shutdown().await;
}

/// A typed stream with payload and input, both directions: 20 items through capacities
/// of 2 (also read as a `futures` stream), then EOF; no mux is left behind.
pub async fn typed_stream_roundtrip(rt: Arc<dyn Runtime>) {
    let c = typed_cluster(&rt, 2, |_, b| b).await;
    within(&rt, LIMIT, async {
        for (from, to) in [(0, 1), (1, 0)] {
            let conn = c.conn(from, to);
            let payload = req(1000, "p:");
            let s = T_STREAM.call(&conn, &payload).unwrap();
            let mut tx = s.requests.expect("T_STREAM takes input");
            let rx = s.responses;
            let sending = async move {
                for i in 0..20 {
                    tx.send(&req(i, &i.to_string())).await.unwrap();
                }
                tx.close();
            };
            let receiving = async {
                use futures_util::StreamExt;
                rx.map(|r| r.unwrap()).collect::<Vec<_>>().await
            };
            let ((), got) = futures_util::future::join(sending, receiving).await;
            assert_eq!(got.len(), 20);
            for (i, r) in got.iter().enumerate() {
                let i = i as i64;
                assert_eq!(r.org_num, 1000 + i);
                assert_eq!(r.org_string, format!("p:{i}"));
                assert_eq!(r.embedded, req(i, &i.to_string()));
            }
            assert_eq!(conn.stats().session.outgoing_muxes, 0);
        }
        // With a deadline the peer also applies (long enough not to matter here).
        let mut s = T_STREAM
            .call_with_deadline(&c.conn(0, 1), &req(1, ""), Duration::from_secs(10))
            .unwrap();
        let mut tx = s.requests.take().unwrap();
        tx.send(&req(2, "x")).await.unwrap();
        assert_eq!(s.responses.next().await.unwrap().unwrap().org_num, 3);
    })
    .await;
    c.shutdown().await;
}

/// A typed stream without input: no `requests`, the items, then the end.
pub async fn typed_stream_no_input(rt: Arc<dyn Runtime>) {
    let c = typed_cluster(&rt, 2, |_, b| b).await;
    within(&rt, LIMIT, async {
        for (from, to) in [(0, 1), (1, 0)] {
            let s = T_COUNT.call(&c.conn(from, to), &5).unwrap();
            assert!(s.requests.is_none(), "T_COUNT takes no input");
            let mut rx = s.responses;
            for i in 0..5u32 {
                assert_eq!(rx.next().await, Some(Ok(i)));
            }
            assert_eq!(rx.next().await, None);
            let mut rx = T_COUNT.call(&c.conn(from, to), &0).unwrap().responses;
            assert_eq!(rx.next().await, None);
        }
    })
    .await;
    c.shutdown().await;
}

/// What the untyped stand-ins on node 1 saw.
#[derive(Default)]
struct Seen {
    /// Whether each opening of the T_SUM stand-in carried a payload.
    sum_payloads: Mutex<Vec<Option<Bytes>>>,
    /// The request payloads the T_RAW stand-in got.
    raw_requests: Mutex<Vec<Bytes>>,
}

/// A typed stream without payload. Node 1 serves T_SUM untyped, to see that a typed
/// caller sends no payload at all; node 0 serves it typed, to see that it decodes none
/// (an untyped caller's garbage payload is ignored).
pub async fn typed_stream_no_payload(rt: Arc<dyn Runtime>) {
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    let c = typed_cluster(&rt, 2, move |i, b| {
        if i == 0 {
            return register_sum(b);
        }
        let seen = s2.clone();
        b.stream(T_SUM.id(), T_SUM.options(), move |mut ctx: StreamCtx| {
            let seen = seen.clone();
            async move {
                seen.sum_payloads.lock().unwrap().push(ctx.payload.clone());
                let mut input = ctx.input.take().expect("input");
                while let Some(item) = input.next().await {
                    ctx.output
                        .send(item)
                        .await
                        .map_err(|e| RemoteError(e.to_string()))?;
                }
                Ok(())
            }
        })
        .expect("register")
    })
    .await;
    within(&rt, LIMIT, async {
        // Typed caller → untyped stand-in: no payload on the wire.
        let mut s = T_SUM.call(&c.conn(0, 1), &NoPayload).unwrap();
        let mut tx = s.requests.take().expect("T_SUM takes input");
        for x in [5i64, -7] {
            tx.send(&x).await.unwrap();
            assert_eq!(s.responses.next().await, Some(Ok(x)));
        }
        tx.close();
        assert_eq!(s.responses.next().await, None);
        assert_eq!(*seen.sum_payloads.lock().unwrap(), [None]);

        // Typed caller → typed handler.
        let mut s = T_SUM.call(&c.conn(1, 0), &NoPayload).unwrap();
        let mut tx = s.requests.take().unwrap();
        for (x, sum) in [(1i64, 1i64), (2, 3), (3, 6)] {
            tx.send(&x).await.unwrap();
            assert_eq!(s.responses.next().await, Some(Ok(sum)));
        }
        tx.close();
        assert_eq!(s.responses.next().await, None);

        // Untyped caller with a payload that is not msgpack: not decoded, no failure.
        let s = c
            .conn(1, 0)
            .new_stream(T_SUM.id(), Some(Bytes::from_static(&[0xc1, 0xc1])))
            .unwrap();
        let mut tx = s.requests.unwrap();
        let mut rx = s.responses;
        tx.send(Bytes::from_static(&[0x04])).await.unwrap();
        assert_eq!(
            rx.next().await.unwrap().unwrap(),
            Bytes::from_static(&[0x04])
        );
        tx.close();
        assert!(rx.next().await.is_none());
    })
    .await;
    c.shutdown().await;
}

/// Requests, payloads and items that do not decode on the serving side: each ends its
/// call with a remote error naming the decode failure; other calls (a stream open
/// meanwhile, later requests) are unaffected.
pub async fn typed_server_decode_failure(rt: Arc<dyn Runtime>) {
    let c = typed_cluster(&rt, 2, |_, b| register_sum(b)).await;
    within(&rt, LIMIT, async {
        let conn = c.conn(0, 1);
        // A stream that stays open across the failures.
        let mut bystander = T_STREAM.call(&conn, &req(10, "b:")).unwrap();
        let mut btx = bystander.requests.take().unwrap();
        btx.send(&req(1, "1")).await.unwrap();
        assert_eq!(
            bystander.responses.next().await.unwrap().unwrap().org_num,
            11
        );

        // Single requests: not msgpack, the wrong type, a struct missing a field.
        for (bad, why) in [
            (&[0xc1][..], "reserved"),
            (&[0xa1, b'x'][..], "string"),
            (&[0x81, 0xa3, b'N', b'u', b'm', 0x01][..], "String"),
        ] {
            let r = conn.request(T_ECHO.id(), Bytes::copy_from_slice(bad)).await;
            let Err(CallError::Remote(text)) = r else {
                panic!("{bad:x?}: {r:?}")
            };
            assert!(text.starts_with("decode request: "), "{text}");
            assert!(
                text.to_lowercase().contains(&why.to_lowercase()),
                "{why}: {text}"
            );
        }

        // A stream payload that does not decode.
        let mut s = conn
            .new_stream(T_STREAM.id(), Some(Bytes::from_static(&[0xa1, b'x'])))
            .unwrap();
        let Some(Err(CallError::Remote(text))) = s.responses.next().await else {
            panic!("a bad payload must fail the stream")
        };
        assert!(text.starts_with("decode payload: "), "{text}");
        assert!(s.responses.next().await.is_none());
        // An absent payload where one is expected does not decode either.
        let mut s = conn.new_stream(T_STREAM.id(), None).unwrap();
        let Some(Err(CallError::Remote(text))) = s.responses.next().await else {
            panic!("a missing payload must fail the stream")
        };
        assert!(text.starts_with("decode payload: "), "{text}");

        // An input item that does not decode, after a good one.
        let mut s = T_STREAM.call(&conn, &req(0, "")).unwrap();
        let mut tx = s.requests.take().unwrap();
        tx.send(&req(5, "ok")).await.unwrap();
        assert_eq!(s.responses.next().await.unwrap().unwrap().org_num, 5);
        tx.send_raw(Bytes::from_static(&[0x93, 0x01, 0x02, 0x03]))
            .await
            .unwrap();
        let text = remote_text(s.responses.next().await.expect("the failure"));
        assert!(text.starts_with("decode item: "), "{text}");
        assert!(s.responses.next().await.is_none());
        // The T_SUM input is an i64: a string item fails it the same way.
        let mut s = T_SUM.call(&c.conn(1, 0), &NoPayload).unwrap();
        let mut tx = s.requests.take().unwrap();
        tx.send_raw(Bytes::from_static(&[0xa1, b'x']))
            .await
            .unwrap();
        let text = remote_text(s.responses.next().await.expect("the failure"));
        assert!(text.starts_with("decode item: "), "{text}");

        // Nothing else was affected.
        btx.send(&req(2, "2")).await.unwrap();
        assert_eq!(
            bystander.responses.next().await.unwrap().unwrap().org_num,
            12
        );
        btx.close();
        assert!(bystander.responses.next().await.is_none());
        let r = req(1, "still");
        assert_eq!(T_ECHO.call(&conn, &r).await.unwrap(), echo_response("", &r));
    })
    .await;
    c.shutdown().await;
}

/// Responses and stream items that do not decode as the caller's type: a local
/// `Error::Decode` naming the type; the stream goes on; other calls are unaffected.
pub async fn typed_client_decode_failure(rt: Arc<dyn Runtime>) {
    /// [`T_ECHO`] seen by a caller that expects the wrong response type.
    const WRONG: SingleHandler<TestRequest, u64> = SingleHandler::new(T_ECHO.id());
    /// [`T_STREAM`] seen by a caller that expects the wrong item type (same capacities).
    const WRONG_STREAM: StreamHandler<TestRequest, TestRequest, String> =
        StreamHandler::new(T_STREAM.id(), 2, 2);

    let c = typed_cluster(&rt, 2, |_, b| b).await;
    within(&rt, LIMIT, async {
        let conn = c.conn(1, 0);
        let err = WRONG.call(&conn, &req(1, "x")).await.unwrap_err();
        let typed::Error::Decode { type_name, error } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*type_name, "u64");
        assert!(!error.message().is_empty());
        assert!(err.to_string().starts_with("decode u64: "), "{err}");

        let mut s = WRONG_STREAM.call(&conn, &req(0, "")).unwrap();
        let mut tx = s.requests.take().unwrap();
        for i in 0..3 {
            tx.send(&req(i, "x")).await.unwrap();
            let item = s.responses.next().await.expect("an item");
            assert!(
                matches!(&item, Err(typed::Error::Decode { type_name, .. }) if type_name.contains("String")),
                "{item:?}"
            );
        }
        tx.close();
        assert!(s.responses.next().await.is_none(), "the stream ends normally");

        let r = req(2, "fine");
        assert_eq!(T_ECHO.call(&conn, &r).await.unwrap(), echo_response("", &r));
    })
    .await;
    c.shutdown().await;
}

/// Values that cannot be encoded: a request fails locally (`Error::Encode`, nothing
/// sent); a response fails the call with the remote error `encode response: ...`.
pub async fn typed_encode_failure(rt: Arc<dyn Runtime>) {
    const UNENCODABLE_REQUEST: SingleHandler<Unencodable, TestResponse> =
        SingleHandler::new(T_ECHO.id());
    let c = typed_cluster(&rt, 2, |_, b| b).await;
    within(&rt, LIMIT, async {
        let conn = c.conn(0, 1);
        let err = UNENCODABLE_REQUEST.call(&conn, &Unencodable).await.unwrap_err();
        assert!(
            matches!(&err, typed::Error::Encode { error, .. } if error.message() == "unencodable value"),
            "{err:?}"
        );
        let text = remote_text(T_BAD_RESPONSE.call(&conn, &req(1, "")).await);
        assert_eq!(text, "encode response: unencodable value");
        let r = req(1, "fine");
        assert_eq!(T_ECHO.call(&conn, &r).await.unwrap(), echo_response("", &r));
    })
    .await;
    c.shutdown().await;
}

/// The exact bytes of a MinIO-style struct: a typed caller sends a msgpack map keyed by
/// the Go field names; a typed caller decodes a response as Go's msgp writes it; a typed
/// handler decodes a Go-written request and answers with exact bytes; tuple types are
/// arrays.
pub async fn typed_minio_struct_bytes(rt: Arc<dyn Runtime>) {
    // testRequest{Num: 7, String: "hi"} as a msgp map.
    const REQUEST: &[u8] = b"\x82\xa3Num\x07\xa6String\xa2hi";
    // testResponse{OrgNum: 300, OrgString: "go", Embedded: {Num: -1, String: ""}} as Go
    // writes it (300 as int16: d1 01 2c).
    const GO_RESPONSE: &[u8] =
        b"\x83\xa6OrgNum\xd1\x01\x2c\xa9OrgString\xa2go\xa8Embedded\x82\xa3Num\xff\xa6String\xa0";
    // testRequest{Num: -5, String: "go"} as Go writes it.
    const GO_REQUEST: &[u8] = b"\x82\xa3Num\xfb\xa6String\xa2go";
    // The typed handler's answer to GO_REQUEST (identical to Go's encoding).
    const RESPONSE: &[u8] =
        b"\x83\xa6OrgNum\xfb\xa9OrgString\xa2go\xa8Embedded\x82\xa3Num\xfb\xa6String\xa2go";

    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    let c = typed_cluster(&rt, 2, move |i, b| {
        if i == 0 {
            return T_RAW
                .register(b, |r: TestRequest| async move {
                    // Negative numbers are fine here: this is not T_ECHO.
                    Ok(echo_response("", &r))
                })
                .expect("register");
        }
        let seen = s2.clone();
        b.single(T_RAW.id(), move |r: Request| {
            seen.raw_requests.lock().unwrap().push(r.payload);
            async move { Ok(Bytes::from_static(GO_RESPONSE)) }
        })
        .expect("register")
    })
    .await;
    within(&rt, LIMIT, async {
        let got = T_RAW.call(&c.conn(0, 1), &req(7, "hi")).await.unwrap();
        assert_eq!(
            *seen.raw_requests.lock().unwrap(),
            [Bytes::from_static(REQUEST)]
        );
        assert_eq!(
            got,
            TestResponse {
                org_num: 300,
                org_string: "go".into(),
                embedded: req(-1, ""),
            }
        );

        let back = c.conn(1, 0);
        let answer = back
            .request(T_RAW.id(), Bytes::from_static(GO_REQUEST))
            .await;
        assert_eq!(answer.unwrap(), Bytes::from_static(RESPONSE));

        // Tuple types: arrays both ways.
        let answer = back
            .request(T_TUPLE.id(), Bytes::from_static(b"\x92\x07\xa2hi"))
            .await;
        assert_eq!(
            answer.unwrap(),
            Bytes::from_static(b"\x93\x07\xa2hi\x92\x07\xa2hi")
        );
        // Helpers with their nil forms: exact bytes back.
        let nil_helpers: &[u8] = b"\x84\xa1B\xc0\xa1M\xc0\xa1U\x80\xa1J\xc0";
        let answer = back
            .request(T_HELPERS.id(), Bytes::from_static(nil_helpers))
            .await;
        assert_eq!(answer.unwrap(), Bytes::from_static(nil_helpers));
    })
    .await;
    c.shutdown().await;
}

/// Defines one `#[test]` per typed scenario, each run with `$block_on` (a generic
/// function taking a future) on the runtime `$rt` (an expression evaluated inside it).
#[macro_export]
macro_rules! typed_suite_tests {
    ($block_on:path, $rt:expr) => {
        $crate::scenario_tests!(typed_suite, $block_on, $rt;
            typed_single_roundtrip,
            typed_remote_error,
            typed_subroute,
            typed_stream_roundtrip,
            typed_stream_no_input,
            typed_stream_no_payload,
            typed_server_decode_failure,
            typed_client_decode_failure,
            typed_encode_failure,
            typed_minio_struct_bytes,
        );
    };
}
