//! The one answer to "is this production?", for every part of KeyFlow.
//!
//! `KEYFLOW_ENV` and its alias `NODE_ENV` (the old system's name) are read the same way
//! everywhere — the CLI's rules (signed key routes, no `--dev`, TLS, the 32-character
//! KEK password) and the transport layers alike — so no value can harden one part and
//! leave another open. Values are compared case-insensitively after trimming; an empty
//! value counts as unset. When both are set they must agree: `KEYFLOW_ENV=development`
//! with `NODE_ENV=production` is refused rather than resolved by precedence, since one
//! of them is a mistake and guessing which would silently drop (or impose) every
//! production rule.

use crate::config::ConfigError;

/// The variables read, in the order they are reported.
pub const ENVIRONMENT_VARS: [&str; 2] = ["KEYFLOW_ENV", "NODE_ENV"];

/// Where KeyFlow runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    /// Every enforcement on.
    Production,
    /// `development`, `dev`, `test`, or nothing set.
    Development,
}

impl Environment {
    /// Is this production?
    pub fn is_production(self) -> bool {
        self == Environment::Production
    }

    /// Resolves `KEYFLOW_ENV` / `NODE_ENV` from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut not_unicode = None;
        let env = Self::from_lookup(|var| match std::env::var(var) {
            Ok(v) => Some(v),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                not_unicode.get_or_insert(var);
                None
            }
        });
        match not_unicode {
            Some(var) => Err(ConfigError::NotUnicode { var }),
            None => env,
        }
    }

    /// Resolves `KEYFLOW_ENV` / `NODE_ENV` from `lookup(VAR)`. An unknown value names its
    /// variable; two set values that disagree are an error naming both.
    pub fn from_lookup<F>(mut lookup: F) -> Result<Self, ConfigError>
    where
        F: FnMut(&'static str) -> Option<String>,
    {
        let mut found: Option<(&'static str, String, Environment)> = None;
        for var in ENVIRONMENT_VARS {
            let Some(value) = lookup(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
            else {
                continue;
            };
            let env = match value.to_ascii_lowercase().as_str() {
                "production" => Environment::Production,
                "development" | "dev" | "test" => Environment::Development,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: var,
                        reason: format!("expected production, development or test, got `{value}`"),
                    })
                }
            };
            match &found {
                Some((first, first_value, first_env)) if *first_env != env => {
                    return Err(ConfigError::Invalid {
                        name: var,
                        reason: format!(
                            "`{value}` disagrees with {first}=`{first_value}`; set one of them, or both to the same value"
                        ),
                    })
                }
                Some(_) => {}
                None => found = Some((var, value, env)),
            }
        }
        Ok(found.map_or(Environment::Development, |(_, _, env)| env))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(vars: &[(&'static str, &str)]) -> Result<Environment, String> {
        let map: HashMap<&str, String> = vars.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        Environment::from_lookup(|k| map.get(k).cloned()).map_err(|e| e.to_string())
    }

    #[test]
    fn any_case_of_production_is_production_for_either_name() {
        for value in ["production", "Production", "PRODUCTION", " production\n"] {
            for var in ENVIRONMENT_VARS {
                assert_eq!(
                    resolve(&[(var, value)]),
                    Ok(Environment::Production),
                    "{var}={value:?}"
                );
            }
        }
        assert_eq!(
            resolve(&[("KEYFLOW_ENV", "Production"), ("NODE_ENV", "production")]),
            Ok(Environment::Production)
        );
    }

    #[test]
    fn development_names_and_unset() {
        assert_eq!(resolve(&[]), Ok(Environment::Development));
        assert_eq!(
            resolve(&[("KEYFLOW_ENV", ""), ("NODE_ENV", " ")]),
            Ok(Environment::Development)
        );
        for value in ["development", "Dev", "TEST"] {
            assert_eq!(
                resolve(&[("NODE_ENV", value)]),
                Ok(Environment::Development)
            );
        }
        // Two development spellings agree.
        assert_eq!(
            resolve(&[("KEYFLOW_ENV", "test"), ("NODE_ENV", "development")]),
            Ok(Environment::Development)
        );
    }

    #[test]
    fn disagreement_is_refused_whichever_way() {
        for (k, n) in [("development", "production"), ("Production", "dev")] {
            let e = resolve(&[("KEYFLOW_ENV", k), ("NODE_ENV", n)]).unwrap_err();
            assert!(
                e.starts_with("NODE_ENV: ") && e.contains("disagrees with KEYFLOW_ENV"),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_values_name_their_variable() {
        let e = resolve(&[("KEYFLOW_ENV", "prod")]).unwrap_err();
        assert!(
            e.starts_with("KEYFLOW_ENV: ") && e.contains("`prod`"),
            "{e}"
        );
        let e = resolve(&[("KEYFLOW_ENV", "production"), ("NODE_ENV", "staging")]).unwrap_err();
        assert!(e.starts_with("NODE_ENV: "), "{e}");
    }
}
