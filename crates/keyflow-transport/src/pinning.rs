//! Client-certificate pinning by SHA-256 fingerprint.

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use subtle::{Choice, ConstantTimeEq};
use tower::{Layer, Service};

use crate::config::TransportConfig;
use crate::connection::ConnectionInfo;
use crate::error::TransportError;
use crate::util::{respond, BoxFuture};

/// When pins are configured, lets through only connections whose client certificate
/// ([`ConnectionInfo::client_cert_sha256`]) is one of them; anything else, a missing
/// certificate or a missing `ConnectionInfo` included, gets
/// `403 client_cert_not_pinned`. With no pins it does nothing.
///
/// The certificate is the one this process saw in its own TLS handshake: behind a
/// TLS-terminating proxy there is none, so pinning needs TLS to end here.
#[derive(Clone, Debug)]
pub struct ClientCertPinningLayer {
    pins: Arc<[[u8; 32]]>,
}

impl ClientCertPinningLayer {
    /// Accepts exactly the certificates whose DER SHA-256 is in `pins`.
    pub fn new(pins: Vec<[u8; 32]>) -> Self {
        Self { pins: pins.into() }
    }

    /// Takes `pinned_client_certs` from `config`.
    pub fn from_config(config: &TransportConfig) -> Self {
        Self::new(config.pinned_client_certs.clone())
    }
}

impl<S> Layer<S> for ClientCertPinningLayer {
    type Service = ClientCertPinning<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientCertPinning {
            inner,
            pins: self.pins.clone(),
        }
    }
}

/// The service made by [`ClientCertPinningLayer`].
#[derive(Clone, Debug)]
pub struct ClientCertPinning<S> {
    inner: S,
    pins: Arc<[[u8; 32]]>,
}

/// Whether `presented` is one of `pins`, comparing every pin in constant time.
fn is_pinned(pins: &[[u8; 32]], presented: Option<&[u8; 32]>) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    pins.iter()
        .fold(Choice::from(0), |found, pin| found | pin.ct_eq(presented))
        .into()
}

impl<S> Service<Request> for ClientCertPinning<S>
where
    S: Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if !self.pins.is_empty() {
            let presented = req
                .extensions()
                .get::<ConnectionInfo>()
                .and_then(|c| c.client_cert_sha256.as_ref());
            if !is_pinned(&self.pins, presented) {
                return respond(TransportError::ClientCertNotPinned.into_response());
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_matching() {
        let pins = [[1u8; 32], [2u8; 32]];
        assert!(is_pinned(&pins, Some(&[2u8; 32])));
        assert!(!is_pinned(&pins, Some(&[3u8; 32])));
        assert!(!is_pinned(&pins, None));
        assert!(!is_pinned(&[], Some(&[1u8; 32])));
    }
}
