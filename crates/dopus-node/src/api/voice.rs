//! REST handlers of voice channels (docs/api.md, "Voice channels").

use super::dto;
use super::error::ApiError;
use crate::runtime::Node;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use dopus_types::SpaceId;
use std::sync::Arc;

type N = State<Arc<Node>>;
type ApiResult<T> = Result<Json<T>, ApiError>;

fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload.map(|Json(v)| v).map_err(ApiError::from)
}

/// `GET /voice`: where we are in voice and our media.
pub async fn state(State(node): N) -> ApiResult<dto::VoiceState> {
    Ok(Json(node.voice().await?))
}

/// `GET /spaces/{id}/voice`: who is in each voice channel of the space.
pub async fn space(State(node): N, Path(id): Path<String>) -> ApiResult<dto::SpaceVoice> {
    let space = SpaceId::parse(&id).map_err(|_| ApiError::bad_request("invalid space id"))?;
    Ok(Json(node.space_voice(space).await?))
}

/// `POST /voice/join`.
pub async fn join(
    State(node): N,
    payload: Result<Json<dto::JoinVoice>, JsonRejection>,
) -> ApiResult<dto::VoiceState> {
    Ok(Json(node.voice_join(body(payload)?).await?))
}

/// `POST /voice/browser`: the page's WebRTC offer for its voice leg; the answer and slots.
pub async fn browser(
    State(node): N,
    payload: Result<Json<dto::BrowserOffer>, JsonRejection>,
) -> ApiResult<dto::VoiceBrowserAnswer> {
    Ok(Json(node.voice_browser(body(payload)?).await?))
}

/// `POST /voice/leave`.
pub async fn leave(State(node): N) -> ApiResult<dto::VoiceState> {
    Ok(Json(node.voice_leave().await?))
}

/// `POST /voice/state`: mute, deafen.
pub async fn patch(
    State(node): N,
    payload: Result<Json<dto::VoicePatch>, JsonRejection>,
) -> ApiResult<dto::VoiceState> {
    Ok(Json(node.voice_patch(body(payload)?).await?))
}
