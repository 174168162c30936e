//! Unit tests of the metrics' rendering and counting.

use super::*;

fn render(m: &Metrics, audit: Option<AuditHealth>) -> String {
    let cache = CacheStats {
        entries: 3,
        hits: 7,
        misses: 2,
    };
    m.render(cache, Duration::from_secs(42), audit).unwrap()
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn renders_the_names_and_types_scrapers_rely_on() {
    let text = render(&Metrics::new(), None);
    for line in [
        "# HELP keyflow_operations_total API operations by result.",
        "# TYPE keyflow_operations_total counter",
        r#"keyflow_operations_total{operation="keys_rotate",result="error"} 0"#,
        r#"keyflow_operation_items_total{operation="audit"} 0"#,
        "# TYPE keyflow_key_cache_hits_total counter",
        "keyflow_key_cache_hits_total 7",
        "keyflow_key_cache_misses_total 2",
        "# TYPE keyflow_key_cache_entries gauge",
        "keyflow_key_cache_entries 3",
        "keyflow_uptime_seconds 42",
    ] {
        assert!(has(&text, line), "missing `{line}` in\n{text}");
    }
    for op in OPS {
        for result in ["ok", "error"] {
            let series = format!(
                r#"keyflow_operations_total{{operation="{}",result="{result}"}} 0"#,
                op.name()
            );
            assert!(has(&text, &series), "{series}");
        }
    }
    // Nothing answered yet, and no audit trail: no such series (an empty family is
    // not rendered at all).
    assert!(!text.contains("keyflow_requests_total"), "{text}");
    assert!(!text.contains("keyflow_audit_"), "{text}");
    let h = AuditHealth {
        written: 5,
        failures: 1,
        ..AuditHealth::default()
    };
    let text = render(&Metrics::new(), Some(h));
    assert!(has(&text, "keyflow_audit_records_total 5"), "{text}");
    assert!(has(&text, "keyflow_audit_failures_total 1"), "{text}");
}

#[test]
fn observed_requests_feed_every_family() {
    let m = Metrics::new();
    let answer = |route, status: u16, op| Answered {
        route,
        status: StatusCode::from_u16(status).unwrap(),
        latency: Duration::from_micros(300),
        op,
    };
    let encrypt = Some(OpOutcome {
        op: Op::Encrypt,
        ok: true,
        items: 1,
    });
    m.observe(&answer(RouteKey::Route(0), 200, encrypt));
    m.observe(&answer(RouteKey::Route(0), 200, encrypt));
    m.observe(&answer(RouteKey::Route(0), 401, None));
    // A status outside the cached ones, and an unknown path.
    m.observe(&answer(RouteKey::Unmatched, 418, None));
    m.observe(&answer(RouteKey::OtherMethod(0), 405, None));
    let text = render(&m, None);
    for line in [
        "# TYPE keyflow_requests_total counter",
        "# TYPE keyflow_request_duration_seconds histogram",
        r#"keyflow_operations_total{operation="encrypt",result="ok"} 2"#,
        r#"keyflow_operation_items_total{operation="encrypt"} 2"#,
        r#"keyflow_requests_total{route="/api/encryption/encrypt",operation="encrypt",status="200"} 2"#,
        r#"keyflow_requests_total{route="/api/encryption/encrypt",operation="encrypt",status="401"} 1"#,
        r#"keyflow_requests_total{route="unmatched",operation="unknown",status="418"} 1"#,
        r#"keyflow_requests_total{route="/api/encryption/encrypt",operation="unknown",status="405"} 1"#,
        r#"keyflow_request_duration_seconds_count{route="/api/encryption/encrypt",operation="encrypt",status_class="2xx"} 2"#,
        r#"keyflow_request_duration_seconds_bucket{route="/api/encryption/encrypt",operation="encrypt",status_class="2xx",le="0.0005"} 2"#,
        r#"keyflow_request_duration_seconds_bucket{route="/api/encryption/encrypt",operation="encrypt",status_class="2xx",le="0.00025"} 0"#,
        r#"keyflow_request_duration_seconds_count{route="/api/encryption/encrypt",operation="encrypt",status_class="4xx"} 1"#,
    ] {
        assert!(has(&text, line), "missing `{line}` in\n{text}");
    }
}
