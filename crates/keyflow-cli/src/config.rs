//! Resolves arguments and environment into one [`Config`] value.

use std::path::{Path, PathBuf};

use keyflow_core::kek::{KdfParams, DEFAULT_PBKDF2_ITERATIONS};
use keyflow_kms::kek_provider::KekPassword;
use keyflow_kms::ServiceConfig;
use zeroize::Zeroizing;

use crate::cli::GlobalArgs;
use crate::error::CliError;

/// Where the keystore lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database (shared by several instances).
    Postgres(DatabaseUrl),
}

impl StoreLocation {
    /// For messages: the path, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => path.display().to_string(),
            StoreLocation::Postgres(url) => url.redacted(),
        }
    }
}

/// A `postgres://` URL; may hold a password, so `Debug` prints it redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl DatabaseUrl {
    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.clone();
        };
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        match rest[..authority_end].rsplit_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
            }
            _ => url.clone(),
        }
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The resolved configuration of one run.
#[derive(Debug)]
pub struct Config {
    pub kek_path: PathBuf,
    /// Where servers keep their audit journals (`<data dir>/audit-journal`).
    pub audit_journal_dir: PathBuf,
    pub store: StoreLocation,
    pub production: bool,
    pub strict_mode: bool,
    /// How long unwrapped keys stay cached (`KEYFLOW_CACHE_TTL_SECS`, default 3600).
    pub cache_ttl: std::time::Duration,
}

/// The variable of the key-cache lifetime.
pub const CACHE_TTL_ENV: &str = "KEYFLOW_CACHE_TTL_SECS";

/// The key-cache lifetime from `KEYFLOW_CACHE_TTL_SECS`: whole seconds, 1 to 604800 (a
/// week); unset or blank: one hour. Revocation and rotation do not wait for it (the
/// cache is revalidated), so it bounds only how long an unused key stays unwrapped.
fn cache_ttl(value: Option<&str>) -> Result<std::time::Duration, CliError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(std::time::Duration::from_secs(3600)),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=604_800).contains(n))
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| {
                CliError::Config(format!(
                    "{CACHE_TTL_ENV}: expected a whole number of seconds from 1 to 604800"
                ))
            }),
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// Production or not, from `KEYFLOW_ENV` / `NODE_ENV` through the one resolver the
/// transport layers use too ([`keyflow_transport::Environment`]): case-insensitive,
/// and two values that disagree are a configuration error, never a guess.
pub fn is_production() -> Result<bool, CliError> {
    keyflow_transport::Environment::from_env()
        .map(keyflow_transport::Environment::is_production)
        .map_err(|e| CliError::Config(e.to_string()))
}

fn parse_store(url: &str) -> Result<StoreLocation, CliError> {
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = rest.split('?').next().unwrap_or(rest);
        if path.is_empty() {
            return Err(CliError::Config(
                "KEYFLOW_DATABASE_URL: sqlite URL has no path".into(),
            ));
        }
        return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(StoreLocation::Postgres(DatabaseUrl(url.to_owned())));
    }
    let scheme = url.split(':').next().unwrap_or_default();
    Err(CliError::Config(format!(
        "KEYFLOW_DATABASE_URL: unsupported scheme '{scheme}' (use sqlite:PATH or postgres://…)"
    )))
}

impl Config {
    pub fn resolve(g: &GlobalArgs) -> Result<Self, CliError> {
        let kek_path = g
            .kek_path
            .clone()
            .unwrap_or_else(|| g.data_dir.join("kek.json"));
        let store = match g.database_url.as_deref().filter(|u| !u.trim().is_empty()) {
            Some(url) => parse_store(url.trim())?,
            None => StoreLocation::Sqlite(g.data_dir.join("keyflow.db")),
        };
        Ok(Self {
            kek_path,
            audit_journal_dir: g.data_dir.join("audit-journal"),
            store,
            production: is_production()?,
            strict_mode: env_flag("ENCRYPTION_STRICT_MODE"),
            cache_ttl: cache_ttl(std::env::var(CACHE_TTL_ENV).ok().as_deref())?,
        })
    }

    /// The KEK password from `KEK_PASSWORD`, or from the file named by
    /// `KEYFLOW_KEK_PASSWORD_FILE` (one trailing newline removed).
    pub fn kek_password(&self) -> Result<KekPassword, CliError> {
        let raw = self.kek_password_text()?;
        Ok(KekPassword::new(raw.to_string(), self.production)?)
    }

    /// The KEK password's text, for unlocking KEK files that are not the keystore's
    /// current one (`audit verify` reads retired KEKs).
    pub fn kek_password_text(&self) -> Result<Zeroizing<String>, CliError> {
        let raw = match std::env::var("KEK_PASSWORD") {
            Ok(p) if !p.is_empty() => Zeroizing::new(p),
            _ => match std::env::var_os("KEYFLOW_KEK_PASSWORD_FILE") {
                Some(f) => read_password_file(Path::new(&f))?,
                None => match self.dev_password_file() {
                    Some(f) => read_password_file(&f)?,
                    None => {
                        return Err(CliError::Config(
                            "KEK_PASSWORD is not set (nor KEYFLOW_KEK_PASSWORD_FILE)".into(),
                        ))
                    }
                },
            },
        };
        Ok(raw)
    }

    /// Outside production, the password `serve --dev` generated beside the KEK file
    /// (`dev-kek-password`), so the CLI works on a dev server's data directory as it is.
    fn dev_password_file(&self) -> Option<PathBuf> {
        if self.production {
            return None;
        }
        let f = self.kek_path.parent()?.join("dev-kek-password");
        f.is_file().then_some(f)
    }

    pub fn kdf_params(&self, iterations: Option<u32>) -> Result<KdfParams, CliError> {
        let iterations = iterations.unwrap_or(DEFAULT_PBKDF2_ITERATIONS);
        if self.production && iterations < DEFAULT_PBKDF2_ITERATIONS {
            return Err(CliError::Config(format!(
                "--kdf-iterations below {DEFAULT_PBKDF2_ITERATIONS} is refused in production"
            )));
        }
        Ok(KdfParams { iterations })
    }

    pub fn service_config(&self) -> ServiceConfig {
        ServiceConfig {
            strict_mode: self.strict_mode,
            cache_ttl: self.cache_ttl,
            ..ServiceConfig::default()
        }
    }
}

fn read_password_file(path: &Path) -> Result<Zeroizing<String>, CliError> {
    let s = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        CliError::Config(format!(
            "cannot read KEYFLOW_KEK_PASSWORD_FILE {}: {e}",
            path.display()
        ))
    })?);
    let trimmed = s.strip_suffix('\n').unwrap_or(&s);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(Zeroizing::new(trimmed.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_ttl_default_range_and_refusals() {
        use std::time::Duration;
        assert_eq!(cache_ttl(None).unwrap(), Duration::from_secs(3600));
        assert_eq!(cache_ttl(Some(" ")).unwrap(), Duration::from_secs(3600));
        assert_eq!(cache_ttl(Some("60")).unwrap(), Duration::from_secs(60));
        assert_eq!(
            cache_ttl(Some("604800")).unwrap(),
            Duration::from_secs(604_800)
        );
        for bad in ["0", "-5", "1h", "604801"] {
            let e = cache_ttl(Some(bad)).unwrap_err().to_string();
            assert!(e.starts_with(CACHE_TTL_ENV), "{bad}: {e}");
        }
    }

    #[test]
    fn store_urls() {
        assert_eq!(
            parse_store("sqlite:///tmp/x.db").unwrap(),
            StoreLocation::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            parse_store("sqlite:data/k.db?mode=rwc").unwrap(),
            StoreLocation::Sqlite("data/k.db".into())
        );
        assert!(parse_store("sqlite:").is_err());
        for url in [
            "postgres://kf:pw-123@db:5432/keys",
            "postgresql://kf:pw-123@db/keys?sslmode=require",
        ] {
            let loc = parse_store(url).unwrap();
            assert_eq!(loc, StoreLocation::Postgres(DatabaseUrl(url.into())));
            assert!(!format!("{loc:?}").contains("pw-123"), "{loc:?}");
            assert!(!loc.describe().contains("pw-123"), "{}", loc.describe());
            assert!(loc.describe().contains("kf:***@db"), "{}", loc.describe());
        }
        assert_eq!(
            parse_store("postgres://kf@db/keys").unwrap().describe(),
            "postgres://kf@db/keys"
        );
        let e = parse_store("mysql://x").unwrap_err().to_string();
        assert!(e.contains("mysql"), "{e}");
    }
}
