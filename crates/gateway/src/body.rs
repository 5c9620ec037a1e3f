//! Bodies as they stream through: counted (bytes in and out), capped (a request body over the
//! route's `max_body`), and closing the access log record when they end or are dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body, Frame, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type on both sides of the proxy.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A request body went past the route's cap.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than this route accepts ({limit} bytes)")]
pub struct TooLarge {
    pub limit: u64,
}

/// What one request's bodies and its response share, in one allocation: the data bytes
/// counted each way, whether the request body went past the route's cap, and the request body
/// parked until the response is done (see [`KeepUnfinished`]).
#[derive(Default)]
pub struct Exchange {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    exceeded: AtomicBool,
    parking: Mutex<ParkingState>,
}

impl Exchange {
    /// Request body bytes read so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::Relaxed)
    }

    /// Response body bytes sent so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Whether the request body went past the route's cap.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// The request body was dropped unfinished: drained now if the response is complete, else
    /// kept until it is.
    fn park(&self, body: ProxyBody) {
        let mut st = self.parking.lock().unwrap_or_else(|e| e.into_inner());
        if st.response_done {
            drop(st);
            drain(body);
        } else {
            st.body = Some(body);
        }
    }

    /// The response has been sent (or abandoned): what was parked is drained.
    pub fn response_done(&self) {
        let mut st = self.parking.lock().unwrap_or_else(|e| e.into_inner());
        st.response_done = true;
        if let Some(body) = st.body.take() {
            drop(st);
            drain(body);
        }
    }
}

#[derive(Default)]
struct ParkingState {
    body: Option<ProxyBody>,
    response_done: bool,
}

/// Which of an [`Exchange`]'s counts a [`Counted`] body adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// The request body, from the client.
    In,
    /// The response body, to the client.
    Out,
}

/// A body whose data bytes are counted into its exchange; past `limit`, it fails with
/// [`TooLarge`] (and marks the exchange exceeded). `on_drop` runs once, when the body is
/// dropped (finished or not); its type is a parameter, so that it lives in the body's own box.
pub struct Counted<B, F: FnOnce() = fn()> {
    inner: B,
    exchange: Arc<Exchange>,
    direction: Direction,
    limit: Option<u64>,
    on_drop: Option<F>,
}

impl<B> Counted<B> {
    /// A request body, counted into `exchange`'s bytes in, failing past `limit` bytes.
    pub fn request(inner: B, exchange: Arc<Exchange>, limit: Option<u64>) -> Self {
        Counted { inner, exchange, direction: Direction::In, limit, on_drop: None }
    }
}

impl<B, F: FnOnce()> Counted<B, F> {
    /// A response body, counted into `exchange`'s bytes out; `on_drop` runs when it is dropped.
    pub fn response(inner: B, exchange: Arc<Exchange>, on_drop: F) -> Self {
        Counted { inner, exchange, direction: Direction::Out, limit: None, on_drop: Some(on_drop) }
    }
}

impl<B, F: FnOnce()> Drop for Counted<B, F> {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

impl<B, F> Body for Counted<B, F>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    F: FnOnce() + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(f))) => f,
        };
        if let Some(d) = frame.data_ref() {
            let count = match self.direction {
                Direction::In => &self.exchange.bytes_in,
                Direction::Out => &self.exchange.bytes_out,
            };
            let total = count.fetch_add(d.len() as u64, Ordering::Relaxed) + d.len() as u64;
            if let Some(limit) = self.limit
                && total > limit
            {
                self.exchange.exceeded.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(Box::new(TooLarge { limit }))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A whole body from a string or bytes.
pub fn full(data: impl Into<Bytes>) -> ProxyBody {
    http_body_util::Full::new(data.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> ProxyBody {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn boxed<B>(b: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed_unsync()
}

/// How much of a parked request body is read (and thrown away) after the response.
const DRAIN_BYTES: u64 = 1 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// A request body that, dropped before its end (the upstream answered without reading it all,
/// or the gateway refused the request), is parked instead of dropped. Dropping an HTTP/2
/// request body makes hyper reset the stream, with CANCEL if the response is not complete
/// yet, which clients take as a failed request. Once the response is complete, [`drain`] reads
/// what is left (up to 1 MiB, 5 s) so that small bodies end normally; beyond, the reset is
/// NO_ERROR (RFC 9113 §8.1).
pub struct KeepUnfinished<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    inner: Option<B>,
    exchange: Arc<Exchange>,
}

impl<B> KeepUnfinished<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    pub fn new(inner: B, exchange: Arc<Exchange>) -> Self {
        KeepUnfinished { inner: Some(inner), exchange }
    }
}

impl<B> Drop for KeepUnfinished<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn drop(&mut self) {
        if let Some(b) = self.inner.take()
            && !b.is_end_stream()
        {
            self.exchange.park(boxed(b));
        }
    }
}

impl<B> Body for KeepUnfinished<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// Reads an unfinished body to its end in the background (bounded), then drops it.
fn drain(mut body: ProxyBody) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut read = 0u64;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while read <= DRAIN_BYTES {
                match body.frame().await {
                    Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len() as u64),
                    _ => break,
                }
            }
        })
        .await;
    });
}
