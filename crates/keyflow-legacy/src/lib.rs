//! # keyflow-legacy
//!
//! Reads the formats of the legacy Node.js system that KeyFlow replaces (specified in
//! `../shared/legacy/FORMAT.md`, summarized in `docs/legacy-migration.md`) and brings
//! its keys and data into KeyFlow:
//!
//! - [`envelope`], [`kek`]: the password envelope of `master.kek` and of backups
//!   (PBKDF2-HMAC-SHA256 with an unstored iteration count, AES-256-GCM with a 16-byte
//!   IV), the legacy KEK and the DEKs wrapped under it;
//! - [`keys`], [`backup`]: key documents (`mongoexport` JSON lines) and backups 1.0 /
//!   2.0 (checksum verified), every entry checked and refused on its own;
//! - [`package`], [`fields`]: legacy packages and field documents;
//! - [`gcm16`]: the 16-byte-IV AES-GCM (RustCrypto `aes-gcm`, the only use of it in
//!   KeyFlow; 16-byte tags only);
//! - [`import`]: legacy DEKs → read-only key versions wrapped under KeyFlow's KEK, with
//!   a census; [`keyring`] and [`convert`]: legacy data → KeyFlow ciphertexts;
//!   `reencrypt` (feature `reencrypt`): the same conversion as a transform of the
//!   re-encryption engine (`keyflow reencrypt --from-legacy`).
//!
//! The parsing and crypto modules do no I/O; [`import`], [`keyring`] and [`convert`]
//! work through an [`keyflow_kms::EncryptionService`]. Errors never carry key
//! material, plaintext or passwords.
//!
//! ```no_run
//! # async fn demo(service: &keyflow_kms::EncryptionService) -> keyflow_legacy::Result<()> {
//! use keyflow_legacy::{convert, envelope, import, keys, LegacyKek, LegacyKeyring};
//!
//! let kek_text = std::fs::read_to_string("master.kek").unwrap_or_default();
//! let (kek, iterations) = LegacyKek::open(&kek_text, b"legacy KEK password", &envelope::counts(None))?;
//! let docs = keys::parse_key_documents(&std::fs::read_to_string("encryptionkeys.jsonl").unwrap_or_default(), "keys");
//! let census = import::import(service, &kek, vec![docs], false).await?;
//! println!("KEK opened at {iterations} iterations; {} keys imported", census.imported);
//!
//! let ring = LegacyKeyring::load(service).await?;
//! let ct = convert::convert_package(service, &ring, "eyJ2ZXJzaW9uIjoi…", &keyflow_kms::Context::new()).await?;
//! # let _ = ct; Ok(()) }
//! ```

pub mod backup;
pub mod convert;
pub mod envelope;
mod error;
pub mod fields;
pub mod gcm16;
pub mod import;
pub mod kek;
pub mod keyring;
pub mod keys;
pub mod package;
#[cfg(feature = "reencrypt")]
pub mod reencrypt;
mod text;
pub mod write;

pub use error::{LegacyError, Result};
pub use kek::LegacyKek;
pub use keyring::LegacyKeyring;
pub use package::Package;
