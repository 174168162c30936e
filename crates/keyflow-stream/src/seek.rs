//! Random access: [`SeekableDecryptor`] reads any byte range of a file by decrypting
//! only the segments that hold it.

use std::io::{Read, Seek, SeekFrom};

use crate::buf::SegmentBuf;
use crate::error::{Result, StreamError};
use crate::format::{Layout, Opener, SegmentCipher};

/// A `Read + Seek` view of a file's plaintext over a `Read + Seek` ciphertext.
///
/// [`SeekableDecryptor::new`] derives the segment count and plaintext size from the
/// input's length and authenticates the final segment, so a truncated or extended file
/// is refused before anything is read, and the size is authenticated. Every read then
/// decrypts (and authenticates) just the segment it needs; one segment is cached.
pub struct SeekableDecryptor<R: Read + Seek> {
    inner: R,
    cipher: SegmentCipher,
    layout: Layout,
    header_len: u64,
    segments: u64,
    size: u64,
    pos: u64,
    buf: SegmentBuf,
    /// Which segment's plaintext `buf[..cached_len]` holds.
    cached: Option<u64>,
    cached_len: usize,
}

impl<R: Read + Seek> std::fmt::Debug for SeekableDecryptor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeekableDecryptor")
            .field("size", &self.size)
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl<R: Read + Seek> SeekableDecryptor<R> {
    /// Opens the file in `inner` (its header already read and opened into `opener`;
    /// the current position does not matter).
    pub fn new(mut inner: R, opener: Opener) -> Result<Self> {
        let layout = Layout::new(opener.segment_size());
        let end = inner.seek(SeekFrom::End(0))?;
        let body = end
            .checked_sub(opener.header_len())
            .ok_or(StreamError::DecryptionFailed)?;
        let (segments, size) = layout.segments_and_size(body)?;
        if opener.metadata().size.is_some_and(|d| d != size) {
            return Err(StreamError::DecryptionFailed);
        }
        let header_len = opener.header_len();
        let mut this = Self {
            inner,
            cipher: opener.cipher,
            layout,
            header_len,
            segments,
            size,
            pos: 0,
            buf: SegmentBuf::new(layout.sealed()),
            cached: None,
            cached_len: 0,
        };
        // Authenticates the length: only the true final segment opens as "last".
        this.load(segments - 1)?;
        Ok(this)
    }

    /// The plaintext size (authenticated).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Decrypts segment `index` into the cache.
    fn load(&mut self, index: u64) -> Result<()> {
        if self.cached == Some(index) {
            return Ok(());
        }
        self.cached = None;
        let sealed = self.layout.sealed() as u64;
        let last = index + 1 == self.segments;
        let len = if last {
            // The final segment's sealed length, from the authenticated size.
            (self.size - index * self.layout.segment as u64) as usize
                + crate::format::SEGMENT_TAG_LEN
        } else {
            self.layout.sealed()
        };
        self.inner
            .seek(SeekFrom::Start(self.header_len + index * sealed))?;
        let buf = self
            .buf
            .get_mut(..len)
            .ok_or(StreamError::DecryptionFailed)?;
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                // The file shrank since it was opened.
                StreamError::DecryptionFailed
            } else {
                StreamError::Io(e)
            }
        })?;
        self.cached_len = self.cipher.open(index, last, buf)?;
        self.cached = Some(index);
        Ok(())
    }

    /// Reads exactly `len` bytes at `offset` (an error if the range passes the end).
    pub fn read_range(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > self.size)
        {
            return Err(StreamError::Invalid("range (past the end of the file)"));
        }
        self.pos = offset;
        let mut out = vec![0u8; len];
        self.read_exact(&mut out).map_err(StreamError::from_io)?;
        Ok(out)
    }
}

impl<R: Read + Seek> Read for SeekableDecryptor<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() || self.pos >= self.size {
            return Ok(0);
        }
        let seg = self.layout.segment as u64;
        let index = self.pos / seg;
        self.load(index)?;
        let start = (self.pos - index * seg) as usize;
        let avail = self.cached_len.saturating_sub(start);
        let k = out.len().min(avail);
        out[..k].copy_from_slice(&self.buf[start..start + k]);
        self.pos += k as u64;
        Ok(k)
    }
}

impl<R: Read + Seek> Seek for SeekableDecryptor<R> {
    /// Positions are plaintext offsets; seeking past the end is allowed (reads there
    /// return 0 bytes), before the start is an error — as for files.
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let base = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = base.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        Ok(self.pos)
    }
}
