//! PCI DSS 4.2.1: the TLS versions and suites actually served; plain HTTP.

use crate::pci::is_aead;
use crate::report::{Control, ControlBuilder};
use crate::snapshot::Snapshot;

const GOOD_VERSIONS: [&str; 2] = ["TLSv1.2", "TLSv1.3"];

/// `TLSv1.3` → `1.3`.
fn short(v: &str) -> &str {
    v.strip_prefix("TLSv").unwrap_or(v)
}

pub(crate) fn tls(mut c: ControlBuilder, s: &Snapshot) -> Control {
    let t = &s.tls;
    c.measure("tlsServed", t.served)
        .measure("production", s.production)
        .measure("httpsEnforced", t.https_enforced);
    if t.source.is_empty() {
        c.warn(
            "the TLS settings are unknown to this process (its state was built without them)",
            "Evaluate through `keyflow serve` or `keyflow compliance`, which know what is served.",
        );
        return c.build();
    }
    if t.source == "configuration" {
        c.fact("evaluated from this environment's configuration (what `keyflow serve` would serve), not from a running server");
    }
    if t.served {
        let mut versions: Vec<&str> = t.versions.iter().map(|v| short(v)).collect();
        versions.sort_unstable();
        let range = match (versions.first(), versions.last()) {
            (Some(a), Some(b)) if a != b => format!("TLS {a}–{b} only"),
            (Some(a), _) => format!("TLS {a} only"),
            _ => "no TLS version".to_owned(),
        };
        c.fact(format!("{range}; suites: {}", t.suites.join(", ")));
        c.measure("suites", t.suites.len());
        let old: Vec<&String> = t
            .versions
            .iter()
            .filter(|v| !GOOD_VERSIONS.contains(&v.as_str()))
            .collect();
        let weak: Vec<&String> = t.suites.iter().filter(|x| !is_aead(x)).collect();
        if t.versions.is_empty() || t.suites.is_empty() {
            c.fail(
                "no TLS version or cipher suite is offered",
                "Check KEYFLOW_TLS_CIPHER_SUITES.",
            );
        }
        if !old.is_empty() {
            c.fail(
                format!("protocol versions below TLS 1.2 are offered: {old:?}"),
                "Offer TLS 1.2 and 1.3 only.",
            );
        }
        if !weak.is_empty() {
            c.fail(
                format!("non-AEAD suites are offered: {weak:?}"),
                "Offer AEAD suites only (KEYFLOW_TLS_CIPHER_SUITES).",
            );
        }
        if s.production && !t.https_enforced {
            c.fail(
                "plain HTTP is accepted in production",
                "Run in production mode (KEYFLOW_ENV=production), which redirects or refuses plain HTTP.",
            );
        }
        c.pass();
    } else if t.trusted_proxies > 0 {
        c.warn(
            format!(
                "TLS ends at {} trusted prox{} in front of KeyFlow: its versions and suites cannot be measured here",
                t.trusted_proxies,
                if t.trusted_proxies == 1 { "y" } else { "ies" }
            ),
            "Check the proxy's TLS configuration (TLS 1.2+, AEAD suites) separately.",
        );
        if s.production && !t.https_enforced {
            c.fail(
                "plain HTTP is accepted in production",
                "Run in production mode (KEYFLOW_ENV=production).",
            );
        } else if t.https_enforced {
            c.fact(
                "requests that did not arrive over HTTPS at the proxy are redirected or refused",
            );
        }
    } else if s.production {
        c.fail(
            "plain HTTP is served in production: no TLS certificate and no TLS-terminating proxy",
            "Set KEYFLOW_TLS_CERT and KEYFLOW_TLS_KEY (or KEYFLOW_TRUSTED_PROXIES when TLS ends at a proxy).",
        );
    } else {
        c.warn(
            "plain HTTP (development mode, no TLS certificate configured)",
            "Serve TLS (KEYFLOW_TLS_CERT / KEYFLOW_TLS_KEY, or `keyflow serve --dev`) before card data travels.",
        );
    }
    c.build()
}
