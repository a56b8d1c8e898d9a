//! REST handlers: parse and validate the request, call the node, shape the answer.

use super::dto;
use super::dto::{
    AddContact, ContactPatch, ContactRequest, CreateIdentity, Edit, MarkRead, PageQuery, React,
    SearchQuery, SendMessage, SendMessages, SetStatus, SettingsPatch, Typing, Unlock,
};
use super::error::ApiError;
use crate::runtime::Node;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dopus_types::UserId;
use std::sync::Arc;

type N = State<Arc<Node>>;
type ApiResult<T> = Result<Json<T>, ApiError>;

fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload.map(|Json(v)| v).map_err(ApiError::from)
}

fn user(id: &str) -> Result<UserId, ApiError> {
    Ok(UserId::parse(id)?)
}

fn message_id(id: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(id).map_err(|_| ApiError::bad_request("invalid message id"))
}

pub async fn status(State(node): N) -> Json<dto::Status> {
    Json(node.status().await)
}

pub async fn create_identity(
    State(node): N,
    payload: Result<Json<CreateIdentity>, JsonRejection>,
) -> ApiResult<dto::Me> {
    let req = body(payload)?;
    Ok(Json(
        node.create_identity(req.display_name, req.passphrase)
            .await?,
    ))
}

pub async fn unlock(
    State(node): N,
    payload: Result<Json<Unlock>, JsonRejection>,
) -> ApiResult<dto::Me> {
    let req = body(payload)?;
    Ok(Json(node.unlock(req.passphrase).await?))
}

pub async fn me(State(node): N) -> ApiResult<dto::Me> {
    Ok(Json(node.me().await?))
}

pub async fn set_status(
    State(node): N,
    payload: Result<Json<SetStatus>, JsonRejection>,
) -> ApiResult<dto::Me> {
    let req = body(payload)?;
    Ok(Json(node.set_status(&req.status).await?))
}

pub async fn contacts(State(node): N) -> ApiResult<Vec<dto::Contact>> {
    Ok(Json(node.contacts().await?))
}

pub async fn add_contact(
    State(node): N,
    payload: Result<Json<AddContact>, JsonRejection>,
) -> ApiResult<dto::Contact> {
    let req = body(payload)?;
    Ok(Json(
        node.add_contact(user(&req.user_id)?, req.display_name)
            .await?,
    ))
}

pub async fn contact_request(
    State(node): N,
    Path(id): Path<String>,
    payload: Option<Json<ContactRequest>>,
) -> ApiResult<dto::Contact> {
    let req = payload.map(|Json(r)| r).unwrap_or_default();
    Ok(Json(
        node.contact_request(user(&id)?, req.display_name, req.note)
            .await?,
    ))
}

pub async fn contact_accept(State(node): N, Path(id): Path<String>) -> ApiResult<dto::Contact> {
    Ok(Json(node.contact_answer(user(&id)?, true).await?))
}

pub async fn contact_decline(State(node): N, Path(id): Path<String>) -> ApiResult<dto::Contact> {
    Ok(Json(node.contact_answer(user(&id)?, false).await?))
}

pub async fn patch_contact(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<ContactPatch>, JsonRejection>,
) -> ApiResult<dto::Contact> {
    let patch = body(payload)?;
    let patch = dopus_core::contacts::ContactPatch {
        display_name: patch.display_name,
        verified: patch.verified,
        blocked: patch.blocked,
    };
    Ok(Json(node.patch_contact(user(&id)?, patch).await?))
}

pub async fn safety(State(node): N, Path(id): Path<String>) -> ApiResult<dto::Safety> {
    Ok(Json(node.safety(user(&id)?).await?))
}

pub async fn verification(State(node): N, Path(id): Path<String>) -> ApiResult<dto::Verification> {
    Ok(Json(node.verification(user(&id)?).await?))
}

pub async fn verification_start(
    State(node): N,
    Path(id): Path<String>,
) -> ApiResult<dto::Verification> {
    Ok(Json(node.verification_action(user(&id)?, "start").await?))
}

pub async fn verification_confirm(
    State(node): N,
    Path(id): Path<String>,
) -> ApiResult<dto::Verification> {
    Ok(Json(node.verification_action(user(&id)?, "confirm").await?))
}

pub async fn verification_cancel(
    State(node): N,
    Path(id): Path<String>,
) -> ApiResult<dto::Verification> {
    Ok(Json(node.verification_action(user(&id)?, "cancel").await?))
}

pub async fn connection(State(node): N, Path(id): Path<String>) -> ApiResult<dto::Connection> {
    Ok(Json(node.connection(user(&id)?).await?))
}

pub async fn messages(
    State(node): N,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> ApiResult<dto::MessagePage> {
    let limit = page.limit.unwrap_or(50).clamp(1, 200);
    Ok(Json(node.messages(user(&id)?, page.before, limit).await?))
}

pub async fn send_message(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<SendMessage>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    let reply_to = req.reply_to.as_deref().map(message_id).transpose()?;
    let peer = user(&id)?;
    let preview = node.link_preview(&req.body).await;
    let message = node.send_text(peer, req.body, reply_to, preview).await?;
    Ok((StatusCode::CREATED, Json(message)).into_response())
}

/// Several messages to one contact in one call, stored in one commit and sent in order. Every
/// body is checked first: one bad message refuses the whole call, nothing is sent.
pub async fn send_messages(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<SendMessages>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    let peer = user(&id)?;
    if req.messages.is_empty() || req.messages.len() > super::MAX_BATCH_MESSAGES {
        return Err(ApiError::bad_request(format!(
            "a batch holds 1 to {} messages",
            super::MAX_BATCH_MESSAGES
        )));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        dopus_core::chat::check_body(&m.body)
            .map_err(|e| ApiError::bad_request(format!("message {i}: {e}")))?;
        let reply_to = m
            .reply_to
            .as_deref()
            .map(message_id)
            .transpose()
            .map_err(|e| ApiError::bad_request(format!("message {i}: {}", e.message)))?;
        messages.push((m.body, reply_to));
    }
    let sent = node.send_texts(peer, messages).await?;
    Ok((
        StatusCode::CREATED,
        Json(dto::SentMessages { messages: sent }),
    )
        .into_response())
}

pub async fn typing(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<Typing>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let req = body(payload)?;
    node.typing(user(&id)?, req.active).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn mark_read(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<MarkRead>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let req = body(payload)?;
    node.mark_read(user(&id)?, message_id(&req.up_to)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn edit_message(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<Edit>, JsonRejection>,
) -> ApiResult<dto::Message> {
    let req = body(payload)?;
    Ok(Json(node.edit(message_id(&id)?, req.body).await?))
}

pub async fn delete_message(State(node): N, Path(id): Path<String>) -> ApiResult<dto::Message> {
    Ok(Json(node.delete(message_id(&id)?).await?))
}

pub async fn add_reaction(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<React>, JsonRejection>,
) -> ApiResult<dto::Message> {
    let req = body(payload)?;
    Ok(Json(node.react(message_id(&id)?, req.emoji, true).await?))
}

pub async fn remove_reaction(
    State(node): N,
    Path((id, emoji)): Path<(String, String)>,
) -> ApiResult<dto::Message> {
    Ok(Json(node.react(message_id(&id)?, emoji, false).await?))
}

pub async fn search(State(node): N, Query(q): Query<SearchQuery>) -> ApiResult<dto::SearchResults> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    Ok(Json(node.search(q.q, limit, q.before).await?))
}

pub async fn settings(State(node): N) -> ApiResult<dto::Settings> {
    Ok(Json(node.settings().await?))
}

pub async fn put_settings(
    State(node): N,
    payload: Result<Json<SettingsPatch>, JsonRejection>,
) -> ApiResult<dto::Settings> {
    let patch = body(payload)?;
    let patch = dopus_core::machine::SettingsPatch {
        server_url: patch.server_url,
        ice_servers: patch.ice_servers,
        read_receipts: patch.read_receipts,
        theme: patch.theme,
        link_previews: patch.link_previews,
        relay_only: patch.relay_only,
    };
    Ok(Json(node.put_settings(patch).await?))
}

pub async fn remove_contact(
    State(node): N,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    node.remove_contact(user(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_profile(
    State(node): N,
    payload: Result<Json<dto::planned::ProfilePatch>, JsonRejection>,
) -> ApiResult<dto::Me> {
    let p = body(payload)?;
    let patch = dopus_core::machine::ProfilePatch {
        display_name: p.display_name,
        status_text: p.status_text,
        avatar: p.avatar,
    };
    Ok(Json(node.set_profile(patch).await?))
}

/// `POST /conversations/{id}/files`: a file on the node's machine: `202` with the transfer in
/// state `preparing` (hashed and encrypted in the background), then announced and served to
/// the contact.
pub async fn send_file(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<dto::SendFile>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    let t = node.send_file(user(&id)?, req.path, req.mime).await?;
    Ok((StatusCode::ACCEPTED, Json(t)).into_response())
}

/// `POST /channels/{id}/files`: like `POST /conversations/{id}/files`, announced in a space
/// channel and served to the members allowed to view it.
pub async fn channel_send_file(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<dto::SendFile>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    let channel = dopus_types::ChannelId::parse(&id)
        .map_err(|_| ApiError::bad_request("invalid channel id"))?;
    let t = node.channel_send_file(channel, req.path, req.mime).await?;
    Ok((StatusCode::ACCEPTED, Json(t)).into_response())
}

/// `GET /transfers`.
pub async fn transfers(State(node): N) -> ApiResult<dto::Transfers> {
    Ok(Json(node.transfers().await?))
}

/// `GET /transfers/{id}`.
pub async fn transfer(State(node): N, Path(id): Path<String>) -> ApiResult<dto::Transfer> {
    Ok(Json(node.transfer(&id).await?))
}

/// `POST /transfers/{id}/pause`, `…/resume`, `…/cancel`.
pub async fn transfer_action(
    State(node): N,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<dto::Transfer> {
    let action = match action.as_str() {
        "pause" => dto::TransferAction::Pause,
        "resume" => dto::TransferAction::Resume,
        "cancel" => dto::TransferAction::Cancel,
        _ => {
            return Err(ApiError::bad_request(
                "the action must be pause, resume or cancel",
            ));
        }
    };
    Ok(Json(node.transfer_action(&id, action).await?))
}

/// `POST /transfers/{id}/save`.
pub async fn save_transfer(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<dto::SaveFile>, JsonRejection>,
) -> ApiResult<dto::Transfer> {
    let req = body(payload)?;
    Ok(Json(node.save_transfer(&id, req.dir).await?))
}

/// `GET /calls`.
pub async fn calls(State(node): N) -> ApiResult<dto::Calls> {
    Ok(Json(node.calls().await?))
}

/// `GET /calls/{id}`.
pub async fn call(State(node): N, Path(id): Path<String>) -> ApiResult<dto::Call> {
    Ok(Json(node.call(&id).await?))
}

/// `POST /calls`.
pub async fn start_call(
    State(node): N,
    payload: Result<Json<dto::StartCall>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    let c = node.start_call(req).await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

/// `POST /calls/{id}/accept`.
pub async fn accept_call(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<dto::AcceptCall>, JsonRejection>,
) -> ApiResult<dto::Call> {
    let req = body(payload)?;
    Ok(Json(node.accept_call(&id, req).await?))
}

/// `POST /calls/{id}/browser`.
pub async fn call_browser(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<dto::BrowserOffer>, JsonRejection>,
) -> ApiResult<dto::BrowserAnswer> {
    let req = body(payload)?;
    Ok(Json(node.call_browser(&id, req).await?))
}

/// `POST /calls/{id}/decline`, `POST /calls/{id}/hangup`.
pub async fn call_action(
    State(node): N,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<dto::Call> {
    let action = match action.as_str() {
        "decline" => dto::CallAction::Decline,
        "hangup" => dto::CallAction::Hangup,
        _ => return Err(ApiError::not_found("no such call action")),
    };
    Ok(Json(node.call_action(&id, action).await?))
}
