//! Bounds on streamed file responses (`/files/encrypt`, `/files/decrypt`).
//!
//! A streamed response outlives the global concurrency limit and the request timeout:
//! both end when the response head goes out. Each stream therefore holds a *file slot*
//! ([`crate::Limits::file_streams`] of them; none free → 503 `overloaded`) until its body
//! ends, and a client that stops reading the response for
//! [`crate::Limits::file_idle`] loses it: the stream is aborted and its slot and
//! buffers freed. (A client that stops *sending* is bounded by the minimum body rate,
//! [`crate::min_rate`].)
//!
//! The body is produced by its own task and handed to the response through a one-chunk
//! channel: a send that waits longer than the idle bound is a client that stopped
//! reading. A client that disconnects drops the channel and the task ends at once.

use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use futures_util::{Stream, StreamExt};
use tokio::sync::OwnedSemaphorePermit;

/// A held file slot (released on drop).
#[derive(Debug)]
pub struct FileSlot {
    _permit: OwnedSemaphorePermit,
}

impl FileSlot {
    /// Wraps a permit of the state's file-slot semaphore.
    pub(crate) fn new(permit: OwnedSemaphorePermit) -> Self {
        Self { _permit: permit }
    }
}

/// The response body that streams `chunks`, holding `slot` until the stream ends, fails,
/// the client goes away, or the client stops reading for `idle`.
pub(crate) fn pump<S>(chunks: S, slot: FileSlot, idle: Duration) -> Body
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(1);
    tokio::spawn(async move {
        let _slot = slot;
        let mut chunks = std::pin::pin!(chunks);
        while let Some(item) = chunks.next().await {
            let last = item.is_err();
            match tokio::time::timeout(idle, tx.send(item)).await {
                Ok(Ok(())) if !last => {}
                // Sent the error, or the client is gone (the body was dropped).
                Ok(_) => return,
                Err(_) => {
                    tracing::warn!(
                        idle_secs = idle.as_secs(),
                        "a file response was aborted: the client stopped reading it"
                    );
                    return;
                }
            }
        }
    });
    Body::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use tokio::sync::Semaphore;

    fn slot(sem: &Arc<Semaphore>) -> FileSlot {
        FileSlot::new(sem.clone().try_acquire_owned().unwrap())
    }

    fn chunks(n: usize) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        futures_util::stream::iter((0..n).map(|i| Ok(Bytes::from(vec![i as u8; 4]))))
    }

    #[tokio::test]
    async fn the_body_streams_everything_and_then_frees_the_slot() {
        let sem = Arc::new(Semaphore::new(1));
        let body = pump(chunks(5), slot(&sem), Duration::from_secs(5));
        assert_eq!(sem.available_permits(), 0);
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 20);
        tokio::task::yield_now().await;
        assert_eq!(sem.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_loses_its_slot() {
        let sem = Arc::new(Semaphore::new(1));
        let idle = Duration::from_millis(200);
        let mut body = pump(chunks(100), slot(&sem), idle);
        // Read one chunk, then stop reading.
        body.frame().await.unwrap().unwrap();
        assert_eq!(sem.available_permits(), 0, "held while the client reads");
        let mut freed = false;
        for _ in 0..50 {
            tokio::time::sleep(idle).await;
            if sem.available_permits() == 1 {
                freed = true;
                break;
            }
        }
        assert!(
            freed,
            "the slot was not released after the client stopped reading"
        );
        // What was already queued may still be read; then the body ends early.
        let mut n = 0;
        while let Some(f) = body.frame().await {
            f.unwrap();
            n += 1;
        }
        assert!(n < 99, "the stream was cut short ({n} more chunks)");
    }

    #[tokio::test]
    async fn a_client_that_goes_away_frees_the_slot() {
        let sem = Arc::new(Semaphore::new(1));
        let body = pump(chunks(1_000_000), slot(&sem), Duration::from_secs(60));
        drop(body);
        for _ in 0..100 {
            if sem.available_permits() == 1 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the slot was not released after the body was dropped");
    }

    #[tokio::test]
    async fn an_error_ends_the_body_with_that_error() {
        let sem = Arc::new(Semaphore::new(1));
        let items = futures_util::stream::iter(vec![
            Ok(Bytes::from_static(b"ok")),
            Err(io::Error::other("segment 2 does not authenticate")),
            Ok(Bytes::from_static(b"never")),
        ]);
        let mut body = pump(items, slot(&sem), Duration::from_secs(5));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_err());
    }
}
