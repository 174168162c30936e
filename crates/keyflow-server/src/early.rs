//! Early answers: responses decided before the request body was read to its end (401,
//! 403, 413, 415, 429, 503 …) must reach the client, and the connection must stay
//! usable or be closed cleanly.
//!
//! Left alone, hyper gets both protocols wrong for real clients:
//!
//! - **HTTP/1.1**: when the handler drops an unread body, hyper tries one read to drain
//!   it and otherwise closes the connection — after it has already written the response
//!   head *without* `Connection: close`. The client's next request on that connection
//!   fails.
//! - **HTTP/2**: hyper sends the response and then `RST_STREAM(NO_ERROR)` (RFC 9113
//!   §8.1). It is correct, but curl 7.x and Python's `h2`/`httpx` drop the response
//!   when the reset arrives while they are still uploading: the client sees no answer.
//!
//! [`EarlyAnswers`] wraps every request body of a connection. When the app returns its
//! response and the body was dropped before its end, the rest is *drained* in a task
//! of its own, bounded by [`DRAIN_MAX_BYTES`] and [`DRAIN_MAX_TIME`], so the client can
//! finish sending and then read the answer:
//!
//! - HTTP/1.1 with a declared length of at most [`KEEP_ALIVE_DRAIN_BYTES`] still to
//!   come: the connection stays open for the next request once the body is drained;
//! - any other HTTP/1.x body (larger, or chunked): the response says
//!   `Connection: close`, and hyper closes the connection after the drain — a lingering
//!   close, so the client is not reset before it reads the answer;
//! - HTTP/1.x with `Expect: 100-continue` and a body never read (so `100 Continue` was
//!   never sent and the client sends nothing): `Connection: close` at once;
//! - HTTP/2: the stream ends cleanly once the client has sent everything; beyond the
//!   bounds hyper resets the stream (`NO_ERROR`) as before.
//!
//! A body that failed the minimum transfer rate ([`crate::min_rate`]) is not drained:
//! `Connection: close` at once. A body still held by the response (the streamed
//! `/files/*` routes) is left alone.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONNECTION, EXPECT};
use axum::http::{HeaderValue, Request, Version};
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use crate::min_rate::{MinRate, RateCheck};

/// HTTP/1.1: the most body still to come that is drained to keep the connection open.
pub const KEEP_ALIVE_DRAIN_BYTES: u64 = 256 * 1024;
/// The most body bytes read and discarded after an early answer.
pub const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The longest a drain after an early answer lasts.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// Where a request body dropped before its end is left for [`EarlyAnswers::finish`],
/// with whether it was ever read from.
#[derive(Default)]
struct Leftover(Mutex<Option<Rest>>);

/// A body dropped before its end.
struct Rest {
    body: Incoming,
    /// Whether it was ever read from.
    polled: bool,
    /// Whether it failed the minimum transfer rate.
    too_slow: bool,
}

/// A request body that, dropped before its end, hands what is left to its [`Leftover`].
struct TrackedBody {
    inner: Option<Incoming>,
    /// Whether the app read from it: with `Expect: 100-continue`, hyper then sent
    /// `100 Continue` and the client is sending its body.
    polled: bool,
    leftover: Arc<Leftover>,
    /// The minimum transfer rate ([`crate::min_rate`]).
    rate: RateCheck,
    /// Whether the body failed it.
    too_slow: bool,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        this.polled = true;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => match this.rate.waiting(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => {
                    this.too_slow = true;
                    Poll::Ready(Some(Err(e.into())))
                }
            },
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.rate.received(data.len());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            if !inner.is_end_stream() {
                *self
                    .leftover
                    .0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Rest {
                    body: inner,
                    polled: self.polled,
                    too_slow: self.too_slow,
                });
            }
        }
    }
}

/// What one request needs to finish an early answer (see the module documentation).
pub struct EarlyAnswers {
    leftover: Arc<Leftover>,
    version: Version,
    expect_continue: bool,
}

impl EarlyAnswers {
    /// Wraps the body of `req` so that an early answer can be finished properly, and
    /// so that it fails if it arrives slower than `min_rate`.
    pub fn wrap(req: Request<Incoming>, min_rate: MinRate) -> (Request<Body>, Self) {
        let leftover = Arc::new(Leftover::default());
        let expect_continue = req
            .headers()
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let version = req.version();
        let req = req.map(|inner| {
            Body::new(TrackedBody {
                inner: Some(inner),
                polled: false,
                leftover: leftover.clone(),
                rate: RateCheck::new(min_rate),
                too_slow: false,
            })
        });
        (
            req,
            Self {
                leftover,
                version,
                expect_continue,
            },
        )
    }

    /// Called with the app's response: if the body was dropped before its end, marks
    /// the response and starts the drain.
    pub fn finish(self, mut resp: Response) -> Response {
        let rest = self
            .leftover
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(Rest {
            body: rest,
            polled,
            too_slow,
        }) = rest
        else {
            return resp;
        };
        if too_slow {
            // Nothing to wait for: the client is too slow to drain. HTTP/1.1 closes
            // after the answer (which says so); HTTP/2 resets the stream.
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        let http1 = matches!(
            self.version,
            Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
        );
        if http1 {
            if self.expect_continue && !polled {
                // The client waits for `100 Continue` before it sends the body; it will
                // not come (hyper sends it when the body is first read). Dropping the
                // body makes hyper close the connection after the answer, which says so.
                // Once read from, the client is sending: drained below like any body.
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
                return resp;
            }
            let small = rest
                .size_hint()
                .exact()
                .is_some_and(|n| n <= KEEP_ALIVE_DRAIN_BYTES);
            if !small {
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
        }
        tokio::spawn(drain(rest));
        resp
    }
}

/// Reads and discards `body` until its end, [`DRAIN_MAX_BYTES`] or [`DRAIN_MAX_TIME`],
/// whichever comes first; dropping the rest then lets hyper close the connection
/// (HTTP/1.1) or reset the stream (HTTP/2).
async fn drain(mut body: Incoming) {
    let mut discarded = 0u64;
    let read = std::future::poll_fn(|cx| loop {
        match std::task::ready!(Pin::new(&mut body).poll_frame(cx)) {
            None => return Poll::Ready(true),
            Some(Err(_)) => return Poll::Ready(false),
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    discarded = discarded.saturating_add(data.len() as u64);
                    if discarded > DRAIN_MAX_BYTES {
                        return Poll::Ready(false);
                    }
                }
            }
        }
    });
    let ended = tokio::time::timeout(DRAIN_MAX_TIME, read)
        .await
        .unwrap_or(false);
    tracing::debug!(
        discarded,
        ended,
        "request body drained after an early answer"
    );
}
