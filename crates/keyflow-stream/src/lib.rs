//! # keyflow-stream
//!
//! Streaming file encryption for KeyFlow: files of any size in constant memory, as a
//! sequence of 64 KiB segments sealed with AES-256-GCM under a per-file key
//! (HKDF from the key version's file subkey and a random salt), behind an
//! authenticated header that names the key and carries encrypted metadata (file name,
//! MIME type, size). Truncation, reordering, duplication, extension and header
//! tampering are detected; plaintext is only ever released one *verified* segment at a
//! time. Specification, design decisions and test vectors: `docs/file-format.md`.
//!
//! [`format`](mod@format) is the pure part (header, metadata, nonces, segment arithmetic); the rest
//! adapts it to I/O: [`Encryptor`] / [`encrypt`] and [`Decryptor`] / [`decrypt`] over
//! `std::io`, [`SeekableDecryptor`] for byte ranges over `Read + Seek`,
//! [`AsyncEncryptor`] / [`AsyncDecryptor`] (plus [`encrypt_async`] / [`decrypt_async`])
//! over tokio, and [`encrypt_slice`] / [`decrypt_slice`] for data already in memory
//! (same bytes, sealed and opened out of place: no copy into a segment buffer). Keys
//! come from a [`keyflow_core::DataKey`]: with an
//! `EncryptionService`, call [`Sealer::new`] inside `with_active_key` and
//! [`ParsedHeader::open`] inside `with_decrypt_key`.
//!
//! ```
//! use std::io::Read;
//! use keyflow_core::{DataKey, KeyVersion, OsRng, Purpose, SecretKey};
//! use keyflow_stream::{decrypt, encrypt, read_header, Metadata, Sealer};
//!
//! let dek = SecretKey::generate(&OsRng)?;
//! let key = DataKey::derive(Purpose::new("documents")?, KeyVersion::FIRST, &dek)?;
//! let meta = Metadata { name: Some("notes.txt".into()), mime_type: Some("text/plain".into()), size: Some(11) };
//!
//! let mut file = Vec::new();
//! encrypt(&mut &b"hello world"[..], &mut file, Sealer::new(&key, &meta, &OsRng)?)?;
//!
//! let mut input = &file[..];
//! let header = read_header(&mut input)?;          // names purpose + version
//! let opener = header.open(&key)?;                // authenticates the header
//! assert_eq!(opener.metadata(), &meta);
//! let mut plain = Vec::new();
//! decrypt(input, &mut plain, opener)?;            // verified segment by segment
//! assert_eq!(plain, b"hello world");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod asynchronous;
mod buf;
mod error;
pub mod format;
mod read;
mod seek;
mod slice;
mod write;

pub use asynchronous::{
    decrypt_async, encrypt_async, read_header_async, AsyncDecryptor, AsyncEncryptor,
};
pub use error::{Result, StreamError};
pub use format::{encrypted_len, Metadata, Opener, ParsedHeader, Sealer, DEFAULT_SEGMENT_SIZE};
pub use read::{decrypt, read_header, Decryptor};
pub use seek::SeekableDecryptor;
pub use slice::{decrypt_slice, encrypt_slice};
pub use write::{encrypt, Encryptor};
