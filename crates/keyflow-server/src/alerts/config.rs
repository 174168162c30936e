//! Alert thresholds and windows from `KEYFLOW_ALERT_*` (docs/alerts.md). A value that
//! does not parse is a startup error naming its variable, never a silent default.

use std::time::Duration;

use axum::http::Uri;

/// Every variable read, for documentation and error messages.
pub const ALERT_VARS: [&str; 12] = [
    "KEYFLOW_ALERT_EXPIRING_KEYS",
    "KEYFLOW_ALERT_EXPIRING_DAYS",
    "KEYFLOW_ALERT_DECRYPT_ERROR_RATE",
    "KEYFLOW_ALERT_DECRYPT_ERROR_WINDOW_SECS",
    "KEYFLOW_ALERT_DECRYPT_ERROR_MIN_SAMPLES",
    "KEYFLOW_ALERT_CACHE_HIT_RATE",
    "KEYFLOW_ALERT_CACHE_WINDOW_SECS",
    "KEYFLOW_ALERT_CACHE_MIN_SAMPLES",
    "KEYFLOW_ALERT_PLAIN_HTTP_WINDOW_SECS",
    "KEYFLOW_ALERT_EVAL_SECS",
    "KEYFLOW_ALERT_WEBHOOK_URL",
    "KEYFLOW_ALERT_WEBHOOK_ATTEMPTS",
];

/// An unusable `KEYFLOW_ALERT_*` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {reason}")]
pub struct AlertConfigError {
    /// The variable.
    pub var: &'static str,
    /// What is wrong (never the value of a URL, which may carry credentials).
    pub reason: String,
}

/// Where firing/resolved alerts are posted (Alertmanager webhook JSON). `Debug` and
/// `Display` hide any userinfo and the query, which may carry credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Uri);

impl WebhookUrl {
    /// Parses an absolute `http://` or `https://` URL with a host.
    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: Uri = s.trim().parse().map_err(|_| "not a valid URL".to_owned())?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            Some(_) => return Err("only http:// and https:// URLs are supported".into()),
            None => return Err("an absolute http:// or https:// URL is required".into()),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        Ok(Self(uri))
    }

    /// The parsed URL.
    pub fn uri(&self) -> &Uri {
        &self.0
    }

    /// Scheme, host, port and path only.
    pub fn redacted(&self) -> String {
        let host = self.0.host().unwrap_or_default();
        let port = self
            .0
            .port_u16()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        format!(
            "{}://{host}{port}{}",
            self.0.scheme_str().unwrap_or("http"),
            self.0.path()
        )
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Thresholds, windows and the webhook of the alerts ([`super::evaluate`]).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertConfig {
    /// `keys_expiring` fires above this many expiring versions (default 5).
    pub expiring_keys: u32,
    /// … reaching the end of their cryptoperiod within this many days (default 7).
    pub expiring_days: u32,
    /// `decrypt_error_rate` fires above this share of failed decrypts (default 0.05).
    pub decrypt_error_rate: f64,
    /// … over this window (default 300 s).
    pub decrypt_window: Duration,
    /// … once the window holds at least this many decrypt operations (default 20).
    pub decrypt_min_samples: u64,
    /// `cache_hit_rate_low` fires below this hit rate (default 0.8).
    pub cache_hit_rate: f64,
    /// … over this window (default 300 s).
    pub cache_window: Duration,
    /// … once the window holds at least this many lookups (default 100).
    pub cache_min_samples: u64,
    /// `plain_http_in_production` fires on any plain-HTTP request in this window
    /// (default 300 s).
    pub plain_http_window: Duration,
    /// How often the alerts are evaluated (default 15 s).
    pub eval_every: Duration,
    /// Where state changes are posted, if anywhere.
    pub webhook: Option<WebhookUrl>,
    /// Attempts per webhook delivery, the first included (default 5).
    pub webhook_attempts: u32,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            expiring_keys: 5,
            expiring_days: 7,
            decrypt_error_rate: 0.05,
            decrypt_window: Duration::from_secs(300),
            decrypt_min_samples: 20,
            cache_hit_rate: 0.8,
            cache_window: Duration::from_secs(300),
            cache_min_samples: 100,
            plain_http_window: Duration::from_secs(300),
            eval_every: Duration::from_secs(15),
            webhook: None,
            webhook_attempts: 5,
        }
    }
}

impl AlertConfig {
    /// Reads the `KEYFLOW_ALERT_*` variables from the process environment.
    pub fn from_env() -> Result<Self, AlertConfigError> {
        Self::from_lookup(|var| std::env::var(var).ok())
    }

    /// Reads the variables through `lookup`; unset or blank keeps the default.
    pub fn from_lookup<F>(lookup: F) -> Result<Self, AlertConfigError>
    where
        F: Fn(&'static str) -> Option<String>,
    {
        let get = |var: &'static str| {
            lookup(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let err = |var: &'static str, reason: &str| AlertConfigError {
            var,
            reason: reason.to_owned(),
        };
        let whole = |var: &'static str,
                     min: u64,
                     max: u64,
                     default: u64|
         -> Result<u64, AlertConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| {
                        err(var, &format!("expected a whole number from {min} to {max}"))
                    }),
            }
        };
        let ratio = |var: &'static str, default: f64| -> Result<f64, AlertConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && (0.0..=1.0).contains(r))
                    .ok_or_else(|| err(var, "expected a ratio from 0 to 1 (e.g. 0.05)")),
            }
        };
        let d = Self::default();
        let secs = |var, default: Duration| -> Result<Duration, AlertConfigError> {
            Ok(Duration::from_secs(whole(
                var,
                1,
                86_400,
                default.as_secs(),
            )?))
        };
        let small = |var, default: u32, max: u64| -> Result<u32, AlertConfigError> {
            Ok(u32::try_from(whole(var, 0, max, u64::from(default))?).unwrap_or(default))
        };
        let webhook = match get("KEYFLOW_ALERT_WEBHOOK_URL") {
            None => None,
            Some(v) => {
                Some(WebhookUrl::parse(&v).map_err(|r| err("KEYFLOW_ALERT_WEBHOOK_URL", &r))?)
            }
        };
        Ok(Self {
            expiring_keys: small("KEYFLOW_ALERT_EXPIRING_KEYS", d.expiring_keys, 1_000_000)?,
            expiring_days: small("KEYFLOW_ALERT_EXPIRING_DAYS", d.expiring_days, 3650)?,
            decrypt_error_rate: ratio("KEYFLOW_ALERT_DECRYPT_ERROR_RATE", d.decrypt_error_rate)?,
            decrypt_window: secs("KEYFLOW_ALERT_DECRYPT_ERROR_WINDOW_SECS", d.decrypt_window)?,
            decrypt_min_samples: whole(
                "KEYFLOW_ALERT_DECRYPT_ERROR_MIN_SAMPLES",
                1,
                u64::from(u32::MAX),
                d.decrypt_min_samples,
            )?,
            cache_hit_rate: ratio("KEYFLOW_ALERT_CACHE_HIT_RATE", d.cache_hit_rate)?,
            cache_window: secs("KEYFLOW_ALERT_CACHE_WINDOW_SECS", d.cache_window)?,
            cache_min_samples: whole(
                "KEYFLOW_ALERT_CACHE_MIN_SAMPLES",
                1,
                u64::from(u32::MAX),
                d.cache_min_samples,
            )?,
            plain_http_window: secs("KEYFLOW_ALERT_PLAIN_HTTP_WINDOW_SECS", d.plain_http_window)?,
            eval_every: secs("KEYFLOW_ALERT_EVAL_SECS", d.eval_every)?,
            webhook,
            webhook_attempts: u32::try_from(whole(
                "KEYFLOW_ALERT_WEBHOOK_ATTEMPTS",
                1,
                20,
                u64::from(d.webhook_attempts),
            )?)
            .unwrap_or(d.webhook_attempts),
        })
    }

    /// The longest window: how much sample history the gatherer keeps.
    pub fn longest_window(&self) -> Duration {
        self.decrypt_window
            .max(self.cache_window)
            .max(self.plain_http_window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&'static str, &str)]) -> Result<AlertConfig, AlertConfigError> {
        let map: HashMap<&str, String> = vars.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        AlertConfig::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(resolve(&[]).unwrap(), AlertConfig::default());
        assert_eq!(
            resolve(&[("KEYFLOW_ALERT_EXPIRING_KEYS", " ")]).unwrap(),
            AlertConfig::default()
        );
        let c = resolve(&[
            ("KEYFLOW_ALERT_DECRYPT_ERROR_RATE", "0.2"),
            ("KEYFLOW_ALERT_DECRYPT_ERROR_WINDOW_SECS", "60"),
            ("KEYFLOW_ALERT_CACHE_MIN_SAMPLES", "7"),
            ("KEYFLOW_ALERT_WEBHOOK_URL", "http://127.0.0.1:9093/hook"),
        ])
        .unwrap();
        assert_eq!(c.decrypt_error_rate, 0.2);
        assert_eq!(c.decrypt_window, Duration::from_secs(60));
        assert_eq!(c.cache_min_samples, 7);
        assert_eq!(c.webhook.unwrap().redacted(), "http://127.0.0.1:9093/hook");
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("KEYFLOW_ALERT_DECRYPT_ERROR_RATE", "5%"),
            ("KEYFLOW_ALERT_DECRYPT_ERROR_RATE", "1.5"),
            ("KEYFLOW_ALERT_CACHE_HIT_RATE", "NaN"),
            ("KEYFLOW_ALERT_CACHE_WINDOW_SECS", "0"),
            ("KEYFLOW_ALERT_EVAL_SECS", "1h"),
            ("KEYFLOW_ALERT_EXPIRING_KEYS", "-1"),
            ("KEYFLOW_ALERT_WEBHOOK_ATTEMPTS", "0"),
        ] {
            let e = resolve(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{e}");
        }
    }

    #[test]
    fn webhook_urls_are_checked_and_shown_without_credentials() {
        for bad in ["not a url", "ftp://host/x", "/relative/path", "http://"] {
            let e = resolve(&[("KEYFLOW_ALERT_WEBHOOK_URL", bad)]).unwrap_err();
            assert_eq!(e.var, "KEYFLOW_ALERT_WEBHOOK_URL", "{bad}: {e}");
            assert!(!e.to_string().contains(bad) || bad.len() < 8, "{e}");
        }
        let u =
            WebhookUrl::parse("https://user:s3cret@alerts.example:8443/hook?token=s3cret").unwrap();
        assert!(!format!("{u:?}").contains("s3cret"), "{u:?}");
        assert_eq!(u.redacted(), "https://alerts.example:8443/hook");
    }
}
