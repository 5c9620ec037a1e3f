//! Standard output and error kept in memory under a cap. Output past the cap fails the write
//! (a trap in the guest) and marks the pipe overflowed, so the runner reports "too much
//! output" rather than the trap; standard error past its cap is dropped silently.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

#[derive(Clone)]
pub(crate) struct CappedPipe {
    buf: Arc<Mutex<BytesMut>>,
    cap: usize,
    /// Past the cap: fail (stdout) or drop (stderr).
    fail: bool,
    overflowed: Arc<AtomicBool>,
}

impl CappedPipe {
    pub(crate) fn new(cap: usize, fail: bool) -> CappedPipe {
        CappedPipe { buf: Arc::default(), cap, fail, overflowed: Arc::default() }
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    pub(crate) fn take(&self) -> Bytes {
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner())).freeze()
    }

    /// Appends what fits; `Err` when `bytes` did not fit and this pipe fails.
    fn append(&self, bytes: &[u8]) -> Result<(), ()> {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let room = self.cap.saturating_sub(buf.len());
        if bytes.len() > room {
            self.overflowed.store(true, Ordering::Relaxed);
            if self.fail {
                return Err(());
            }
            buf.extend_from_slice(&bytes[..room]);
            return Ok(());
        }
        buf.extend_from_slice(bytes);
        Ok(())
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes).map_err(|()| StreamError::trap("output limit reached"))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always room: a write past the cap fails in `write`, where it is counted.
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, bytes: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(match self.append(bytes) {
            Ok(()) => Ok(bytes.len()),
            Err(()) => Err(std::io::Error::other("output limit reached")),
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
