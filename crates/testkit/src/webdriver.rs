//! A minimal W3C WebDriver client over plain HTTP/1.1, driving Debian's chromedriver and a
//! headless Chromium for dashboard tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One HTTP exchange with `Connection: close`; returns the JSON body.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    try_http(port, method, path, body).unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"))
}

/// One HTTP exchange; errors instead of panicking (for drop paths).
fn try_http(port: u16, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    // chromedriver keeps the connection open: read the headers, then Content-Length bytes.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before the headers"));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = raw[split + 4..].to_vec();
    match length {
        Some(len) => {
            while body.len() < len {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            }
        }
        None => {
            s.read_to_end(&mut body)?;
        }
    }
    if head.contains("transfer-encoding: chunked") {
        body = crate::daemon::dechunk_bytes(&body);
    }
    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A chromedriver process and one browser session.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with the flags this sandbox needs.
    pub fn start() -> Self {
        Self::start_with(&[], None)
    }

    /// [`Browser::start`] with more Chromium flags (`--host-resolver-rules=…`) and, if given,
    /// `home` as its `HOME` (where it finds the NSS database of the CAs it trusts, `.pki/nssdb`).
    pub fn start_with(extra_args: &[String], home: Option<&Path>) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut driver = Command::new(crate::require("chromedriver"));
        driver.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(home) = home {
            driver.env("HOME", home);
        }
        let driver = driver.spawn().unwrap();
        crate::wait_for(30, "chromedriver", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok() && http(port, "GET", "/status", None)["value"]["ready"] == true
        });
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra_args.iter().cloned());
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": crate::require("chromium"),
            "args": args
        }}}});
        let v = http(port, "POST", "/session", Some(&caps));
        let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_owned();
        Self { driver, port, session, _profile: profile }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = http(self.port, method, &format!("/session/{}{path}", self.session), body.as_ref());
        if let Some(e) = v["value"].get("error") {
            panic!("webdriver {method} {path}: {e}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap_or_default().to_owned()
    }

    /// The element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let v =
            http(self.port, "POST", &format!("/session/{}/element", self.session), Some(&json!({"using": "css selector", "value": css})));
        v["value"][ELEMENT].as_str().map(str::to_owned)
    }

    /// The element's text, or "" if it is missing or was replaced meanwhile (the page redraws
    /// on every event: callers poll).
    pub fn text(&self, css: &str) -> String {
        let Some(e) = self.find(css) else { return String::new() };
        let v = http(self.port, "GET", &format!("/session/{}/element/{e}/text", self.session), None);
        v["value"].as_str().unwrap_or_default().to_owned()
    }

    /// Clicks the element, finding it again if a redraw replaced it in between.
    pub fn click(&self, css: &str) {
        for _ in 0..20 {
            if let Some(e) = self.find(css) {
                let v = http(self.port, "POST", &format!("/session/{}/element/{e}/click", self.session), Some(&json!({})));
                if v["value"].get("error").is_none() {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("could not click {css}");
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).unwrap_or_else(|| panic!("no element {css}"));
        self.cmd("POST", &format!("/element/{e}/value"), Some(json!({"text": text})));
    }

    /// Runs a script in the page; returns its value.
    pub fn script(&self, js: &str) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": js, "args": []})))
    }

    /// Writes a PNG screenshot of the page.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Never panic here: a panic while a failed test unwinds aborts the process, and the
        // daemon's own drop (which removes its containers) would not run.
        let _ = try_http(self.port, "DELETE", &format!("/session/{}", self.session), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
