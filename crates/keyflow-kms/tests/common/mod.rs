//! Shared test setup: a KEK in a temporary directory over an in-memory keystore
//! (`keyflow-testkit`), so kms's tests need no SQL backend.
#![allow(dead_code, unused_imports)]

pub use keyflow_testkit::{Env, FAST_KDF};
