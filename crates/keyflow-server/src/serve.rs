//! The accept loop: TLS (or plain HTTP behind a trusted proxy), HTTP/1.1 and HTTP/2 with
//! keep-alive, per-connection [`ConnectionInfo`], connection limits ([`ServeOptions`]),
//! and graceful shutdown — on the shutdown signal the listener closes, in-flight
//! requests finish (up to a grace period), idle connections are closed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use keyflow_transport::ConnectionInfo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::early::EarlyAnswers;
use crate::min_rate::MinRate;

/// Connection-level limits of the accept loop ([`serve_with`]).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Most connections open at once, those in their TLS handshake included. At the cap
    /// the loop stops accepting: new connections wait in the kernel's listen backlog
    /// until one closes.
    pub max_connections: usize,
    /// Most TLS handshakes in progress at once (each costs the server a signature).
    /// Beyond it a new connection waits for a slot, within its handshake timeout.
    pub max_handshakes: usize,
    /// How long a TLS handshake may take (waiting for a slot included), and how long
    /// each HTTP/1.1 request's headers may take to arrive — which also closes an
    /// HTTP/1.1 keep-alive connection idle this long.
    pub header_timeout: Duration,
    /// A connection with no request in progress for this long is shut down gracefully:
    /// HTTP/2 gets GOAWAY, HTTP/1.1 is closed.
    pub idle_timeout: Duration,
    /// HTTP/2: a PING is sent after this long without traffic; a peer that does not
    /// answer within the same time is disconnected (a dead peer holds no slot).
    pub http2_ping_interval: Duration,
    /// The minimum transfer rate of request bodies ([`crate::min_rate`]).
    pub min_body_rate: MinRate,
    /// After the shutdown signal, how long in-flight requests may take to finish.
    pub grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_handshakes: 128,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            http2_ping_interval: Duration::from_secs(20),
            min_body_rate: MinRate::default(),
            grace: Duration::from_secs(20),
        }
    }
}

/// Serves `app` on `listener` with `options` until `shutdown` resolves, then drains for
/// at most `options.grace`.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    options: &ServeOptions,
) -> std::io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    // Permits: one per open connection. Getting all of them back after the shutdown
    // signal means every connection has finished.
    let max_connections = options.max_connections.clamp(1, u32::MAX as usize);
    let connections = Arc::new(Semaphore::new(max_connections));
    let handshakes = Arc::new(Semaphore::new(options.max_handshakes.max(1)));
    let options = Arc::new(options.clone());
    // Connections still in their TLS handshake hold no request: on shutdown they are
    // dropped at once; the others shut down gracefully.
    let (stopping_tx, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // never closed
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            app: app.clone(),
            options: options.clone(),
            stopping: stopping.clone(),
        };
        let acceptor = acceptor.clone();
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match acceptor {
                Some(acceptor) => conn.tls(stream, peer, &acceptor, &handshakes).await,
                None => {
                    let info = ConnectionInfo {
                        peer,
                        tls: false,
                        client_cert_sha256: None,
                    };
                    conn.http(TokioIo::new(stream), info).await;
                }
            }
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = connections.acquire_many(all) => tracing::info!("all connections drained"),
        () = tokio::time::sleep(options.grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
    Ok(())
}

/// What a connection's task needs.
struct Conn {
    app: Router,
    options: Arc<ServeOptions>,
    stopping: watch::Receiver<bool>,
}

impl Conn {
    /// The TLS handshake (a slot among `handshakes`, then the handshake, within the
    /// header timeout), then HTTP.
    async fn tls(
        mut self,
        stream: TcpStream,
        peer: SocketAddr,
        acceptor: &TlsAcceptor,
        handshakes: &Semaphore,
    ) {
        let handshake = tokio::time::timeout(self.options.header_timeout, async {
            let _slot = handshakes.acquire().await;
            acceptor.accept(stream).await
        });
        let tls = tokio::select! {
            r = handshake => match r {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            },
            _ = self.stopping.wait_for(|s| *s) => return,
        };
        let client_cert_sha256 = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| {
                let mut fp = [0u8; 32];
                fp.copy_from_slice(digest::digest(&digest::SHA256, c.as_ref()).as_ref());
                fp
            });
        let info = ConnectionInfo {
            peer,
            tls: true,
            client_cert_sha256,
        };
        self.http(TokioIo::new(tls), info).await;
    }

    /// Serves HTTP/1.1 or HTTP/2 on `io` until the peer closes, the connection stays
    /// idle too long, or the server stops (both: a graceful shutdown of the connection).
    async fn http<I>(mut self, io: I, info: ConnectionInfo)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let o = &*self.options;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Request headers must arrive within the header timeout too, so slow-header
        // clients cannot hold connections open forever.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(o.header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(o.http2_ping_interval)
            .keep_alive_timeout(o.http2_ping_interval);
        let activity = Arc::new(Activity::new());
        let svc = with_info(self.app, info, activity.clone(), o.min_body_rate);
        let conn = builder.serve_connection(io, svc);
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                () = activity.idle_for(o.idle_timeout), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = self.stopping.wait_for(|s| *s), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Requests in progress on one connection, and when the last one started or ended.
struct Activity {
    in_flight: AtomicUsize,
    /// When the connection started; `last` counts milliseconds from it.
    origin: Instant,
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// A request started; it ends when the guard drops (its response head is ready, or
    /// it was abandoned).
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    /// Resolves once no request has been in progress for `idle`. Wakes at most once per
    /// `idle` while the connection is busy.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let due = self.last() + idle;
            tokio::time::sleep_until(due).await;
            if self.in_flight.load(Ordering::Relaxed) == 0 && self.last() + idle <= Instant::now() {
                return;
            }
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                // Busy: look again an idle period after now.
                tokio::time::sleep(idle).await;
            }
        }
    }
}

/// One request in progress (see [`Activity::begin`]).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The app as a hyper service that stamps every request with the connection's facts,
/// counts it in the connection's [`Activity`], and finishes early answers properly
/// ([`crate::early`]).
fn with_info(
    app: Router,
    info: ConnectionInfo,
    activity: Arc<Activity>,
    min_body_rate: MinRate,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>>
                 + Send
                 + 'static,
> + Clone {
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let in_flight = activity.begin();
        req.extensions_mut().insert(info.clone());
        let (req, early) = EarlyAnswers::wrap(req, min_body_rate);
        let call = app.clone().oneshot(req);
        async move {
            let resp = call.await;
            drop(in_flight);
            resp.map(|resp| early.finish(resp))
        }
    })
}
