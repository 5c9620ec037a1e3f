//! WAGI, the CGI of WebAssembly (RFC 3875 over WASI, as Spin's and deislabs' WAGI executors
//! run it): pure. [`env`] turns a request into the CGI meta-variables; [`response`] reads
//! the module's standard output (a header block, a blank line, the body) into a response.
//!
//! Meta-variables: `REQUEST_METHOD`, `SCRIPT_NAME` (what the route's literals and parameters
//! matched), `PATH_INFO` and `PATH_TRANSLATED` (what its `*` matched, decoded),
//! `X_RAW_PATH_INFO` (the same, encoded), `QUERY_STRING`, `CONTENT_LENGTH` (only with a body),
//! `CONTENT_TYPE`, `SERVER_NAME`/`SERVER_PORT` (from `Host`), `SERVER_PROTOCOL`,
//! `SERVER_SOFTWARE`, `GATEWAY_INTERFACE=CGI/1.1`, `REMOTE_ADDR`/`REMOTE_HOST` (when the
//! caller knows it), `AUTH_TYPE`, `REMOTE_USER` (empty), `X_MATCHED_ROUTE`, `X_FULL_URL`,
//! `X_PARAM_<name>` for each `:name` (Atoll's; WAGI has no parameters), and `HTTP_<NAME>`
//! for each header (upper case, `-` → `_`, repeated fields joined by `, `). As RFC 3875
//! §4.1.18 advises and Spin does, `Authorization`, `Proxy-Authorization` and `Connection`
//! are not passed; nor are header names with `_` (they would alias `-` names, as nginx
//! refuses by default).
//!
//! The response (RFC 3875 §6): header lines `Name: value` (LF or CRLF), ended by an empty
//! line; at least one of `Content-Type`, `Location`, `Status` (`Status: 404 Not Found`); a
//! `Location` without `Status` is a 302 (a local `Location` is not re-dispatched: it is sent
//! to the client as a redirect, as Spin does). Header fields about the connection
//! (`Connection`, `Transfer-Encoding`, `Content-Length`, `Keep-Alive`, `Upgrade`…) are
//! dropped (§6.3.4).

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use crate::route::{RouteMatch, decode};

/// The value of `SERVER_SOFTWARE`.
pub const SERVER_SOFTWARE: &str = concat!("atoll/", env!("CARGO_PKG_VERSION"));

/// The most header lines and bytes a response's header block may have.
pub const MAX_HEADER_LINES: usize = 128;
pub const MAX_HEADER_BYTES: usize = 64 << 10;

/// What [`env`] needs to know about a request besides its head.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo<'a> {
    /// The route as written in the manifest.
    pub route_pattern: &'a str,
    pub body_len: usize,
    pub remote_addr: Option<std::net::IpAddr>,
}

/// The CGI meta-variables for a request, in a stable order.
pub fn env(head: &http::request::Parts, m: &RouteMatch, info: &RequestInfo<'_>) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| vars.push((k.to_owned(), v));
    let host = head.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).or_else(|| head.uri.authority().map(|a| a.as_str()));
    let (server_name, server_port) = match host.map(split_host) {
        Some((name, Some(port))) => (name.to_owned(), port.to_owned()),
        Some((name, None)) => (name.to_owned(), default_port(head).to_owned()),
        None => ("localhost".to_owned(), default_port(head).to_owned()),
    };
    set("AUTH_TYPE", String::new());
    if info.body_len > 0 {
        set("CONTENT_LENGTH", info.body_len.to_string());
    }
    let content_type = head.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    set("CONTENT_TYPE", content_type.to_owned());
    set("GATEWAY_INTERFACE", "CGI/1.1".into());
    set("PATH_INFO", decode(&m.rest));
    set("PATH_TRANSLATED", decode(&m.rest));
    set("QUERY_STRING", head.uri.query().unwrap_or("").to_owned());
    let remote = info.remote_addr.map(|a| a.to_string()).unwrap_or_default();
    set("REMOTE_ADDR", remote.clone());
    set("REMOTE_HOST", remote);
    set("REMOTE_USER", String::new());
    set("REQUEST_METHOD", head.method.as_str().to_owned());
    set("SCRIPT_NAME", m.script_name.clone());
    set("SERVER_NAME", server_name.clone());
    set("SERVER_PORT", server_port.clone());
    set("SERVER_PROTOCOL", format!("{:?}", head.version));
    set("SERVER_SOFTWARE", SERVER_SOFTWARE.into());
    set("X_MATCHED_ROUTE", info.route_pattern.to_owned());
    set("X_RAW_PATH_INFO", m.rest.clone());
    let path_and_query = head.uri.path_and_query().map_or("/", |p| p.as_str());
    set("X_FULL_URL", format!("{}://{}:{}{}", scheme(head), server_name, server_port, path_and_query));
    for (name, value) in &m.params {
        set(&format!("X_PARAM_{name}"), value.clone());
    }
    let mut seen: Vec<(String, String)> = Vec::new();
    for (name, value) in &head.headers {
        let n = name.as_str();
        if n.contains('_') || ["authorization", "proxy-authorization", "connection"].contains(&n) {
            continue;
        }
        let key = format!("HTTP_{}", n.to_ascii_uppercase().replace('-', "_"));
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match seen.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(&value);
            }
            None => seen.push((key, value)),
        }
    }
    vars.extend(seen);
    vars
}

/// `host[:port]` or `[v6][:port]`.
fn split_host(host: &str) -> (&str, Option<&str>) {
    let port_at = if host.starts_with('[') { host.find("]:").map(|i| i + 1) } else { host.rfind(':') };
    match port_at {
        Some(i) if host[i + 1..].parse::<u16>().is_ok() => (&host[..i], Some(&host[i + 1..])),
        _ => (host, None),
    }
}

fn scheme(head: &http::request::Parts) -> &str {
    head.uri.scheme_str().unwrap_or("http")
}

fn default_port(head: &http::request::Parts) -> &'static str {
    if scheme(head) == "https" { "443" } else { "80" }
}

/// The module's argv: the handler's name, then the query's `&`-separated terms decoded (as
/// WAGI passes them).
pub fn args(handler: &str, query: Option<&str>) -> Vec<String> {
    let mut args = vec![handler.to_owned()];
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        args.extend(q.split('&').map(decode));
    }
    args
}

/// Why standard output is not a CGI response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("the output has no blank line ending its header block (a CGI response is `Content-Type: …`, a blank line, then the body)")]
    NoHeaderEnd,
    #[error("the header block is longer than {MAX_HEADER_BYTES} bytes or {MAX_HEADER_LINES} lines")]
    HeadersTooLarge,
    #[error("header line {line} `{text}` is not `Name: value`")]
    BadLine { line: usize, text: String },
    #[error("the header block has none of Content-Type, Location or Status")]
    NoContentType,
    #[error("`Status: {0}` is not a status code between 100 and 999")]
    BadStatus(String),
}

/// Header fields the runner never passes on (RFC 3875 §6.3.4, RFC 9110 §7.6.1).
const CONNECTION_FIELDS: &[&str] =
    &["connection", "content-length", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

/// Reads a CGI response out of standard output.
pub fn response(stdout: &[u8]) -> Result<Response<bytes::Bytes>, BadResponse> {
    let (head, body) = split_head(stdout)?;
    let text = std::str::from_utf8(head).map_err(|_| BadResponse::BadLine { line: 1, text: "(not UTF-8)".into() })?;
    let mut headers = HeaderMap::new();
    let mut status: Option<StatusCode> = None;
    let mut sufficient = false;
    let mut location = false;
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if i >= MAX_HEADER_LINES {
            return Err(BadResponse::HeadersTooLarge);
        }
        let bad = || BadResponse::BadLine { line: i + 1, text: line.chars().take(80).collect() };
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        let value = value.trim();
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        match name.as_str() {
            "status" => {
                let code = value.split_whitespace().next().unwrap_or("");
                let code = code
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or_else(|| BadResponse::BadStatus(value.chars().take(40).collect()))?;
                status = Some(code);
                sufficient = true;
            }
            n if CONNECTION_FIELDS.contains(&n) => {}
            n => {
                if n == "content-type" {
                    sufficient = true;
                }
                if n == "location" {
                    sufficient = true;
                    location = true;
                }
                let value = HeaderValue::from_str(value).map_err(|_| bad())?;
                headers.append(name, value);
            }
        }
    }
    if !sufficient {
        return Err(BadResponse::NoContentType);
    }
    let status = status.unwrap_or(if location { StatusCode::FOUND } else { StatusCode::OK });
    let mut response = Response::new(bytes::Bytes::copy_from_slice(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// The header block (without its final empty line) and the body.
fn split_head(out: &[u8]) -> Result<(&[u8], &[u8]), BadResponse> {
    let window = &out[..out.len().min(MAX_HEADER_BYTES + 4)];
    let mut start = 0;
    loop {
        let Some(nl) = window[start..].iter().position(|&b| b == b'\n') else {
            return Err(if out.len() > MAX_HEADER_BYTES { BadResponse::HeadersTooLarge } else { BadResponse::NoHeaderEnd });
        };
        let line = &window[start..start + nl];
        if line.is_empty() || line == b"\r" {
            let head = &out[..start.saturating_sub(1)];
            let head = head.strip_suffix(b"\r").unwrap_or(head);
            if start == 0 {
                return Err(BadResponse::NoContentType);
            }
            return Ok((head, &out[start + nl + 1..]));
        }
        start += nl + 1;
        if start > MAX_HEADER_BYTES {
            return Err(BadResponse::HeadersTooLarge);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn parts(req: http::Request<()>) -> http::request::Parts {
        req.into_parts().0
    }

    #[test]
    fn env_follows_rfc_3875_and_wagi() {
        let head = parts(
            http::Request::post("/files/a%20b/c?x=1&y=%41")
                .header("host", "hello.example:8443")
                .header("content-type", "text/plain")
                .header("accept", "a")
                .header("accept", "b")
                .header("authorization", "Bearer secret")
                .header("x_smuggled", "1")
                .body(())
                .unwrap(),
        );
        let m = RouteMatch {
            index: 0,
            handler: "files".into(),
            params: vec![("dir".into(), "a b".into())],
            script_name: "/files/a%20b".into(),
            rest: "/c".into(),
        };
        let info = RequestInfo { route_pattern: "/files/:dir/*", body_len: 5, remote_addr: Some("192.0.2.1".parse().unwrap()) };
        let text: String = env(&head, &m, &info).iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        expect![[r#"
            AUTH_TYPE=
            CONTENT_LENGTH=5
            CONTENT_TYPE=text/plain
            GATEWAY_INTERFACE=CGI/1.1
            PATH_INFO=/c
            PATH_TRANSLATED=/c
            QUERY_STRING=x=1&y=%41
            REMOTE_ADDR=192.0.2.1
            REMOTE_HOST=192.0.2.1
            REMOTE_USER=
            REQUEST_METHOD=POST
            SCRIPT_NAME=/files/a%20b
            SERVER_NAME=hello.example
            SERVER_PORT=8443
            SERVER_PROTOCOL=HTTP/1.1
            SERVER_SOFTWARE=atoll/0.1.0
            X_MATCHED_ROUTE=/files/:dir/*
            X_RAW_PATH_INFO=/c
            X_FULL_URL=http://hello.example:8443/files/a%20b/c?x=1&y=%41
            X_PARAM_dir=a b
            HTTP_HOST=hello.example:8443
            HTTP_CONTENT_TYPE=text/plain
            HTTP_ACCEPT=a, b
        "#]]
        .assert_eq(&text);
        assert_eq!(args("files", head.uri.query()), vec!["files", "x=1", "y=A"]);
    }

    #[test]
    fn responses_parse_as_cgi_says() {
        let r = response(b"Content-Type: text/plain\n\nhello from wasm").unwrap();
        assert_eq!(
            (r.status(), r.headers()["content-type"].to_str().unwrap(), &r.body()[..]),
            (StatusCode::OK, "text/plain", &b"hello from wasm"[..])
        );
        let r = response(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\nnope\n\nmore")
            .unwrap();
        assert_eq!((r.status(), &r.body()[..]), (StatusCode::NOT_FOUND, &b"nope\n\nmore"[..]));
        assert_eq!(r.headers()["x-a"], "1");
        assert!(r.headers().get("transfer-encoding").is_none());
        let r = response(b"Location: https://example.com/\n\n").unwrap();
        assert_eq!((r.status(), r.headers()["location"].to_str().unwrap()), (StatusCode::FOUND, "https://example.com/"));
        let r = response(b"Status: 204\n\n").unwrap();
        assert_eq!((r.status(), r.body().len()), (StatusCode::NO_CONTENT, 0));
    }

    fn err(out: &[u8]) -> BadResponse {
        response(out).unwrap_err()
    }

    #[test]
    fn bad_header_blocks_are_named() {
        assert_eq!(err(b"hello from wasm"), BadResponse::NoHeaderEnd);
        assert_eq!(err(b""), BadResponse::NoHeaderEnd);
        assert_eq!(err(b"\nbody"), BadResponse::NoContentType);
        assert_eq!(err(b"X-A: 1\n\nbody"), BadResponse::NoContentType);
        assert_eq!(err(b"Content-Type: a\ngarbage\n\n"), BadResponse::BadLine { line: 2, text: "garbage".into() });
        assert_eq!(err(b"Bad Name: a\n\n"), BadResponse::BadLine { line: 1, text: "Bad Name: a".into() });
        assert_eq!(err(b"Content-Type: a\x01b\n\n"), BadResponse::BadLine { line: 1, text: "Content-Type: a\x01b".into() });
        assert_eq!(err(b"Status: abc\n\n"), BadResponse::BadStatus("abc".into()));
        assert_eq!(err(b"Status: 1000\n\n"), BadResponse::BadStatus("1000".into()));
        let many: Vec<u8> = (0..200).flat_map(|i| format!("X-{i}: v\n").into_bytes()).chain(*b"\n").collect();
        assert_eq!(err(&many), BadResponse::HeadersTooLarge);
        let long: Vec<u8> = b"X-A: ".iter().copied().chain(std::iter::repeat_n(b'a', MAX_HEADER_BYTES + 10)).chain(*b"\n\n").collect();
        assert_eq!(err(&long), BadResponse::HeadersTooLarge);
        assert_eq!(err(&vec![b'a'; MAX_HEADER_BYTES * 2]), BadResponse::HeadersTooLarge);
    }
}
