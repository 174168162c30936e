//! Shared test harness: a KeyFlow server wired like `keyflow serve` (SQLite keystore and
//! KEK in a temporary directory, the audit trail in the same database, fail-closed as in
//! production, API tokens of every role, the dev certificate), run on an ephemeral
//! loopback port, and a small hyper + rustls client.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking
#![allow(dead_code, missing_docs)]
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use keyflow_kms::access::Role;
use keyflow_kms::audit::{AuditSealer, AuditStore, ChainVerifier, StoredAudit, MAX_PAGE};
use keyflow_kms::clock::{Clock, SystemClock};
use keyflow_kms::{Context as KmsContext, EncryptionService, Keystore, Purpose, ServiceConfig};
use keyflow_server::auth::TokenCache;
use keyflow_server::{AppState, AuditPolicy, AuditTrail, HttpSettings, Limits};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tower::ServiceExt;

/// The purpose the service token is granted.
pub const OWN: &str = "userData";
/// A purpose the service token is not granted.
pub const OTHER: &str = "financialData";

/// Longest any single network step of a test may take.
pub const STEP: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test if it takes longer than [`STEP`].
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

pub fn now_millis() -> i64 {
    SystemClock.now_millis()
}

/// A keystore, a KEK, a service, the token cache and three tokens: admin, service
/// (granted [`OWN`] only) and auditor. [`OWN`] and [`OTHER`] have version 1.
pub struct Harness {
    /// The temporary directory with `kek.json` and `keyflow.db`.
    pub env: keyflow_testkit::Env,
    pub store: Arc<dyn Keystore>,
    /// The same SQLite handle as the audit store (the trail writes to it unless a test
    /// wrapped it).
    pub audit_store: Arc<dyn AuditStore>,
    /// A sealer of the KEK's audit key, to verify the chain.
    pub sealer: Arc<AuditSealer>,
    pub service: Arc<EncryptionService>,
    pub state: AppState,
    pub admin: String,
    pub service_token: String,
    pub service_token_id: String,
    pub auditor: String,
    /// The journal directory of a journaled trail ([`Harness::journaled`]).
    pub journal_dir: Option<tempfile::TempDir>,
}

impl Harness {
    pub async fn new() -> Self {
        Self::with_limits(Limits::default()).await
    }

    pub async fn with_limits(limits: Limits) -> Self {
        Self::build(limits, AuditPolicy::PRODUCTION, |s| s).await
    }

    /// A harness whose trail is journaled, as `keyflow serve` runs it: records go to a
    /// journal in [`Harness::journal_dir`] and reach the store in the background.
    pub async fn journaled() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut h = Self::build_with(
            Limits::default(),
            AuditPolicy::PRODUCTION,
            |s| s,
            Some(dir.path()),
        )
        .await;
        h.journal_dir = Some(dir);
        h
    }

    /// A harness whose audit trail has `policy` and writes to `wrap(the SQLite store)`
    /// directly (each request awaits its commit).
    pub async fn build(
        limits: Limits,
        policy: AuditPolicy,
        wrap: impl FnOnce(Arc<dyn AuditStore>) -> Arc<dyn AuditStore>,
    ) -> Self {
        Self::build_with(limits, policy, wrap, None).await
    }

    async fn build_with(
        limits: Limits,
        policy: AuditPolicy,
        wrap: impl FnOnce(Arc<dyn AuditStore>) -> Arc<dyn AuditStore>,
        journal: Option<&std::path::Path>,
    ) -> Self {
        let env = keyflow_testkit::Env::sqlite();
        // One handle, as `keyflow serve` opens it: the keystore and the audit store.
        let (store, audit_store) = env.stores().await;
        let kek = env.init(&*store).await;
        let sealer = Arc::new(AuditSealer::new(&kek).unwrap());
        let trail_sealer = AuditSealer::new(&kek).unwrap();
        let service = Arc::new(EncryptionService::new(
            store.clone(),
            kek,
            ServiceConfig::default(),
        ));
        for p in [OWN, OTHER] {
            service
                .keys()
                .generate(&Purpose::new(p).unwrap())
                .await
                .unwrap();
        }
        let tokens = TokenCache::new(store.clone(), Arc::new(SystemClock));
        tokens.refresh().await.unwrap();
        let trail = match journal {
            None => AuditTrail::start(
                wrap(audit_store.clone()),
                trail_sealer,
                service.ring().clock().clone(),
                policy,
            ),
            Some(dir) => AuditTrail::start_journaled(
                wrap(audit_store.clone()),
                trail_sealer,
                service.ring().clock().clone(),
                policy,
                dir,
            )
            .unwrap(),
        };
        let state = AppState::with_audit(service.clone(), tokens, limits, trail);
        let mut h = Self {
            env,
            store,
            audit_store,
            sealer,
            service,
            state,
            admin: String::new(),
            service_token: String::new(),
            service_token_id: String::new(),
            auditor: String::new(),
            journal_dir: None,
        };
        h.admin = h.token(Role::Admin, &[], None).await.0;
        let (service_token, service_token_id) = h.token(Role::Service, &[OWN], None).await;
        h.service_token = service_token;
        h.service_token_id = service_token_id;
        h.auditor = h.token(Role::Auditor, &[], None).await.0;
        h
    }

    /// Creates a token, stores it and refreshes the cache: `(token, id)`.
    pub async fn token(
        &self,
        role: Role,
        purposes: &[&str],
        expires_at: Option<i64>,
    ) -> (String, String) {
        let (token, id) =
            keyflow_testkit::env::token(&*self.store, role, purposes, expires_at).await;
        self.state.tokens.refresh().await.unwrap();
        (token, id)
    }

    /// Every audit record in the store, oldest first.
    pub async fn audit_records(&self) -> Vec<StoredAudit> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |r: &StoredAudit| r.seq);
            let page = self.audit_store.audit_scan(after, MAX_PAGE).await.unwrap();
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    /// Verifies the whole chain against the head; the number of records.
    pub async fn verify_audit_chain(&self) -> u64 {
        let mut v = ChainVerifier::new(vec![&*self.sealer]);
        for r in self.audit_records().await {
            v.push(&r).unwrap_or_else(|e| panic!("audit chain: {e}"));
        }
        let head = self.audit_store.audit_head().await.unwrap();
        v.finish(&head)
            .unwrap_or_else(|e| panic!("audit chain: {e}"))
            .seq
    }

    /// Revokes a token the way `keyflow tokens revoke` does, then refreshes the cache.
    pub async fn revoke(&self, id: &str) {
        assert!(self.store.revoke_token(id, now_millis()).await.unwrap());
        self.state.tokens.refresh().await.unwrap();
    }

    /// A ciphertext made by the service directly (no HTTP).
    pub async fn ciphertext(&self, value: &Value, purpose: &str, ctx: &[(&str, &str)]) -> String {
        let ctx = KmsContext::from_pairs(
            ctx.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
        .unwrap();
        self.service
            .encrypt_value(value, &Purpose::new(purpose).unwrap(), &ctx)
            .await
            .unwrap()
    }

    pub fn app(&self, transport: keyflow_transport::TransportConfig) -> Router {
        keyflow_server::app(
            self.state.clone(),
            &HttpSettings {
                transport,
                ..HttpSettings::default()
            },
        )
    }

    /// The dev certificate (self-signed for localhost and 127.0.0.1), generated once.
    pub fn cert_files(&self) -> (PathBuf, PathBuf) {
        keyflow_server::tls::dev_certificate(&self.env.dir.path().join("tls")).unwrap()
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(self.cert_files().0).unwrap()
    }

    /// Serves `app` like `keyflow serve` does, over TLS or plain HTTP.
    pub async fn start(&self, app: Router, tls: bool) -> Server {
        let tls = tls.then(|| {
            let (cert, key) = self.cert_files();
            keyflow_server::tls::server_config(&cert, &key, false).unwrap()
        });
        self.start_with(app, tls).await
    }

    /// Serves `app` with this TLS configuration (plain HTTP with `None`).
    pub async fn start_with(&self, app: Router, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
        let options = keyflow_server::serve::ServeOptions {
            grace: Duration::from_secs(5),
            ..keyflow_server::serve::ServeOptions::default()
        };
        self.start_with_options(app, tls, options).await
    }

    /// Serves `app` with this TLS configuration and these connection limits.
    pub async fn start_with_options(
        &self,
        app: Router,
        tls: Option<Arc<rustls::ServerConfig>>,
        options: keyflow_server::serve::ServeOptions,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let cert = tls.is_some().then(|| self.cert_der());
        let task = tokio::spawn(async move {
            keyflow_server::serve::serve_with(
                listener,
                app,
                tls,
                async move {
                    // Also shuts down when the `Server` is dropped.
                    let _ = rx.await;
                },
                &options,
            )
            .await
        });
        Server {
            addr,
            shutdown: Some(tx),
            task,
            cert,
        }
    }

    /// The app with a development transport config, served over TLS.
    pub async fn start_tls(&self) -> Server {
        self.start(
            self.app(keyflow_transport::TransportConfig::default()),
            true,
        )
        .await
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
    /// The certificate to trust (TLS servers only).
    pub cert: Option<CertificateDer<'static>>,
}

impl Server {
    /// A keep-alive HTTP/1.1 client (over TLS when the server uses TLS).
    pub async fn client(&self) -> Client {
        let tls = self
            .cert
            .as_ref()
            .map(|c| client_config(c, rustls::DEFAULT_VERSIONS, &[b"http/1.1"]));
        Client::connect(self.addr, tls).await
    }

    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A rustls client config (aws-lc-rs provider) trusting only `cert`.
pub fn client_config(
    cert: &CertificateDer<'static>,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to `addr` for the name `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// An HTTP/1.1 connection over `io`; the connection task is spawned.
pub async fn http1<B, I>(io: I) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

/// A response, fully read.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, String::from_utf8_lossy(&self.body))
    }
}

impl Resp {
    pub async fn read<B>(res: hyper::Response<B>) -> Self
    where
        B: hyper::body::Body,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = res.into_parts();
        let body = bounded("response body", body.collect())
            .await
            .unwrap()
            .to_bytes();
        Self {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {self:?}"))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no `{name}` header on {self:?}"))
            .to_str()
            .unwrap()
    }

    /// Asserts the status and that the body is exactly `body`.
    #[track_caller]
    pub fn assert_json(&self, status: u16, body: &Value) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(&self.json(), body, "{self:?}");
    }

    /// Asserts an error response: status and exactly `{"error": code, "message": message}`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str, message: &str) {
        self.assert_json(
            status,
            &serde_json::json!({ "error": code, "message": message }),
        );
    }
}

pub const UNAUTHORIZED_MESSAGE: &str = "a valid API token is required (Authorization: Bearer …)";

/// A request builder with the usual headers (and a bearer token if given): a POST says
/// its body is JSON, as the JSON routes require (`tests/content_type.rs` builds its own).
pub fn request(method: &str, path: &str, token: Option<&str>) -> axum::http::request::Builder {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if method == "POST" {
        b = b.header("content-type", "application/json");
    }
    match token {
        Some(t) => b.header("authorization", format!("Bearer {t}")),
        None => b,
    }
}

/// A keep-alive HTTP/1.1 client that reconnects when the server closed the connection.
pub struct Client {
    addr: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, tls: Option<Arc<ClientConfig>>) -> Self {
        let sender = Self::open(addr, tls.clone()).await;
        Self { addr, tls, sender }
    }

    async fn open(
        addr: SocketAddr,
        tls: Option<Arc<ClientConfig>>,
    ) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        match tls {
            Some(config) => {
                let stream = bounded("TLS connect", tls_connect(addr, config))
                    .await
                    .unwrap();
                http1(stream).await
            }
            None => {
                let stream = bounded("TCP connect", TcpStream::connect(addr))
                    .await
                    .unwrap();
                http1(stream).await
            }
        }
    }

    /// Whether the current connection can take another request (false once the server
    /// closed it).
    pub async fn connection_open(&mut self) -> bool {
        self.sender.ready().await.is_ok()
    }

    /// Sends `req`, on a new connection if the server closed the previous one (as it
    /// may after refusing a request without reading its body).
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Resp {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let rebuild = || {
            let mut r = Request::new(Full::new(body.clone()));
            *r.method_mut() = parts.method.clone();
            *r.uri_mut() = parts.uri.clone();
            *r.headers_mut() = parts.headers.clone();
            r
        };
        if self.sender.ready().await.is_err() {
            self.sender = Self::open(self.addr, self.tls.clone()).await;
        }
        let res = match bounded("request", self.sender.send_request(rebuild())).await {
            Ok(res) => res,
            // Closed by the server between `ready` and the send: the request never
            // reached it, so sending it again on a new connection is safe.
            Err(e) if e.is_canceled() || e.is_closed() => {
                self.sender = Self::open(self.addr, self.tls.clone()).await;
                bounded("request", self.sender.send_request(rebuild()))
                    .await
                    .unwrap()
            }
            Err(e) => panic!("request failed: {e}"),
        };
        Resp::read(res).await
    }

    pub async fn send_raw(&mut self, builder: axum::http::request::Builder, body: Vec<u8>) -> Resp {
        self.send(builder.body(Full::new(Bytes::from(body))).unwrap())
            .await
    }

    pub async fn get(&mut self, path: &str, token: Option<&str>) -> Resp {
        self.send_raw(request("GET", path, token), Vec::new()).await
    }

    pub async fn post(&mut self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.send_raw(
            request("POST", path, token),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }
}

/// One request through a clone of `app`, without a network.
pub async fn oneshot(app: &Router, req: Request<Body>) -> Resp {
    let res = bounded("oneshot", app.clone().oneshot(req)).await.unwrap();
    Resp::read(res).await
}

/// A request body fed chunk by chunk from a channel (to keep a request in flight).
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
