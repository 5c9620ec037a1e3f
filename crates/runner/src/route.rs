//! Which of a manifest's routes answers a request: pure. A pattern is `/`-separated segments,
//! each a literal, a `:name` parameter (one whole segment) or, last, `*` (zero or more
//! segments: the rest). One trailing slash is ignored on both sides (`/hello/` = `/hello`).
//! When several routes match, the most specific wins: no `*` before `*`, then more literal
//! segments, then the manifest's order. `GET` routes answer `HEAD` too; `*` answers every
//! method.

use atoll_atproto::bundle::{Manifest, Method};

/// A request matched to a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The route's index in `manifest.routes`.
    pub index: usize,
    pub handler: String,
    /// The `:name` parameters, percent-decoded, in pattern order.
    pub params: Vec<(String, String)>,
    /// The part of the path a matched route's literals and parameters covered (CGI's
    /// `SCRIPT_NAME`); the whole path for a route without `*`.
    pub script_name: String,
    /// What `*` matched, with its leading `/`, still percent-encoded (CGI's `PATH_INFO`
    /// before decoding); empty when the route has no `*` or it matched nothing.
    pub rest: String,
}

/// [`route`], with no route as the [`crate::RunError`] a runtime answers (404, or 405).
pub fn route_request<B>(manifest: &Manifest, req: &http::Request<B>) -> Result<RouteMatch, crate::RunError> {
    let (method, path) = (req.method().as_str(), req.uri().path());
    route(manifest, method, path).map_err(|no| {
        let (method, path) = (method.to_owned(), path.to_owned());
        match no {
            NoRoute::NotFound => crate::RunError::NotFound { method, path },
            NoRoute::MethodNotAllowed => crate::RunError::MethodNotAllowed { method, path },
        }
    })
}

/// Why no route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    /// No route has this path.
    NotFound,
    /// Routes have this path, for other methods.
    MethodNotAllowed,
}

/// The route of `manifest` that answers `method` (an HTTP method name) on `path` (the
/// request's path, without its query).
pub fn route(manifest: &Manifest, method: &str, path: &str) -> Result<RouteMatch, NoRoute> {
    let mut best: Option<(Rank, RouteMatch)> = None;
    let mut path_matched = false;
    for (index, r) in manifest.routes.iter().enumerate() {
        let Some((params, script_name, rest)) = match_path(&r.path, path) else { continue };
        path_matched = true;
        if !method_matches(r.method, method) {
            continue;
        }
        let rank = rank(&r.path);
        if best.as_ref().is_none_or(|(b, _)| rank > *b) {
            best = Some((rank, RouteMatch { index, handler: r.handler.clone(), params, script_name, rest }));
        }
    }
    match best {
        Some((_, m)) => Ok(m),
        None if path_matched => Err(NoRoute::MethodNotAllowed),
        None => Err(NoRoute::NotFound),
    }
}

fn method_matches(route: Method, method: &str) -> bool {
    let name = match route {
        Method::Any => return true,
        Method::Get => return method == "GET" || method == "HEAD",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
    };
    method == name
}

/// Higher is more specific: (no wildcard, literal segments).
type Rank = (bool, usize);

fn rank(pattern: &str) -> Rank {
    let segments = segments(pattern);
    (segments.last() != Some(&"*"), segments.iter().filter(|s| **s != "*" && !s.starts_with(':')).count())
}

/// A path's segments, one trailing slash ignored; `/` has none.
fn segments(path: &str) -> Vec<&str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() { Vec::new() } else { trimmed.split('/').collect() }
}

/// `(params, script_name, rest)` when `pattern` matches `path`.
#[allow(clippy::type_complexity)]
pub(crate) fn match_path(pattern: &str, path: &str) -> Option<(Vec<(String, String)>, String, String)> {
    if !path.starts_with('/') {
        return None;
    }
    let pat = segments(pattern);
    let got = segments(path);
    let mut params = Vec::new();
    for (i, p) in pat.iter().enumerate() {
        if *p == "*" && i + 1 == pat.len() {
            let script_name = if i == 0 { String::new() } else { format!("/{}", got[..i].join("/")) };
            let rest = if got.len() > i { format!("/{}", got[i..].join("/")) } else { String::new() };
            return Some((params, script_name, rest));
        }
        let s = got.get(i)?;
        if let Some(name) = p.strip_prefix(':') {
            if s.is_empty() {
                return None;
            }
            params.push((name.to_owned(), decode(s)));
        } else if p != s {
            return None;
        }
    }
    if got.len() != pat.len() {
        return None;
    }
    Some((params, path.to_owned(), String::new()))
}

/// Percent-decodes `s` (lossy for bytes that are not UTF-8).
pub(crate) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_atproto::bundle::Route;
    use proptest::prelude::*;

    use crate::testing::manifest;

    #[test]
    fn literals_params_and_rest() {
        let m = manifest(&[
            ("GET", "/hello", "hello"),
            ("GET", "/users/:id/posts/:post", "post"),
            ("*", "/static/*", "files"),
            ("POST", "/users/:id", "update"),
        ]);
        let r = route(&m, "GET", "/hello").unwrap();
        assert_eq!((r.index, r.handler.as_str(), r.script_name.as_str(), r.rest.as_str()), (0, "hello", "/hello", ""));
        assert_eq!(route(&m, "HEAD", "/hello/").unwrap().handler, "hello");
        let r = route(&m, "GET", "/users/al%20ice/posts/7").unwrap();
        assert_eq!(r.params, vec![("id".to_owned(), "al ice".to_owned()), ("post".to_owned(), "7".to_owned())]);
        let r = route(&m, "DELETE", "/static/css/a.css").unwrap();
        assert_eq!((r.handler.as_str(), r.script_name.as_str(), r.rest.as_str()), ("files", "/static", "/css/a.css"));
        let r = route(&m, "GET", "/static").unwrap();
        assert_eq!((r.script_name.as_str(), r.rest.as_str()), ("/static", ""));
        assert_eq!(route(&m, "POST", "/hello"), Err(NoRoute::MethodNotAllowed));
        assert_eq!(route(&m, "GET", "/users/x"), Err(NoRoute::MethodNotAllowed));
        assert_eq!(route(&m, "GET", "/nope"), Err(NoRoute::NotFound));
        assert_eq!(route(&m, "GET", "/users//posts/1"), Err(NoRoute::NotFound));
        assert_eq!(route(&m, "GET", "hello"), Err(NoRoute::NotFound));
    }

    #[test]
    fn the_most_specific_route_wins() {
        let m = manifest(&[("*", "/*", "catchall"), ("GET", "/a/:x", "param"), ("GET", "/a/b", "literal")]);
        assert_eq!(route(&m, "GET", "/a/b").unwrap().handler, "literal");
        assert_eq!(route(&m, "GET", "/a/c").unwrap().handler, "param");
        assert_eq!(route(&m, "GET", "/a/c/d").unwrap().handler, "catchall");
        assert_eq!(route(&m, "GET", "/").unwrap().handler, "catchall");
        let m = manifest(&[("GET", "/", "root")]);
        assert_eq!(route(&m, "GET", "/").unwrap().handler, "root");
        assert_eq!(route(&m, "GET", "/x"), Err(NoRoute::NotFound));
    }

    fn literal() -> impl Strategy<Value = String> {
        "[a-z0-9][a-z0-9._-]{0,7}"
    }

    fn value() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._~-]{1,8}"
    }

    #[derive(Debug, Clone)]
    enum Seg {
        Lit(String),
        Param,
    }

    fn pattern() -> impl Strategy<Value = (Vec<Seg>, bool)> {
        (prop::collection::vec(prop_oneof![literal().prop_map(Seg::Lit), Just(Seg::Param)], 0..6), any::<bool>())
    }

    fn render(segs: &[Seg], wildcard: bool) -> String {
        let mut parts: Vec<String> = segs
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Seg::Lit(l) => l.clone(),
                Seg::Param => format!(":p{i}"),
            })
            .collect();
        if wildcard {
            parts.push("*".into());
        }
        format!("/{}", parts.join("/"))
    }

    proptest! {
        /// A path made by filling a pattern's parameters (and its `*`) matches it, giving back
        /// the values filled in and the rest.
        #[test]
        fn a_filled_pattern_matches_with_its_values((segs, wildcard) in pattern(), values in prop::collection::vec(value(), 6), rest in prop::collection::vec(value(), 0..4)) {
            let pat = render(&segs, wildcard);
            let mut parts = Vec::new();
            let mut expected = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                match s {
                    Seg::Lit(l) => parts.push(l.clone()),
                    Seg::Param => { parts.push(values[i].clone()); expected.push((format!("p{i}"), values[i].clone())); }
                }
            }
            let prefix = format!("/{}", parts.join("/"));
            let path = if wildcard && !rest.is_empty() {
                format!("{}/{}", prefix.trim_end_matches('/'), rest.join("/"))
            } else { prefix.clone() };
            let (params, _script, got_rest) = match_path(&pat, &path).expect("matches");
            prop_assert_eq!(params, expected);
            if wildcard && !rest.is_empty() {
                prop_assert_eq!(got_rest, format!("/{}", rest.join("/")));
            } else {
                prop_assert_eq!(got_rest, "");
            }
        }

        /// Without `*`, a path with a different number of segments never matches; changing a
        /// literal segment never matches.
        #[test]
        fn other_paths_do_not_match((segs, _) in pattern(), extra in value()) {
            let pat = render(&segs, false);
            let filled: Vec<String> = segs.iter().map(|s| match s { Seg::Lit(l) => l.clone(), Seg::Param => "v".into() }).collect();
            let longer = format!("/{}", filled.iter().cloned().chain([extra.clone()]).collect::<Vec<_>>().join("/"));
            prop_assert!(match_path(&pat, &longer).is_none());
            if let Some(i) = segs.iter().position(|s| matches!(s, Seg::Lit(_))) {
                let mut changed = filled.clone();
                changed[i] = format!("{}X", changed[i]);
                let changed = format!("/{}", changed.join("/"));
                prop_assert!(match_path(&pat, &changed).is_none());
            }
        }

        /// Routing never panics and whatever it picks matches the path.
        #[test]
        fn routing_any_path_is_total(path in "(/[a-z:*%0-9]{0,4}){0,5}", method in "GET|POST|HEAD|PUT") {
            let m = manifest(&[("GET", "/a/:x", "h1"), ("*", "/b/*", "h2"), ("POST", "/", "h3")]);
            if let Ok(r) = route(&m, &method, &path) {
                let route: &Route = &m.routes[r.index];
                prop_assert!(match_path(&route.path, &path).is_some());
            }
        }
    }
}
