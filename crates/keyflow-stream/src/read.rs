//! Decryption from a `std::io::Read`: [`read_header`], the [`Decryptor`] adapter and
//! the [`decrypt`] copy loop. Plaintext is released one verified segment at a time.

use std::io::{Read, Write};

use crate::buf::SegmentBuf;
use crate::error::{Result, StreamError};
use crate::format::{header_len, HeaderLen, Layout, Opener, ParsedHeader, SegmentCipher};
use crate::write::fill;

/// Reads and parses a header from the start of `reader`, consuming exactly the header.
/// Not yet authenticated: look up the key it names, then [`ParsedHeader::open`].
pub fn read_header<R: Read + ?Sized>(reader: &mut R) -> Result<ParsedHeader> {
    let mut buf = Vec::with_capacity(256);
    let mut want = crate::format::HEADER_PREFIX_LEN;
    loop {
        let have = buf.len();
        buf.resize(want, 0);
        let n = fill(reader, &mut buf[have..])?;
        if have + n < want {
            buf.truncate(have + n);
            // A short input still gets a precise answer: not KeyFlow, or truncated.
            header_len(&buf)?;
            return Err(StreamError::InvalidHeader);
        }
        match header_len(&buf)? {
            HeaderLen::NeedAtLeast(n) => want = n,
            HeaderLen::Exactly(n) if n == buf.len() => return ParsedHeader::parse(&buf),
            HeaderLen::Exactly(n) => want = n,
        }
    }
}

/// The decryption state shared by the sync and async readers: which segment comes
/// next, and the rules deciding whether a segment is the last one.
#[derive(Debug)]
pub(crate) struct OpenState {
    cipher: SegmentCipher,
    pub(crate) layout: Layout,
    declared: Option<u64>,
    index: u64,
    total: u64,
    pub(crate) done: bool,
}

impl OpenState {
    pub(crate) fn new(opener: Opener) -> Self {
        let layout = Layout::new(opener.segment_size());
        let declared = opener.metadata().size;
        Self {
            cipher: opener.cipher,
            layout,
            declared,
            index: 0,
            total: 0,
            done: false,
        }
    }

    /// Bytes a reader fills before opening a segment: one full sealed segment plus one
    /// byte, which tells whether another segment follows.
    pub(crate) fn window(&self) -> usize {
        self.layout.lookahead_buf()
    }

    /// Opens the segment at the front of `buf[..filled]` (`filled` < window ⇔ the input
    /// ended, so this is the last segment). Returns the plaintext length; the
    /// plaintext is `buf[..len]`, and when not last, `buf[sealed]` is the first byte
    /// of the next segment.
    pub(crate) fn open_next(&mut self, buf: &mut [u8], filled: usize) -> Result<usize> {
        let sealed = self.layout.sealed();
        let last = filled <= sealed;
        let seg_len = filled.min(sealed);
        let tag = crate::format::SEGMENT_TAG_LEN;
        if seg_len < tag || (last && self.index > 0 && seg_len == tag) {
            // Truncated inside a tag, nothing after the header, or a stray empty
            // final segment (never written).
            return Err(StreamError::DecryptionFailed);
        }
        let segment = buf
            .get_mut(..seg_len)
            .ok_or(StreamError::Invalid("segment buffer"))?;
        let n = self.cipher.open(self.index, last, segment)?;
        self.index += 1;
        self.total += n as u64;
        if last {
            self.done = true;
            if self.declared.is_some_and(|d| d != self.total) {
                return Err(StreamError::DecryptionFailed);
            }
        } else if self.declared.is_some_and(|d| self.total >= d) {
            return Err(StreamError::DecryptionFailed);
        }
        Ok(n)
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

/// A `Read` adapter that decrypts a file whose header was already read and opened.
///
/// Each segment is authenticated before any of its bytes are returned. A truncated,
/// reordered or extended file is an error (`InvalidData` wrapping
/// [`StreamError::DecryptionFailed`]) at the point it is detected — at the latest when
/// the input ends — never a silent short read.
pub struct Decryptor<R: Read> {
    inner: R,
    state: OpenState,
    buf: SegmentBuf,
    /// Bytes of `buf` holding input (ciphertext) not yet opened: 0 or 1 carried byte.
    carry: usize,
    /// Verified plaintext not yet returned: `buf[pos..end]`.
    pos: usize,
    end: usize,
    failed: bool,
}

impl<R: Read> std::fmt::Debug for Decryptor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor")
            .field("verified_so_far", &self.state.total())
            .field("done", &self.state.done)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Decryptor<R> {
    /// Decrypts the segments that follow the header in `inner`.
    pub fn new(inner: R, opener: Opener) -> Self {
        let state = OpenState::new(opener);
        let buf = SegmentBuf::new(state.window());
        Self {
            inner,
            state,
            buf,
            carry: 0,
            pos: 0,
            end: 0,
            failed: false,
        }
    }

    /// The next verified segment's plaintext, or `None` after the last one.
    pub fn next_segment(&mut self) -> Result<Option<&[u8]>> {
        if self.failed {
            return Err(StreamError::DecryptionFailed);
        }
        if self.state.done {
            return Ok(None);
        }
        // Move the carried first byte of this segment to the front.
        if self.carry == 1 {
            self.buf[0] = self.buf[self.state.layout.sealed()];
        }
        let filled = self.carry + fill(&mut self.inner, &mut self.buf[self.carry..])?;
        match self.state.open_next(&mut self.buf, filled) {
            Ok(n) => {
                self.carry = usize::from(!self.state.done);
                Ok(Some(&self.buf[..n]))
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Plaintext bytes verified so far.
    pub fn verified_len(&self) -> u64 {
        self.state.total()
    }

    /// Whether the last segment has been verified.
    pub fn is_done(&self) -> bool {
        self.state.done
    }
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.pos == self.end {
            match self.next_segment()? {
                None => return Ok(0),
                Some(p) => {
                    let n = p.len();
                    self.pos = 0;
                    self.end = n;
                }
            }
        }
        let k = out.len().min(self.end - self.pos);
        out[..k].copy_from_slice(&self.buf[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

/// Decrypts the segments following the header from `reader` into `writer`, each
/// written only after it verified. Returns the plaintext size. On error, `writer` has
/// received the verified segments before the failure: callers writing to a file should
/// write to a temporary one and keep it only on success.
pub fn decrypt<R: Read, W: Write + ?Sized>(
    reader: R,
    writer: &mut W,
    opener: Opener,
) -> Result<u64> {
    let mut d = Decryptor::new(reader, opener);
    while let Some(p) = d.next_segment()? {
        writer.write_all(p)?;
    }
    writer.flush()?;
    Ok(d.verified_len())
}
