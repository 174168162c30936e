//! SQL identifiers (table and column names): validated once, always quoted.

use std::fmt;

use crate::error::{Error, Result};

/// Prefix reserved for KeyFlow's own objects (the checkpoint table, statement aliases).
pub const RESERVED_PREFIX: &str = "keyflow_";

/// A validated SQL identifier: `^[A-Za-z_][A-Za-z0-9_]{0,62}$`. It is interpolated into
/// SQL only through [`Ident::quoted`], so no input can change a statement's shape.
/// Names are case-sensitive (they are quoted): on PostgreSQL, a table created without
/// quotes is lowercase.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ident(String);

impl Ident {
    /// Validates `name`. `what` names the argument in the error ("table", "column").
    pub fn new(what: &'static str, name: &str) -> Result<Self> {
        let mut chars = name.chars();
        let valid_first = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        let valid_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_first || !valid_rest || name.len() > 63 {
            return Err(Error::InvalidIdentifier {
                what,
                reason: "must match ^[A-Za-z_][A-Za-z0-9_]{0,62}$",
            });
        }
        Ok(Self(name.to_owned()))
    }

    /// Like [`Ident::new`], and refuses names starting with [`RESERVED_PREFIX`] (so the
    /// engine can never be pointed at its own checkpoint table).
    pub fn user_table(name: &str) -> Result<Self> {
        let id = Self::new("table", name)?;
        if id.0.to_ascii_lowercase().starts_with(RESERVED_PREFIX) {
            return Err(Error::InvalidIdentifier {
                what: "table",
                reason: "names starting with 'keyflow_' are reserved",
            });
        }
        Ok(id)
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a quoted SQL identifier (`"name"`), valid in SQLite and PostgreSQL.
    /// Validation guarantees there is no quote to escape.
    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ident({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["users", "_x", "A1_b2", &"a".repeat(63)] {
            assert_eq!(Ident::new("table", ok).unwrap().as_str(), ok);
        }
        assert_eq!(Ident::new("column", "ssn").unwrap().quoted(), "\"ssn\"");
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "",
            "1abc",
            "a b",
            "a;DROP TABLE x",
            "a\"b",
            "a.b",
            "a-b",
            "é",
            "users--",
            &"a".repeat(64),
        ] {
            assert!(Ident::new("table", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reserved_prefix() {
        assert!(Ident::user_table("keyflow_reencrypt_checkpoint").is_err());
        assert!(Ident::user_table("KEYFLOW_x").is_err());
        assert!(Ident::user_table("keyflowish").is_ok());
        assert!(Ident::new("column", "keyflow_x").is_ok());
    }
}
