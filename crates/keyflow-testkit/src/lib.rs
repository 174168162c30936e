//! What KeyFlow's tests share, in one `publish = false` crate that only dev-dependencies
//! name:
//! - [`memory::MemoryKeystore`], a keystore in a map, for fast unit tests;
//! - [`env::Env`], a KEK file in a temporary directory and a keystore (in memory, or a
//!   SQLite file with feature `sqlite`), with the service and token setup tests repeat;
//! - [`postgres`] (feature `postgres`), a throwaway PostgreSQL database per test from
//!   `TEST_DATABASE_URL`;
//! - [`flaky::FlakyAudit`], an audit store whose appends fail on demand;
//! - [`compliance`], readers of a compliance report's JSON (server and CLI tests);
//! - the clock tests move instead of sleeping is `keyflow_core::ManualClock`.
//!
//! Helpers here fail by panicking: they are test code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test support fails by panicking

pub mod compliance;
pub mod env;
pub mod flaky;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;

pub use env::{Env, FAST_KDF, PASSWORD};
pub use flaky::FlakyAudit;
pub use memory::MemoryKeystore;
