//! `/metrics` over real TLS: the audit layer counts every audited request — refusals,
//! unknown methods and paths included — in `keyflow_requests_total` and the latency
//! histogram, with or without the audit trail; the exposition parses line by line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use std::collections::BTreeMap;

use common::tls::api;
use common::{request, Client, Harness, OTHER, OWN};
use keyflow_server::{AuditPolicy, Limits};
use serde_json::json;

/// One sample line: name, labels (in order), value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v.as_str()))
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses `name{k="v",…} value` (labels optional, values escaped as the text format
/// says); `None` for anything else.
fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    if !is_name(name) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut l) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = l.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = l.split_once("=\"")?;
            if !is_name(key) {
                return None;
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return None,
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_owned(), value));
            l = &after[end + 1..];
            l = l.strip_prefix(',').unwrap_or(l);
        }
    }
    let value = rest.strip_prefix(' ')?;
    if value.contains(' ') {
        return None;
    }
    Some(Sample {
        name: name.to_owned(),
        labels,
        value: value.parse().ok()?,
    })
}

/// Every sample of the exposition, failing on any line that is neither a comment nor a
/// sample.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| parse_sample(l).unwrap_or_else(|| panic!("not a sample line: `{l}`\n{text}")))
        .collect()
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in {samples:#?}"))
        .value
}

fn total(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .map(|s| s.value)
        .sum()
}

const ENCRYPT: &str = "/api/encryption/encrypt";

/// Audited requests of every kind; how many were made.
async fn exercise(c: &mut Client, h: &Harness) -> u64 {
    let svc = Some(h.service_token.as_str());
    let admin = Some(h.admin.as_str());
    for _ in 0..3 {
        let r = c
            .post(
                &api("/encrypt"),
                svc,
                &json!({ "data": "x", "purpose": OWN }),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    // Refusals: no token, a purpose not granted, a method no route serves, no route.
    let body = json!({ "data": "x", "purpose": OWN });
    assert_eq!(c.post(&api("/encrypt"), None, &body).await.status, 401);
    let other = json!({ "data": "x", "purpose": OTHER });
    assert_eq!(c.post(&api("/encrypt"), svc, &other).await.status, 403);
    assert_eq!(c.get(&api("/encrypt"), admin).await.status, 405);
    assert_eq!(c.get(&api("/no-such-route"), admin).await.status, 404);
    // A streamed answer: its outcome is recorded when the body ends, after the layer
    // counted the request.
    let r = c
        .send_raw(
            request("POST", &api(&format!("/files/encrypt?purpose={OWN}")), svc),
            b"file contents".to_vec(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = c
        .send_raw(
            request("POST", &api("/files/decrypt"), svc),
            r.body.to_vec(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(&r.body[..], b"file contents");
    // Not audited, so not counted.
    assert_eq!(c.get(&api("/health"), None).await.status, 200);
    9
}

/// Checks the exposition after [`exercise`]; its samples.
fn check(text: &str, requests: u64) -> Vec<Sample> {
    let s = parse(text);
    let requests = requests as f64;
    // Every audited request, in both the counter and the histogram.
    assert_eq!(total(&s, "keyflow_requests_total"), requests, "{text}");
    assert_eq!(
        total(&s, "keyflow_request_duration_seconds_count"),
        requests,
        "{text}"
    );
    let enc =
        |op: &'static str, status| [("route", ENCRYPT), ("operation", op), ("status", status)];
    for (labels, n) in [
        (enc("encrypt", "200"), 3.0),
        (enc("encrypt", "401"), 1.0),
        (enc("encrypt", "403"), 1.0),
        (enc("unknown", "405"), 1.0),
    ] {
        assert_eq!(
            value(&s, "keyflow_requests_total", &labels),
            n,
            "{labels:?}"
        );
    }
    let unmatched = [
        ("route", "unmatched"),
        ("operation", "unknown"),
        ("status", "404"),
    ];
    assert_eq!(value(&s, "keyflow_requests_total", &unmatched), 1.0);
    assert!(
        !text.contains("no-such-route"),
        "a raw path became a label:\n{text}"
    );
    // The histogram: per route and status class, cumulative buckets up to +Inf = count.
    let ok = [
        ("route", ENCRYPT),
        ("operation", "encrypt"),
        ("status_class", "2xx"),
    ];
    assert_eq!(
        value(&s, "keyflow_request_duration_seconds_count", &ok),
        3.0
    );
    let mut inf = ok.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(
        value(&s, "keyflow_request_duration_seconds_bucket", &inf),
        3.0
    );
    let buckets: Vec<f64> = s
        .iter()
        .filter(|x| {
            x.name == "keyflow_request_duration_seconds_bucket"
                && ok.iter().all(|(k, v)| x.label(k) == Some(*v))
        })
        .map(|x| x.value)
        .collect();
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert!(value(&s, "keyflow_request_duration_seconds_sum", &ok) > 0.0);
    let refused = [
        ("route", ENCRYPT),
        ("operation", "encrypt"),
        ("status_class", "4xx"),
    ];
    assert_eq!(
        value(&s, "keyflow_request_duration_seconds_count", &refused),
        2.0
    );
    // Operations: only what reached a handler's record; the streamed ones counted when
    // their bodies ended.
    let op = |name, result| {
        value(
            &s,
            "keyflow_operations_total",
            &[("operation", name), ("result", result)],
        )
    };
    assert_eq!(
        (op("encrypt", "ok"), op("encrypt", "error")),
        (3.0, 0.0),
        "{text}"
    );
    assert_eq!(op("file_encrypt", "ok"), 1.0, "{text}");
    assert_eq!(op("file_decrypt", "ok"), 1.0, "{text}");
    assert_eq!(
        value(
            &s,
            "keyflow_operation_items_total",
            &[("operation", "encrypt")]
        ),
        3.0
    );
    s
}

fn by_name(samples: &[Sample]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for s in samples {
        *m.entry(s.name.as_str()).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audited_request_is_counted_and_timed() {
    let h = Harness::new().await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let n = exercise(&mut c, &h).await;
    let r = c.get("/metrics", Some(&h.auditor)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.text();
    let s = check(&text, n);
    // Each request's record was durable before its answer went out.
    assert!(
        value(&s, "keyflow_audit_records_total", &[]) >= n as f64,
        "{text}"
    );
    assert_eq!(value(&s, "keyflow_audit_failures_total", &[]), 0.0);
    for name in [
        "keyflow_key_cache_hits_total",
        "keyflow_key_cache_misses_total",
        "keyflow_key_cache_entries",
        "keyflow_uptime_seconds",
    ] {
        assert_eq!(by_name(&s).get(name), Some(&1), "{name}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_do_not_need_the_audit_trail() {
    let h = Harness::build(Limits::default(), AuditPolicy::OFF, |s| s).await;
    let server = h.start_tls().await;
    let mut c = server.client().await;
    let n = exercise(&mut c, &h).await;
    let text = c.get("/metrics", Some(&h.auditor)).await.text();
    check(&text, n);
    assert!(!text.contains("keyflow_audit_"), "{text}");
    assert!(h.audit_records().await.is_empty());
}

#[test]
fn the_sample_parser_rejects_what_is_not_a_sample() {
    let s = parse_sample(r#"a_b{x="1",y="q\"u\\o"} 2.5e-5"#).unwrap();
    assert_eq!((s.name.as_str(), s.value), ("a_b", 2.5e-5));
    assert_eq!(s.label("y"), Some(r#"q"u\o"#));
    assert_eq!(parse_sample("up 1").unwrap().value, 1.0);
    for bad in [
        "up",
        "up 1 2",
        "1up 1",
        r#"up{x="1" 1"#,
        r#"up{x=1} 1"#,
        "up{} x",
        r#"up{x="1"}1"#,
    ] {
        assert!(parse_sample(bad).is_none(), "{bad}");
    }
}
