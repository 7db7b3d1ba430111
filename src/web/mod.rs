//! HTTP side listeners: one hyper HTTP/1.1 connection per accepted (and, for HTTPS, handshaken)
//! stream, serving an axum [`Router`]. The accept loop, connection permits, TLS handshake and
//! cancellation are the SIP listeners' own ([`crate::transport`]); this module is only what
//! differs once the stream is up.
//!
//! Limits (README "Limits"): request headers must arrive within `limits.message_timeout`,
//! which hyper also applies to the wait for the next request on a kept-alive connection; a
//! whole request, body included, must be handled within the same time (else `408`); bodies
//! are capped at `limits.max_message_bytes` (else `413`).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::timeout::TimeoutLayer;

use crate::config::Limits;

/// How long a connection may take to finish its request in flight after shutdown begins.
const DRAIN: Duration = Duration::from_secs(2);

/// Applies the request limits of `limits` to `router` and answers unknown paths with a
/// plain-text `404`; done once at start, not per connection.
pub fn finish(router: Router, limits: &Limits) -> Router {
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits.max_message_bytes))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limits.message_timeout,
        ))
}

/// Serves HTTP/1.1 on `stream` until the peer closes, a timeout fires, or `cancel` (then the
/// request in flight may finish, within `DRAIN`).
pub async fn serve_connection<S>(
    stream: S,
    addr: SocketAddr,
    router: Router,
    limits: Limits,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // Handlers may ask who is calling (logs, rate limits) through axum's usual extractor.
        request.extensions_mut().insert(ConnectInfo(addr));
        router.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.message_timeout)
        .max_buf_size(limits.max_message_bytes.max(8192))
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        r = connection.as_mut() => r,
        () = cancel.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(DRAIN, connection.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%addr, %error, "http connection closed");
    }
}

async fn not_found(uri: axum::http::Uri) -> (axum::http::StatusCode, String) {
    (
        axum::http::StatusCode::NOT_FOUND,
        format!("{} is not served here\n", uri.path()),
    )
}
