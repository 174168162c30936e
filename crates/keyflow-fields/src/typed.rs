//! Typed ciphertext: [`Encrypted<T>`] holds a KeyFlow ciphertext of a `T`, never a `T`,
//! so plaintext and ciphertext cannot be confused by the type checker; and
//! [`BlindIndexValue`], a stored blind index.
//!
//! Both are TEXT columns through sqlx (any database whose `String` is TEXT: SQLite and
//! PostgreSQL here) and strings through serde. Reading one back — from a row or from
//! JSON — checks the shape: a plaintext that found its way into an encrypted column is
//! an error, not a silently "encrypted" value.

use std::fmt;
use std::marker::PhantomData;

use keyflow_kms::{
    Context, Decrypted, Encrypt, EncryptMode, EncryptionService, Input, KmsError, Purpose, Summary,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::document::is_ciphertext;
use crate::error::{FieldsError, Result};

/// A KeyFlow ciphertext (text form, `kf1:…`) of a value of type `T`.
///
/// Made only by encrypting a `T` or by parsing a string that is a well-formed
/// ciphertext; turned back into a `T` only by decrypting with the right context.
/// `Debug` shows the key id, not the ciphertext.
pub struct Encrypted<T> {
    text: String,
    // `fn() -> T`: the wrapper owns no `T`, so it is Send/Sync whatever `T` is.
    _type: PhantomData<fn() -> T>,
}

impl<T> Encrypted<T> {
    /// Wraps a ciphertext, refusing anything that is not a KeyFlow ciphertext (such as
    /// a plaintext value). Does not authenticate: that needs the key.
    pub fn from_ciphertext(text: impl Into<String>) -> Result<Self> {
        let text = text.into();
        if !is_ciphertext(&text) {
            return Err(FieldsError::NotCiphertext);
        }
        Ok(Self {
            text,
            _type: PhantomData,
        })
    }

    /// The ciphertext's text form.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The ciphertext's text form, owned.
    pub fn into_string(self) -> String {
        self.text
    }

    /// Key id, purpose, version and algorithm, read from the header.
    pub fn summary(&self) -> Result<Summary> {
        EncryptionService::summary(&self.text).map_err(|_| FieldsError::NotCiphertext)
    }

    /// Re-encrypts under the purpose's active version (same mode, same context); the
    /// plaintext never leaves the service. `(ciphertext, changed)`; unchanged when
    /// already under the active version.
    pub async fn rewrap(
        &self,
        service: &EncryptionService,
        context: &Context,
    ) -> Result<(Self, bool)> {
        let r = service.rewrap(&self.text, context).await?;
        Ok((
            Self {
                text: r.ciphertext,
                _type: PhantomData,
            },
            r.changed,
        ))
    }
}

impl<T: Serialize> Encrypted<T> {
    /// Encrypts `value` (randomized, or deterministic) under `purpose`, bound to
    /// `context`. The type survives: a number decrypts to a number.
    pub async fn encrypt(
        service: &EncryptionService,
        value: &T,
        purpose: &Purpose,
        context: &Context,
        deterministic: bool,
    ) -> Result<Self> {
        let json = serde_json::to_value(value).map_err(|_| FieldsError::Type("value".into()))?;
        let text = service
            .encrypt(
                Encrypt::new(purpose, context, Input::Json(&json))
                    .mode(EncryptMode::deterministic_if(deterministic)),
            )
            .await?
            .ciphertext;
        Ok(Self {
            text,
            _type: PhantomData,
        })
    }
}

impl<T: DeserializeOwned> Encrypted<T> {
    /// Decrypts with the context given at encryption.
    pub async fn decrypt(&self, service: &EncryptionService, context: &Context) -> Result<T> {
        match service.decrypt(&self.text, context).await? {
            Decrypted::Json(v) => {
                serde_json::from_value(v).map_err(|_| FieldsError::Type("value".into()))
            }
            Decrypted::Bytes(_) => Err(FieldsError::Kms(KmsError::DecryptionFailed)),
        }
    }
}

impl<T> Clone for Encrypted<T> {
    fn clone(&self) -> Self {
        Self {
            text: self.text.clone(),
            _type: PhantomData,
        }
    }
}

/// Ciphertexts compare as strings (equal deterministic ciphertexts mean equal values).
impl<T> PartialEq for Encrypted<T> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl<T> Eq for Encrypted<T> {}

impl<T> fmt::Debug for Encrypted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.summary() {
            Ok(s) => write!(f, "Encrypted({})", s.key_id),
            Err(_) => f.write_str("Encrypted(?)"),
        }
    }
}

impl<T> Serialize for Encrypted<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de, T> Deserialize<'de> for Encrypted<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_ciphertext(text)
            .map_err(|_| serde::de::Error::custom("expected a KeyFlow ciphertext"))
    }
}

/// A stored blind index: lowercase hex of a truncated HMAC (see [`crate::blind`]).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct BlindIndexValue(String);

impl BlindIndexValue {
    /// Wraps a hex index, refusing anything else.
    pub fn new(hex: impl Into<String>) -> Result<Self> {
        let hex = hex.into();
        let ok = !hex.is_empty()
            && hex.len() <= 64
            && hex.len() % 2 == 0
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok {
            Ok(Self(hex))
        } else {
            Err(FieldsError::InvalidOption(
                "a blind index is 2..=64 lowercase hex digits".into(),
            ))
        }
    }

    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlindIndexValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for BlindIndexValue {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BlindIndexValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// sqlx: both types are TEXT wherever `String` is.
mod sql {
    use sqlx::encode::IsNull;
    use sqlx::error::BoxDynError;
    use sqlx::{Database, Decode, Encode, Type};

    use super::{BlindIndexValue, Encrypted};

    /// `Type`, `Encode` and `Decode` of a value stored as its text: `|v| text` reads the
    /// text of a value, `parse` makes one from a decoded `String` (refusing what is not
    /// one).
    macro_rules! text_column {
        ($ty:ident $(<$g:ident>)?, |$v:ident| $text:expr, $parse:expr) => {
            impl<$($g,)? DB: Database> Type<DB> for $ty$(<$g>)?
            where
                String: Type<DB>,
            {
                fn type_info() -> DB::TypeInfo {
                    <String as Type<DB>>::type_info()
                }
                fn compatible(ty: &DB::TypeInfo) -> bool {
                    <String as Type<DB>>::compatible(ty)
                }
            }

            impl<'q, $($g,)? DB: Database> Encode<'q, DB> for $ty$(<$g>)?
            where
                String: Encode<'q, DB>,
            {
                fn encode_by_ref(
                    &self,
                    buf: &mut <DB as Database>::ArgumentBuffer<'q>,
                ) -> Result<IsNull, BoxDynError> {
                    let $v = self;
                    $text.encode_by_ref(buf)
                }
            }

            impl<'r, $($g,)? DB: Database> Decode<'r, DB> for $ty$(<$g>)?
            where
                String: Decode<'r, DB>,
            {
                fn decode(value: <DB as Database>::ValueRef<'r>) -> Result<Self, BoxDynError> {
                    Ok($parse(String::decode(value)?)?)
                }
            }
        };
    }

    text_column!(Encrypted<T>, |e| e.text, Encrypted::from_ciphertext);
    text_column!(BlindIndexValue, |b| b.0, BlindIndexValue::new);
}
