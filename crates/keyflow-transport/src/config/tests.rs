//! Unit tests of [`super::TransportConfig`]'s parsing and refusals.

use std::collections::HashMap;

use super::*;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn from(vars: &[(&str, &str)]) -> Result<TransportConfig, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    TransportConfig::from_lookup(|k| map.get(k).cloned())
}

fn err_name(r: Result<TransportConfig, ConfigError>) -> String {
    match r {
        Err(ConfigError::Invalid { name, .. }) => name.to_owned(),
        Err(ConfigError::MissingInProduction { var }) => format!("missing {var}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn empty_environment_is_development_default() {
    let cfg = from(&[]).unwrap();
    assert!(!cfg.production);
    assert!(!cfg.header_encryption_strict);
    assert!(cfg.integrity_secret.is_none());
    assert_eq!(cfg.integrity_window, Duration::from_secs(300));
    assert_eq!(cfg.integrity_max_body, 1 << 20);
    assert_eq!(cfg.sensitive_headers, DEFAULT_SENSITIVE_HEADERS);
    cfg.validate().unwrap();
}

#[test]
fn full_production_environment() {
    let pin = "AB".repeat(32);
    let colon_pin = vec!["cd"; 32].join(":");
    let cfg = from(&[
        ("NODE_ENV", "Production"),
        ("KEYFLOW_PUBLIC_HOST", "KMS.example.com:8443"),
        ("KEYFLOW_TRUSTED_PROXIES", "10.0.0.1, ::1,"),
        ("FRONTEND_URL", "https://App.example.com:443/"),
        (
            "ALLOWED_WS_ORIGINS",
            "wss://ws.example.com, https://app.example.com",
        ),
        ("REQUEST_INTEGRITY_SECRET", SECRET),
        ("KEYFLOW_PINNED_CLIENT_CERTS", &format!("{pin},{colon_pin}")),
        ("KEYFLOW_SENSITIVE_HEADERS", "X-Tax-Id"),
    ])
    .unwrap();
    assert!(cfg.production);
    assert!(
        cfg.header_encryption_strict,
        "strict defaults to on in production"
    );
    assert_eq!(cfg.public_host.as_deref(), Some("kms.example.com:8443"));
    assert_eq!(
        cfg.trusted_proxies,
        vec![
            "10.0.0.1".parse::<IpAddr>().unwrap(),
            "::1".parse().unwrap()
        ]
    );
    assert_eq!(
        cfg.allowed_origins,
        vec!["https://app.example.com", "https://ws.example.com"]
    );
    assert_eq!(cfg.pinned_client_certs, vec![[0xAB; 32], [0xCD; 32]]);
    assert_eq!(cfg.sensitive_headers, vec!["x-tax-id"]);
    assert_eq!(cfg.integrity_secret.unwrap().expose(), SECRET.as_bytes());
}

#[test]
fn conflicting_environment_names_are_refused() {
    // Formerly KEYFLOW_ENV won here while the CLI saw production: refused now.
    assert_eq!(
        err_name(from(&[
            ("KEYFLOW_ENV", "development"),
            ("NODE_ENV", "production")
        ])),
        "NODE_ENV"
    );
    let cfg = from(&[
        ("KEYFLOW_ENV", "PRODUCTION"),
        ("NODE_ENV", "production"),
        ("REQUEST_INTEGRITY_SECRET", SECRET),
    ])
    .unwrap();
    assert!(cfg.production);
}

#[test]
fn production_requires_the_integrity_secret() {
    assert_eq!(
        err_name(from(&[("KEYFLOW_ENV", "production")])),
        "missing REQUEST_INTEGRITY_SECRET"
    );
}

#[test]
fn strict_can_be_set_explicitly() {
    let on = from(&[("HEADER_ENCRYPTION_STRICT", "1")]).unwrap();
    assert!(on.header_encryption_strict);
    let off = from(&[
        ("KEYFLOW_ENV", "production"),
        ("REQUEST_INTEGRITY_SECRET", SECRET),
        ("HEADER_ENCRYPTION_STRICT", "false"),
    ])
    .unwrap();
    assert!(!off.header_encryption_strict);
}

#[test]
fn malformed_values_name_their_variable() {
    let cases: &[(&str, &str)] = &[
        ("NODE_ENV", "staging"),
        ("KEYFLOW_PUBLIC_HOST", "https://kms.example.com"),
        ("KEYFLOW_PUBLIC_HOST", "kms.example.com/path"),
        ("KEYFLOW_PUBLIC_HOST", "user@kms.example.com"),
        ("KEYFLOW_TRUSTED_PROXIES", "10.0.0.0/8"),
        ("FRONTEND_URL", "*"),
        ("FRONTEND_URL", "null"),
        ("FRONTEND_URL", "app.example.com"),
        ("FRONTEND_URL", "https://app.example.com/path"),
        ("ALLOWED_WS_ORIGINS", "ftp://x.example.com"),
        ("REQUEST_INTEGRITY_SECRET", "short"),
        ("HEADER_ENCRYPTION_STRICT", "maybe"),
        ("KEYFLOW_PINNED_CLIENT_CERTS", "abcd"),
        ("KEYFLOW_SENSITIVE_HEADERS", "bad header"),
        ("KEYFLOW_INTEGRITY_MIN_VERSION", "3"),
    ];
    for (var, value) in cases {
        assert_eq!(&err_name(from(&[(var, value)])), var, "{var}={value}");
    }
}

#[test]
fn secret_never_appears_in_errors_or_debug() {
    let err = from(&[("REQUEST_INTEGRITY_SECRET", "tiny-secret")]).unwrap_err();
    assert!(!err.to_string().contains("tiny-secret"), "{err}");
    let secret = IntegritySecret::new(SECRET).unwrap();
    assert_eq!(format!("{secret:?}"), "IntegritySecret(<redacted>)");
    let cfg = TransportConfig {
        integrity_secret: Some(secret),
        ..TransportConfig::default()
    };
    assert!(!format!("{cfg:?}").contains("0123456789"));
}

#[test]
fn validate_catches_code_built_mistakes() {
    let bad_host = TransportConfig {
        public_host: Some("https://x".into()),
        ..TransportConfig::default()
    };
    assert!(bad_host.validate().is_err());
    let wildcard = TransportConfig {
        allowed_origins: vec!["*".into()],
        ..TransportConfig::default()
    };
    assert!(wildcard.validate().is_err());
    let no_secret = TransportConfig {
        integrity_required_prefixes: vec!["/v1/keys".into()],
        ..TransportConfig::default()
    };
    assert!(no_secret.validate().is_err());
    let relative = TransportConfig {
        integrity_required_prefixes: vec!["v1".into()],
        integrity_secret: Some(IntegritySecret::new(SECRET).unwrap()),
        ..TransportConfig::default()
    };
    assert!(relative.validate().is_err());
}

#[test]
fn origins_normalize_like_browsers() {
    assert_eq!(
        normalize_origin("http://localhost:3000").unwrap(),
        "http://localhost:3000"
    );
    assert_eq!(
        normalize_origin("HTTP://Example.COM:80").unwrap(),
        "http://example.com"
    );
    assert_eq!(
        normalize_origin("https://[::1]:8443").unwrap(),
        "https://[::1]:8443"
    );
    assert!(normalize_origin("https://a.example.com?x=1").is_err());
}
