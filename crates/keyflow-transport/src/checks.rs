//! The check-only layers as one service: HTTPS enforcement, client-certificate pinning,
//! CORS and the sensitive-header check, each decided from its part of one resolved
//! configuration, in the crate's documented order, with one concrete future.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use tower::{Layer, Service};

use crate::config::TransportConfig;
use crate::cors::{preflight, CorsPolicy};
use crate::error::TransportError;
use crate::header_encryption::HeaderPolicy;
use crate::https::{turned_away, HttpsPolicy};
use crate::pinning::Pins;
use crate::util::{Finish, ResponseFuture};

/// The checks one [`TransportChecks`] makes; a part left `None` is not checked.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    pub(crate) https: Option<HttpsPolicy>,
    /// Called with each request that passed HTTPS enforcement, its [`crate::ClientAddr`]
    /// set, before any later check can refuse it.
    pub(crate) on_client: Option<fn(&Request)>,
    pub(crate) pins: Option<Pins>,
    pub(crate) cors: Option<CorsPolicy>,
    pub(crate) header_encryption: Option<HeaderPolicy>,
}

impl Checks {
    /// Every check `config` asks for.
    pub(crate) fn from_config(config: &TransportConfig) -> Self {
        Self {
            https: Some(HttpsPolicy::from_config(config)),
            on_client: None,
            pins: Some(Pins::from_config(config)),
            cors: Some(CorsPolicy::from_config(config)),
            header_encryption: Some(HeaderPolicy::from_config(config)),
        }
    }

    /// Whether to call the inner service (and how to finish its answer) or to answer
    /// now. A refusal is finished like any answer from the checks after the one that
    /// refused (CORS headers on the sensitive-header refusal), as when each check was its
    /// own layer.
    fn decide(&self, req: &mut Request) -> Decision {
        let mut finish = Finish::Nothing;
        match self.run(req, &mut finish) {
            Ok(()) => Decision::Pass(finish),
            Err(refusal) => {
                let mut answer = refusal.into_response();
                finish.apply(&mut answer);
                Decision::Answer(answer)
            }
        }
    }

    fn run(&self, req: &mut Request, finish: &mut Finish) -> Result<(), Refusal> {
        if let Some(https) = &self.https {
            https.check(req)?;
        }
        if let Some(note) = self.on_client {
            note(req);
        }
        if let Some(pins) = &self.pins {
            pins.check(req)?;
        }
        if let Some(cors) = &self.cors {
            *finish = cors.check(req)?;
        }
        if let Some(header_encryption) = &self.header_encryption {
            header_encryption.check(req)?;
        }
        Ok(())
    }
}

enum Decision {
    Pass(Finish),
    Answer(Response),
}

/// A check's answer in place of the inner service's.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A JSON error.
    Error(TransportError),
    /// Plain HTTP in production: redirected to the location, or refused without one.
    PlainHttp(Option<HeaderValue>),
    /// A CORS preflight from an allowed origin.
    Preflight {
        origin: HeaderValue,
        allow_headers: HeaderValue,
    },
}

impl From<TransportError> for Refusal {
    fn from(err: TransportError) -> Self {
        Self::Error(err)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Error(err) => err.into_response(),
            Self::PlainHttp(location) => turned_away(location),
            Self::Preflight {
                origin,
                allow_headers,
            } => preflight(origin, allow_headers),
        }
    }
}

/// Makes [`TransportChecks`]; [`crate::TransportLayer`] uses it with every check, the
/// single-check layers ([`crate::HttpsEnforcementLayer`], …) with one.
#[derive(Clone, Debug)]
pub(crate) struct ChecksLayer {
    checks: Arc<Checks>,
}

impl ChecksLayer {
    pub(crate) fn new(checks: Checks) -> Self {
        Self {
            checks: Arc::new(checks),
        }
    }

    /// The same checks, calling `note` with each request that passed HTTPS enforcement.
    pub(crate) fn on_client(&self, note: fn(&Request)) -> Self {
        let c = &self.checks;
        Self::new(Checks {
            https: c.https.clone(),
            on_client: Some(note),
            pins: c.pins.clone(),
            cors: c.cors.clone(),
            header_encryption: c.header_encryption.clone(),
        })
    }
}

impl<S> Layer<S> for ChecksLayer {
    type Service = TransportChecks<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TransportChecks {
            inner,
            checks: self.checks.clone(),
        }
    }
}

/// The service that makes the check-only decisions (HTTPS enforcement, client-certificate
/// pinning, CORS, sensitive headers) in front of `S`: a refusal is answered at once,
/// anything else goes to `S`, its answer finished with the CORS headers.
#[derive(Clone, Debug)]
pub struct TransportChecks<S> {
    inner: S,
    checks: Arc<Checks>,
}

impl<S> Service<Request> for TransportChecks<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match self.checks.decide(&mut req) {
            Decision::Pass(finish) => ResponseFuture::inner(self.inner.call(req), finish),
            Decision::Answer(answer) => ResponseFuture::now(answer),
        }
    }
}
