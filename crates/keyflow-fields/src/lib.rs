//! # keyflow-fields
//!
//! Field-level encryption over a [`keyflow_kms::EncryptionService`]
//! (docs/field-encryption.md has the whole story):
//!
//! - **JSON documents** — [`encrypt_fields`] / [`decrypt_fields`]: selectors into nested
//!   objects and arrays ([`path`]), auto-detection by purpose ([`names`]), per-field
//!   mode (randomized, deterministic, blind index), AAD bound to the field path and the
//!   document id, types preserved, idempotent, sensitive authentication data stripped or
//!   refused ([`SadPolicy`]).
//! - **Detectors and scanning** — [`detect`]: Luhn-valid cards, SSNs, IBANs (mod 97),
//!   e-mails, phones; [`text::find_in_text`] finds them inside free text;
//!   [`detect::scan`] lists the paths holding them in clear.
//! - **Typed ciphertext** — [`Encrypted<T>`] and [`BlindIndexValue`], storable through
//!   sqlx (SQLite, PostgreSQL) and serde.
//! - **Rust structs** — `#[derive(Encrypt)]` generates an `Encrypted…` twin struct and
//!   `encrypt` / `decrypt` / `reencrypt` (see [`Encrypt`]).
//! - **Blind-index search** — [`blind::search_terms`] across every live key version,
//!   [`blind::bits_for_distinct_values`].
//!
//! ```no_run
//! # async fn demo(service: &keyflow_kms::EncryptionService) -> keyflow_fields::Result<()> {
//! use keyflow_fields::{decrypt_fields, encrypt_fields, Binding, EncryptOptions, Selection};
//! use keyflow_kms::Purpose;
//! use serde_json::json;
//!
//! let doc = json!({"name": "Ada", "ssn": "123-45-6789", "cards": [{"cardNumber": "4111111111111111", "cvv": "123"}]});
//! let purpose = Purpose::new("financialData")?;
//! let selection = Selection::parse_list("ssn,cards[*].cardNumber")?;
//! let options = EncryptOptions { binding: Binding::doc("user-42"), ..Default::default() };
//! let (stored, report) = encrypt_fields(service, doc, &selection, &purpose, &options).await?;
//! assert_eq!(report.stripped, ["cards[0].cvv"]); // never stored (PCI DSS 3.3.1)
//! let (plain, _) = decrypt_fields(service, stored, None, &options.binding).await?;
//! # Ok(()) }
//! ```

pub mod blind;
pub mod detect;
pub mod document;
mod error;
pub use keyflow_field_names as names;
pub mod path;
pub mod record;
pub mod text;
mod typed;

pub use document::plaintext_where_required;
pub use document::{
    decrypt_fields, decrypt_fields_with, encrypt_fields, Binding, DecryptOptions, DecryptReport,
    EncryptOptions, EncryptReport, FieldSpec, Mode, SadPolicy, Selection,
};
pub use error::{FieldsError, Result};
/// Derives field encryption for a struct with named fields.
///
/// ```ignore
/// #[derive(Clone, serde::Serialize, serde::Deserialize, keyflow_fields::Encrypt)]
/// #[keyflow(purpose = "userData", auto_detect)]  // container purpose; encrypt names on its lists
/// struct User {
///     id: String,                                  // not sensitive: copied as is
///     ssn: String,                                 // auto-detected (pii): randomized
///     #[encrypted(blind_index, bits = 16)]         // randomized + `email_bidx` for search
///     email: String,
///     #[encrypted(deterministic, purpose = "financialData")]
///     bank_account: String,
///     #[keyflow(plain)]                            // opt out of auto-detection
///     full_name: String,
/// }
/// // generates `EncryptedUser { id: String, ssn: Encrypted<String>, email: Encrypted<String>,
/// //   email_bidx: BlindIndexValue, bank_account: Encrypted<String>, full_name: String }`
/// // and `User::encrypt(&service, &binding)`, `EncryptedUser::decrypt(…)`, `EncryptedUser::reencrypt(…)`.
/// ```
///
/// Field attributes: `#[encrypted]`, `#[encrypted(deterministic)]`,
/// `#[encrypted(blind_index)]` with `bits = N` or `distinct = N` (bits from
/// [`blind::bits_for_distinct_values`]), `purpose = "…"` on any of them;
/// `#[keyflow(plain)]` to keep an auto-detected name in clear. Container:
/// `#[keyflow(purpose = "…", auto_detect)]`. Refused at compile time: generics,
/// enums and tuple structs, an encrypted field without a purpose, unknown options,
/// invalid purpose names, auto-detection for a purpose without a list, and any field
/// named like sensitive authentication data (`cvv`, `pin`, …: never stored).
pub use keyflow_derive::Encrypt;
/// The key service this crate works over (re-exported for generated code and callers).
pub use keyflow_kms;
pub use path::{ConcretePath, Selector};
pub use typed::{BlindIndexValue, Encrypted};
