//! Fuzzes the request-integrity layer (`keyflow_transport::RequestIntegrityLayer`): the
//! `X-KeyFlow-*` headers, `Host`, `Authorization`, the method, the target and the body,
//! in process, around an inner service that echoes the body.
//!
//! Each input is either fully fuzzed (any header text, any signature) or signed
//! correctly by the harness with fuzzed parts (timestamp offset, nonce, version, host,
//! authorization, body). Asserts, besides "never panics":
//! - a refusal is 401 or 413, never a 5xx (a secret is configured and every input gets
//!   a fresh nonce table);
//! - a fuzzed signature is never accepted (only the secret's holder can sign);
//! - a correctly signed request is accepted exactly when the documented rules say so
//!   (nonce syntax, window, minimum version, `Host` for format 2, body limit), its body
//!   reaches the inner service unchanged, and sending it again is refused as a replay.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http;
use axum::response::Response;
use http_body_util::BodyExt;
use keyflow_core::ManualClock;
use keyflow_transport::{
    sign_request, sign_request_v2, IntegritySecret, IntegrityVerified, RequestIntegrityLayer,
    SignedExtras, TransportConfig, NONCE_MAX_LEN, NONCE_MIN_LEN,
};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, ServiceExt};

const SECRET: &[u8] = b"the fuzz target's integrity secret, 32+ bytes";
const NOW_SECS: u64 = 1_700_000_000;
const WINDOW_SECS: u64 = 300;
const MAX_BODY: usize = 1024;
const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
/// Header names the fuzzer may add on top of the signed ones (duplicates included).
const EXTRA_NAMES: [&str; 8] = [
    "x-keyflow-timestamp",
    "x-keyflow-nonce",
    "x-keyflow-signature",
    "x-keyflow-signature-version",
    "host",
    "authorization",
    "content-length",
    "x-other",
];

#[derive(Arbitrary, Debug)]
enum Signature {
    /// Any text in the signature header (or none).
    Raw(Option<String>),
    /// The harness signs: format 2 or not, the version header sent or not.
    Correct { v2: bool, send_version: bool },
}

#[derive(Arbitrary, Debug)]
enum Timestamp {
    Raw(Option<String>),
    /// Seconds from the clock's now.
    Offset(i16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    target: String,
    host: Option<String>,
    authorization: Option<Vec<u8>>,
    timestamp: Timestamp,
    nonce: Option<String>,
    signature: Signature,
    /// With a raw signature: the version header's text.
    version: Option<String>,
    min_version_2: bool,
    extra: Vec<(u8, Vec<u8>)>,
    body: Vec<u8>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    })
}

fn secret() -> IntegritySecret {
    IntegritySecret::new(SECRET).unwrap_or_else(|e| panic!("secret: {e}"))
}

/// A fresh layer (and so a fresh nonce table) with a clock at [`NOW_SECS`].
fn layer(min_version: u8) -> RequestIntegrityLayer {
    let config = TransportConfig {
        integrity_secret: Some(secret()),
        integrity_required_prefixes: vec!["/api".into()],
        integrity_window: Duration::from_secs(WINDOW_SECS),
        integrity_max_body: MAX_BODY,
        integrity_min_version: min_version,
        ..TransportConfig::default()
    };
    let clock = Arc::new(ManualClock::new((NOW_SECS * 1000) as i64));
    RequestIntegrityLayer::from_config_and_clock(&config, clock)
}

/// Echoes the body; `x-verified` carries the format the layer verified, if it did.
async fn echo(req: Request) -> Result<Response, std::convert::Infallible> {
    let verified = req
        .extensions()
        .get::<IntegrityVerified>()
        .map(|v| v.version);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut res = Response::new(Body::from(body));
    if let Some(v) = verified {
        res.headers_mut().insert("x-verified", i32::from(v).into());
    }
    Ok(res)
}

/// Status, verified format, body.
async fn send(layer: &RequestIntegrityLayer, req: Request) -> (u16, Option<u8>, Vec<u8>) {
    let res = layer
        .layer(tower::service_fn(echo))
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    let status = res.status().as_u16();
    let verified = res
        .headers()
        .get("x-verified")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = res
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    (status, verified, body)
}

fn valid_nonce(n: &str) -> bool {
    (NONCE_MIN_LEN..=NONCE_MAX_LEN).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The request `headers` describe (`None` if a value is not a valid header value).
fn request(
    method: &str,
    uri: &http::Uri,
    headers: &[(&str, Vec<u8>)],
    body: &[u8],
) -> Option<Request> {
    let mut b = Request::builder().method(method).uri(uri.clone());
    for (name, value) in headers {
        b = b.header(*name, http::HeaderValue::from_bytes(value).ok()?);
    }
    b.body(Body::from(body.to_vec())).ok()
}

fn run(input: Input) {
    let method = METHODS[usize::from(input.method) % METHODS.len()];
    let Ok(uri) = input.target.parse::<http::Uri>() else {
        return;
    };
    let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
    if let Some(h) = &input.host {
        headers.push(("host", h.clone().into_bytes()));
    }
    if let Some(a) = &input.authorization {
        headers.push(("authorization", a.clone()));
    }
    let ts_text = match &input.timestamp {
        Timestamp::Raw(t) => t.clone(),
        Timestamp::Offset(o) => Some(NOW_SECS.saturating_add_signed(i64::from(*o)).to_string()),
    };
    if let Some(t) = &ts_text {
        headers.push(("x-keyflow-timestamp", t.clone().into_bytes()));
    }
    if let Some(n) = &input.nonce {
        headers.push(("x-keyflow-nonce", n.clone().into_bytes()));
    }
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let host = match uri.authority() {
        Some(a) => Some(a.as_str().to_owned()),
        None => input.host.clone(),
    };
    let (signed_version, correct) = match &input.signature {
        Signature::Raw(sig) => {
            if let Some(s) = sig {
                headers.push(("x-keyflow-signature", s.clone().into_bytes()));
            }
            if let Some(v) = &input.version {
                headers.push(("x-keyflow-signature-version", v.clone().into_bytes()));
            }
            (0, false)
        }
        Signature::Correct { v2, send_version } => {
            let ts: u64 = ts_text.as_deref().and_then(|t| t.parse().ok()).unwrap_or(0);
            let nonce = input.nonce.as_deref().unwrap_or("");
            let sig = if *v2 {
                let extras = SignedExtras {
                    host: host.as_deref().unwrap_or(""),
                    authorization: input.authorization.as_deref().unwrap_or_default(),
                };
                sign_request_v2(
                    &secret(),
                    method,
                    path_and_query,
                    ts,
                    nonce,
                    extras,
                    &input.body,
                )
            } else {
                sign_request(&secret(), method, path_and_query, ts, nonce, &input.body)
            };
            headers.push(("x-keyflow-signature", sig.into_bytes()));
            if *v2 || *send_version {
                let v: &[u8] = if *v2 { b"2" } else { b"1" };
                headers.push(("x-keyflow-signature-version", v.to_vec()));
            }
            (if *v2 { 2 } else { 1 }, true)
        }
    };
    for (name, value) in &input.extra {
        headers.push((
            EXTRA_NAMES[usize::from(*name) % EXTRA_NAMES.len()],
            value.clone(),
        ));
    }
    let Some(req) = request(method, &uri, &headers, &input.body) else {
        return;
    };
    let min_version = if input.min_version_2 { 2 } else { 1 };
    let layer = layer(min_version);
    let (status, verified, echoed) = runtime().block_on(send(&layer, req));

    assert!(
        matches!(status, 200 | 401 | 413),
        "status {status} for {input:?}"
    );
    if status == 200 {
        assert_eq!(echoed, input.body, "the body changed on its way through");
    }
    if !correct {
        assert_eq!(verified, None, "a fuzzed signature was accepted: {input:?}");
        return;
    }
    if let Some(v) = verified {
        assert_eq!(v, signed_version);
        let again = request(method, &uri, &headers, &input.body);
        let (status, verified, _) = runtime().block_on(send(&layer, again.unwrap_or_default()));
        assert_eq!(
            (status, verified),
            (401, None),
            "a replay was accepted: {input:?}"
        );
    }
    if !input.extra.is_empty() {
        // Extra (possibly duplicate) headers: only the invariants above are predicted.
        return;
    }
    let Timestamp::Offset(offset) = input.timestamp else {
        return;
    };
    let expected = input.nonce.as_deref().is_some_and(valid_nonce)
        && u64::from(offset.unsigned_abs()) <= WINDOW_SECS
        && signed_version >= min_version
        && (signed_version == 1 || host.is_some())
        // The layer reads `Host` as text (for both formats) when the target has no
        // authority: a `Host` with bytes outside visible ASCII is refused.
        && (uri.authority().is_some()
            || input.host.as_deref().is_none_or(|h| {
                h.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
            }))
        && input.body.len() <= MAX_BODY;
    assert_eq!(
        verified.is_some(),
        expected,
        "status {status}, verified {verified:?} for {input:?}"
    );
}

fuzz_target!(|input: Input| run(input));
