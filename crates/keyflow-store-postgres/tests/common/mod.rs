//! The shared PostgreSQL test support (`keyflow_store_postgres::test_support`).
#![allow(unused_imports)] // each test file uses a different part

pub use keyflow_store_postgres::test_support::*;
