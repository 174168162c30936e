//! [`TransportConfig`]: what the layers enforce, read from the environment or built in code.

use std::env::VarError;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use http::uri::{Authority, Uri};
use http::HeaderName;
use zeroize::Zeroizing;

/// How far a signed timestamp may be from the server clock, either way: 5 minutes.
pub const DEFAULT_INTEGRITY_WINDOW: Duration = Duration::from_secs(5 * 60);
/// Largest body the integrity layer buffers to hash it: 1 MiB.
pub const DEFAULT_INTEGRITY_MAX_BODY: usize = 1024 * 1024;
/// Most nonces remembered at once; past this, signed requests get `503` until old
/// nonces leave the window.
pub const DEFAULT_INTEGRITY_MAX_NONCES: usize = 100_000;
/// Shortest accepted request-integrity secret (HMAC-SHA256 key), in bytes.
pub const MIN_INTEGRITY_SECRET_LEN: usize = 32;
/// Headers that carry personal or key data and, under `HEADER_ENCRYPTION_STRICT`, must
/// arrive as KeyFlow ciphertexts: a payment card number, a social security number, a
/// bank account number and a wrapped data key.
pub const DEFAULT_SENSITIVE_HEADERS: &[&str] = &[
    "x-card-number",
    "x-ssn",
    "x-account-number",
    "x-encrypted-data-key",
];

/// The environment variables [`TransportConfig::from_env`] reads.
pub const ENV_VARS: &[&str] = &[
    "KEYFLOW_ENV",
    "NODE_ENV",
    "KEYFLOW_PUBLIC_HOST",
    "KEYFLOW_TRUSTED_PROXIES",
    "FRONTEND_URL",
    "ALLOWED_WS_ORIGINS",
    "REQUEST_INTEGRITY_SECRET",
    "HEADER_ENCRYPTION_STRICT",
    "KEYFLOW_PINNED_CLIENT_CERTS",
    "KEYFLOW_SENSITIVE_HEADERS",
    "KEYFLOW_INTEGRITY_MIN_VERSION",
];

/// The shared secret for request integrity (the HMAC-SHA256 key).
///
/// At least [`MIN_INTEGRITY_SECRET_LEN`] bytes; zeroized on drop; `Debug` prints only
/// `IntegritySecret(<redacted>)`; no `PartialEq` or `Hash`.
#[derive(Clone)]
pub struct IntegritySecret(Zeroizing<Vec<u8>>);

impl IntegritySecret {
    /// Takes the secret bytes (for an environment variable, its UTF-8 bytes).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, ConfigError> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.len() < MIN_INTEGRITY_SECRET_LEN {
            return Err(ConfigError::Invalid {
                name: "REQUEST_INTEGRITY_SECRET",
                reason: format!("must be at least {MIN_INTEGRITY_SECRET_LEN} bytes"),
            });
        }
        Ok(Self(bytes))
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for IntegritySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IntegritySecret(<redacted>)")
    }
}

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A variable or field holds a value that cannot be used. `name` is the environment
    /// variable (from [`TransportConfig::from_env`]) or the field (from
    /// [`TransportConfig::validate`]). Secret values never appear in `reason`.
    #[error("{name}: {reason}")]
    Invalid {
        /// The environment variable or config field.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An environment variable is set but is not valid UTF-8.
    #[error("{var} is not valid UTF-8")]
    NotUnicode {
        /// The environment variable.
        var: &'static str,
    },
    /// A variable that production requires is not set.
    #[error("{var} must be set when KEYFLOW_ENV/NODE_ENV is production")]
    MissingInProduction {
        /// The environment variable.
        var: &'static str,
    },
}

/// Everything the transport layers enforce.
///
/// Build it with [`TransportConfig::from_env`], or with struct-update syntax over
/// [`Default`] (development: nothing enforced but the security headers):
///
/// ```
/// use keyflow_transport::TransportConfig;
/// let cfg = TransportConfig {
///     production: true,
///     public_host: Some("kms.example.com".into()),
///     ..TransportConfig::default()
/// };
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Production mode: plain HTTP is redirected (GET/HEAD) or refused (anything else).
    pub production: bool,
    /// `host[:port]` that plain-HTTP GET/HEAD requests are redirected to. Never taken
    /// from the request's `Host` header. Without it, production refuses plain HTTP
    /// instead of redirecting.
    pub public_host: Option<String>,
    /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed (exact IPs).
    pub trusted_proxies: Vec<IpAddr>,
    /// Origins (`scheme://host[:port]`) that may make cross-origin requests and open
    /// WebSockets. `*` and `null` are never allowed.
    pub allowed_origins: Vec<String>,
    /// The HMAC-SHA256 key for request integrity.
    pub integrity_secret: Option<IntegritySecret>,
    /// Path prefixes where a valid signature is mandatory (`/v1/keys` covers `/v1/keys`
    /// and `/v1/keys/...`, not `/v1/keysets`; `/` covers everything). Elsewhere a signature
    /// is checked only if the request carries one and a secret is configured.
    pub integrity_required_prefixes: Vec<String>,
    /// How far a signed timestamp may be from the server clock, either way; nonces are
    /// remembered this long after their timestamp.
    pub integrity_window: Duration,
    /// Largest body the integrity layer buffers; larger signed bodies get `413`.
    pub integrity_max_body: usize,
    /// Most nonces remembered at once (by the in-process table).
    pub integrity_max_nonces: usize,
    /// Where seen nonces are kept. `None`: an in-process table — enough for one
    /// instance; several instances behind a load balancer must share one
    /// (KeyFlow's server keeps them in its keystore), or a signed request replays once
    /// on each of them.
    pub nonce_store: Option<std::sync::Arc<dyn crate::NonceStore>>,
    /// Oldest signature format accepted: 1 (default: old clients keep working, and
    /// are told apart by [`crate::IntegrityVerified::version`]) or 2 (refuses format 1,
    /// which signs neither `Host` nor `Authorization`).
    pub integrity_min_version: u8,
    /// `HEADER_ENCRYPTION_STRICT`: sensitive headers must carry KeyFlow ciphertexts.
    pub header_encryption_strict: bool,
    /// The sensitive header names (case-insensitive).
    pub sensitive_headers: Vec<String>,
    /// SHA-256 fingerprints (of the DER certificate) of the only client certificates
    /// accepted. Empty: no pinning.
    pub pinned_client_certs: Vec<[u8; 32]>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            production: false,
            public_host: None,
            trusted_proxies: Vec::new(),
            allowed_origins: Vec::new(),
            integrity_secret: None,
            integrity_required_prefixes: Vec::new(),
            integrity_window: DEFAULT_INTEGRITY_WINDOW,
            integrity_max_body: DEFAULT_INTEGRITY_MAX_BODY,
            integrity_max_nonces: DEFAULT_INTEGRITY_MAX_NONCES,
            nonce_store: None,
            integrity_min_version: 1,
            header_encryption_strict: false,
            sensitive_headers: DEFAULT_SENSITIVE_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
            pinned_client_certs: Vec::new(),
        }
    }
}

impl TransportConfig {
    /// Reads the process environment; see [`TransportConfig::from_lookup`] for the
    /// variables and their meaning.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut not_unicode = None;
        let config = Self::from_lookup(|var| match std::env::var(var) {
            Ok(value) => Some(value),
            Err(VarError::NotPresent) => None,
            Err(VarError::NotUnicode(_)) => {
                not_unicode.get_or_insert(var);
                None
            }
        });
        match not_unicode {
            Some(var) => Err(ConfigError::NotUnicode { var }),
            None => config,
        }
    }

    /// Builds the configuration from `lookup(VAR)`; empty values count as unset.
    ///
    /// | variable | meaning |
    /// | --- | --- |
    /// | `KEYFLOW_ENV`, `NODE_ENV` | `production` (any case) turns on every enforcement; `development`, `dev`, `test` or unset do not; anything else, or the two disagreeing, is an error ([`crate::Environment`]) |
    /// | `KEYFLOW_PUBLIC_HOST` | `host[:port]` for HTTPS redirects (no scheme, no path) |
    /// | `KEYFLOW_TRUSTED_PROXIES` | comma list of proxy IP addresses |
    /// | `FRONTEND_URL` | allowed browser origin (a comma list is accepted) |
    /// | `ALLOWED_WS_ORIGINS` | comma list of further allowed origins; `ws://`/`wss://` are read as `http://`/`https://`, the origin a browser sends |
    /// | `REQUEST_INTEGRITY_SECRET` | HMAC key (its UTF-8 bytes, at least 32); required in production |
    /// | `HEADER_ENCRYPTION_STRICT` | `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`); unset means on in production, off otherwise |
    /// | `KEYFLOW_PINNED_CLIENT_CERTS` | comma list of SHA-256 fingerprints, 64 hex digits each (`:` separators allowed) |
    /// | `KEYFLOW_SENSITIVE_HEADERS` | comma list replacing [`DEFAULT_SENSITIVE_HEADERS`] |
    /// | `KEYFLOW_INTEGRITY_MIN_VERSION` | oldest request-signature format accepted, `1` (default) or `2` |
    ///
    /// `integrity_required_prefixes` is left empty: the application knows its routes
    /// and sets it (the KeyFlow server passes its key-management prefixes).
    pub fn from_lookup<F>(mut lookup: F) -> Result<Self, ConfigError>
    where
        F: FnMut(&'static str) -> Option<String>,
    {
        // Read before `get` borrows `lookup`; not trimmed: surrounding whitespace may be
        // part of an existing secret.
        let raw_secret = lookup("REQUEST_INTEGRITY_SECRET");
        let mut get = |var: &'static str| {
            lookup(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        // The one resolver every part of KeyFlow uses (see [`crate::Environment`]).
        let production = crate::Environment::from_lookup(&mut get)?.is_production();
        let mut config = Self {
            production,
            ..Self::default()
        };

        if let Some(host) = get("KEYFLOW_PUBLIC_HOST") {
            let host = parse_public_host(&host).map_err(|r| invalid("KEYFLOW_PUBLIC_HOST", r))?;
            config.public_host = Some(host);
        }

        if let Some(list) = get("KEYFLOW_TRUSTED_PROXIES") {
            for entry in split_list(&list) {
                let ip: IpAddr = entry.parse().map_err(|_| {
                    invalid(
                        "KEYFLOW_TRUSTED_PROXIES",
                        format!("`{entry}` is not an IP address (CIDR ranges are not supported)"),
                    )
                })?;
                config.trusted_proxies.push(ip);
            }
        }

        for var in ["FRONTEND_URL", "ALLOWED_WS_ORIGINS"] {
            if let Some(list) = get(var) {
                for entry in split_list(&list) {
                    let origin = normalize_origin(entry)
                        .map_err(|r| invalid(var, format!("`{entry}`: {r}")))?;
                    if !config.allowed_origins.contains(&origin) {
                        config.allowed_origins.push(origin);
                    }
                }
            }
        }

        config.integrity_secret = match raw_secret {
            Some(secret) if !secret.is_empty() => Some(IntegritySecret::new(secret)?),
            _ if config.production => {
                return Err(ConfigError::MissingInProduction {
                    var: "REQUEST_INTEGRITY_SECRET",
                })
            }
            _ => None,
        };

        config.header_encryption_strict = match get("HEADER_ENCRYPTION_STRICT") {
            None => config.production,
            Some(value) => parse_bool(&value).ok_or_else(|| {
                invalid(
                    "HEADER_ENCRYPTION_STRICT",
                    format!("expected true or false, got `{value}`"),
                )
            })?,
        };
        if config.production && !config.header_encryption_strict {
            tracing::warn!("HEADER_ENCRYPTION_STRICT is explicitly off in production");
        }

        if let Some(list) = get("KEYFLOW_PINNED_CLIENT_CERTS") {
            for entry in split_list(&list) {
                let pin = parse_fingerprint(entry).ok_or_else(|| {
                    invalid(
                        "KEYFLOW_PINNED_CLIENT_CERTS",
                        format!("`{entry}` is not a SHA-256 fingerprint (64 hex digits)"),
                    )
                })?;
                config.pinned_client_certs.push(pin);
            }
        }

        if let Some(list) = get("KEYFLOW_SENSITIVE_HEADERS") {
            config.sensitive_headers.clear();
            for entry in split_list(&list) {
                let name = HeaderName::from_bytes(entry.as_bytes()).map_err(|_| {
                    invalid(
                        "KEYFLOW_SENSITIVE_HEADERS",
                        format!("`{entry}` is not a header name"),
                    )
                })?;
                config.sensitive_headers.push(name.as_str().to_owned());
            }
        }

        if let Some(v) = get("KEYFLOW_INTEGRITY_MIN_VERSION") {
            config.integrity_min_version = match v.as_str() {
                "1" => 1,
                "2" => 2,
                _ => {
                    return Err(invalid(
                        "KEYFLOW_INTEGRITY_MIN_VERSION",
                        format!("expected 1 or 2, got `{v}`"),
                    ))
                }
            };
        }

        Ok(config)
    }

    /// Checks a configuration built in code. [`crate::try_layer`] calls this;
    /// [`crate::layer`] logs the error and runs anyway, failing closed where a value
    /// cannot be used (no redirect without a valid host, required paths refused without
    /// a secret, invalid origins never matched).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(host) = &self.public_host {
            parse_public_host(host).map_err(|r| invalid("public_host", r))?;
        }
        for origin in &self.allowed_origins {
            normalize_origin(origin)
                .map_err(|r| invalid("allowed_origins", format!("`{origin}`: {r}")))?;
        }
        for prefix in &self.integrity_required_prefixes {
            if !prefix.starts_with('/') {
                return Err(invalid(
                    "integrity_required_prefixes",
                    format!("`{prefix}` does not start with `/`"),
                ));
            }
        }
        if !self.integrity_required_prefixes.is_empty() && self.integrity_secret.is_none() {
            return Err(invalid(
                "integrity_secret",
                "required because integrity_required_prefixes is not empty".into(),
            ));
        }
        if self.integrity_window.as_secs() == 0 {
            return Err(invalid(
                "integrity_window",
                "must be at least one second".into(),
            ));
        }
        if self.integrity_max_nonces == 0 {
            return Err(invalid("integrity_max_nonces", "must be at least 1".into()));
        }
        if !(1..=2).contains(&self.integrity_min_version) {
            return Err(invalid("integrity_min_version", "must be 1 or 2".into()));
        }
        for name in &self.sensitive_headers {
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                invalid(
                    "sensitive_headers",
                    format!("`{name}` is not a header name"),
                )
            })?;
        }
        Ok(())
    }
}

fn invalid(name: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { name, reason }
}

fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_fingerprint(entry: &str) -> Option<[u8; 32]> {
    let digits: String = entry.chars().filter(|c| *c != ':').collect();
    let mut pin = [0u8; 32];
    hex::decode_to_slice(&digits, &mut pin).ok()?;
    Some(pin)
}

/// `host[:port]`, lowercased; no scheme, user info, path or empty host.
pub(crate) fn parse_public_host(host: &str) -> Result<String, String> {
    let authority: Authority = host
        .parse()
        .map_err(|_| format!("`{host}` is not host[:port] (no scheme, no path)"))?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(format!(
            "`{host}` is not host[:port] (no user info, non-empty host)"
        ));
    }
    Ok(authority.as_str().to_ascii_lowercase())
}

/// The serialized origin a browser sends for `url`: `scheme://host[:port]`, lowercase,
/// default port dropped. `ws`/`wss` become `http`/`https`.
pub(crate) fn normalize_origin(url: &str) -> Result<String, &'static str> {
    let url = url.trim();
    if url == "*" {
        return Err("wildcard origins are never allowed");
    }
    if url.eq_ignore_ascii_case("null") {
        return Err("the `null` origin is never allowed");
    }
    let uri: Uri = url.parse().map_err(|_| "not a URL")?;
    let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "ws") => "http",
        Some("https" | "wss") => "https",
        Some(_) => return Err("the scheme must be http or https"),
        None => return Err("missing scheme (expected https://host[:port])"),
    };
    let authority = uri.authority().ok_or("missing host")?;
    if authority.as_str().contains('@') {
        return Err("user info is not allowed in an origin");
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return Err("missing host");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("an origin has no path or query");
    }
    let port = match (scheme, authority.port_u16()) {
        (_, None) | ("http", Some(80)) | ("https", Some(443)) => String::new(),
        (_, Some(port)) => format!(":{port}"),
    };
    Ok(format!("{scheme}://{host}{port}"))
}

#[cfg(test)]
mod tests;
