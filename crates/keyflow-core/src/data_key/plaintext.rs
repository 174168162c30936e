//! [`Plaintext`]: a decrypted payload, zeroized on drop.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::envelope::PayloadKind;
use crate::{Error, Result};

/// A decrypted payload. The buffer is zeroized on drop.
pub struct Plaintext {
    kind: PayloadKind,
    // buf[0] is the payload-kind byte; the data follows.
    buf: Zeroizing<Vec<u8>>,
}

impl Plaintext {
    /// Wraps a decrypted buffer whose first byte is the payload-kind byte.
    pub(super) fn new(kind: PayloadKind, buf: Zeroizing<Vec<u8>>) -> Self {
        Self { kind, buf }
    }

    /// What kind of value was encrypted.
    pub fn kind(&self) -> PayloadKind {
        self.kind
    }
    /// The plaintext bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(1..).unwrap_or_default()
    }

    fn take_data(self) -> Vec<u8> {
        let mut buf = self.buf;
        let mut data = std::mem::take(&mut *buf);
        if !data.is_empty() {
            data.remove(0); // the payload-kind byte
        }
        data
    }

    /// The plaintext as a `String`, without a copy, when it is valid UTF-8 (otherwise
    /// the bytes are wiped and decryption is reported failed). A `String` is not
    /// zeroized on drop: the caller now owns that responsibility.
    pub fn into_string(self) -> Result<String> {
        String::from_utf8(self.take_data()).map_err(|e| {
            let mut bytes = e.into_bytes();
            bytes.zeroize();
            Error::DecryptionFailed
        })
    }

    /// The plaintext bytes, still zeroized on drop, without a copy.
    pub fn into_bytes(self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.take_data())
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Plaintext({:?}, {} bytes)",
            self.kind,
            self.as_bytes().len()
        )
    }
}
