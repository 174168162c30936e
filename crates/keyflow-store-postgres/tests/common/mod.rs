//! The shared PostgreSQL test support (`keyflow_testkit::postgres`).
#![allow(unused_imports)] // each test file uses a different part

pub use keyflow_testkit::postgres::*;
