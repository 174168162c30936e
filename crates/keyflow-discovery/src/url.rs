//! Target URLs as they may be shown: without a password.

/// `url` with the password of its user-info and any `password=` query parameter
/// replaced by `***` (`postgres://app:***@db/app`). SQLite paths are returned as given.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let mut out = url[..rest_start].to_owned();
    // The last '@' ends the user-info even when the password holds '/', '?' or '@'
    // unencoded; over-redacting a URL with '@' in its query is the safe error.
    let tail = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => out.push_str(&format!("{user}:***")),
                None => out.push_str(userinfo),
            }
            &rest[at..]
        }
        None => rest,
    };
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://app:s3cr3t@db.example:5432/app?sslmode=verify-full"),
            "postgres://app:***@db.example:5432/app?sslmode=verify-full"
        );
        assert_eq!(
            redact("postgresql://app:p%40ss:w@rd@db/app"),
            "postgresql://app:***@db/app"
        );
        assert_eq!(
            redact("postgres://db/app?user=app&password=s3cr3t"),
            "postgres://db/app?user=app&password=***"
        );
        assert_eq!(redact("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(
            redact("postgres://app:pa/s?s@db/app"),
            "postgres://app:***@db/app"
        );
        assert_eq!(redact("sqlite:/tmp/app.db"), "sqlite:/tmp/app.db");
        assert_eq!(
            redact("sqlite:///tmp/app.db?mode=ro"),
            "sqlite:///tmp/app.db?mode=ro"
        );
    }
}
