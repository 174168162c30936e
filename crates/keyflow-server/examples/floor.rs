//! The floor of KeyFlow's HTTP stack: a bare hyper server on the same runtime flavour
//! and TLS setup as `keyflow serve`, with no application — it reads each request body
//! whole and answers a fixed small JSON document. Load it like KeyFlow
//! (`bench/floor.sh`): whatever KeyFlow cannot beat here, no change to its handlers or
//! layers can.
//!
//! ```text
//! cargo run --release -p keyflow-server --example floor -- 127.0.0.1:18090 [CERT KEY]
//! ```
//! With a certificate and key (PEM) it serves HTTPS with `keyflow_server::tls`'s
//! configuration; without, plain HTTP.

use std::convert::Infallible;
use std::path::Path;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The size of KeyFlow's answer to a small encrypt, without its headers.
const ANSWER: &[u8] = br#"{"encryptedData":"kf1:AQEIdXNlckRhdGEAAAABP3T72o6aEynolyfA2P9_wWjARuu8apSo4kIsJwqQIDmRsWqZRXJcVbqJoBb1Ds"}"#;

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body as KeyFlow does, then drop it.
    let _ = req.into_body().collect().await;
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(ANSWER)))
        .unwrap_or_default())
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = args
        .first()
        .map_or("127.0.0.1:18090", String::as_str)
        .to_owned();
    let tls = match (args.get(1), args.get(2)) {
        (Some(cert), Some(key)) => Some(
            keyflow_server::tls::server_config(Path::new(cert), Path::new(key), false)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        ),
        _ => None,
    };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(&listen).await?;
            println!("floor server on {listen}");
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(answer);
                    // As `keyflow serve`: HTTP/1.1 and HTTP/2 by detection.
                    let conn = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(stream).await {
                                let _ = conn.serve_connection(TokioIo::new(tls), service).await;
                            }
                        }
                        None => {
                            let _ = conn.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        })
}
