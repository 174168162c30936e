//! A statement as data: SQL text with `$1`, `$2`, … placeholders (which both SQLite
//! and PostgreSQL read) and its values. The shared code builds these; a backend binds
//! them to its driver's query ([`bind_all`]) and runs them.

use std::borrow::Cow;

use sqlx::query::Query;
use sqlx::{Database, Encode, Type};

/// One bound value. `None` is SQL `NULL` of that type.
#[derive(Clone)]
pub enum Arg<'a> {
    /// A 64-bit integer.
    Int(Option<i64>),
    /// Text.
    Text(Option<Cow<'a, str>>),
    /// Bytes (wrapped keys, row MACs, token hashes).
    Bytes(Option<Cow<'a, [u8]>>),
}

// Values may be wrapped keys: never printed.
impl std::fmt::Debug for Arg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Arg::Int(_) => "Int",
            Arg::Text(_) => "Text",
            Arg::Bytes(_) => "Bytes",
        })
    }
}

impl From<i64> for Arg<'_> {
    fn from(n: i64) -> Self {
        Arg::Int(Some(n))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(n: Option<i64>) -> Self {
        Arg::Int(n)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Arg::Text(Some(Cow::Borrowed(s)))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(s: &'a String) -> Self {
        Arg::Text(Some(Cow::Borrowed(s)))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(s: Option<&'a str>) -> Self {
        Arg::Text(s.map(Cow::Borrowed))
    }
}

impl From<String> for Arg<'_> {
    fn from(s: String) -> Self {
        Arg::Text(Some(Cow::Owned(s)))
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(b: &'a [u8]) -> Self {
        Arg::Bytes(Some(Cow::Borrowed(b)))
    }
}

impl<'a> From<Option<&'a [u8]>> for Arg<'a> {
    fn from(b: Option<&'a [u8]>) -> Self {
        Arg::Bytes(b.map(Cow::Borrowed))
    }
}

impl<const N: usize> From<[u8; N]> for Arg<'_> {
    fn from(b: [u8; N]) -> Self {
        Arg::Bytes(Some(Cow::Owned(b.to_vec())))
    }
}

/// SQL text and the values for its placeholders, in order.
#[derive(Debug, Clone)]
pub struct Stmt<'a> {
    sql: Cow<'a, str>,
    args: Vec<Arg<'a>>,
}

impl<'a> Stmt<'a> {
    /// A statement with no values yet.
    pub fn new(sql: impl Into<Cow<'a, str>>) -> Self {
        Self {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// Adds the value of the next placeholder.
    pub fn bind(mut self, value: impl Into<Arg<'a>>) -> Self {
        self.args.push(value.into());
        self
    }

    /// The SQL text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The values, in placeholder order.
    pub fn args(&self) -> &[Arg<'a>] {
        &self.args
    }
}

/// Binds `args` to a driver query, in order. Generic over the driver: both bind the
/// same Rust types, so the backends share this.
pub fn bind_all<'q, DB>(
    mut query: Query<'q, DB, DB::Arguments<'q>>,
    args: &'q [Arg<'_>],
) -> Query<'q, DB, DB::Arguments<'q>>
where
    DB: Database,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    Option<&'q [u8]>: Encode<'q, DB> + Type<DB>,
{
    for arg in args {
        query = match arg {
            Arg::Int(n) => query.bind(*n),
            Arg::Text(t) => query.bind(t.as_deref()),
            Arg::Bytes(b) => query.bind(b.as_deref()),
        };
    }
    query
}
