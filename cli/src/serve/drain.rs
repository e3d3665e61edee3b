//! Keeps HTTP/1.1 connections usable after replies sent before the request
//! body was read (404, 405, 401, routes that take no body).
//!
//! hyper reuses a connection only once the request body has been read to
//! its end. When a reply goes out earlier and the rest of the body has not
//! arrived yet, hyper closes the connection without saying so, and a client
//! that pools connections fails its next request on it ("connection reset").
//! So the outermost middleware reads and drops whatever body the routes left
//! unread, up to the body limit, before the reply leaves. Past the limit (or
//! when the body breaks off) it adds `Connection: close` instead, so that
//! clients know not to reuse the connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::{Body, BodyDataStream, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::{Stream, StreamExt};
use tokio::sync::oneshot;

use super::AppState;

/// The part of a request body the routes dropped before its end.
struct Unread {
    stream: BodyDataStream,
    /// Bytes read so far, by the routes.
    read: usize,
}

/// The request body as the routes see it: it counts what they read and,
/// when dropped before the end, hands the rest back to the middleware.
struct TrackedBody {
    /// `None` once the body ended or failed: nothing is left to drain.
    stream: Option<BodyDataStream>,
    read: usize,
    give_back: Option<oneshot::Sender<Unread>>,
}

impl Stream for TrackedBody {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(None);
        };
        let item = ready!(stream.poll_next_unpin(cx));
        match &item {
            Some(Ok(chunk)) => this.read += chunk.len(),
            // A failed body means a broken connection, which hyper drops.
            Some(Err(_)) | None => this.stream = None,
        }
        Poll::Ready(item)
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        if let (Some(stream), Some(give_back)) = (self.stream.take(), self.give_back.take()) {
            // Fails only when the middleware is gone, i.e. the request was
            // abandoned; hyper then deals with the connection itself.
            let _ = give_back.send(Unread {
                stream,
                read: self.read,
            });
        }
    }
}

/// Middleware: after the routes answer, read the rest of a request body
/// they did not read (at most `max_body_bytes` in all), so that hyper can
/// keep the connection; mark the reply `Connection: close` when it cannot.
pub async fn drain_unread_body(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if request.body().is_end_stream() {
        // No body (GET and friends): nothing can be left unread.
        return next.run(request).await;
    }
    let (give_back, mut unread) = oneshot::channel();
    let request = request.map(|body| {
        Body::from_stream(TrackedBody {
            stream: Some(body.into_data_stream()),
            read: 0,
            give_back: Some(give_back),
        })
    });
    let mut response = next.run(request).await;
    // Nothing comes back when the body was read to its end, or when the
    // routes still hold it (then it is theirs to read).
    if let Ok(rest) = unread.try_recv()
        && !drain(rest, state.options.max_body_bytes).await
    {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Read and drop the rest of a body. False when the body as a whole is
/// over `limit` or breaks off: the connection cannot be reused then.
async fn drain(rest: Unread, limit: usize) -> bool {
    let Unread {
        mut stream,
        mut read,
    } = rest;
    while read <= limit {
        match stream.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            Some(Err(_)) => return false,
            None => return true,
        }
    }
    false
}
