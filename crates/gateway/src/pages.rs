//! The responses the gateway writes itself: error pages that say in words what failed, and the
//! redirect from HTTP to HTTPS (pure).

use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::body::{ProxyBody, full};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A small HTML page: the status, then what failed in one sentence.
pub fn error_page(status: StatusCode, what: &str) -> Response<ProxyBody> {
    let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\n<body><h1>{t}</h1>\n<p>{w}</p>\n<hr><p>atoll gateway</p></body></html>\n",
        t = escape(&title),
        w = escape(what)
    );
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// What the HTTP listener answers: 404 for ACME HTTP-01 challenges (not served yet), 400
/// without a host, else a permanent redirect (308, method and body kept) to the same URL over
/// HTTPS (`https_port` written only when it is not 443).
pub fn redirect(host: Option<&str>, path_and_query: &str, https_port: u16) -> Response<ProxyBody> {
    if path_and_query.starts_with("/.well-known/acme-challenge/") {
        return error_page(StatusCode::NOT_FOUND, "This gateway does not answer ACME HTTP-01 challenges.");
    }
    let Some(host) = host else {
        return error_page(StatusCode::BAD_REQUEST, "The request names no host (Host header), so there is nowhere to redirect it.");
    };
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let location = format!("https://{host}{port}{path_and_query}");
    let Ok(loc) = HeaderValue::from_str(&location) else {
        return error_page(StatusCode::BAD_REQUEST, "The request's host cannot be written in a URL.");
    };
    let mut r = Response::new(crate::body::empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    r.headers_mut().insert(header::LOCATION, loc);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_path_and_query() {
        let r = redirect(Some("blog.example"), "/a?b=c", 443);
        assert_eq!(r.status(), 308);
        assert_eq!(r.headers()["location"], "https://blog.example/a?b=c");
        assert_eq!(redirect(Some("blog.example"), "/", 8443).headers()["location"], "https://blog.example:8443/");
    }

    #[test]
    fn acme_challenges_and_missing_hosts_are_not_redirected() {
        assert_eq!(redirect(Some("a.example"), "/.well-known/acme-challenge/tok", 443).status(), 404);
        assert_eq!(redirect(None, "/", 443).status(), 400);
    }
}
