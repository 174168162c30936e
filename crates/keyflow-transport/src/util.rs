//! Plumbing shared by the services: the one future type they return, and the URI the
//! client sent.

use std::future::{Future, Ready};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::{OriginalUri, Request};
use axum::response::Response;
use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, VARY};
use http::{HeaderValue, Uri};
use pin_project_lite::pin_project;

use crate::headers::finish_security_headers;

/// A boxed response future: only the signed path of request integrity, whose async
/// verification (body, HMAC, nonce store) has no nameable type on stable Rust.
pub(crate) type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

/// What a service does to the inner service's response on its way out.
#[derive(Debug)]
pub(crate) enum Finish {
    /// Pass it on unchanged.
    Nothing,
    /// Set the security headers ([`crate::SECURITY_HEADERS`]).
    SecurityHeaders,
    /// A request with an `Origin`: add `Vary: Origin` and, for an allowed origin,
    /// `Access-Control-Allow-Origin` echoing it.
    Cors(Option<HeaderValue>),
}

impl Finish {
    pub(crate) fn apply(self, res: &mut Response) {
        match self {
            Finish::Nothing => {}
            Finish::SecurityHeaders => finish_security_headers(res),
            Finish::Cors(allowed) => {
                let h = res.headers_mut();
                h.append(VARY, HeaderValue::from_static("Origin"));
                if let Some(origin) = allowed {
                    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                }
            }
        }
    }
}

pin_project! {
    /// The future of every service in this crate: an answer decided before the inner
    /// service was called (a refusal), or the inner service's answer, finished on its
    /// way out (security headers, CORS headers). A concrete type, so a request costs
    /// no allocation per layer; only a signed request's integrity check is boxed.
    pub struct ResponseFuture<F, E> {
        #[pin]
        state: State<F, E>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, E> {
        Now { answer: Ready<Result<Response, E>> },
        Inner { #[pin] future: F, finish: Option<Finish> },
        Boxed { future: BoxFuture<E> },
    }
}

impl<F, E> ResponseFuture<F, E> {
    /// Answers `response` without calling the inner service.
    pub(crate) fn now(response: Response) -> Self {
        Self {
            state: State::Now {
                answer: std::future::ready(Ok(response)),
            },
        }
    }

    /// The inner service's answer, with `finish` applied to it.
    pub(crate) fn inner(future: F, finish: Finish) -> Self {
        Self {
            state: State::Inner {
                future,
                finish: Some(finish),
            },
        }
    }

    pub(crate) fn boxed(future: BoxFuture<E>) -> Self {
        Self {
            state: State::Boxed { future },
        }
    }
}

impl<F, E> Future for ResponseFuture<F, E>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Now { answer } => Pin::new(answer).poll(cx),
            StateProj::Boxed { future } => future.as_mut().poll(cx),
            StateProj::Inner { future, finish } => {
                let mut res = ready!(future.poll(cx))?;
                if let Some(finish) = finish.take() {
                    finish.apply(&mut res);
                }
                Poll::Ready(Ok(res))
            }
        }
    }
}

impl<F, E> std::fmt::Debug for ResponseFuture<F, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The URI as the client sent it. Inside a nested axum router `req.uri()` has the
/// nest prefix stripped; axum keeps the original in [`OriginalUri`].
pub(crate) fn original_uri(req: &Request) -> &Uri {
    req.extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri(), |o| &o.0)
}
