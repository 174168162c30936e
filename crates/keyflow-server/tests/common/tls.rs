//! Helpers of the end-to-end TLS tests (`tests/tls_*.rs`): API paths, a tampered
//! ciphertext, the security-header check, and a request held in flight.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tower::util::MapRequestLayer;

use super::{
    bounded, client_config, http1, request, tls_connect, ChannelBody, Harness, Resp, Server, OWN,
};

pub const HSTS: &str = "max-age=31536000; includeSubDomains; preload";

pub fn api(path: &str) -> String {
    format!("/api/encryption{path}")
}

/// The same ciphertext with the last byte (in the GCM tag) flipped.
pub fn tamper(ct: &str) -> String {
    let mut raw = URL_SAFE_NO_PAD
        .decode(ct.strip_prefix("kf1:").unwrap())
        .unwrap();
    let last = raw.last_mut().unwrap();
    *last ^= 0x01;
    format!("kf1:{}", URL_SAFE_NO_PAD.encode(raw))
}

#[track_caller]
pub fn assert_security_headers(r: &Resp) {
    assert_eq!(r.header("strict-transport-security"), HSTS, "{r:?}");
    assert_eq!(r.header("x-frame-options"), "DENY", "{r:?}");
    assert_eq!(r.header("x-content-type-options"), "nosniff", "{r:?}");
    assert_eq!(r.header("cache-control"), "no-store", "{r:?}");
    assert_eq!(r.header("referrer-policy"), "no-referrer", "{r:?}");
    assert!(!r.header("permissions-policy").is_empty(), "{r:?}");
    let csp = r.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "CSP {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "CSP {csp}");
    assert!(!csp.contains("unsafe"), "CSP {csp}");
    let id = r.header("x-request-id");
    assert!(
        id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "x-request-id `{id}`"
    );
}

/// How many request bodies the app has started to read: a request whose body is being
/// read is past the concurrency limit, the timeout and authentication, inside its
/// handler. The server exposes no in-flight count, so the tests observe this instead of
/// sleeping and hoping the request got there.
#[derive(Clone)]
pub struct BodyReads(Arc<watch::Sender<usize>>);

impl BodyReads {
    /// `app` with its request bodies observed. The wrapper is the outermost layer and
    /// passes every frame and size hint through unchanged.
    pub fn observe(app: Router) -> (Router, Self) {
        let reads = Self(Arc::new(watch::Sender::new(0)));
        let tx = reads.0.clone();
        let app = app.layer(MapRequestLayer::new(move |req: Request| {
            let tx = tx.clone();
            req.map(|inner| {
                Body::new(ObservedBody {
                    inner,
                    reads: Some(tx),
                })
            })
        }));
        (app, reads)
    }

    fn count(&self) -> usize {
        *self.0.borrow()
    }

    /// Waits until more than `n` bodies have been read from.
    async fn wait_past(&self, n: usize) {
        let mut rx = self.0.subscribe();
        bounded(
            "the server to start reading the held request's body",
            rx.wait_for(|reads| *reads > n),
        )
        .await
        .unwrap();
    }
}

/// Serves `app` over TLS with its request bodies observed (see [`BodyReads`]).
pub async fn start_observed(h: &Harness, app: Router) -> (Server, BodyReads) {
    let (app, reads) = BodyReads::observe(app);
    (h.start(app, true).await, reads)
}

/// A request body that counts itself in [`BodyReads`] when its first data is read.
struct ObservedBody {
    inner: Body,
    reads: Option<Arc<watch::Sender<usize>>>,
}

impl hyper::body::Body for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(&frame, Poll::Ready(Some(Ok(f))) if f.is_data()) {
            if let Some(reads) = this.reads.take() {
                reads.send_modify(|n| *n += 1);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        hyper::body::Body::size_hint(&self.inner)
    }
}

type PendingResponse = JoinHandle<hyper::Result<hyper::Response<Incoming>>>;

/// A request to `/batch/encrypt` (1000 items) whose body is sent only in part: it stays
/// in flight (headers read, handler waiting for the rest of the body) until the second
/// half is sent with `finish`.
pub struct HeldRequest {
    pub tx: mpsc::Sender<Bytes>,
    pub rest: Bytes,
    pub response: PendingResponse,
}

impl HeldRequest {
    /// Sends the headers and half the body to `server` (started with
    /// [`start_observed`]), and returns once the handler is reading that body.
    pub async fn start(server: &Server, reads: &BodyReads, token: &str) -> Self {
        let items: Vec<Value> = (0..1000).map(|i| json!(format!("item-{i}"))).collect();
        let body = Bytes::from(json!({ "items": items, "purpose": OWN }).to_string());
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let config = client_config(
            server.cert.as_ref().unwrap(),
            rustls::DEFAULT_VERSIONS,
            &[b"http/1.1"],
        );
        let tls = bounded("TLS connect", tls_connect(server.addr, config))
            .await
            .unwrap();
        let mut sender = http1::<ChannelBody, _>(tls).await;
        let req = request("POST", &api("/batch/encrypt"), Some(token))
            .header("content-length", body.len())
            .body(ChannelBody(rx))
            .unwrap();
        let before = reads.count();
        let response = tokio::spawn(async move { sender.send_request(req).await });
        let half = body.len() / 2;
        tx.send(body.slice(..half)).await.unwrap();
        reads.wait_past(before).await;
        Self {
            tx,
            rest: body.slice(half..),
            response,
        }
    }

    /// Sends the rest of the body and reads the response.
    pub async fn finish(self) -> Resp {
        self.tx.send(self.rest).await.unwrap();
        drop(self.tx);
        Self::read(self.response).await
    }

    /// Reads the response without sending the rest of the body.
    pub async fn read(response: PendingResponse) -> Resp {
        let res = bounded("held request", response).await.unwrap().unwrap();
        Resp::read(res).await
    }
}
