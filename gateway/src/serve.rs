//! The HTTP connection loop: HTTP/1.1, and HTTP/2 over cleartext (h2c, "prior knowledge":
//! a client that opens with HTTP/2's preface is served HTTP/2 on the same port), a cap on
//! connections, header and body deadlines, a cap on streams per HTTP/2 connection, and a drain
//! on shutdown that lets requests in flight finish (bounded) before the engine stops. TLS is
//! terminated in front of the server (docs/operations.md).
//!
//! axum's own `serve` has no deadlines and no cap: a client that opens connections and sends
//! nothing, or stops half way through a body, would keep its connection and task for as long
//! as it liked.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};

use crate::error::ApiError;

/// Deadlines and caps of the HTTP server (`--header-timeout`, `--body-timeout`,
/// `--connections-max`, `--drain-timeout`).
#[derive(Clone, Copy, Debug)]
pub struct HttpSettings {
    /// A request's headers must arrive whole within this time of the connection opening or of
    /// its previous answer; so an idle keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// A request's body must arrive whole within this time of its headers (408 otherwise).
    pub body_timeout: Duration,
    /// Connections served at once; one past it is closed as soon as it is accepted.
    pub connections_max: usize,
    /// On shutdown, how long requests in flight get to finish before their connections close.
    pub drain_timeout: Duration,
}

impl HttpSettings {
    pub const CONNECTIONS_MAX: usize = 1 << 20;
    pub const TIMEOUT_MAX: Duration = Duration::from_secs(3600);
    /// Requests in flight at once on one HTTP/2 connection.
    pub const STREAMS_PER_CONNECTION: u32 = 128;
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            connections_max: 10_000,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets requests
/// in flight finish for at most `drain_timeout`, and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let connections = Arc::new(Semaphore::new(settings.connections_max));
    let graceful = GracefulShutdown::new();
    let mut http =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout);
    // An HTTP/2 connection carries many requests at once, each a task here: bounded per
    // connection, on top of the cap on connections. Pings find peers that went away.
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(HttpSettings::STREAMS_PER_CONNECTION)
        .max_header_list_size(64 << 10)
        .keep_alive_interval(Some(settings.header_timeout))
        .keep_alive_timeout(settings.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or the peer left before the accept: keep going,
                    // after a pause that lets descriptors free up.
                    tracing::warn!(%error, "a connection could not be accepted");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics::counter!("kizo_http_connections_refused_total").increment(1);
            tracing::debug!(%peer, "connection refused: at the connection cap");
            drop(stream);
            continue;
        };
        // Answers go out whole in one write; Nagle's algorithm would only hold one back behind
        // a delayed acknowledgement.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set on a connection");
        }
        let service = match make_service.call(peer).await {
            Ok(service) => service,
            Err(infallible) => match infallible {},
        };
        // The body deadline is set here rather than by a middleware layer, which would box a
        // future for every request.
        let body_timeout = settings.body_timeout;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let request = with_body_deadline(request.map(Body::new), body_timeout);
            service.clone().oneshot(request)
        });
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(connections = graceful.count(), "draining");
    if tokio::time::timeout(settings.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = ?settings.drain_timeout,
            "requests still in flight after the drain timeout: their connections are closed"
        );
    }
}

/// The request with a body that fails once `timeout` has passed without it arriving whole.
fn with_body_deadline(request: Request, timeout: Duration) -> Request {
    if request.body().is_end_stream() {
        // No body to wait for (a GET): no timer to set.
        return request;
    }
    request.map(|body| {
        Body::new(DeadlineBody {
            body,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        })
    })
}

/// A request body with a deadline for all of it (not for each piece: a client sending a byte
/// now and then would otherwise never time out).
struct DeadlineBody {
    body: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.body).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(self.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body that did not arrive whole in time.
#[derive(Debug, thiserror::Error)]
#[error("the request's body did not arrive whole within {0:?}")]
pub struct BodyTimedOut(Duration);

/// What a failure to read a request body means to the client: too slow (408), too large (413),
/// or broken (400).
pub fn body_read_error(error: &(dyn std::error::Error + 'static), limit: usize) -> ApiError {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(timed_out) = error.downcast_ref::<BodyTimedOut>() {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                timed_out.to_string(),
            );
        }
        if error.is::<http_body_util::LengthLimitError>() {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is over {limit} bytes"),
            );
        }
        cause = error.source();
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_body",
        "the request's body could not be read",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_at_its_deadline_and_one_that_arrives_passes() {
        let first: Result<Bytes, axum::Error> = Ok(Bytes::from_static(b"{"));
        let stalls = futures_util::stream::iter([first]).chain(futures_util::stream::pending());
        let request = with_body_deadline(
            Request::new(Body::from_stream(stalls)),
            Duration::from_secs(5),
        );
        let error = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap_err();
        let problem = body_read_error(&error, 1 << 20);
        assert_eq!(
            (problem.status, problem.code),
            (StatusCode::REQUEST_TIMEOUT, "body_timeout")
        );

        let whole = with_body_deadline(Request::new(Body::from("{}")), Duration::from_secs(5));
        let bytes = axum::body::to_bytes(whole.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"{}");
        let large = with_body_deadline(Request::new(Body::from("{}")), Duration::from_secs(5));
        let error = axum::body::to_bytes(large.into_body(), 1)
            .await
            .unwrap_err();
        assert_eq!(body_read_error(&error, 1).code, "body_too_large");
    }
}
