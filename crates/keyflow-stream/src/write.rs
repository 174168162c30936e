//! Encryption to a `std::io::Write`: the [`Encryptor`] adapter and the [`encrypt`]
//! copy loop (which reads straight into the segment buffer: one copy less).

use std::io::{Read, Write};

use crate::buf::SegmentBuf;
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
    /// The final segment has been sealed.
    pub(crate) done: bool,
    /// A plaintext byte read ahead waits in the buffer's last byte.
    parked: bool,
}

impl SealState {
    pub(crate) fn new(sealer: Sealer) -> (Self, Vec<u8>) {
        let state = Self {
            cipher: sealer.cipher,
            layout: Layout::new(sealer.segment_size),
            declared: sealer.declared_size,
            index: 0,
            total: 0,
            done: false,
            parked: false,
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
        self.done = last;
        Ok(len + crate::format::SEGMENT_TAG_LEN)
    }

    /// Segment sealing with one buffer of [`Layout::lookahead_buf`] bytes, step 1:
    /// where to read the next segment's plaintext into (read until that range is full
    /// or the input ends, then call [`SealState::seal_filled`]).
    ///
    /// Reading `S + 1` bytes tells whether more data follows a full segment. That
    /// extra byte (the next segment's first) is parked in the buffer's last byte, past
    /// the tag, before the tag overwrites it, and moved to the front here. Every
    /// plaintext byte stays inside the (wiped) buffer.
    pub(crate) fn fill_range(&mut self, buf: &mut [u8]) -> std::ops::Range<usize> {
        let carried = usize::from(self.parked);
        if self.parked {
            buf[0] = buf[self.layout.sealed()];
            self.parked = false;
        }
        carried..self.layout.segment + 1
    }

    /// Step 2: seals the segment now in `buf[..filled]` (`filled` counts from the
    /// buffer's start); returns the sealed length, `buf[..n]`.
    pub(crate) fn seal_filled(&mut self, buf: &mut [u8], filled: usize) -> Result<usize> {
        let seg = self.layout.segment;
        let last = filled <= seg;
        if !last {
            buf[self.layout.sealed()] = buf[seg];
        }
        let n = self.seal_next(buf, filled.min(seg), last)?;
        self.parked = !last;
        Ok(n)
    }

    /// Reads and seals the next segment (both steps); returns the sealed length.
    fn seal_from<R: Read + ?Sized>(&mut self, reader: &mut R, buf: &mut [u8]) -> Result<usize> {
        let range = self.fill_range(buf);
        let filled = range.start + fill(reader, &mut buf[range])?;
        self.seal_filled(buf, filled)
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
/// (one segment buffer). Returns the plaintext size. `writer` is flushed; on error
/// the output is incomplete and will never decrypt.
pub fn encrypt<R: Read + ?Sized, W: Write + ?Sized>(
    reader: &mut R,
    writer: &mut W,
    sealer: Sealer,
) -> Result<u64> {
    let (mut state, header) = SealState::new(sealer);
    writer.write_all(&header)?;
    let mut buf = SegmentBuf::new(state.layout.lookahead_buf());
    while !state.done {
        let n = state.seal_from(reader, &mut buf)?;
        writer.write_all(&buf[..n])?;
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
    buf: SegmentBuf,
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
        let buf = SegmentBuf::new(state.layout.sealed());
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
