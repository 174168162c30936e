//! The request body of the streamed file routes: an `AsyncRead` with the file limit,
//! the declared-length check, and the bounded drain of an upload refused midway.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::error::{ApiError, ApiResult};

/// Marker error of [`BodyReader`]: the body passed the file limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than the file limit")]
pub(super) struct BodyTooLarge;

pub(super) fn is_too_large(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<BodyTooLarge>())
}

/// A request body as an `AsyncRead`, refusing more than `limit` bytes.
pub(super) struct BodyReader {
    body: Body,
    chunk: Bytes,
    seen: u64,
    limit: u64,
}

impl BodyReader {
    pub(super) fn new(body: Body, limit: u64) -> Self {
        Self {
            body,
            chunk: Bytes::new(),
            seen: 0,
            limit,
        }
    }
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.chunk.is_empty() {
                let n = self.chunk.len().min(buf.remaining());
                let part = self.chunk.split_to(n);
                buf.put_slice(&part);
                return Poll::Ready(Ok(()));
            }
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                self.seen += data.len() as u64;
                if self.seen > self.limit {
                    return Poll::Ready(Err(io::Error::other(BodyTooLarge)));
                }
                self.chunk = data;
            }
        }
    }
}

/// Most of a refused upload read and discarded, and for how long at most.
const DRAIN_BYTES: usize = 8 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// On an error answered before the upload was read to its end, reads and discards a
/// bounded rest of it (8 MiB, 2 s): an HTTP/1.1 client that writes its whole body
/// before reading would otherwise see a broken connection instead of the error. Bodies
/// over the limit are not drained (that is the point of the limit).
pub(super) async fn drain_on_error(
    result: ApiResult<Response>,
    reader: Option<BodyReader>,
) -> ApiResult<Response> {
    // Decided before awaiting: a `&Response` held across an await is not `Send`.
    let drain = matches!(&result, Err(e) if !matches!(e, ApiError::PayloadTooLarge(_)));
    if let (true, Some(mut reader)) = (drain, reader) {
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            let mut buf = [0u8; 16 * 1024];
            let mut left = DRAIN_BYTES;
            while left > 0 {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
    result
}

/// Refuses a declared length over the limit before reading anything.
pub(super) fn check_declared_len(headers: &HeaderMap, limit: u64) -> ApiResult<Option<u64>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge(limit as usize));
    }
    Ok(declared)
}
