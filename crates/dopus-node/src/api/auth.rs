//! Who may call the local API: requests to a loopback Host carrying the per-launch token.
//!
//! The token arrives as `Authorization: Bearer …` (CLI) or as the `dopus_token_<port>` cookie (browser,
//! set by `GET /?token=…`). The Host check defeats DNS rebinding: a web page on another origin
//! that resolves its own name to 127.0.0.1 still sends its own name as Host. Cross-origin browser
//! requests (an `Origin` that is not ours) are refused too.

use super::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Prefix of the cookie that carries the token in the browser. The full name ends with the API's
/// port (`dopus_token_41234`): browsers scope cookies by host, not port, so two nodes on one
/// machine (the demo's alice and bob) would otherwise overwrite each other's token.
pub const COOKIE_PREFIX: &str = "dopus_token_";

/// What the auth layer checks against.
#[derive(Clone)]
pub struct AuthConfig {
    /// The per-launch token.
    pub token: Arc<str>,
    /// The port we listen on (to check Host and Origin).
    pub port: u16,
    /// Accept any Host (only when the operator put the API on a non-loopback address).
    pub any_host: bool,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl AuthConfig {
    /// Whether `host` (a Host header value or an Origin's authority) names this node locally.
    pub fn host_ok(&self, host: &str) -> bool {
        if self.any_host {
            return true;
        }
        let port = self.port.to_string();
        ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .any(|h| host == format!("{h}:{port}"))
    }

    /// This node's cookie name.
    pub fn cookie_name(&self) -> String {
        format!("{COOKIE_PREFIX}{}", self.port)
    }

    /// Whether `candidate` is the token (constant time).
    pub fn token_ok(&self, candidate: &str) -> bool {
        candidate.as_bytes().ct_eq(self.token.as_bytes()).into()
    }

    /// Extracts a token from the Authorization header, the cookie, or (for WebSockets from
    /// non-browser clients) the `token` query parameter.
    pub fn request_token<'a>(
        &self,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
    ) -> Option<&'a str> {
        if let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            && let Some(t) = v.strip_prefix("Bearer ")
        {
            return Some(t.trim());
        }
        let name = self.cookie_name();
        for cookies in headers.get_all(header::COOKIE) {
            let Ok(cookies) = cookies.to_str() else {
                continue;
            };
            for pair in cookies.split(';') {
                if let Some((k, v)) = pair.trim().split_once('=')
                    && k == name
                {
                    return Some(v);
                }
            }
        }
        query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
    }

    /// Checks Host and Origin.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !self.host_ok(host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "bad_host",
                "requests must be addressed to the local node",
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            let authority = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .unwrap_or("");
            if !self.host_ok(authority) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "bad_host",
                    "cross-origin requests are not allowed",
                ));
            }
        }
        Ok(())
    }
}

/// Middleware for `/api/*`: Host/Origin check, then the token.
pub async fn require_token(
    State(auth): State<AuthConfig>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    auth.check_origin(request.headers())?;
    let token = auth.request_token(request.headers(), request.uri().query());
    match token {
        Some(t) if auth.token_ok(t) => Ok(next.run(request).await),
        _ => Err(ApiError::unauthorized()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn cfg() -> AuthConfig {
        AuthConfig {
            token: Arc::from("tok"),
            port: 4000,
            any_host: false,
        }
    }

    #[test]
    fn host_must_be_local_with_our_port() {
        let c = cfg();
        assert!(c.host_ok("127.0.0.1:4000"));
        assert!(c.host_ok("localhost:4000"));
        assert!(!c.host_ok("127.0.0.1:4001"));
        assert!(!c.host_ok("evil.example:4000"));
    }

    #[test]
    fn token_from_header_cookie_or_query() {
        let c = cfg();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert_eq!(c.request_token(&h, None), Some("tok"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; dopus_token_4000=tok"),
        );
        assert_eq!(c.request_token(&h, None), Some("tok"));
        // Another node's cookie on the same host (another port) is not ours.
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("dopus_token_4001=tok; dopus_token=tok"),
        );
        assert_eq!(c.request_token(&h, None), None);
        assert_eq!(
            c.request_token(&HeaderMap::new(), Some("x=1&token=tok")),
            Some("tok")
        );
        assert!(c.token_ok("tok"));
        assert!(!c.token_ok("tok2"));
        assert!(!c.token_ok(""));
    }

    #[test]
    fn cross_origin_is_refused() {
        let c = cfg();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:4000"));
        assert!(c.check_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(c.check_origin(&h).is_err());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:4000"),
        );
        assert!(c.check_origin(&h).is_ok());
    }
}
