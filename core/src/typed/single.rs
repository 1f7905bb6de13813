//! Typed single-request handlers.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use super::{Error, Message, decode, encode, join_route};
use crate::driver::{Connection, ManagerBuilder, RemoteError, Request};
use crate::proto::RegisterError;

/// A single-request handler taking a `Req` and answering a `Resp`: its ID, its types
/// and, optionally, its subroute. Both sides use the same definition, usually a `const`.
///
/// ```no_run
/// use grid_core::driver::{Connection, ManagerBuilder, RemoteError};
/// use grid_core::typed::{self, Mss, SingleHandler};
///
/// /// Looks a key up in a table served on the subroute "tables/users".
/// const LOOKUP: SingleHandler<String, Mss> = SingleHandler::new(21).subroute("tables/users");
///
/// fn serve(b: ManagerBuilder) -> Result<ManagerBuilder, grid_core::proto::RegisterError> {
///     LOOKUP.register(b, |key: String| async move {
///         if key.is_empty() {
///             return Err(RemoteError::new("empty key"));
///         }
///         Ok(Mss::from_iter([("name", key.as_str())]))
///     })
/// }
///
/// async fn lookup(peer: &Connection, key: &str) -> Result<Mss, typed::Error> {
///     LOOKUP.call(peer, &key.to_owned()).await
/// }
/// ```
pub struct SingleHandler<Req, Resp> {
    id: u8,
    route: Option<&'static str>,
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Clone for SingleHandler<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for SingleHandler<Req, Resp> {}

impl<Req, Resp> fmt::Debug for SingleHandler<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleHandler")
            .field("id", &self.id)
            .field("route", &self.route)
            .field("req", &std::any::type_name::<Req>())
            .field("resp", &std::any::type_name::<Resp>())
            .finish()
    }
}

impl<Req, Resp> SingleHandler<Req, Resp> {
    /// The handler with ID `id` (MinIO's `HandlerID`), without a subroute.
    pub const fn new(id: u8) -> Self {
        SingleHandler {
            id,
            route: None,
            types: PhantomData,
        }
    }

    /// The same handler on subroute `route` (nested routes are spelled joined with `/`).
    /// It is registered and called there; for routes known only at run time, use
    /// [`register_on`](Self::register_on) and call on [`Connection::subroute`].
    pub const fn subroute(self, route: &'static str) -> Self {
        SingleHandler {
            id: self.id,
            route: Some(route),
            types: PhantomData,
        }
    }

    /// The handler ID.
    pub const fn id(&self) -> u8 {
        self.id
    }

    /// The subroute, if any.
    pub const fn route(&self) -> Option<&'static str> {
        self.route
    }

    fn connection(&self, conn: &Connection) -> Connection {
        match self.route {
            Some(r) => conn.subroute(r),
            None => conn.clone(),
        }
    }
}

impl<Req, Resp> SingleHandler<Req, Resp>
where
    Req: Message + 'static,
    Resp: Message + 'static,
{
    /// Registers `f` as this handler on `builder`.
    ///
    /// A request that does not decode as `Req` is answered with the remote error
    /// `decode request: <why>` without calling `f`; a response that does not encode
    /// with `encode response: <why>`.
    pub fn register<F, Fut>(
        &self,
        builder: ManagerBuilder,
        f: F,
    ) -> Result<ManagerBuilder, RegisterError>
    where
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RemoteError>> + Send + 'static,
    {
        self.register_inner(builder, None, f)
    }

    /// Registers `f` as this handler on subroute `route`, a route known only at run time
    /// (MinIO: a drive's path). A definition with its own subroute is registered at
    /// `route/<its subroute>`. Callers reach it by calling on `connection.subroute(route)`.
    pub fn register_on<F, Fut>(
        &self,
        builder: ManagerBuilder,
        route: &str,
        f: F,
    ) -> Result<ManagerBuilder, RegisterError>
    where
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RemoteError>> + Send + 'static,
    {
        self.register_inner(builder, Some(route), f)
    }

    fn register_inner<F, Fut>(
        &self,
        builder: ManagerBuilder,
        route: Option<&str>,
        f: F,
    ) -> Result<ManagerBuilder, RegisterError>
    where
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, RemoteError>> + Send + 'static,
    {
        let handler = move |r: Request| {
            // Decoding and the handler's synchronous part run here, so the future holds
            // neither the request bytes nor `f`.
            let started = Req::decode(&r.payload).map(&f);
            async move {
                let fut = started.map_err(|e| RemoteError(format!("decode request: {e}")))?;
                let resp = fut.await?;
                resp.encode()
                    .map_err(|e| RemoteError(format!("encode response: {e}")))
            }
        };
        match join_route(route, self.route) {
            Some(r) => builder.single_on(self.id, &r, handler),
            None => builder.single(self.id, handler),
        }
    }

    /// Calls the handler on `conn`: on `conn`'s subroute, if it has one, followed by the
    /// definition's, if it has one (joined with `/`). Without a deadline the protocol's
    /// default (60 s) applies.
    ///
    /// The request is encoded before this returns, so the future borrows nothing.
    pub fn call(
        &self,
        conn: &Connection,
        req: &Req,
    ) -> impl Future<Output = Result<Resp, Error>> + Send + 'static + use<Req, Resp> {
        self.call_inner(conn, req, None)
    }

    /// Calls the handler with a deadline, which the peer also applies.
    pub fn call_with_deadline(
        &self,
        conn: &Connection,
        req: &Req,
        deadline: Duration,
    ) -> impl Future<Output = Result<Resp, Error>> + Send + 'static + use<Req, Resp> {
        self.call_inner(conn, req, Some(deadline))
    }

    fn call_inner(
        &self,
        conn: &Connection,
        req: &Req,
        deadline: Option<Duration>,
    ) -> impl Future<Output = Result<Resp, Error>> + Send + 'static + use<Req, Resp> {
        let payload = encode(req);
        let conn = self.connection(conn);
        let id = self.id;
        async move {
            let payload = payload?;
            let resp = match deadline {
                Some(d) => conn.request_with_deadline(id, payload, d).await?,
                None => conn.request(id, payload).await?,
            };
            decode(&resp)
        }
    }
}
