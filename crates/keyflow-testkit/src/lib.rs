//! What KeyFlow's tests share, in one `publish = false` crate that only dev-dependencies
//! name: throwaway keystores (in memory, SQLite, PostgreSQL), a service harness, and a
//! clock that tests move instead of sleeping.
//!
//! Helpers here fail by panicking: they are test code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test support fails by panicking

pub mod memory;
