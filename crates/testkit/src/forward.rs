//! A TCP port of the test process's loopback relayed to an address inside a network
//! namespace, so a program of the test's own namespace (a browser) reaches a server that
//! listens only on a test namespace's loopback (a host's dashboard). Each connection is
//! opened from a thread that entered the namespace (`setns` is per thread; a socket stays in
//! the namespace it was made in), so nothing is added to either namespace's network.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use crate::daemon::Netns;

/// A relay from `addr` (127.0.0.1, an ephemeral port of the test's namespace) to a target in
/// a namespace, or ([`Forward::listen_in`]) from a port of a namespace's loopback to a target
/// of the test's namespace. Dropping it stops accepting; connections in flight end with their
/// peers.
pub struct Forward {
    pub addr: SocketAddr,
    /// The namespace `addr` is in, when not the test's.
    listens_in: Option<std::path::PathBuf>,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// Runs `f` on a thread that entered the namespace at `ns_path`.
fn in_ns<T: Send + 'static>(ns_path: &std::path::Path, f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    let ns_path = ns_path.to_owned();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&ns_path)?;
        move_into_link_name_space(std::os::fd::AsFd::as_fd(&ns), Some(LinkNameSpaceType::Network))?;
        f()
    })
    .join()
    .expect("the namespace's thread does not panic")
}

/// Copies `from` to `to` until `from` ends, then ends `to`'s writing side.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Forward {
    /// Starts relaying connections made to the returned [`Forward::addr`] to `target` inside
    /// `ns`. A connection the target refuses is closed at once.
    pub fn start(ns: &Netns, target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ns_path = ns.path();
        Self::relay(listener, None, move || in_ns(&ns_path, move || TcpStream::connect(target)))
    }

    /// Relays connections to `127.0.0.1:port` inside `ns` to `target`, reached from the test's
    /// namespace: a server of the test's (a PDS) at the same loopback address in every host of
    /// a stage.
    pub fn listen_in(ns: &Netns, port: u16, target: SocketAddr) -> Self {
        let ns_path = ns.path();
        let listener = in_ns(&ns_path, move || TcpListener::bind(("127.0.0.1", port))).unwrap();
        Self::relay(listener, Some(ns_path), move || TcpStream::connect(target))
    }

    fn relay(
        listener: TcpListener,
        listens_in: Option<std::path::PathBuf>,
        connect: impl Fn() -> std::io::Result<TcpStream> + Send + 'static,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                // A refused connection drops `client`: the caller sees it closed.
                let Ok(server) = connect() else { continue };
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                std::thread::spawn(move || pump(client, server));
                std::thread::spawn(move || pump(s2, c2));
            }
        });
        Self { addr, listens_in, stop, accept: Some(accept) }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which sees `stop` and returns.
        let addr = self.addr;
        let _ = match &self.listens_in {
            Some(ns) => in_ns(ns, move || TcpStream::connect(addr)),
            None => TcpStream::connect(addr),
        };
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on a namespace's loopback is reached through the relay, both ways, and the
    /// end of a stream is passed on; a refused connection is closed.
    #[test]
    fn relays_to_a_namespaces_loopback() {
        let ns = Netns::new();
        let listener = in_ns(&ns.path(), || TcpListener::bind("127.0.0.1:0")).unwrap();
        let target = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, peer) = listener.accept().unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            c.write_all(format!("{} from {}", String::from_utf8_lossy(&got), peer.ip()).as_bytes()).unwrap();
        });
        let f = Forward::start(&ns, target);
        let mut c = TcpStream::connect(f.addr).unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "hello from 127.0.0.1");
        server.join().unwrap();
        // Nothing listens there any more: the relay closes the connection without an answer.
        let mut c = TcpStream::connect(f.addr).unwrap();
        let mut rest = Vec::new();
        assert_eq!(c.read_to_end(&mut rest).unwrap_or(0), 0);
    }

    /// The other way: a port of the namespace's loopback reaches a server of the test's.
    #[test]
    fn relays_from_a_namespaces_loopback() {
        let ns = Netns::new();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            c.write_all(b"from the test's namespace").unwrap();
        });
        let f = Forward::listen_in(&ns, 8181, target);
        let answer = in_ns(&ns.path(), || {
            let mut c = TcpStream::connect("127.0.0.1:8181")?;
            let mut s = String::new();
            c.read_to_string(&mut s)?;
            Ok(s)
        })
        .unwrap();
        assert_eq!(answer, "from the test's namespace");
        server.join().unwrap();
        drop(f);
    }
}
