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
    let mut header = HeaderRead::new();
    loop {
        let n = fill(reader, header.space())?;
        if let Some(parsed) = header.filled(n)? {
            return Ok(parsed);
        }
    }
}

/// Reading exactly a header, the same for the sync and async readers: the bytes the
/// header so far says it needs go into [`Self::space`]; [`Self::filled`] says how many
/// came and parses the header once complete.
pub(crate) struct HeaderRead {
    buf: Vec<u8>,
    have: usize,
    want: usize,
}

impl HeaderRead {
    pub(crate) fn new() -> Self {
        Self {
            buf: Vec::with_capacity(256),
            have: 0,
            want: crate::format::HEADER_PREFIX_LEN,
        }
    }

    /// Where the next bytes go; a reader fills it or reaches the end of its input.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        self.buf.resize(self.want, 0);
        &mut self.buf[self.have..]
    }

    /// `n` bytes went into [`Self::space`]: the header once complete, `None` while
    /// more is needed.
    pub(crate) fn filled(&mut self, n: usize) -> Result<Option<ParsedHeader>> {
        self.have += n;
        if self.have < self.want {
            self.buf.truncate(self.have);
            // A short input still gets a precise answer: not KeyFlow, or truncated.
            header_len(&self.buf)?;
            return Err(StreamError::InvalidHeader);
        }
        match header_len(&self.buf)? {
            HeaderLen::NeedAtLeast(n) => self.want = n,
            HeaderLen::Exactly(n) if n == self.buf.len() => {
                return ParsedHeader::parse(&self.buf).map(Some)
            }
            HeaderLen::Exactly(n) => self.want = n,
        }
        Ok(None)
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

/// What the sync and async decryptors share: the state, the segment buffer, the
/// carried byte and whether a segment failed. They differ only in how they fill
/// [`Self::space`].
pub(crate) struct Opening {
    state: OpenState,
    buf: SegmentBuf,
    /// Bytes of `buf` holding input (ciphertext) not yet opened: 0 or 1 carried byte.
    carry: usize,
    failed: bool,
}

impl Opening {
    pub(crate) fn new(opener: Opener) -> Self {
        let state = OpenState::new(opener);
        let buf = SegmentBuf::new(state.window());
        Self {
            state,
            buf,
            carry: 0,
            failed: false,
        }
    }

    /// Where the input of the next segment goes: `None` after the last segment, an
    /// error once a segment failed.
    pub(crate) fn space(&mut self) -> Result<Option<&mut [u8]>> {
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
        Ok(Some(&mut self.buf[self.carry..]))
    }

    /// Opens the next segment once `read` bytes went into [`Self::space`] (fewer than
    /// it holds: the input ended). Returns the verified plaintext.
    pub(crate) fn open(&mut self, read: usize) -> Result<&[u8]> {
        match self.state.open_next(&mut self.buf, self.carry + read) {
            Ok(n) => {
                self.carry = usize::from(!self.state.done);
                Ok(&self.buf[..n])
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Plaintext bytes verified so far.
    pub(crate) fn verified_len(&self) -> u64 {
        self.state.total()
    }

    /// Whether the last segment has been verified.
    pub(crate) fn is_done(&self) -> bool {
        self.state.done
    }

    /// The reader's `Debug`: progress only, never a byte of the buffer.
    pub(crate) fn debug(&self, f: &mut std::fmt::Formatter<'_>, name: &str) -> std::fmt::Result {
        f.debug_struct(name)
            .field("verified_so_far", &self.verified_len())
            .field("done", &self.is_done())
            .finish_non_exhaustive()
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
    opening: Opening,
    /// Verified plaintext not yet returned: `buf[pos..end]` of the opening's buffer.
    pos: usize,
    end: usize,
}

impl<R: Read> std::fmt::Debug for Decryptor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.opening.debug(f, "Decryptor")
    }
}

impl<R: Read> Decryptor<R> {
    /// Decrypts the segments that follow the header in `inner`.
    pub fn new(inner: R, opener: Opener) -> Self {
        Self {
            inner,
            opening: Opening::new(opener),
            pos: 0,
            end: 0,
        }
    }

    /// The next verified segment's plaintext, or `None` after the last one.
    pub fn next_segment(&mut self) -> Result<Option<&[u8]>> {
        let Some(space) = self.opening.space()? else {
            return Ok(None);
        };
        let read = fill(&mut self.inner, space)?;
        self.opening.open(read).map(Some)
    }

    /// Plaintext bytes verified so far.
    pub fn verified_len(&self) -> u64 {
        self.opening.verified_len()
    }

    /// Whether the last segment has been verified.
    pub fn is_done(&self) -> bool {
        self.opening.is_done()
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
        out[..k].copy_from_slice(&self.opening.buf[self.pos..self.pos + k]);
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
