//! What KeyFlow's tests share, in one `publish = false` crate that only dev-dependencies
//! name:
//! - [`memory::MemoryKeystore`], a keystore in a map, for fast unit tests;
//! - [`env::Env`], a KEK file in a temporary directory and a keystore (in memory, or a
//!   SQLite file with feature `sqlite`), with the service and token setup tests repeat;
//! - [`postgres`] (feature `postgres`), a throwaway PostgreSQL database per test from
//!   `TEST_DATABASE_URL`;
//! - [`flaky::FlakyAudit`], an audit store whose appends fail on demand;
//! - [`compliance`], readers of a compliance report's JSON (server and CLI tests);
//! - [`ciphertext`], a KeyFlow ciphertext without a keystore (detector tests);
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

/// The text form (`kf1:…`) of `plaintext` encrypted under a fixed key (`userData` v1,
/// no context): a real KeyFlow ciphertext for tests that only need to recognise one.
pub fn ciphertext(plaintext: &[u8]) -> String {
    use keyflow_core::envelope::write;
    use keyflow_core::{Context, DataKey, KeyVersion, OsRng, PayloadKind, Purpose, SecretKey};
    let key = DataKey::derive(
        Purpose::new("userData").unwrap(),
        KeyVersion::FIRST,
        &SecretKey::from_slice(&[7; 32]).unwrap(),
    )
    .unwrap();
    let env = key
        .encrypt(PayloadKind::Text, plaintext, &Context::new(), &OsRng)
        .unwrap();
    write::to_text(&env)
}
