//! Entry points for data already in memory: [`encrypt_slice`] and [`decrypt_slice`].
//!
//! They produce and accept exactly the bytes of [`encrypt`](crate::encrypt) and
//! [`decrypt`](crate::decrypt), but seal and open each segment *out of place*, straight
//! from the caller's slice: the `Read`-based loop first copies every segment into its
//! buffer and then runs the cipher over that copy; here the cipher reads the source
//! once. Plaintext is still released one verified segment at a time.

use std::io::Write;

use crate::buf::SegmentBuf;
use crate::error::{Result, StreamError};
use crate::format::{Layout, Opener, Sealer, MAX_SEGMENTS};

/// Encrypts `data` into `writer` (header first) — the same bytes [`encrypt`](crate::encrypt)
/// writes for the same [`Sealer`], without copying `data` into a segment buffer first.
/// Returns the plaintext size. `writer` is flushed.
///
/// If the metadata declares a size other than `data.len()`, this fails with
/// [`StreamError::SizeMismatch`] before anything is written.
pub fn encrypt_slice<W: Write + ?Sized>(
    data: &[u8],
    writer: &mut W,
    sealer: Sealer,
) -> Result<u64> {
    let total = data.len() as u64;
    if let Some(declared) = sealer.declared_size.filter(|&d| d != total) {
        return Err(StreamError::SizeMismatch {
            declared,
            read: total,
        });
    }
    let layout = Layout::new(sealer.segment_size);
    if total.div_ceil(layout.segment as u64) > MAX_SEGMENTS {
        return Err(StreamError::TooLarge);
    }
    writer.write_all(&sealer.header)?;
    // Ciphertext only: not secret, so a plain buffer.
    let mut out = vec![0u8; layout.sealed()];
    // An empty input is one empty final segment.
    let n = data.len().div_ceil(layout.segment).max(1);
    let mut chunks = data.chunks(layout.segment);
    for index in 0..n {
        let plain = chunks.next().unwrap_or_default();
        let sealed = out
            .get_mut(..plain.len() + crate::format::SEGMENT_TAG_LEN)
            .ok_or(StreamError::Invalid("segment buffer"))?;
        sealer
            .cipher
            .seal_out_of_place(index as u64, index + 1 == n, plain, sealed)?;
        writer.write_all(sealed)?;
    }
    writer.flush()?;
    Ok(total)
}

/// Decrypts `body` — everything after the header, e.g. what remains of the input
/// after [`read_header`](crate::read_header) — into `writer`, accepting exactly what
/// [`decrypt`](crate::decrypt) accepts, without copying the ciphertext into a segment
/// buffer first. Returns the plaintext size.
///
/// Lengths no writer produces (truncation, extension) and a size other than the
/// declared one are refused before anything is written. Each segment is authenticated
/// before its plaintext is written; on error, `writer` has received the verified
/// segments before the failure (as with [`decrypt`](crate::decrypt)).
pub fn decrypt_slice<W: Write + ?Sized>(
    body: &[u8],
    writer: &mut W,
    opener: Opener,
) -> Result<u64> {
    let layout = Layout::new(opener.segment_size());
    let (n, size) = layout.segments_and_size(body.len() as u64)?;
    if opener.metadata().size.is_some_and(|d| d != size) {
        return Err(StreamError::DecryptionFailed);
    }
    // Verified plaintext passes through here; wiped on drop.
    let mut plain = SegmentBuf::new(layout.segment);
    for (index, sealed) in body.chunks(layout.sealed()).enumerate() {
        let index = index as u64;
        let len = opener
            .cipher
            .open_out_of_place(index, index + 1 == n, sealed, &mut plain)?;
        writer.write_all(plain.get(..len).unwrap_or_default())?;
    }
    writer.flush()?;
    Ok(size)
}
