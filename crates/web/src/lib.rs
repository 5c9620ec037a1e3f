//! The web dashboard (`atoll daemon --web ADDR:PORT`): a login with the daemon's token, session
//! cookies, CSRF protection, static assets compiled into the binary (no CDN), and the daemon's
//! own `/v1` API mounted under `/api` for the page's scripts. `/metrics` is served here too.
//!
//! Every `/api` request needs a session; every state-changing one (not GET/HEAD) also needs the
//! session's CSRF token in `X-CSRF-Token`. The session cookie is `HttpOnly` and
//! `SameSite=Strict`, and `Secure` unless the listener is on loopback over plain HTTP.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;

/// Sessions last a day.
const SESSION_TTL: Duration = Duration::from_secs(24 * 3600);
const COOKIE: &str = "atoll_session";

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/style.css");

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("reading or creating the login token at {path}")]
    Token {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

struct Session {
    csrf: String,
    expires: Instant,
}

/// The login token and the live sessions.
pub struct Auth {
    token: String,
    sessions: Mutex<HashMap<String, Session>>,
    secure_cookie: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth")
    }
}

/// Compares without an early exit, so timing does not tell how much of a guess was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the token at `path`, creating it (0600) on first use.
pub fn load_or_create_token(path: &Path) -> Result<String, WebError> {
    let err = |source| WebError::Token { path: path.to_owned(), source };
    match std::fs::read_to_string(path) {
        Ok(t) if t.trim().len() >= 32 => Ok(t.trim().to_owned()),
        _ => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let t = atoll_util::random_hex(32);
            atoll_util::atomic_write(path, t.as_bytes(), 0o600).map_err(|e| err(std::io::Error::other(e)))?;
            Ok(t)
        }
    }
}

impl Auth {
    pub fn new(token: String, secure_cookie: bool) -> Arc<Self> {
        Arc::new(Self { token, sessions: Mutex::new(HashMap::new()), secure_cookie })
    }

    fn login(&self, token: &str) -> Option<String> {
        if !same(token.trim(), &self.token) {
            return None;
        }
        let id = atoll_util::random_hex(32);
        let mut s = self.sessions.lock().unwrap();
        let now = Instant::now();
        s.retain(|_, v| v.expires > now);
        s.insert(id.clone(), Session { csrf: atoll_util::random_hex(32), expires: now + SESSION_TTL });
        Some(id)
    }

    /// The session's CSRF token, if the request carries a live session.
    fn session(&self, headers: &HeaderMap) -> Option<String> {
        let cookies = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';'));
        let id = cookies.filter_map(|c| c.trim().strip_prefix(&format!("{COOKIE}="))).next()?.to_owned();
        let s = self.sessions.lock().unwrap();
        s.get(&id).filter(|v| v.expires > Instant::now()).map(|v| v.csrf.clone())
    }

    fn cookie(&self, id: &str) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", SESSION_TTL.as_secs())
    }
}

#[derive(Deserialize)]
struct TokenParam {
    token: Option<String>,
}

fn login_page(message: &str, status: StatusCode) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Atoll — log in</title><link rel=\"stylesheet\" href=\"/style.css\"></head><body><main class=\"login\">\
         <h1>Atoll</h1><p>{message}</p><form method=\"post\" action=\"/login\"><label for=\"token\">Login token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Log in</button></form><p class=\"hint\">Run <code>atoll web token</code> on the host for a login link.</p></main></body></html>"
    );
    (status, Html(body)).into_response()
}

fn logged_in(auth: &Auth, token: &str) -> Response {
    match auth.login(token) {
        Some(id) => ([(header::SET_COOKIE, auth.cookie(&id))], Redirect::to("/")).into_response(),
        None => login_page("That token is not right.", StatusCode::UNAUTHORIZED),
    }
}

async fn login_get(State(auth): State<Arc<Auth>>, Query(q): Query<TokenParam>) -> Response {
    match q.token {
        Some(t) => logged_in(&auth, &t),
        None => login_page("Log in with the daemon's token.", StatusCode::OK),
    }
}

async fn login_post(State(auth): State<Arc<Auth>>, Form(f): Form<TokenParam>) -> Response {
    logged_in(&auth, f.token.as_deref().unwrap_or(""))
}

async fn index(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    match auth.session(&headers) {
        Some(csrf) => Html(INDEX.replace("{{csrf}}", &csrf)).into_response(),
        None => Redirect::to("/login").into_response(),
    }
}

async fn asset(path: &'static str, ty: &'static str) -> Response {
    let body = match path {
        "app.js" => APP_JS,
        _ => STYLE,
    };
    ([(header::CONTENT_TYPE, ty), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Refuses `/api` requests without a session (401) and state-changing ones without the
/// session's CSRF token (403).
async fn guard(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let Some(csrf) = auth.session(req.headers()) else {
        return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"message": "log in first", "causes": []}))).into_response();
    };
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let sent = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok()).unwrap_or("");
        if !same(sent, &csrf) {
            return (StatusCode::FORBIDDEN, axum::Json(serde_json::json!({"message": "missing or wrong CSRF token", "causes": []})))
                .into_response();
        }
    }
    next.run(req).await
}

/// The dashboard's routes in front of `api` (the daemon's router).
pub fn router(auth: Arc<Auth>, api: Router) -> Router {
    let guarded = api.layer(axum::middleware::from_fn_with_state(auth.clone(), guard));
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_get).post(login_post))
        .route("/app.js", get(|| asset("app.js", "text/javascript; charset=utf-8")))
        .route("/style.css", get(|| asset("style.css", "text/css; charset=utf-8")))
        .with_state(auth)
        .nest("/api", guarded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_and_tokens() {
        let auth = Auth::new("a".repeat(64), true);
        assert!(auth.login("wrong").is_none());
        let id = auth.login(&"a".repeat(64)).unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, format!("other=1; {COOKIE}={id}").parse().unwrap());
        assert!(auth.session(&h).is_some());
        h.insert(header::COOKIE, format!("{COOKIE}=nope").parse().unwrap());
        assert!(auth.session(&h).is_none());
        assert!(auth.cookie(&id).contains("HttpOnly; SameSite=Strict") && auth.cookie(&id).ends_with("; Secure"));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
