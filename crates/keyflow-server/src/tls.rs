//! TLS: rustls on the aws-lc-rs provider only, TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by
//! ALPN; optional client certificates (for pinning); the dev-mode self-signed
//! certificate.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{aws_lc_rs, verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme, SupportedCipherSuite};

/// A TLS setup failure (message names files, never key contents).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// Server TLS options beyond the certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Ask clients for a certificate (for fingerprint pinning). It is not validated
    /// against a CA here — the transport layer pins it by SHA-256 fingerprint — but its
    /// handshake signature is.
    pub request_client_certs: bool,
    /// The cipher suites to offer, in the server's order of preference, by rustls name
    /// (`TLS13_AES_256_GCM_SHA384`, …; `KEYFLOW_TLS_CIPHER_SUITES`). Empty: every
    /// suite of the provider (all AEAD), AES-128-GCM first, then AES-256-GCM, then
    /// ChaCha20-Poly1305.
    pub cipher_suites: Vec<String>,
}

/// The cipher suites in the server's order of preference. The default puts AES-128-GCM
/// first, as Go's TLS stack (and so OpenBao/Vault) does: both AES key sizes are strong,
/// and AES-128 has 10 rounds against 14, so bulk TLS data costs less. A deployment that
/// must use AES-256 lists only the suites it wants.
/// Blank names (an empty `KEYFLOW_TLS_CIPHER_SUITES`, a trailing comma) are ignored;
/// none left means the default.
pub fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let all = aws_lc_rs::default_provider().cipher_suites;
    let name = |s: &SupportedCipherSuite| s.suite().as_str().unwrap_or("");
    let names: Vec<&str> = names
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        let rank = |s: &SupportedCipherSuite| {
            let n = name(s);
            let tls12 = !n.starts_with("TLS13_");
            let aead = if n.contains("AES_128_GCM") {
                0
            } else if n.contains("AES_256_GCM") {
                1
            } else {
                2
            };
            (tls12, aead)
        };
        let mut ordered = all;
        ordered.sort_by_key(rank);
        return Ok(ordered);
    }
    names
        .iter()
        .map(|wanted| {
            all.iter()
                .find(|s| name(s).eq_ignore_ascii_case(wanted))
                .copied()
                .ok_or_else(|| {
                    let known: Vec<&str> = all.iter().map(name).collect();
                    TlsError(format!(
                        "unknown TLS cipher suite '{wanted}' (known: {})",
                        known.join(", ")
                    ))
                })
        })
        .collect()
}

/// Builds the server's TLS configuration from PEM files, with the default options and,
/// with `request_client_certs`, optional client certificates (see [`TlsOptions`]).
pub fn server_config(
    cert: &Path,
    key: &Path,
    request_client_certs: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let options = TlsOptions {
        request_client_certs,
        ..TlsOptions::default()
    };
    server_config_with(cert, key, &options)
}

/// Builds the server's TLS configuration from PEM files. The server, not the client,
/// chooses the cipher suite, in the order of `options.cipher_suites`.
pub fn server_config_with(
    cert: &Path,
    key: &Path,
    options: &TlsOptions,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let suites = cipher_suites(&options.cipher_suites)?;
    // Only the protocol versions some listed suite belongs to.
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [&rustls::version::TLS13, &rustls::version::TLS12]
            .into_iter()
            .filter(|v| suites.iter().any(|s| s.version() == *v))
            .collect();
    let with_suites = Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..aws_lc_rs::default_provider()
    });
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError(format!("cannot read certificate {}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| {
            TlsError(format!(
                "invalid certificate PEM in {}: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!("no certificate in {}", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError(format!("cannot read private key {}: {e}", key.display())))?;
    let builder = rustls::ServerConfig::builder_with_provider(with_suites)
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError(format!("TLS cipher suites: {e}")))?;
    let builder = if options.request_client_certs {
        builder.with_client_cert_verifier(Arc::new(AnyClientCert(provider())))
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("certificate and key do not form a valid pair: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// Accepts any client certificate whose handshake signature verifies; the transport
/// layer then decides by fingerprint. Client certificates are optional at the TLS
/// level so that the refusal is an HTTP 403 with a clear body.
#[derive(Debug)]
struct AnyClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The dev certificate and key paths inside `dir`, generated once (self-signed for
/// localhost, 127.0.0.1 and ::1) and reused on later starts.
///
/// Creation is atomic across processes, as the KEK file's is: under an exclusive lock
/// on `dir/.dev-cert.lock`, the pair is checked and, if incomplete, each file is written
/// to a temporary name, synced and renamed into place (key first, certificate last), so
/// two `serve --dev` starting together in one data directory never mix one's key with
/// the other's certificate, and a crash never leaves a half-written file in place.
pub fn dev_certificate(dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join("dev-cert.pem");
    let key = dir.join("dev-key.pem");
    fs::create_dir_all(dir)
        .map_err(|e| TlsError(format!("cannot create {}: {e}", dir.display())))?;
    let lock_path = dir.join(".dev-cert.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| TlsError(format!("cannot open {}: {e}", lock_path.display())))?;
    lock.lock()
        .map_err(|e| TlsError(format!("cannot lock {}: {e}", lock_path.display())))?;
    // The certificate is written last, so with the lock held its presence means the
    // pair is complete.
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError(format!("cannot generate the dev certificate: {e}")))?;
    write_replacing(&key, generated.key_pair.serialize_pem().as_bytes())?;
    write_replacing(&cert, generated.cert.pem().as_bytes())?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TlsError(format!("cannot sync {}: {e}", dir.display())))?;
    drop(lock);
    Ok((cert, key))
}

/// Writes `bytes` to `path` through a temporary file (0600, synced) renamed over it.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    write_private(&tmp, bytes)?;
    fs::rename(&tmp, path)
        .map_err(|e| TlsError(format!("cannot move {} into place: {e}", path.display())))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| TlsError(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| TlsError(format!("cannot write {}: {e}", path.display())))
}
