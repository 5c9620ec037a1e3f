//! Header rewriting between client and upstream (pure): hop-by-hop headers go (RFC 9110
//! §7.6.1, including those the `Connection` header names), except the upgrade pair of a
//! WebSocket handshake; `X-Forwarded-For/-Proto/-Host` and `Forwarded` (RFC 7239) say who asked.

use std::net::IpAddr;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1, and the
/// non-standard ones proxies still see). Names made once, not parsed per request; a `static`,
/// as a `const` array is made (and dropped) again wherever it is used.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes the hop-by-hop headers: the fixed ones and those `Connection` names. Returns the
/// `Upgrade` value when `Connection` asked for an upgrade (the caller forwards it when it
/// proxies the upgrade). One pass over the fields finds what is there; only those are
/// removed (a map lookup per name hashes it, and most messages carry none of the nine).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let mut doomed: Vec<HeaderName> = Vec::new();
    let mut upgrade_requested = false;
    for (name, v) in headers.iter() {
        if name == header::CONNECTION {
            for token in v.to_str().unwrap_or("").split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("upgrade") {
                    upgrade_requested = true;
                }
                // `from_bytes` lowercases, as names compare.
                if let Ok(n) = HeaderName::from_bytes(token.as_bytes())
                    && !doomed.contains(&n)
                {
                    doomed.push(n);
                }
            }
        }
        if HOP_BY_HOP.contains(name) && !doomed.contains(name) {
            doomed.push(name.clone());
        }
    }
    let upgrade = if upgrade_requested { headers.get(header::UPGRADE).cloned() } else { None };
    for n in doomed {
        headers.remove(n);
    }
    upgrade
}

/// Puts back the pair that asks for (or accepts) an upgrade to `protocol`.
pub fn set_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocol);
}

/// Who asked, as the upstream is told.
#[derive(Clone, Debug)]
pub struct Forwarding<'a> {
    pub client: IpAddr,
    /// `https` or `http`.
    pub proto: &'static str,
    /// The host the client asked for (as in its `Host` or `:authority`).
    pub host: &'a str,
    /// `host` as a header value, when the caller has one (shared, where text would be copied).
    pub host_value: Option<&'a HeaderValue>,
}

/// A header value being written: on the stack unless it is long, then copied once, into the
/// value.
type ValueBuf = smallvec::SmallVec<[u8; 128]>;

/// Header map entries a request's map is given room for. hyper's HTTP/1.1 client reads the
/// upstream's response head into the request's map once the request is written (it keeps it
/// for that): room for a response of up to this many fields spares it a reallocation, and a
/// rehash, per request (HTTP/2 requests come with a map just big enough for their own fields).
/// Not more: an idle HTTP/1.1 client connection keeps its last response's map (16 entries
/// would cost ~1.2 KiB more per idle connection).
const MAP_ROOM: usize = 12;
/// The fields [`add_forwarding`] adds, and `Host`.
const FORWARDING_FIELDS: usize = 5;

/// `X-Forwarded-For` gets the client appended (what came before is kept: the upstream decides
/// whom to trust), `X-Forwarded-Proto` and `X-Forwarded-Host` are set, and `Forwarded` gets
/// one more element. Each header is looked up once (an entry), and the map grows at most once
/// (with room for the upstream's response, [`MAP_ROOM`]).
pub fn add_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let ip = f.client.to_canonical();
    let mut ip_text = ValueBuf::new();
    push_ip(&mut ip_text, ip);
    // (`reserve` counts names, not values.)
    headers.reserve(FORWARDING_FIELDS.max(MAP_ROOM.saturating_sub(headers.keys_len())));
    let mut element = ValueBuf::new();
    write_forwarded_element(&mut element, ip, &ip_text, f.proto, f.host);
    set_appended(headers, X_FORWARDED_FOR, &ip_text);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(f.proto));
    if let Some(v) = f.host_value.cloned().or_else(|| HeaderValue::from_str(f.host).ok()) {
        headers.insert(X_FORWARDED_HOST, v);
    }
    set_appended(headers, header::FORWARDED, &element);
}

/// Sets `name` to its values so far, joined with `, `, then `last`.
fn set_appended(headers: &mut HeaderMap, name: HeaderName, last: &[u8]) {
    match headers.entry(name) {
        header::Entry::Vacant(e) => {
            if let Ok(v) = HeaderValue::from_bytes(last) {
                e.insert(v);
            }
        }
        header::Entry::Occupied(mut e) => {
            let mut joined = ValueBuf::new();
            // Values that are not visible ASCII are left out, as before: an upstream reading
            // the joined header as text would lose the whole of it (the client's address too).
            for prior in e.iter().filter(|v| v.to_str().is_ok()) {
                joined.extend_from_slice(prior.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(last);
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                e.insert(v);
            }
        }
    }
}

/// An address as text: IPv4 digit by digit (`Display` goes through the formatting machinery,
/// a tenth of this header work per request), IPv6 by `Display`.
fn push_ip(out: &mut ValueBuf, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// One `Forwarded` element (RFC 7239 §4): IPv6 addresses bracketed and quoted, values that are
/// not tokens quoted.
pub fn forwarded_element(client: IpAddr, proto: &str, host: &str) -> String {
    let mut ip_text = ValueBuf::new();
    push_ip(&mut ip_text, client);
    let mut out = ValueBuf::new();
    write_forwarded_element(&mut out, client, &ip_text, proto, host);
    String::from_utf8_lossy(&out).into_owned()
}

/// `ip_text` is `client` as [`push_ip`] writes it.
fn write_forwarded_element(out: &mut ValueBuf, client: IpAddr, ip_text: &[u8], proto: &str, host: &str) {
    out.extend_from_slice(if client.is_ipv4() { b"for=" } else { b"for=\"[" });
    out.extend_from_slice(ip_text);
    if client.is_ipv6() {
        out.extend_from_slice(b"]\"");
    }
    out.extend_from_slice(b";proto=");
    out.extend_from_slice(proto.as_bytes());
    out.extend_from_slice(b";host=");
    if !host.is_empty() && host.chars().all(is_tchar) {
        out.extend_from_slice(host.as_bytes());
    } else {
        out.push(b'"');
        for &b in host.as_bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    }
}

/// A `tchar` (RFC 9110 §5.6.2).
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '!' | '#' | '$' | '%' | '&' | '\'' | '*' | '+' | '-' | '.' | '^' | '_' | '`' | '|' | '~')
}

/// The host a request is for, without its port, lowercase, without a trailing dot: from the
/// URI's authority (HTTP/2 `:authority`, absolute-form) or else the `Host` header.
pub fn request_host(uri: &hyper::Uri, headers: &HeaderMap) -> Option<String> {
    let host = |a: &hyper::http::uri::Authority| {
        let h = a.host().trim_end_matches('.');
        (!h.is_empty()).then(|| h.to_ascii_lowercase())
    };
    match uri.authority() {
        Some(a) => host(a),
        None => host(&headers.get(header::HOST)?.to_str().ok()?.parse().ok()?),
    }
}

/// The `Host` (with its port, if any) as the client sent it, for the upstream's `Host` header.
pub fn request_authority(uri: &hyper::Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    match uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => headers.get(header::HOST).cloned(),
    }
}

/// A `Sec-WebSocket-Key` (RFC 6455 §4.1: 16 random bytes, base64) for an upgrade the gateway
/// makes on behalf of an HTTP/2 client, which sends none (RFC 8441 §5).
pub fn websocket_key(random: u128) -> HeaderValue {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode(random.to_le_bytes());
    HeaderValue::from_str(&key).expect("base64 is a valid header value")
}

/// A `Content-Length` the body's framing does not back goes: a message that came with both
/// `Content-Length` and `Transfer-Encoding: chunked` was read as chunked (RFC 9112 §6.3), and
/// forwarding its `Content-Length` would frame it differently on the next hop (smuggling).
pub fn length_follows_body(headers: &mut HeaderMap, hint: hyper::body::SizeHint) {
    if hint.exact().is_none() {
        headers.remove(header::CONTENT_LENGTH);
    }
}

/// Whether retrying a request with this method is safe once it may have reached the upstream
/// (RFC 9110 §9.2.2).
pub fn idempotent(m: &hyper::Method) -> bool {
    use hyper::Method as M;
    [M::GET, M::HEAD, M::OPTIONS, M::TRACE, M::PUT, M::DELETE].contains(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn upgrade_is_reported_when_connection_asks() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("sec-websocket-key", "k")]);
        assert_eq!(strip_hop_by_hop(&mut h), Some(HeaderValue::from_static("websocket")));
        assert!(h.get("upgrade").is_none() && h.get("sec-websocket-key").is_some());
        set_upgrade(&mut h, HeaderValue::from_static("websocket"));
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarding_appends_and_sets() {
        let mut h = map(&[("x-forwarded-for", "203.0.113.9"), ("forwarded", "for=203.0.113.9"), ("x-forwarded-proto", "gopher")]);
        add_forwarding(
            &mut h,
            &Forwarding { client: "2001:db8::1".parse().unwrap(), proto: "https", host: "blog.example:8443", host_value: None },
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "blog.example:8443");
        assert_eq!(h["forwarded"], "for=203.0.113.9, for=\"[2001:db8::1]\";proto=https;host=\"blog.example:8443\"");
    }

    /// Regression: a prior `X-Forwarded-For` that is not visible ASCII is left out of the
    /// joined value (an upstream reading it as text would lose the client's address too).
    #[test]
    fn opaque_prior_forwarding_values_are_left_out() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_bytes(b"\xff").unwrap());
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        add_forwarding(&mut h, &Forwarding { client: "192.0.2.7".parse().unwrap(), proto: "https", host: "a.example", host_value: None });
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 192.0.2.7");
    }

    /// Regression (work per HTTP/2 request): hyper's client reads the upstream's response head
    /// into the request's map, and the map of a short HTTP/2 request, just big enough for its
    /// fields and the forwarding ones, was reallocated for every response.
    #[test]
    fn the_request_map_has_room_for_the_response_head() {
        let mut h = map(&[("user-agent", "h2load")]);
        add_forwarding(&mut h, &Forwarding { client: "192.0.2.7".parse().unwrap(), proto: "https", host: "a.example", host_value: None });
        h.insert(header::HOST, HeaderValue::from_static("a.example"));
        h.clear();
        assert!(h.capacity() >= MAP_ROOM, "room for {} fields", h.capacity());
    }

    #[test]
    fn v4_mapped_clients_are_written_as_v4() {
        let mut h = HeaderMap::new();
        add_forwarding(
            &mut h,
            &Forwarding { client: "::ffff:192.0.2.7".parse().unwrap(), proto: "http", host: "a.example", host_value: None },
        );
        assert_eq!(h["forwarded"], "for=192.0.2.7;proto=http;host=a.example");
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
    }

    #[test]
    fn content_length_goes_unless_the_body_is_sized() {
        let mut h = map(&[("content-length", "5")]);
        length_follows_body(&mut h, hyper::body::SizeHint::with_exact(5));
        assert_eq!(h["content-length"], "5");
        length_follows_body(&mut h, hyper::body::SizeHint::default());
        assert!(h.get("content-length").is_none());
    }

    #[test]
    fn host_from_authority_or_header() {
        let h = map(&[("host", "Blog.Example.:8443")]);
        assert_eq!(request_host(&"/x".parse().unwrap(), &h).as_deref(), Some("blog.example"));
        assert_eq!(request_host(&"https://a.example/x".parse().unwrap(), &h).as_deref(), Some("a.example"));
        assert_eq!(request_host(&"/x".parse().unwrap(), &map(&[("host", "[::1]:80")])).as_deref(), Some("[::1]"));
        assert_eq!(request_host(&"/x".parse().unwrap(), &HeaderMap::new()), None);
    }

    proptest::proptest! {
        #[test]
        fn no_hop_by_hop_header_survives(names in proptest::collection::vec("[a-z][a-z0-9-]{0,8}", 0..6)) {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_str(&names.join(", ")).unwrap());
            for n in names.iter().cloned().chain(HOP_BY_HOP.iter().map(|n| n.as_str().to_owned())) {
                h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_static("v"));
            }
            h.insert("x-kept-header", HeaderValue::from_static("v"));
            strip_hop_by_hop(&mut h);
            for n in names.iter().map(String::as_str).chain(HOP_BY_HOP.iter().map(HeaderName::as_str)) {
                proptest::prop_assert!(h.get(n).is_none() || n == "x-kept-header");
            }
            proptest::prop_assert!(h.get("x-kept-header").is_some() || names.iter().any(|n| n == "x-kept-header"));
        }

        #[test]
        fn addresses_are_written_as_display_writes_them(bits in proptest::num::u32::ANY, v6 in proptest::num::u128::ANY) {
            for ip in [IpAddr::from(std::net::Ipv4Addr::from(bits)), IpAddr::from(std::net::Ipv6Addr::from(v6))] {
                let mut out = ValueBuf::new();
                push_ip(&mut out, ip);
                proptest::prop_assert_eq!(std::str::from_utf8(&out).unwrap(), ip.to_string());
            }
        }

        #[test]
        fn forwarded_element_parses_back(host in "[a-zA-Z0-9.:\"\\\\ -]{1,20}", v6 in proptest::bool::ANY) {
            let ip: IpAddr = if v6 { "2001:db8::5".parse().unwrap() } else { "192.0.2.5".parse().unwrap() };
            let e = forwarded_element(ip, "https", &host);
            // the host parameter is the last one: unquote it and get the host back
            let v = e.rsplit_once(";host=").unwrap().1;
            let back = if let Some(q) = v.strip_prefix('"') {
                let q = q.strip_suffix('"').unwrap();
                let mut out = String::new();
                let mut esc = false;
                for c in q.chars() {
                    if esc { out.push(c); esc = false } else if c == '\\' { esc = true } else { out.push(c) }
                }
                out
            } else { v.to_owned() };
            proptest::prop_assert_eq!(back, host);
        }
    }
}
