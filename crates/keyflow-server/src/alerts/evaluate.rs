//! The pure part of alerting: a [`Snapshot`] of measured facts plus the previous
//! evaluation in, the five alerts of the old design out. No I/O, no clock: the caller
//! passes `now`, so the rules are unit-tested with made-up snapshots.

use serde::Serialize;

use super::config::AlertConfig;

/// How bad a firing alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// The five alerts of the old design, in the order they are listed.
pub const ALERT_NAMES: [&str; 5] = [
    KEYS_EXPIRING,
    ROTATION_FAILED,
    DECRYPT_ERRORS,
    CACHE_HIT_RATE,
    PLAIN_HTTP,
];

/// More than N active key versions reach the end of their cryptoperiod within D days.
pub const KEYS_EXPIRING: &str = "keys_expiring";
/// The last scheduler pass failed (wholly, or for some purposes).
pub const ROTATION_FAILED: &str = "rotation_failed";
/// The share of failed decrypt operations in the window is above the threshold.
pub const DECRYPT_ERRORS: &str = "decrypt_error_rate";
/// The key-cache hit rate in the window is below the threshold.
pub const CACHE_HIT_RATE: &str = "cache_hit_rate_low";
/// Plain-HTTP requests reached a production server in the window.
pub const PLAIN_HTTP: &str = "plain_http_in_production";

/// One alert's state, as `/status`, `keyflow status` and the webhook show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Stable name (one of [`ALERT_NAMES`], or an integrity alert of `/status`).
    pub name: &'static str,
    /// How bad it is when firing.
    pub severity: Severity,
    /// Whether it fires now.
    pub firing: bool,
    /// Since when it fires (Unix ms; `None` when not firing or unknown).
    #[serde(skip)]
    pub since: Option<i64>,
    /// The measured value the threshold applies to.
    pub value: f64,
    /// The threshold.
    pub threshold: f64,
    /// One line for humans (counts and names, never secrets).
    pub summary: String,
}

/// A count of events and of failures among them, over one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Events in the window.
    pub total: u64,
    /// The "bad" ones among them (decrypt errors; cache misses).
    pub bad: u64,
}

/// The last scheduler outcome, as persisted (audit trail) or, without a trail, as
/// this instance saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationState {
    /// When the current run of failed passes started (Unix ms); `None`: the last pass
    /// succeeded, or no pass is known.
    pub failing_since: Option<i64>,
    /// Purposes the last pass failed for (empty when the whole pass failed).
    pub failed_purposes: Vec<String>,
    /// The whole pass failed (e.g. the keystore did not answer).
    pub pass_failed: bool,
}

/// What the gatherer measured at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Key ids (`purpose:vN`) of active versions whose cryptoperiod ends within the
    /// configured horizon (or whose usage budget is spent).
    pub expiring: Vec<String>,
    /// The scheduler's persisted outcome.
    pub rotation: RotationState,
    /// Decrypt operations / failed ones, over the decrypt window.
    pub decrypts: Window,
    /// Key-cache lookups / misses, over the cache window.
    pub cache: Window,
    /// Plain-HTTP requests turned away, over the plain-HTTP window.
    pub plain_http: u64,
    /// Is this a production server? (Plain HTTP is only turned away there.)
    pub production: bool,
}

/// Evaluates the five alerts at `now` (Unix ms). `previous` is the last evaluation
/// (empty at first): an alert that was already firing keeps its `since`.
pub fn evaluate(config: &AlertConfig, snap: &Snapshot, previous: &[Alert], now: i64) -> Vec<Alert> {
    let since = |name: &str, firing: bool| {
        firing.then(|| {
            previous
                .iter()
                .find(|a| a.name == name && a.firing)
                .and_then(|a| a.since)
                .unwrap_or(now)
        })
    };
    let mut out = Vec::with_capacity(ALERT_NAMES.len());

    let n = snap.expiring.len() as u64;
    let firing = n > u64::from(config.expiring_keys);
    out.push(Alert {
        name: KEYS_EXPIRING,
        severity: Severity::Warning,
        firing,
        since: since(KEYS_EXPIRING, firing),
        value: n as f64,
        threshold: f64::from(config.expiring_keys),
        summary: if n == 0 {
            format!(
                "no active key reaches the end of its cryptoperiod within {} days",
                config.expiring_days
            )
        } else {
            format!(
                "{n} active key version(s) reach the end of their cryptoperiod within {} days: {}",
                config.expiring_days,
                shorten(&snap.expiring)
            )
        },
    });

    let r = &snap.rotation;
    let firing = r.failing_since.is_some();
    let failed = if r.pass_failed {
        1
    } else {
        r.failed_purposes.len()
    };
    out.push(Alert {
        name: ROTATION_FAILED,
        severity: Severity::Critical,
        firing,
        // Persisted: the first failure after the last successful pass, whatever this
        // instance saw.
        since: r.failing_since,
        value: if firing { failed.max(1) as f64 } else { 0.0 },
        threshold: 0.0,
        summary: match (firing, r.pass_failed) {
            (false, _) => "the last scheduler pass succeeded (or none ran yet)".to_owned(),
            (true, true) => {
                "the last scheduler pass failed; see the scheduler.failed audit records".to_owned()
            }
            (true, false) => format!(
                "the last scheduler pass failed to rotate or deprecate: {}",
                shorten(&r.failed_purposes)
            ),
        },
    });

    out.push(rate_alert(
        DECRYPT_ERRORS,
        Severity::Critical,
        snap.decrypts,
        config.decrypt_error_rate,
        config.decrypt_min_samples,
        true,
        since,
        |rate, w| {
            format!(
                "{} of {} decrypt operations failed in the last {} s ({:.1} %)",
                w.bad,
                w.total,
                config.decrypt_window.as_secs(),
                rate * 100.0
            )
        },
    ));

    out.push(rate_alert(
        CACHE_HIT_RATE,
        Severity::Warning,
        snap.cache,
        config.cache_hit_rate,
        config.cache_min_samples,
        false,
        since,
        |rate, w| {
            format!(
                "key cache hit rate {:.1} % over {} lookups in the last {} s",
                rate * 100.0,
                w.total,
                config.cache_window.as_secs()
            )
        },
    ));

    let firing = snap.production && snap.plain_http > 0;
    out.push(Alert {
        name: PLAIN_HTTP,
        severity: Severity::Warning,
        firing,
        since: since(PLAIN_HTTP, firing),
        value: snap.plain_http as f64,
        threshold: 0.0,
        summary: if !snap.production {
            "not production: plain HTTP is not turned away".to_owned()
        } else {
            format!(
                "{} plain-HTTP request(s) turned away in the last {} s",
                snap.plain_http,
                config.plain_http_window.as_secs()
            )
        },
    });
    out
}

/// A ratio alert: `good` of `w.total` (hits) against a lower bound, or `w.bad` of
/// `w.total` (errors) against an upper bound; silent below `min` samples.
#[allow(clippy::too_many_arguments)] // one call per alert, all named at the call site
fn rate_alert(
    name: &'static str,
    severity: Severity,
    w: Window,
    threshold: f64,
    min: u64,
    upper: bool,
    since: impl Fn(&str, bool) -> Option<i64>,
    describe: impl Fn(f64, Window) -> String,
) -> Alert {
    let enough = w.total >= min && w.total > 0;
    let rate = if w.total == 0 {
        if upper {
            0.0
        } else {
            1.0
        }
    } else {
        w.bad as f64 / w.total as f64
    };
    let rate = if upper { rate } else { 1.0 - rate };
    let firing = enough
        && if upper {
            rate > threshold
        } else {
            rate < threshold
        };
    Alert {
        name,
        severity,
        firing,
        since: since(name, firing),
        value: rate,
        threshold,
        summary: if enough {
            describe(rate, w)
        } else {
            format!(
                "{} samples in the window, fewer than the {min} needed",
                w.total
            )
        },
    }
}

/// The first few names, then how many more.
fn shorten(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AlertConfig {
        AlertConfig::default()
    }

    fn get<'a>(alerts: &'a [Alert], name: &str) -> &'a Alert {
        alerts.iter().find(|a| a.name == name).unwrap()
    }

    #[test]
    fn a_quiet_snapshot_fires_nothing_and_lists_all_five() {
        let alerts = evaluate(&config(), &Snapshot::default(), &[], 1_000);
        let names: Vec<_> = alerts.iter().map(|a| a.name).collect();
        assert_eq!(names, ALERT_NAMES);
        assert!(
            alerts.iter().all(|a| !a.firing && a.since.is_none()),
            "{alerts:?}"
        );
    }

    #[test]
    fn more_than_five_expiring_keys_fire_and_keep_their_since() {
        let mut snap = Snapshot {
            expiring: (1..=5).map(|i| format!("p{i}:v1")).collect(),
            ..Snapshot::default()
        };
        let a = evaluate(&config(), &snap, &[], 1_000);
        assert!(!get(&a, KEYS_EXPIRING).firing, "five is not more than five");
        snap.expiring.push("p6:v1".into());
        let b = evaluate(&config(), &snap, &a, 2_000);
        let e = get(&b, KEYS_EXPIRING);
        assert!(e.firing);
        assert_eq!((e.since, e.value, e.threshold), (Some(2_000), 6.0, 5.0));
        assert!(
            e.summary.contains("p1:v1") && e.summary.contains("and 1 more"),
            "{}",
            e.summary
        );
        let c = evaluate(&config(), &snap, &b, 3_000);
        assert_eq!(
            get(&c, KEYS_EXPIRING).since,
            Some(2_000),
            "still the first instant"
        );
        snap.expiring.pop();
        let d = evaluate(&config(), &snap, &c, 4_000);
        assert_eq!(get(&d, KEYS_EXPIRING).since, None, "resolved");
    }

    #[test]
    fn rotation_failures_come_from_the_persisted_state() {
        let snap = Snapshot {
            rotation: RotationState {
                failing_since: Some(500),
                failed_purposes: vec!["userData".into()],
                pass_failed: false,
            },
            ..Snapshot::default()
        };
        let a = evaluate(&config(), &snap, &[], 9_000);
        let r = get(&a, ROTATION_FAILED);
        assert!(r.firing);
        assert_eq!(
            (r.since, r.value),
            (Some(500), 1.0),
            "since the first failure, not now"
        );
        assert!(r.summary.contains("userData"), "{}", r.summary);
        let whole = Snapshot {
            rotation: RotationState {
                failing_since: Some(700),
                failed_purposes: vec![],
                pass_failed: true,
            },
            ..Snapshot::default()
        };
        let r = evaluate(&config(), &whole, &[], 9_000);
        assert!(get(&r, ROTATION_FAILED)
            .summary
            .contains("scheduler.failed"));
    }

    #[test]
    fn decrypt_errors_need_the_minimum_sample_count_and_the_threshold() {
        let c = config();
        let at = |total, bad| {
            let snap = Snapshot {
                decrypts: Window { total, bad },
                ..Snapshot::default()
            };
            get(&evaluate(&c, &snap, &[], 1), DECRYPT_ERRORS).clone()
        };
        assert!(
            !at(c.decrypt_min_samples - 1, c.decrypt_min_samples - 1).firing,
            "too few samples"
        );
        assert!(at(100, 6).firing, "6 % > 5 %");
        assert!(!at(100, 5).firing, "5 % is not above 5 %");
        assert!(!at(0, 0).firing);
        let a = at(100, 50);
        assert_eq!((a.value, a.threshold), (0.5, 0.05));
    }

    #[test]
    fn a_low_cache_hit_rate_fires_only_with_enough_lookups() {
        let c = config();
        let at = |lookups, misses| {
            let snap = Snapshot {
                cache: Window {
                    total: lookups,
                    bad: misses,
                },
                ..Snapshot::default()
            };
            get(&evaluate(&c, &snap, &[], 1), CACHE_HIT_RATE).clone()
        };
        assert!(!at(10, 10).firing, "10 lookups are too few");
        let low = at(200, 100);
        assert!(low.firing);
        assert_eq!(low.value, 0.5);
        assert!(!at(200, 20).firing, "90 % hits");
        assert!(!at(0, 0).firing);
    }

    #[test]
    fn plain_http_fires_only_in_production() {
        let mut snap = Snapshot {
            plain_http: 3,
            ..Snapshot::default()
        };
        assert!(!get(&evaluate(&config(), &snap, &[], 1), PLAIN_HTTP).firing);
        snap.production = true;
        let a = evaluate(&config(), &snap, &[], 1);
        assert!(get(&a, PLAIN_HTTP).firing);
        assert_eq!(get(&a, PLAIN_HTTP).value, 3.0);
        snap.plain_http = 0;
        assert!(!get(&evaluate(&config(), &snap, &a, 2), PLAIN_HTTP).firing);
    }
}
