//! Client-certificate pinning by SHA-256 fingerprint.

use std::sync::Arc;

use axum::extract::Request;
use subtle::{Choice, ConstantTimeEq};
use tower::Layer;

use crate::checks::{Checks, ChecksLayer, Refusal, TransportChecks};
use crate::config::TransportConfig;
use crate::connection::ConnectionInfo;
use crate::error::TransportError;

/// When pins are configured, lets through only connections whose client certificate
/// ([`ConnectionInfo::client_cert_sha256`]) is one of them; anything else, a missing
/// certificate or a missing `ConnectionInfo` included, gets
/// `403 client_cert_not_pinned`. With no pins it does nothing.
///
/// The certificate is the one this process saw in its own TLS handshake: behind a
/// TLS-terminating proxy there is none, so pinning needs TLS to end here.
#[derive(Clone, Debug)]
pub struct ClientCertPinningLayer(ChecksLayer);

/// The pinned fingerprints.
#[derive(Clone, Debug)]
pub(crate) struct Pins(Arc<[[u8; 32]]>);

impl ClientCertPinningLayer {
    /// Accepts exactly the certificates whose DER SHA-256 is in `pins`.
    pub fn new(pins: Vec<[u8; 32]>) -> Self {
        Self(ChecksLayer::new(Checks {
            pins: Some(Pins(pins.into())),
            ..Checks::default()
        }))
    }

    /// Takes `pinned_client_certs` from `config`.
    pub fn from_config(config: &TransportConfig) -> Self {
        Self::new(config.pinned_client_certs.clone())
    }
}

impl<S> Layer<S> for ClientCertPinningLayer {
    type Service = ClientCertPinning<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.0.layer(inner)
    }
}

/// The service made by [`ClientCertPinningLayer`]: [`TransportChecks`] with only this check.
pub type ClientCertPinning<S> = TransportChecks<S>;

/// Whether `presented` is one of `pins`, comparing every pin in constant time.
fn is_pinned(pins: &[[u8; 32]], presented: Option<&[u8; 32]>) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    pins.iter()
        .fold(Choice::from(0), |found, pin| found | pin.ct_eq(presented))
        .into()
}

impl Pins {
    pub(crate) fn from_config(config: &TransportConfig) -> Self {
        Self(config.pinned_client_certs.clone().into())
    }

    /// Refuses a connection without a pinned certificate, when there are pins.
    pub(crate) fn check(&self, req: &Request) -> Result<(), Refusal> {
        if self.0.is_empty() {
            return Ok(());
        }
        let presented = req
            .extensions()
            .get::<ConnectionInfo>()
            .and_then(|c| c.client_cert_sha256.as_ref());
        if is_pinned(&self.0, presented) {
            Ok(())
        } else {
            Err(TransportError::ClientCertNotPinned.into())
        }
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
