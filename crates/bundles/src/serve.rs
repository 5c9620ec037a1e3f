//! One bundle's HTTP listener on this host's loopback: every request goes to the bundle's
//! routes ([`atoll_runner::WasmBundle::handle`]); a [`atoll_runner::RunError`] becomes its status
//! with the reason in words (504 for a request over its time).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A bundle being served; dropping it (or [`Running::stop`]) closes its listener.
pub struct Running {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    /// Serves `bundle` on `127.0.0.1:PORT` (`port` again if free, else one the OS picks).
    pub async fn start(name: String, bundle: Arc<atoll_runner::WasmBundle>, port: Option<u16>) -> std::io::Result<Running> {
        let listener = match port {
            Some(p) => match TcpListener::bind(("127.0.0.1", p)).await {
                Ok(l) => l,
                Err(_) => TcpListener::bind(("127.0.0.1", 0)).await?,
            },
            None => TcpListener::bind(("127.0.0.1", 0)).await?,
        };
        let addr = listener.local_addr()?;
        let max_body = bundle.limits().max_body_bytes;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, client)) = listener.accept().await else { continue };
                let (bundle, name) = (bundle.clone(), name.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (bundle, name) = (bundle.clone(), name.clone());
                        async move { Ok::<_, Infallible>(handle(&bundle, &name, req, client, max_body).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Ok(Running { addr, task })
    }

    pub fn stop(self) {}
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

async fn handle(
    bundle: &atoll_runner::WasmBundle,
    name: &str,
    req: Request<Incoming>,
    client: SocketAddr,
    max_body: usize,
) -> Response<Full<Bytes>> {
    let id = format!("{:016x}", fastrand::u64(..));
    let (mut parts, body) = req.into_parts();
    let body = match Limited::new(body, max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is over {max_body} bytes, the most bundle {name} takes\n"),
            );
        }
    };
    parts.extensions.insert(atoll_runner::ClientAddr(client));
    let (method, path) = (parts.method.to_string(), parts.uri.path().to_owned());
    let start = std::time::Instant::now();
    match bundle.handle(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            tracing::info!(target: "atoll_bundles::access", bundle = name, request_id = %id, %method, %path, status = resp.status().as_u16(), ms = start.elapsed().as_millis() as u64);
            resp.map(Full::new)
        }
        Err(e) => {
            let status = e.status();
            tracing::warn!(target: "atoll_bundles::access", bundle = name, request_id = %id, %method, %path, status = status.as_u16(), error = %e);
            text(status, format!("bundle {name}: {e} (request {id})\n"))
        }
    }
}
