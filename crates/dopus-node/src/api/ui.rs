//! The embedded web UI (web/dist, compiled into the binary) and the token-to-cookie hand-off.

use super::auth::AuthConfig;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use rust_embed::Embed;
use std::collections::HashMap;

#[derive(Embed)]
#[folder = "$DOPUS_WEB_DIST"]
struct Assets;

/// `GET /`: with `?token=…` (the URL the node prints), sets the cookie and redirects to `/` so the
/// token leaves the address bar and history; without it, serves the app.
pub async fn index(
    State(auth): State<AuthConfig>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(token) = query.get("token") {
        if !auth.token_ok(token) {
            return (StatusCode::UNAUTHORIZED, "wrong token").into_response();
        }
        let cookie = format!(
            "{}={token}; HttpOnly; SameSite=Strict; Path=/",
            auth.cookie_name()
        );
        let mut resp = Redirect::to("/").into_response();
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    asset("index.html")
}

/// Any other path: a built asset, or the app itself (client-side routes).
pub async fn fallback(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path.starts_with("api/") {
        return super::error::ApiError::not_found("no such endpoint").into_response();
    }
    if Assets::get(path).is_some() {
        asset(path)
    } else {
        asset("index.html")
    }
}

fn asset(path: &str) -> Response {
    match Assets::get(path) {
        Some(file) => {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            let cache = if path.starts_with("assets/") {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            (
                [
                    (header::CONTENT_TYPE, mime.as_ref().to_owned()),
                    (header::CACHE_CONTROL, cache.to_owned()),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'".to_owned(),
                    ),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                ],
                file.data,
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
