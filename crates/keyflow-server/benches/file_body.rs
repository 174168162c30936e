//! The streamed file routes' request body as an `AsyncRead`: the hand-written reader
//! `routes/file_body.rs` uses (copied here as `Baseline`: the route module is private)
//! against `tokio-util`'s `StreamReader` over `http-body-util`'s `Limited`, the
//! maintained alternative issue 13 asked to weigh, reading a 64 MiB body of 16 KiB and
//! 64 KiB frames into a 64 KiB buffer, as the stream decryptor does. The hand-written
//! reader stayed because it measured faster at 16 KiB frames (ARCHITECTURE decision 88;
//! results: docs/benchmarks.md).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // a bench

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_util::io::StreamReader;

const TOTAL: usize = 64 << 20;
const LIMIT: u64 = 10 << 30;

/// The reader the server uses (`routes/file_body.rs`): a frame at a time, counting
/// against the limit.
struct Baseline {
    body: Body,
    chunk: Bytes,
    seen: u64,
    limit: u64,
}

impl AsyncRead for Baseline {
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
                    return Poll::Ready(Err(io::Error::other("too large")));
                }
                self.chunk = data;
            }
        }
    }
}

fn body(frame: usize) -> Body {
    let chunk = Bytes::from(vec![7u8; frame]);
    let frames = (0..TOTAL / frame).map(move |_| Ok::<_, Infallible>(chunk.clone()));
    Body::from_stream(futures_util::stream::iter(frames))
}

async fn drain(mut reader: impl AsyncRead + Unpin) -> usize {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0;
    loop {
        match reader.read(&mut buf).await.unwrap() {
            0 => return total,
            n => total += n,
        }
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("file_body_read");
    g.throughput(Throughput::Bytes(TOTAL as u64));
    g.sample_size(20);
    for frame in [16 << 10, 64 << 10] {
        g.bench_with_input(BenchmarkId::new("hand_written", frame), &frame, |b, &f| {
            b.iter(|| {
                let reader = Baseline {
                    body: body(f),
                    chunk: Bytes::new(),
                    seen: 0,
                    limit: LIMIT,
                };
                assert_eq!(rt.block_on(drain(reader)), TOTAL);
            });
        });
        g.bench_with_input(
            BenchmarkId::new("stream_reader_limited", frame),
            &frame,
            |b, &f| {
                b.iter(|| {
                    let limited = Limited::new(body(f), LIMIT as usize);
                    let reader =
                        StreamReader::new(limited.into_data_stream().map_err(io::Error::other));
                    assert_eq!(rt.block_on(drain(reader)), TOTAL);
                });
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
