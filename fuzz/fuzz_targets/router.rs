//! Fuzzes the JSON (and streamed) bodies of every data route through the whole router,
//! in process: `keyflow_server::app` with every layer, wired as the server tests wire
//! it (a keystore and KEK in a temporary directory, the audit trail fail-closed as in
//! production, tokens of every role), made once per process and driven with
//! `tower::ServiceExt::oneshot` on a current-thread runtime.
//!
//! The keystore is in memory (the fastest); `KEYFLOW_FUZZ_STORE=sqlite` uses a SQLite
//! file instead. Only data routes are fuzzed: they leave the key rings as they are, so
//! an input replays the same way whatever ran before it.
//!
//! Input: byte 0 picks the route, byte 1 the caller (admin, service token granted
//! `userData`, auditor, nobody), byte 2 the content type; the rest is the body, in
//! which `@ct@` / `@ctf@` / `@det@` become ciphertexts this process made (of
//! `{"a":1}` under `userData`, `"hello"` under `financialData`, and a deterministic
//! `"hello"` under `userData`), so that seeds reach past decryption.
//!
//! `KEYFLOW_FUZZ_TRACE=1` prints each request's route, caller and status (to see what
//! the seeds reach).
//!
//! Asserts, besides "never panics": the answer is never a 5xx. Anything a client sends
//! is the client's problem (4xx) or fine (2xx); a 500 is a finding.
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use http_body_util::BodyExt;
use keyflow_kms::access::Role;
use keyflow_kms::audit::AuditSealer;
use keyflow_kms::clock::SystemClock;
use keyflow_kms::{
    Context, Encrypt, EncryptMode, EncryptionService, Input, Keystore, Purpose, ServiceConfig,
};
use keyflow_server::auth::TokenCache;
use keyflow_server::{AppState, AuditPolicy, AuditTrail, HttpSettings, Limits};
use keyflow_testkit::Env;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tower::ServiceExt;

/// The data routes (POST), under `/api/encryption`.
const ROUTES: [&str; 13] = [
    "/encrypt",
    "/decrypt",
    "/batch/encrypt",
    "/batch/decrypt",
    "/blind-index",
    "/encrypt-fields",
    "/decrypt-fields",
    "/mask",
    "/encrypt-file",
    "/decrypt-file",
    "/files/encrypt?purpose=userData&name=a.txt",
    "/files/decrypt",
    "/rewrap",
];
const CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    None,
    Some("application/json; charset=utf-8"),
    Some("application/octet-stream"),
];

struct World {
    rt: tokio::runtime::Runtime,
    app: Router,
    /// Bearer tokens: admin, service (`userData`), auditor.
    tokens: [String; 3],
    /// `(placeholder, ciphertext)` pairs substituted into bodies.
    placeholders: Vec<(&'static [u8], Vec<u8>)>,
    /// Holds the KEK file (and SQLite file) for the life of the process.
    _env: Env,
}

fn purpose(name: &str) -> Purpose {
    Purpose::new(name).unwrap_or_else(|e| panic!("{e}"))
}

async fn build(env: &Env) -> (Router, [String; 3], Vec<(&'static [u8], Vec<u8>)>) {
    let (store, audit_store) = env.stores().await;
    let kek = env.init(&*store).await;
    let sealer = AuditSealer::new(&kek).unwrap_or_else(|e| panic!("{e}"));
    let service = Arc::new(EncryptionService::new(
        store.clone(),
        kek,
        ServiceConfig::default(),
    ));
    for p in ["userData", "financialData"] {
        service
            .keys()
            .generate(&purpose(p))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let tokens = TokenCache::new(store.clone(), Arc::new(SystemClock));
    let trail = AuditTrail::start(
        audit_store,
        sealer,
        service.ring().clock().clone(),
        AuditPolicy::PRODUCTION,
    );
    let token = |role, purposes: &'static [&'static str]| {
        let store: Arc<dyn Keystore> = store.clone();
        async move {
            keyflow_testkit::env::token(&*store, role, purposes, None)
                .await
                .0
        }
    };
    let bearer = [
        token(Role::Admin, &[]).await,
        token(Role::Service, &["userData"]).await,
        token(Role::Auditor, &[]).await,
    ];
    tokens.refresh().await.unwrap_or_else(|e| panic!("{e}"));
    let ctx = Context::new();
    let ct = |v: serde_json::Value, p: &'static str, det: bool| {
        let service = service.clone();
        let ctx = ctx.clone();
        async move {
            let ct = service
                .encrypt(
                    Encrypt::new(&purpose(p), &ctx, Input::Json(&v))
                        .mode(EncryptMode::deterministic_if(det)),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .ciphertext;
            ct.into_bytes()
        }
    };
    let placeholders: Vec<(&'static [u8], Vec<u8>)> = vec![
        (b"@ctf@", ct(json!("hello"), "financialData", false).await),
        (b"@ct@", ct(json!({"a": 1}), "userData", false).await),
        (b"@det@", ct(json!("hello"), "userData", true).await),
    ];
    let state = AppState::with_audit(service, tokens, Limits::default(), trail);
    let app = keyflow_server::app(state, &HttpSettings::default());
    (app, bearer, placeholders)
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let env = match std::env::var("KEYFLOW_FUZZ_STORE").as_deref() {
            Ok("sqlite") => Env::sqlite(),
            _ => Env::new(),
        };
        let (app, tokens, placeholders) = rt.block_on(build(&env));
        World {
            rt,
            app,
            tokens,
            placeholders,
            _env: env,
        }
    })
}

/// `body` with every placeholder replaced by its ciphertext.
fn substitute(body: &[u8], placeholders: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    'scan: while i < body.len() {
        for (name, ct) in placeholders {
            if body[i..].starts_with(name) {
                out.extend_from_slice(ct);
                i += name.len();
                continue 'scan;
            }
        }
        out.push(body[i]);
        i += 1;
    }
    out
}

fn run(data: &[u8]) {
    let [route, caller, content_type, body @ ..] = data else {
        return;
    };
    let w = world();
    let route = ROUTES[usize::from(*route) % ROUTES.len()];
    let mut req = Request::post(format!("/api/encryption{route}"));
    if let Some(token) = w.tokens.get(usize::from(*caller) % 4) {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if let Some(ct) = CONTENT_TYPES[usize::from(*content_type) % CONTENT_TYPES.len()] {
        req = req.header("content-type", ct);
    }
    let body = substitute(body, &w.placeholders);
    let Ok(req) = req.body(Body::from(body)) else {
        return;
    };
    let (status, answer) = w.rt.block_on(async {
        let res = w
            .app
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let status = res.status();
        let answer = res
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (status, answer)
    });
    if std::env::var_os("KEYFLOW_FUZZ_TRACE").is_some() {
        eprintln!("{route} caller {caller}: {status}");
    }
    assert!(
        !status.is_server_error(),
        "{route}: {status} {}",
        String::from_utf8_lossy(&answer)
    );
}

fuzz_target!(|data: &[u8]| run(data));
