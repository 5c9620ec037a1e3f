//! The CLI's side of the API: HTTP/1.1 over the daemon's unix socket, one connection per
//! request (the socket is local; connections are cheap and nothing is shared).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the Atoll daemon at {socket}: is `atoll daemon` running? (set --socket or ATOLL_SOCKET to use another)")]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("permission denied on {socket}: run as root or as a member of the `atoll` group")]
    Permission { socket: PathBuf },
    #[error("talking to the daemon")]
    Http(#[source] hyper::Error),
    #[error("{body}")]
    Api { status: StatusCode, body: ErrorBody },
    #[error("the daemon sent a response this client does not understand")]
    Decode(#[source] serde_json::Error),
}

impl ClientError {
    /// The daemon could not be reached at all (as opposed to refusing a request).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Permission { .. })
    }

    /// The HTTP status, for errors the daemon reported.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type ReqBody = BoxBody<Bytes, std::io::Error>;

/// A client bound to one socket path.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

pub fn empty() -> ReqBody {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

pub fn full(data: Vec<u8>) -> ReqBody {
    Full::new(Bytes::from(data)).map_err(|never| match never {}).boxed()
}

/// A request body fed from a channel of chunks (for uploads).
pub fn channel_body(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> ReqBody {
    let mut rx = rx;
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).map_ok_frame();
    BodyExt::boxed(StreamBody::new(stream))
}

trait MapOkFrame: futures_util::Stream<Item = std::io::Result<Bytes>> + Sized {
    fn map_ok_frame(self) -> futures_util::stream::MapOk<Self, fn(Bytes) -> Frame<Bytes>> {
        futures_util::TryStreamExt::map_ok(self, Frame::data as fn(Bytes) -> Frame<Bytes>)
    }
}
impl<S: futures_util::Stream<Item = std::io::Result<Bytes>>> MapOkFrame for S {}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self { socket: socket.into() }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and returns the response, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: ReqBody,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.map_err(|source| {
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                ClientError::Permission { socket: self.socket.clone() }
            } else {
                ClientError::Connect { socket: self.socket.clone(), source }
            }
        })?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(ClientError::Http)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder().method(method).uri(path).header(hyper::header::HOST, "atoll");
        if let Some(ct) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, ct);
        }
        let req = req.body(body).expect("valid request");
        sender.send_request(req).await.map_err(ClientError::Http)
    }

    /// Sends a request and turns a non-2xx answer into [`ClientError::Api`].
    pub async fn send_ok(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: ReqBody,
    ) -> Result<Response<Incoming>, ClientError> {
        let resp = self.send(method, path, content_type, body).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(ClientError::Http)?.to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
            message: format!("the daemon answered {status}: {}", String::from_utf8_lossy(&bytes)),
            causes: vec![],
        });
        Err(ClientError::Api { status, body })
    }

    /// A request with an optional JSON body whose JSON answer is decoded into `T`.
    pub async fn json<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<&impl Serialize>) -> Result<T, ClientError> {
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(ClientError::Decode)
    }

    /// Like [`Client::json`] but returns the raw answer (empty for 204).
    pub async fn call(&self, method: Method, path: &str, body: Option<&impl Serialize>) -> Result<Bytes, ClientError> {
        let (ct, b) = match body {
            Some(v) => (Some("application/json"), full(serde_json::to_vec(v).expect("serialises"))),
            None => (None, empty()),
        };
        let resp = self.send_ok(method, path, ct, b).await?;
        Ok(resp.into_body().collect().await.map_err(ClientError::Http)?.to_bytes())
    }
}

/// Percent-encodes a query value.
pub fn q(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
