//! A client's request as the instance gets it, and the instance's answer as the client gets
//! it. Pure. Going in: the path and query only (origin form), the client's headers but the
//! hop-by-hop ones and any `x-atoll-*` (a client cannot pick the handler), then the runner's
//! `x-atoll-handler`, `x-atoll-params` (JSON, percent-encoded) and `x-atoll-remote`. Coming
//! out: hop-by-hop headers and `x-atoll-*` dropped; `x-atoll-denied` read first.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::route::RouteMatch;

/// The headers that belong to one connection (RFC 9110 §7.6.1), and the ones that name others.
fn hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [CONNECTION, TRANSFER_ENCODING, UPGRADE, http::header::TE, http::header::TRAILER, http::header::PROXY_AUTHENTICATE] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
}

fn ours(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-atoll-")
}

/// The request for the instance: `head` and `body` from the client, routed to `m`.
pub(crate) fn upstream(
    head: http::request::Parts,
    body: Bytes,
    m: &RouteMatch,
    remote: Option<std::net::SocketAddr>,
) -> Request<Full<Bytes>> {
    let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = head.headers;
    hop_by_hop(&mut headers);
    headers.remove(CONTENT_LENGTH);
    let foreign: Vec<HeaderName> = headers.keys().filter(|n| ours(n)).cloned().collect();
    for name in foreign {
        headers.remove(name);
    }
    if !headers.contains_key(HOST) {
        let host = head.uri.authority().map_or("localhost", |a| a.as_str());
        headers.insert(HOST, HeaderValue::from_str(host).unwrap_or(HeaderValue::from_static("localhost")));
    }
    headers.insert("x-atoll-handler", HeaderValue::from_str(&m.handler).expect("handler names are header-safe (manifest validation)"));
    let params: serde_json::Map<String, serde_json::Value> = m.params.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
    let params = serde_json::Value::Object(params).to_string();
    let encoded = utf8_percent_encode(&params, NON_ALPHANUMERIC).to_string();
    headers.insert("x-atoll-params", HeaderValue::from_str(&encoded).expect("percent-encoding is header-safe"));
    if let Some(addr) = remote {
        headers.insert("x-atoll-remote", HeaderValue::from_str(&addr.to_string()).expect("an address is header-safe"));
    }
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = head.method;
    *req.uri_mut() = path.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
    *req.headers_mut() = headers;
    req
}

/// The client's response from the instance's, and the denial the bootstrap reported with it.
pub(crate) fn downstream(mut response: Response<Bytes>, head_request: bool) -> (Response<Bytes>, Option<String>) {
    let headers = response.headers_mut();
    let denied =
        headers.get("x-atoll-denied").and_then(|v| v.to_str().ok()).map(|v| percent_decode_str(v).decode_utf8_lossy().into_owned());
    hop_by_hop(headers);
    let foreign: Vec<HeaderName> = headers.keys().filter(|n| ours(n)).cloned().collect();
    for name in foreign {
        headers.remove(name);
    }
    // The body is whole now; the server that sends it counts it again (HEAD keeps the
    // length the handler gave).
    if !head_request {
        headers.remove(CONTENT_LENGTH);
    }
    (response, denied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_cannot_pick_the_handler_and_connection_headers_stay_behind() {
        let req = Request::post("http://hello.example/items/a%20b?x=1")
            .header("x-atoll-handler", "secretExport")
            .header("X-Atoll-Params", "%7B%7D")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("transfer-encoding", "chunked")
            .header("content-length", "3")
            .header("accept", "text/plain")
            .body(())
            .unwrap();
        let (head, ()) = req.into_parts();
        let m = RouteMatch {
            index: 0,
            handler: "item".into(),
            params: vec![("id".into(), "a b/\u{e9}".into())],
            script_name: String::new(),
            rest: String::new(),
        };
        let up = upstream(head, Bytes::from_static(b"abc"), &m, Some("[::1]:4000".parse().unwrap()));
        assert_eq!(up.uri(), "/items/a%20b?x=1");
        let mut seen: Vec<String> = up.headers().iter().map(|(k, v)| format!("{k}: {}", v.to_str().unwrap())).collect();
        seen.sort();
        expect_test::expect![[r#"
            [
                "accept: text/plain",
                "host: hello.example",
                "x-atoll-handler: item",
                "x-atoll-params: %7B%22id%22%3A%22a%20b%2F%C3%A9%22%7D",
                "x-atoll-remote: [::1]:4000",
            ]
        "#]]
        .assert_debug_eq(&seen);
    }

    #[test]
    fn the_answer_loses_the_runners_headers_and_reports_a_denial() {
        let r = Response::builder()
            .status(403)
            .header("x-atoll-denied", "Requires%20net%20access%20to%20%22x%3A443%22")
            .header("x-atoll-other", "1")
            .header("content-length", "9")
            .header("keep-alive", "timeout=5")
            .header("content-type", "text/plain")
            .body(Bytes::from_static(b"denied: x"))
            .unwrap();
        let (r, denied) = downstream(r, false);
        assert_eq!(denied.as_deref(), Some("Requires net access to \"x:443\""));
        assert_eq!(r.headers().len(), 1, "{:?}", r.headers());
        assert_eq!(r.headers()["content-type"], "text/plain");
    }
}
