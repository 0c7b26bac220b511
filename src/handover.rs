//! The way from every core to the transports thread (`transports`), which
//! serves the hub's fallback transports: the requests a tokio worker
//! forwards, with the bodies of their answers (whole, or an event stream
//! fed by the transports thread), and the TCP connections the native ring
//! hands over whole. Below the workers and the transports thread alike, so
//! that both can name it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use tokio::sync::{mpsc, oneshot};

use crate::admission::Admission;

/// A response body: whole, or an event stream fed by the transports thread.
pub enum Body {
    Full(Option<Bytes>),
    Stream(Stream),
}

/// The receiving end of an event stream, with the count of bytes sent into
/// it and not yet taken by hyper, held against --max-pending-bytes.
pub struct Stream {
    pub(crate) chunks: mpsc::UnboundedReceiver<Bytes>,
    pub(crate) pending: Arc<AtomicU64>,
}

impl Body {
    pub fn full(bytes: Bytes) -> Body {
        Body::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(hyper::body::Frame::data(b)))),
            Body::Stream(stream) => match stream.chunks.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => {
                    stream
                        .pending
                        .fetch_sub(chunk.len() as u64, Ordering::Relaxed);
                    Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
                }
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(bytes) => {
                hyper::body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Body::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// A transport request, with where its answer goes.
pub(crate) struct Request {
    pub(crate) parts: Parts,
    pub(crate) body: Bytes,
    pub(crate) reply: oneshot::Sender<Response<Body>>,
}

/// A TCP connection the native ring gives to the transports thread, with
/// the bytes it had read from it (the request being answered, and anything
/// after it).
pub struct Handoff {
    pub stream: std::net::TcpStream,
    pub initial: Vec<u8>,
    pub admission: Option<Admission>,
}

/// Every core's way to the transports thread.
pub struct Sender {
    requests: mpsc::UnboundedSender<Request>,
    handoffs: mpsc::UnboundedSender<Handoff>,
}

/// The transports thread's ends of the channels.
pub struct Receiver {
    pub(crate) requests: mpsc::UnboundedReceiver<Request>,
    pub(crate) handoffs: mpsc::UnboundedReceiver<Handoff>,
}

pub fn channel() -> (Sender, Receiver) {
    let (requests, requests_rx) = mpsc::unbounded_channel();
    let (handoffs, handoffs_rx) = mpsc::unbounded_channel();
    (
        Sender { requests, handoffs },
        Receiver {
            requests: requests_rx,
            handoffs: handoffs_rx,
        },
    )
}

impl Sender {
    /// Asks the transports thread to answer a transport request.
    pub async fn call(&self, parts: Parts, body: Bytes) -> Response<Body> {
        let (reply, answer) = oneshot::channel();
        let request = Request { parts, body, reply };
        if self.requests.send(request).is_err() {
            return stopping();
        }
        answer.await.unwrap_or_else(|_| stopping())
    }

    /// Gives a TCP connection to the transports thread; false if it has
    /// stopped (the connection is then dropped, and closed).
    pub fn hand_off(&self, handoff: Handoff) -> bool {
        self.handoffs.send(handoff).is_ok()
    }
}

/// The answer when the transports thread has stopped.
fn stopping() -> Response<Body> {
    let mut response = Response::new(Body::full(Bytes::from_static(
        b"the server is shutting down\n",
    )));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
