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
/// a namespace. Dropping it stops accepting; connections in flight end with their peers.
pub struct Forward {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

/// Connects to `target` from inside the namespace at `ns_path`.
fn connect_in(ns_path: &std::path::Path, target: SocketAddr) -> std::io::Result<TcpStream> {
    let ns_path = ns_path.to_owned();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&ns_path)?;
        move_into_link_name_space(std::os::fd::AsFd::as_fd(&ns), Some(LinkNameSpaceType::Network))?;
        TcpStream::connect(target)
    })
    .join()
    .expect("the connecting thread does not panic")
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
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let ns_path = ns.path();
        let stopping = stop.clone();
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                // A refused connection drops `client`: the caller sees it closed.
                let Ok(server) = connect_in(&ns_path, target) else { continue };
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                std::thread::spawn(move || pump(client, server));
                std::thread::spawn(move || pump(s2, c2));
            }
        });
        Self { addr, stop, accept: Some(accept) }
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which sees `stop` and returns.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread that entered `ns`.
    fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = ns.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(path).unwrap();
            move_into_link_name_space(std::os::fd::AsFd::as_fd(&file), Some(LinkNameSpaceType::Network)).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// A server on a namespace's loopback is reached through the relay, both ways, and the
    /// end of a stream is passed on; a refused connection is closed.
    #[test]
    fn relays_to_a_namespaces_loopback() {
        let ns = Netns::new();
        let listener = in_ns(&ns, || TcpListener::bind("127.0.0.1:0").unwrap());
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
}
