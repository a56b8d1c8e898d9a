//! The local API's one error type: a status, a stable code and a safe message. The underlying
//! error goes to the log (at debug, since it may name a peer), never into the response.

use super::dto::{ErrorBody, ErrorCode, ErrorDetail};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An error answer of the local API.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (docs/api.md lists them).
    pub code: &'static str,
    /// Human-readable message that is safe to show (no secrets, no addresses).
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn locked() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "locked",
            "the node is locked or has no identity yet",
        )
    }
    pub fn not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "not_allowed", message)
    }
    pub fn offline(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "offline", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API token",
        )
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }
    /// An unexpected failure: logged with its cause, answered generically.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "local API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error (see the node log)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: ErrorCode::parse(self.code).unwrap_or(ErrorCode::Internal),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// What can go wrong in a node operation, in domain terms: no status codes, no JSON. The node
/// (today's runtime, the actor that replaces it) returns these; only this module turns them
/// into HTTP answers ([`From<NodeError> for ApiError`](ApiError)). `Display` is the safe
/// message a client sees (no message text, keys or addresses).
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node is locked or has no identity yet.
    #[error("the node is locked or has no identity yet")]
    Locked,
    /// `POST /identity` when one exists.
    #[error("an identity already exists")]
    IdentityExists,
    /// `POST /unlock` with no identity.
    #[error("there is no identity yet")]
    NoIdentity,
    /// `POST /unlock` when already unlocked.
    #[error("already unlocked")]
    AlreadyUnlocked,
    /// The passphrase does not open the store.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The store cannot be opened (for example written by a newer version); says why.
    #[error("{0}")]
    StoreUnavailable(String),
    /// A request field is missing or invalid; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// A user ID did not parse.
    #[error(transparent)]
    InvalidUserId(#[from] dopus_types::UserIdError),
    /// No such thing (`"contact"`, `"message"`, `"verification with this contact"`, …).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The operation conflicts with the current state (a request already pending, a
    /// verification already finished).
    #[error("{0}")]
    Conflict(String),
    /// Not permitted (someone else's message, a non-contact, a blocked contact).
    #[error("{0}")]
    NotAllowed(String),
    /// Over a size limit; says which.
    #[error("{0}")]
    TooLarge(String),
    /// Needs the signaling server or the contact, and neither is reachable.
    #[error("{0}")]
    Offline(String),
    /// A failure the user cannot act on (a store write failed, a task died). Logged in full,
    /// answered generically.
    #[error("internal error (see the node log)")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<NodeError> for ApiError {
    fn from(err: NodeError) -> Self {
        let message = err.to_string();
        match err {
            NodeError::Locked => ApiError::locked(),
            NodeError::IdentityExists
            | NodeError::NoIdentity
            | NodeError::AlreadyUnlocked
            | NodeError::Conflict(_) => ApiError::conflict(message),
            NodeError::WrongPassphrase => {
                ApiError::new(StatusCode::UNAUTHORIZED, "wrong_passphrase", message)
            }
            NodeError::StoreUnavailable(_) => ApiError::new(StatusCode::CONFLICT, "store", message),
            NodeError::Invalid(_) => ApiError::bad_request(message),
            NodeError::InvalidUserId(e) => e.into(),
            NodeError::NotFound(_) => ApiError::not_found(message),
            NodeError::NotAllowed(_) => ApiError::not_allowed(message),
            NodeError::TooLarge(_) => ApiError::too_large(message),
            NodeError::Offline(_) => ApiError::offline(message),
            NodeError::Internal(e) => ApiError::internal(e),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::bad_request(rejection.body_text())
    }
}

impl From<dopus_types::UserIdError> for ApiError {
    fn from(err: dopus_types::UserIdError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_user_id", err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every domain error lands on its documented status and code (docs/api.md, "Errors").
    #[test]
    fn domain_errors_map_to_documented_answers() {
        let cases: Vec<(NodeError, u16, &str)> = vec![
            (NodeError::Locked, 409, "locked"),
            (NodeError::IdentityExists, 409, "conflict"),
            (NodeError::NoIdentity, 409, "conflict"),
            (NodeError::AlreadyUnlocked, 409, "conflict"),
            (NodeError::WrongPassphrase, 401, "wrong_passphrase"),
            (
                NodeError::StoreUnavailable("written by a newer version".into()),
                409,
                "store",
            ),
            (
                NodeError::Invalid("body: must not be blank".into()),
                400,
                "bad_request",
            ),
            (
                NodeError::InvalidUserId(dopus_types::UserIdError::Checksum),
                400,
                "invalid_user_id",
            ),
            (NodeError::NotFound("message"), 404, "not_found"),
            (
                NodeError::Conflict("a request is already pending".into()),
                409,
                "conflict",
            ),
            (
                NodeError::NotAllowed("not your message".into()),
                422,
                "not_allowed",
            ),
            (
                NodeError::TooLarge("the note is too long".into()),
                413,
                "too_large",
            ),
            (
                NodeError::Offline("cannot reach this contact".into()),
                503,
                "offline",
            ),
            (NodeError::Internal("disk full".into()), 500, "internal"),
        ];
        let mut answers = Vec::new();
        for (err, status, code) in cases {
            let api = ApiError::from(err);
            assert_eq!(api.status.as_u16(), status, "{code}");
            assert_eq!(api.code, code);
            assert!(
                ErrorCode::parse(api.code).is_some(),
                "{code} is a documented code"
            );
            answers.push(format!(
                "{} {} {}",
                api.status.as_u16(),
                api.code,
                api.message
            ));
        }
        insta::assert_snapshot!(answers.join("\n"));
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let api = ApiError::from(NodeError::Internal("secret path /home/alice".into()));
        assert!(!api.message.contains("alice"));
    }
}
