//! The async (tokio) API: pull-based [`AsyncEncryptor`] and [`AsyncDecryptor`], which
//! hand out one sealed segment or one verified plaintext segment per call — the shape
//! an HTTP response body needs — and the [`encrypt_async`] / [`decrypt_async`] copy
//! loops over `AsyncRead` / `AsyncWrite`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::buf::SegmentBuf;
use crate::error::Result;
use crate::format::{Opener, ParsedHeader, Sealer};
use crate::read::{HeaderRead, Opening};
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
    let mut header = HeaderRead::new();
    loop {
        let n = fill(reader, header.space()).await?;
        if let Some(parsed) = header.filled(n)? {
            return Ok(parsed);
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
    opening: Opening,
}

impl<R> std::fmt::Debug for AsyncDecryptor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.opening.debug(f, "AsyncDecryptor")
    }
}

impl<R: AsyncRead + Unpin> AsyncDecryptor<R> {
    /// Decrypts what follows the header in `reader`.
    pub fn new(reader: R, opener: Opener) -> Self {
        Self {
            reader,
            opening: Opening::new(opener),
        }
    }

    /// The next verified segment's plaintext, or `None` after the last one.
    /// Not cancel-safe: a future dropped before it completes loses the input it read.
    pub async fn next_chunk(&mut self) -> Result<Option<&[u8]>> {
        let Some(space) = self.opening.space()? else {
            return Ok(None);
        };
        let read = fill(&mut self.reader, space).await?;
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
