//! A TCP proxy that can stall a response after a number of bytes and then cut every
//! connection: a deterministic way to interrupt a download part-way.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    /// Stall a connection once it has sent this many bytes to the client.
    stall_after: Option<u64>,
    stalled: bool,
    /// Bumped by `cut`: connections stalled before it end.
    generation: u64,
}

pub struct StallProxy {
    pub port: u16,
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl StallProxy {
    pub fn start(upstream_port: u16, stall_after: Option<u64>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new((Mutex::new(State { stall_after, ..Default::default() }), Condvar::new()));
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(client, upstream_port, s));
            }
        });
        Self { port, shared }
    }

    /// Blocks until some connection has stalled (or panics after `secs`).
    pub fn wait_stalled(&self, secs: u64) {
        let (lock, cv) = &*self.shared;
        let guard = lock.lock().unwrap();
        let (_g, timeout) = cv.wait_timeout_while(guard, Duration::from_secs(secs), |st| !st.stalled).unwrap();
        assert!(!timeout.timed_out(), "no connection stalled within {secs}s");
    }

    /// Ends every stalled connection and sets a new stall threshold (None: pass everything).
    pub fn cut(&self, stall_after: Option<u64>) {
        let (lock, cv) = &*self.shared;
        let mut st = lock.lock().unwrap();
        st.generation += 1;
        st.stalled = false;
        st.stall_after = stall_after;
        cv.notify_all();
    }
}

fn serve(client: TcpStream, upstream_port: u16, shared: Arc<(Mutex<State>, Condvar)>) {
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (mut c_read, mut u_write) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut u_write);
        let _ = u_write.shutdown(Shutdown::Write);
    });
    let (mut u_read, mut c_write) = (upstream, client);
    let mut sent: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match u_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (lock, cv) = &*shared;
        let mut st = lock.lock().unwrap();
        match st.stall_after {
            Some(limit) if sent + n as u64 > limit => {
                let part = (limit - sent.min(limit)) as usize;
                let _ = c_write.write_all(&buf[..part]);
                let _ = c_write.flush();
                st.stalled = true;
                cv.notify_all();
                let gen_at_stall = st.generation;
                let _st = cv.wait_while(st, |s| s.generation == gen_at_stall).unwrap();
                break;
            }
            _ => {}
        }
        drop(st);
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = c_write.shutdown(Shutdown::Both);
    let _ = u_read.shutdown(Shutdown::Both);
}
