//! Encryption to a `std::io::Write`: the [`Encryptor`] adapter and the [`encrypt`]
//! copy loop (which reads straight into the segment buffer: one copy less).

use std::io::{Read, Write};
use zeroize::Zeroizing;

use crate::error::{Result, StreamError};
use crate::format::{Layout, Sealer, SegmentCipher};

/// Counts segments and bytes, seals segments, checks the declared size at the end.
#[derive(Debug)]
pub(crate) struct SealState {
    cipher: SegmentCipher,
    pub(crate) layout: Layout,
    declared: Option<u64>,
    index: u64,
    total: u64,
}

impl SealState {
    pub(crate) fn new(sealer: Sealer) -> (Self, Vec<u8>) {
        let state = Self {
            cipher: sealer.cipher,
            layout: Layout::new(sealer.segment_size),
            declared: sealer.declared_size,
            index: 0,
            total: 0,
        };
        (state, sealer.header)
    }

    /// Seals `buf[..len]` (tag appended at `buf[len..]`) as the next segment; returns
    /// the sealed length.
    pub(crate) fn seal_next(&mut self, buf: &mut [u8], len: usize, last: bool) -> Result<usize> {
        self.total += len as u64;
        if last {
            if let Some(declared) = self.declared {
                if declared != self.total {
                    return Err(StreamError::SizeMismatch {
                        declared,
                        read: self.total,
                    });
                }
            }
        } else if self.declared.is_some_and(|d| self.total >= d) {
            // More data follows than was declared.
            return Err(StreamError::SizeMismatch {
                declared: self.declared.unwrap_or_default(),
                read: self.total + 1,
            });
        }
        self.cipher.seal(self.index, last, buf, len)?;
        self.index += 1;
        Ok(len + crate::format::SEGMENT_TAG_LEN)
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

/// Reads into `buf` until it is full or the input ends; returns the bytes read.
pub(crate) fn fill<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Encrypts everything `reader` yields into `writer` (header first), in constant memory
/// (two segment buffers). Returns the plaintext size. `writer` is flushed; on error
/// the output is incomplete and will never decrypt.
pub fn encrypt<R: Read + ?Sized, W: Write + ?Sized>(
    reader: &mut R,
    writer: &mut W,
    sealer: Sealer,
) -> Result<u64> {
    let (mut state, header) = SealState::new(sealer);
    writer.write_all(&header)?;
    let seg = state.layout.segment;
    let mut cur = Zeroizing::new(vec![0u8; state.layout.sealed()]);
    let mut next = Zeroizing::new(vec![0u8; state.layout.sealed()]);
    let mut cur_len = fill(reader, &mut cur[..seg])?;
    loop {
        // A full segment is the last one only if nothing follows it.
        let next_len = if cur_len == seg {
            fill(reader, &mut next[..seg])?
        } else {
            0
        };
        let last = next_len == 0;
        let n = state.seal_next(&mut cur, cur_len, last)?;
        writer.write_all(&cur[..n])?;
        if last {
            break;
        }
        std::mem::swap(&mut cur, &mut next);
        cur_len = next_len;
    }
    writer.flush()?;
    Ok(state.total())
}

/// A `Write` adapter that encrypts everything written to it.
///
/// Writes the header at once, then one sealed segment each time a segment's worth of
/// plaintext is complete *and* more data follows (the final segment is sealed
/// differently, so a full segment is held until [`Encryptor::finish`] or more data
/// arrives). **[`Encryptor::finish`] must be called**: without it the output lacks its
/// final segment and will never decrypt (dropping the encryptor does not finish it,
/// by design: an interrupted encryption must not look complete).
pub struct Encryptor<W: Write> {
    inner: W,
    state: SealState,
    buf: Zeroizing<Vec<u8>>,
    filled: usize,
}

impl<W: Write> std::fmt::Debug for Encryptor<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor")
            .field(
                "plaintext_so_far",
                &(self.state.total() + self.filled as u64),
            )
            .finish_non_exhaustive()
    }
}

impl<W: Write> Encryptor<W> {
    /// Writes the header to `inner` and returns the encryptor.
    pub fn new(mut inner: W, sealer: Sealer) -> Result<Self> {
        let (state, header) = SealState::new(sealer);
        inner.write_all(&header)?;
        let buf = Zeroizing::new(vec![0u8; state.layout.sealed()]);
        Ok(Self {
            inner,
            state,
            buf,
            filled: 0,
        })
    }

    /// Seals the final segment, flushes, and returns the inner writer and the plaintext
    /// size.
    pub fn finish(mut self) -> Result<(W, u64)> {
        let n = self.state.seal_next(&mut self.buf, self.filled, true)?;
        self.inner.write_all(&self.buf[..n])?;
        self.inner.flush()?;
        Ok((self.inner, self.state.total()))
    }

    fn seal_held_segment(&mut self) -> Result<()> {
        let n = self.state.seal_next(&mut self.buf, self.filled, false)?;
        self.inner.write_all(&self.buf[..n])?;
        self.filled = 0;
        Ok(())
    }
}

impl<W: Write> Write for Encryptor<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let seg = self.state.layout.segment;
        if self.filled == seg {
            self.seal_held_segment()?;
        }
        let k = data.len().min(seg - self.filled);
        self.buf[self.filled..self.filled + k].copy_from_slice(&data[..k]);
        self.filled += k;
        Ok(k)
    }

    /// Flushes the inner writer. The held (possibly final) segment stays buffered:
    /// only [`Encryptor::finish`] may seal the last segment.
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
