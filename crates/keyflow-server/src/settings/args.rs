//! `keyflow serve`'s arguments: its flags, each with its environment variable, and the
//! transport variables as given (parsed by [`TransportConfig::from_lookup`]).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;
use keyflow_transport::{ConfigError, TransportConfig};

use super::{RETENTION_DAYS_ENV, VERIFY_SECS_ENV};

/// Options of `keyflow serve`. Each also comes from its environment variable (flags
/// win); the secrets (`KEK_PASSWORD`, `REQUEST_INTEGRITY_SECRET`) are never flags, so
/// they are read from the environment only.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Development mode: no configuration needed. Creates the KEK (with a generated
    /// password kept in the data directory) and a self-signed certificate on first
    /// start, and prints an admin token once. Refused in production.
    #[arg(long)]
    pub dev: bool,
    /// Address to listen on.
    #[arg(long, env = "KEYFLOW_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// TLS certificate chain (PEM).
    #[arg(long, env = "KEYFLOW_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "KEYFLOW_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// TLS cipher suites the server accepts, comma-separated, in its order of
    /// preference (rustls names, e.g. TLS13_AES_256_GCM_SHA384). Default: all AEAD
    /// suites, AES-128-GCM first, then AES-256-GCM, then ChaCha20-Poly1305.
    #[arg(long, env = "KEYFLOW_TLS_CIPHER_SUITES", value_delimiter = ',')]
    pub tls_cipher_suites: Vec<String>,
    /// Largest JSON request body, bytes.
    #[arg(long, env = "KEYFLOW_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Largest streamed body of /files/encrypt and /files/decrypt, bytes (10 GiB).
    #[arg(long, env = "KEYFLOW_MAX_FILE_BYTES", default_value_t = 10 << 30)]
    pub max_file_bytes: u64,
    /// Streamed /files/* responses in progress at once; beyond, 503 `overloaded`.
    #[arg(long, env = "KEYFLOW_MAX_FILE_STREAMS", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub max_file_streams: u64,
    /// A streamed /files/* response whose client reads nothing for this many
    /// seconds is aborted.
    #[arg(long, env = "KEYFLOW_FILE_IDLE_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub file_idle_secs: u64,
    /// Requests in progress beyond which the server answers 503.
    #[arg(long, env = "KEYFLOW_MAX_CONCURRENCY", default_value_t = 1024)]
    pub max_concurrency: usize,
    /// Per-request timeout, seconds.
    #[arg(long, env = "KEYFLOW_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Most connections open at once; beyond, new ones wait in the listen backlog.
    #[arg(long, env = "KEYFLOW_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
    pub max_connections: u64,
    /// Most TLS handshakes in progress at once; beyond, new connections wait.
    #[arg(long, env = "KEYFLOW_MAX_TLS_HANDSHAKES", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub max_tls_handshakes: u64,
    /// A connection with no request in progress for this many seconds is shut down
    /// (HTTP/2: GOAWAY; HTTP/1.1: closed).
    #[arg(long, env = "KEYFLOW_IDLE_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,
    /// While the server waits for a request body, at least this many bytes must
    /// arrive within every `--body-window-secs`; otherwise the request fails.
    #[arg(long, env = "KEYFLOW_BODY_MIN_BYTES", default_value_t = 8192,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_min_bytes: u64,
    /// The window of `--body-min-bytes`, seconds.
    #[arg(long, env = "KEYFLOW_BODY_WINDOW_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_window_secs: u64,
    /// Scheduler pass interval, seconds (0: this instance never runs the scheduler).
    #[arg(long, env = "KEYFLOW_SCHEDULER_INTERVAL_SECS", default_value_t = 3600)]
    pub scheduler_interval_secs: u64,
    /// Cached keys are used only while confirmed against the keystore within this
    /// many seconds; past it the instance reports not-ready and stops using them.
    #[arg(long, env = "KEYFLOW_CACHE_MAX_STALENESS_SECS", default_value_t = 10)]
    pub cache_max_staleness_secs: u64,
    /// How often the key cache is revalidated against the keystore, milliseconds.
    #[arg(long, env = "KEYFLOW_REVALIDATE_MS", default_value_t = 250)]
    pub revalidate_ms: u64,
    /// Transition period: /decrypt, /batch/decrypt, /decrypt-fields and /rewrap also
    /// read the legacy Node.js system's packages and field documents whose keys were
    /// imported (`keyflow legacy import`); counted in /status (docs/legacy-migration.md).
    #[arg(long, env = "KEYFLOW_LEGACY_READS")]
    pub legacy_reads: bool,
    /// Audit trail: on (default) or off (refused in production).
    #[arg(long, env = "KEYFLOW_AUDIT")]
    pub audit: Option<String>,
    /// When the audit trail cannot be written: closed (refuse the request; the
    /// production default) or open (answer anyway; the default otherwise).
    #[arg(long, env = "KEYFLOW_AUDIT_FAILURE")]
    pub audit_failure: Option<String>,
    /// Seconds between verification passes over the audit chain (default 3600).
    #[arg(long, env = VERIFY_SECS_ENV)]
    pub audit_verify_secs: Option<String>,
    /// Days of audit records kept; older ones are pruned daily by the instance that
    /// runs the scheduler (default: kept forever).
    #[arg(long, env = RETENTION_DAYS_ENV)]
    pub audit_retention_days: Option<String>,
    /// The transport layers' variables.
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl ServeArgs {
    /// Parses `keyflow serve`'s flags (`flags` without the program name), with their
    /// variables and defaults, as the CLI does: how tests start the server.
    pub fn parse_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        /// `serve` alone, for [`ServeArgs::parse_flags`].
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        let argv =
            std::iter::once(OsString::from("serve")).chain(flags.into_iter().map(Into::into));
        <Serve as clap::Parser>::try_parse_from(argv).map(|s| s.args)
    }
}

/// The transport variables (docs: [`TransportConfig::from_lookup`]), as flags too. Kept
/// as given: [`TransportConfig::from_lookup`] is their one parser, so the values and
/// error messages are those of every other user of the transport crate.
#[derive(Debug, Clone, Default, Args)]
pub struct TransportArgs {
    /// `host[:port]` plain-HTTP GET/HEAD requests are redirected to in production.
    #[arg(long, env = "KEYFLOW_PUBLIC_HOST", value_parser = clap::value_parser!(OsString))]
    pub public_host: Option<OsString>,
    /// Proxy IP addresses whose X-Forwarded-For / X-Forwarded-Proto are believed
    /// (comma-separated).
    #[arg(long, env = "KEYFLOW_TRUSTED_PROXIES", value_parser = clap::value_parser!(OsString))]
    pub trusted_proxies: Option<OsString>,
    /// The browser origin allowed by CORS (a comma list is accepted).
    #[arg(long, env = "FRONTEND_URL", value_parser = clap::value_parser!(OsString))]
    pub frontend_url: Option<OsString>,
    /// Further allowed origins, comma-separated (`wss://` is read as `https://`).
    #[arg(long, env = "ALLOWED_WS_ORIGINS", value_parser = clap::value_parser!(OsString))]
    pub allowed_ws_origins: Option<OsString>,
    /// Sensitive headers must arrive as KeyFlow ciphertexts: true or false (default:
    /// on in production).
    #[arg(long, env = "HEADER_ENCRYPTION_STRICT", value_parser = clap::value_parser!(OsString))]
    pub header_encryption_strict: Option<OsString>,
    /// SHA-256 fingerprints of the only client certificates accepted (comma-separated).
    #[arg(long, env = "KEYFLOW_PINNED_CLIENT_CERTS", value_parser = clap::value_parser!(OsString))]
    pub pinned_client_certs: Option<OsString>,
    /// The sensitive header names, comma-separated (replaces the default list).
    #[arg(long, env = "KEYFLOW_SENSITIVE_HEADERS", value_parser = clap::value_parser!(OsString))]
    pub sensitive_headers: Option<OsString>,
    /// Oldest request-signature format accepted: 1 (default) or 2.
    #[arg(long, env = "KEYFLOW_INTEGRITY_MIN_VERSION", value_parser = clap::value_parser!(OsString))]
    pub integrity_min_version: Option<OsString>,
}

impl TransportArgs {
    /// The transport configuration: these values, and from the environment the
    /// production switch (`KEYFLOW_ENV`/`NODE_ENV`) and `REQUEST_INTEGRITY_SECRET`.
    pub fn resolve(&self) -> Result<TransportConfig, ConfigError> {
        self.resolve_with(std::env::var_os)
    }

    /// [`TransportArgs::resolve`] with `env(VAR)` in place of the process environment.
    pub fn resolve_with(
        &self,
        mut env: impl FnMut(&'static str) -> Option<OsString>,
    ) -> Result<TransportConfig, ConfigError> {
        let mut not_unicode = None;
        let config = TransportConfig::from_lookup(|var| {
            let value = match var {
                "KEYFLOW_PUBLIC_HOST" => self.public_host.clone(),
                "KEYFLOW_TRUSTED_PROXIES" => self.trusted_proxies.clone(),
                "FRONTEND_URL" => self.frontend_url.clone(),
                "ALLOWED_WS_ORIGINS" => self.allowed_ws_origins.clone(),
                "HEADER_ENCRYPTION_STRICT" => self.header_encryption_strict.clone(),
                "KEYFLOW_PINNED_CLIENT_CERTS" => self.pinned_client_certs.clone(),
                "KEYFLOW_SENSITIVE_HEADERS" => self.sensitive_headers.clone(),
                "KEYFLOW_INTEGRITY_MIN_VERSION" => self.integrity_min_version.clone(),
                other => env(other),
            }?;
            match value.into_string() {
                Ok(v) => Some(v),
                Err(_) => {
                    not_unicode.get_or_insert(var);
                    None
                }
            }
        });
        match not_unicode {
            Some(var) => Err(ConfigError::NotUnicode { var }),
            None => config,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail by panicking
    use super::*;

    #[test]
    fn transport_values_come_from_the_arguments_and_secrets_from_the_environment() {
        let args = TransportArgs {
            frontend_url: Some("https://App.example.com".into()),
            integrity_min_version: Some("2".into()),
            ..TransportArgs::default()
        };
        let env = |var: &'static str| match var {
            "NODE_ENV" => Some(OsString::from("development")),
            // Never taken from the process environment for an argument's variable.
            "FRONTEND_URL" => Some(OsString::from("https://other.example.com")),
            _ => None,
        };
        let config = args.resolve_with(env).unwrap();
        assert_eq!(config.allowed_origins, vec!["https://app.example.com"]);
        assert_eq!(config.integrity_min_version, 2);
        assert!(!config.production);
        let bad = TransportArgs {
            integrity_min_version: Some("3".into()),
            ..TransportArgs::default()
        };
        let e = bad.resolve_with(|_| None).unwrap_err().to_string();
        assert!(e.starts_with("KEYFLOW_INTEGRITY_MIN_VERSION: "), "{e}");
        let production = |var: &'static str| (var == "KEYFLOW_ENV").then(|| "production".into());
        let e = TransportArgs::default()
            .resolve_with(production)
            .unwrap_err()
            .to_string();
        assert!(e.contains("REQUEST_INTEGRITY_SECRET"), "{e}");
    }
}
