//! `netcheck`: a tiny UDP peer for network tests, copied into test images (busybox has no UDP
//! client or server). Names resolve through the container's own resolver (getaddrinfo).
//!
//! ```text
//! netcheck udp-serve PORT            echo every datagram back, forever
//! netcheck udp-ask HOST PORT MSG     send MSG, print the reply; exit 1 after 3 s of silence
//! netcheck http-serve PORT           a web app for the gateway's tests (see `http`)
//! ```

mod http;

use std::net::{ToSocketAddrs, UdpSocket};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["udp-serve", port] => {
            let sock = UdpSocket::bind(format!("[::]:{port}")).expect("bind");
            let mut buf = [0u8; 2048];
            loop {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        }
        ["udp-ask", host, port, msg] => {
            let addr = match (*host, port.parse::<u16>().expect("port")).to_socket_addrs().map(|mut a| a.next()) {
                Ok(Some(a)) => a,
                other => {
                    eprintln!("netcheck: cannot resolve {host}: {other:?}");
                    std::process::exit(2);
                }
            };
            let sock = UdpSocket::bind(if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).expect("bind");
            sock.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
            sock.send_to(msg.as_bytes(), addr).expect("send");
            let mut buf = [0u8; 2048];
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => println!("{}", String::from_utf8_lossy(&buf[..n])),
                Err(e) => {
                    eprintln!("netcheck: no reply from {addr}: {e}");
                    std::process::exit(1);
                }
            }
        }
        ["http-serve", port] => http::serve(port.parse().expect("port")),
        _ => {
            eprintln!("usage: netcheck udp-serve PORT | netcheck udp-ask HOST PORT MSG | netcheck http-serve PORT");
            std::process::exit(2);
        }
    }
}
