//! Plumbing shared by the layers.

use std::future::{ready, Future};
use std::pin::Pin;

use axum::extract::{OriginalUri, Request};
use axum::response::Response;
use http::Uri;

/// The future every service in this crate returns.
pub(crate) type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response, E>> + Send>>;

/// Answers without calling the inner service.
pub(crate) fn respond<E: Send + 'static>(res: Response) -> BoxFuture<E> {
    Box::pin(ready(Ok(res)))
}

/// The URI as the client sent it. Inside a nested axum router `req.uri()` has the
/// nest prefix stripped; axum keeps the original in [`OriginalUri`].
pub(crate) fn original_uri(req: &Request) -> &Uri {
    req.extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri(), |o| &o.0)
}
