//! Bodies as they stream through: counted (bytes in and out), capped (a request body over the
//! route's `max_body`), and closing the access log record when they end or are dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// A body whose data bytes are counted into `count`; past `limit`, it fails with [`TooLarge`]
/// (and sets `exceeded`). `on_drop` runs once, when the body is dropped (finished or not).
pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
    limit: Option<u64>,
    exceeded: Arc<AtomicBool>,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl<B> Counted<B> {
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Counted { inner, count, limit: None, exceeded: Arc::default(), on_drop: None }
    }

    pub fn limit(mut self, limit: Option<u64>, exceeded: Arc<AtomicBool>) -> Self {
        self.limit = limit;
        self.exceeded = exceeded;
        self
    }

    pub fn on_drop(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.on_drop = Some(Box::new(f));
        self
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
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
            let total = self.count.fetch_add(d.len() as u64, Ordering::Relaxed) + d.len() as u64;
            if let Some(limit) = self.limit
                && total > limit
            {
                self.exceeded.store(true, Ordering::Relaxed);
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

/// Where a request body that was not read to its end waits until the response has been sent;
/// shared by the request body and the response.
#[derive(Clone, Default)]
pub struct Parking(Arc<std::sync::Mutex<ParkingState>>);

#[derive(Default)]
struct ParkingState {
    body: Option<ProxyBody>,
    response_done: bool,
}

impl Parking {
    /// The request body was dropped unfinished: drained now if the response is complete, else
    /// kept until it is.
    fn park(&self, body: ProxyBody) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if st.response_done {
            drop(st);
            drain(body);
        } else {
            st.body = Some(body);
        }
    }

    /// The response has been sent (or abandoned): what was parked is drained.
    pub fn response_done(&self) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        st.response_done = true;
        if let Some(body) = st.body.take() {
            drop(st);
            drain(body);
        }
    }
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
    parking: Parking,
}

impl<B> KeepUnfinished<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    pub fn new(inner: B, parking: Parking) -> Self {
        KeepUnfinished { inner: Some(inner), parking }
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
            self.parking.park(boxed(b));
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
