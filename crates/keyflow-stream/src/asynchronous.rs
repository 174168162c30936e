//! The async (tokio) API: pull-based [`AsyncEncryptor`] and [`AsyncDecryptor`], which
//! hand out one sealed segment or one verified plaintext segment per call — the shape
//! an HTTP response body needs — and the [`encrypt_async`] / [`decrypt_async`] copy
//! loops over `AsyncRead` / `AsyncWrite`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::buf::SegmentBuf;
use crate::error::{Result, StreamError};
use crate::format::{header_len, HeaderLen, Opener, ParsedHeader, Sealer};
use crate::read::OpenState;
use crate::write::SealState;

/// Reads into `buf` until it is full or the input ends; returns the bytes read.
async fn fill<R: AsyncRead + Unpin + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).await {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Async [`crate::read_header`]: reads exactly the header from `reader`.
pub async fn read_header_async<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
) -> Result<ParsedHeader> {
    let mut buf = Vec::with_capacity(256);
    let mut want = crate::format::HEADER_PREFIX_LEN;
    loop {
        let have = buf.len();
        buf.resize(want, 0);
        let n = fill(reader, &mut buf[have..]).await?;
        if have + n < want {
            buf.truncate(have + n);
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

/// Encrypts an `AsyncRead` one segment per [`AsyncEncryptor::next_chunk`] call: the
/// header first, then each sealed segment, then `None`.
pub struct AsyncEncryptor<R> {
    reader: R,
    state: SealState,
    header: Vec<u8>,
    header_sent: bool,
    buf: SegmentBuf,
}

impl<R> std::fmt::Debug for AsyncEncryptor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncEncryptor")
            .field("plaintext_so_far", &self.state.total())
            .field("done", &self.state.done)
            .finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> AsyncEncryptor<R> {
    /// Encrypts `reader` under `sealer`.
    pub fn new(reader: R, sealer: Sealer) -> Self {
        let (state, header) = SealState::new(sealer);
        let buf = SegmentBuf::new(state.layout.lookahead_buf());
        Self {
            reader,
            state,
            header,
            header_sent: false,
            buf,
        }
    }

    /// The next piece of the encrypted file, or `None` after the final segment.
    /// Not cancel-safe: a future dropped before it completes loses the input it read.
    pub async fn next_chunk(&mut self) -> Result<Option<&[u8]>> {
        if !self.header_sent {
            self.header_sent = true;
            return Ok(Some(&self.header));
        }
        if self.state.done {
            return Ok(None);
        }
        let range = self.state.fill_range(&mut self.buf);
        let filled = range.start + fill(&mut self.reader, &mut self.buf[range]).await?;
        let n = self.state.seal_filled(&mut self.buf, filled)?;
        Ok(Some(&self.buf[..n]))
    }

    /// Plaintext bytes encrypted so far.
    pub fn plaintext_len(&self) -> u64 {
        self.state.total()
    }
}

/// Decrypts the segments after an opened header, one verified segment per
/// [`AsyncDecryptor::next_chunk`] call. A truncated or extended input is an error,
/// at the latest when the input ends.
pub struct AsyncDecryptor<R> {
    reader: R,
    state: OpenState,
    buf: SegmentBuf,
    carry: usize,
    failed: bool,
}

impl<R> std::fmt::Debug for AsyncDecryptor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncDecryptor")
            .field("verified_so_far", &self.state.total())
            .field("done", &self.state.done)
            .finish_non_exhaustive()
    }
}

impl<R: AsyncRead + Unpin> AsyncDecryptor<R> {
    /// Decrypts what follows the header in `reader`.
    pub fn new(reader: R, opener: Opener) -> Self {
        let state = OpenState::new(opener);
        let buf = SegmentBuf::new(state.window());
        Self {
            reader,
            state,
            buf,
            carry: 0,
            failed: false,
        }
    }

    /// The next verified segment's plaintext, or `None` after the last one.
    /// Not cancel-safe: a future dropped before it completes loses the input it read.
    pub async fn next_chunk(&mut self) -> Result<Option<&[u8]>> {
        if self.failed {
            return Err(StreamError::DecryptionFailed);
        }
        if self.state.done {
            return Ok(None);
        }
        if self.carry == 1 {
            self.buf[0] = self.buf[self.state.layout.sealed()];
        }
        let filled = self.carry + fill(&mut self.reader, &mut self.buf[self.carry..]).await?;
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

    /// The underlying reader (e.g. to discard the rest of a refused upload).
    pub fn into_inner(self) -> R {
        self.reader
    }
}

/// Encrypts `reader` into `writer` (header first); returns the plaintext size.
pub async fn encrypt_async<R, W>(reader: R, writer: &mut W, sealer: Sealer) -> Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut e = AsyncEncryptor::new(reader, sealer);
    while let Some(chunk) = e.next_chunk().await? {
        writer.write_all(chunk).await?;
    }
    writer.flush().await?;
    Ok(e.plaintext_len())
}

/// Decrypts what follows an opened header in `reader` into `writer`, each segment
/// written only after it verified; returns the plaintext size.
pub async fn decrypt_async<R, W>(reader: R, writer: &mut W, opener: Opener) -> Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut d = AsyncDecryptor::new(reader, opener);
    while let Some(chunk) = d.next_chunk().await? {
        writer.write_all(chunk).await?;
    }
    writer.flush().await?;
    Ok(d.verified_len())
}
