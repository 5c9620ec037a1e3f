//! `netcheck http-serve PORT`: a small web app for the gateway's end-to-end tests, std only,
//! HTTP/1.1 with keep-alive, a thread per connection.
//!
//! - `GET /`: a page that opens a WebSocket to `/ws` and echoes a message, downloads
//!   `/big?n=8388608` and uploads 4 MiB to `/upload`, and shows what came back with SHA-256
//!   digests (computed by the browser's `crypto.subtle`, which exists only in a secure context).
//! - `GET /host`: the container's host name (which replica answered).
//! - `GET /big?n=N`: N bytes of `atoll_testkit::pattern_byte`'s pattern, streamed.
//! - `POST /upload`: reads the body (Content-Length or chunked) and answers `LENGTH SHA256`.
//! - `GET /ws`: a WebSocket (RFC 6455) that echoes every message.
//! - `GET /headers`: the request's headers, one per line (to check forwarding headers).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use sha2::Digest;

const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8"><title>gateway test</title>
<h1 id="title">hello from HOST</h1>
<pre id="ws">ws: …</pre><pre id="down">down: …</pre><pre id="up">up: …</pre>
<script>
const $ = (id, text) => { document.getElementById(id).textContent = text; };
async function hex(buf) {
  const d = await crypto.subtle.digest('SHA-256', buf);
  return [...new Uint8Array(d)].map(b => b.toString(16).padStart(2, '0')).join('');
}
window.ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
ws.onopen = () => ws.send('echo me');
ws.onmessage = e => $('ws', 'ws: ' + e.data);
ws.onerror = () => $('ws', 'ws: error');
ws.onclose = () => $('ws', 'ws: closed');
(async () => {
  try {
    const r = await fetch('/big?n=8388608');
    const b = await r.arrayBuffer();
    $('down', 'down: ' + b.byteLength + ' ' + await hex(b));
    const body = new Uint8Array(4194304);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 255;
    const u = await fetch('/upload', { method: 'POST', body });
    $('up', 'up: ' + (await u.text()).trim() + ' ' + await hex(body));
  } catch (e) { $('down', 'error: ' + e); }
})();
</script>
"#;

pub fn serve(port: u16) -> ! {
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    for s in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = connection(s);
        });
    }
    unreachable!("incoming() never ends")
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

fn respond(w: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    write!(w, "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n", body.len())?;
    w.write_all(body)
}

fn connection(s: TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("/").to_owned());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        match (method.as_str(), path) {
            ("GET", "/") => respond(&mut w, "200 OK", "text/html; charset=utf-8", PAGE.replace("HOST", &hostname()).as_bytes())?,
            ("GET", "/host") => respond(&mut w, "200 OK", "text/plain", format!("{}\n", hostname()).as_bytes())?,
            ("GET", "/headers") => {
                let text: String = headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
                respond(&mut w, "200 OK", "text/plain", text.as_bytes())?
            }
            ("GET", "/big") => {
                let n: u64 = query.split('&').find_map(|kv| kv.strip_prefix("n=")).and_then(|v| v.parse().ok()).unwrap_or(0);
                write!(w, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n")?;
                let mut buf = vec![0u8; 64 * 1024];
                let mut i = 0u64;
                while i < n {
                    let len = (n - i).min(buf.len() as u64) as usize;
                    for (j, b) in buf[..len].iter_mut().enumerate() {
                        *b = atoll_testkit::pattern_byte(i + j as u64);
                    }
                    w.write_all(&buf[..len])?;
                    i += len as u64;
                }
            }
            ("POST", "/upload") => {
                let mut h = sha2::Sha256::new();
                let mut total = 0u64;
                let mut sink = |chunk: &[u8]| {
                    h.update(chunk);
                    total += chunk.len() as u64;
                };
                if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
                    read_chunked(&mut r, &mut sink)?;
                } else {
                    let mut left: u64 = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    let mut buf = vec![0u8; 64 * 1024];
                    while left > 0 {
                        let want = left.min(buf.len() as u64) as usize;
                        let n = r.read(&mut buf[..want])?;
                        if n == 0 {
                            return Ok(());
                        }
                        sink(&buf[..n]);
                        left -= n as u64;
                    }
                }
                let body = format!("{total} {}\n", hex::encode(h.finalize()));
                respond(&mut w, "200 OK", "text/plain", body.as_bytes())?
            }
            ("GET", "/ws") => {
                let Some(key) = header("sec-websocket-key") else {
                    respond(&mut w, "400 Bad Request", "text/plain", b"not a WebSocket handshake\n")?;
                    continue;
                };
                use base64::Engine;
                let accept = base64::engine::general_purpose::STANDARD
                    .encode(sha1::Sha1::digest(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes()));
                write!(
                    w,
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                )?;
                return echo_frames(&mut r, &mut w);
            }
            _ => respond(&mut w, "404 Not Found", "text/plain", b"no such page\n")?,
        }
    }
}

fn read_chunked(r: &mut impl BufRead, sink: &mut impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut size = String::new();
        r.read_line(&mut size)?;
        let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if n == 0 {
            // Trailers, then the empty line.
            loop {
                let mut t = String::new();
                if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        let mut left = n;
        while left > 0 {
            let want = left.min(buf.len());
            let k = r.read(&mut buf[..want])?;
            if k == 0 {
                return Ok(());
            }
            sink(&buf[..k]);
            left -= k;
        }
        let mut crlf = String::new();
        r.read_line(&mut crlf)?;
    }
}

/// Echoes WebSocket messages (one frame each) until a close frame or the end of the stream.
fn echo_frames(r: &mut impl Read, w: &mut impl Write) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        r.read_exact(&mut head)?;
        let opcode = head[0] & 0x0f;
        let masked = head[1] & 0x80 != 0;
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            len = u64::from_be_bytes(b);
        }
        let mut mask = [0u8; 4];
        if masked {
            r.read_exact(&mut mask)?;
        }
        let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0).min(1 << 24)];
        r.read_exact(&mut payload)?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        let reply_opcode = match opcode {
            0x8 => {
                w.write_all(&[0x88, 0])?;
                return Ok(());
            }
            0x9 => 0xA,
            0xA => continue,
            o => o,
        };
        let mut frame = vec![0x80 | reply_opcode];
        match payload.len() {
            n if n < 126 => frame.push(n as u8),
            n if n < 65536 => {
                frame.push(126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&payload);
        w.write_all(&frame)?;
        w.flush()?;
    }
}
