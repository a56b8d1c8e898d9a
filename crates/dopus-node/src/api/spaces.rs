//! REST handlers of spaces and their channels (docs/api.md, "Spaces").

use super::dto::{
    self, ChannelPatch, CreateChannel, CreateInvite, CreateRole, CreateSpace, JoinSpace, PageQuery,
    RolePatch, SendChannelMessage,
};
use super::error::ApiError;
use crate::runtime::Node;
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dopus_core::store::MessageId;
use dopus_proto::space::{
    ChannelPosition, MAX_REORDER, OpBody, Overwrite, OverwriteTarget, Permissions, RoleId,
};
use dopus_types::{ChannelId, SpaceId, UserId};
use std::sync::Arc;

type N = State<Arc<Node>>;
type ApiResult<T> = Result<Json<T>, ApiError>;

fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    payload.map(|Json(v)| v).map_err(ApiError::from)
}

fn space_id(id: &str) -> Result<SpaceId, ApiError> {
    SpaceId::parse(id).map_err(|_| ApiError::bad_request("invalid space id"))
}

fn channel_id(id: &str) -> Result<ChannelId, ApiError> {
    ChannelId::parse(id).map_err(|_| ApiError::bad_request("invalid channel id"))
}

fn role_id(id: &str) -> Result<RoleId, ApiError> {
    dto::parse_role_id(id).ok_or_else(|| ApiError::bad_request("invalid role id"))
}

fn user(id: &str) -> Result<UserId, ApiError> {
    Ok(UserId::parse(id)?)
}

fn permissions(names: &[String]) -> Result<Permissions, ApiError> {
    names.iter().try_fold(Permissions::NONE, |p, n| {
        Permissions::from_name(n)
            .map(|one| p.union(one))
            .ok_or_else(|| ApiError::bad_request(format!("unknown permission: {n:.40}")))
    })
}

fn overwrites(list: &[dto::ChannelOverwrite]) -> Result<Vec<Overwrite>, ApiError> {
    list.iter()
        .map(|o| {
            let target = match (&o.role, &o.user_id) {
                (Some(r), None) => OverwriteTarget::Role(role_id(r)?),
                (None, Some(u)) => OverwriteTarget::Member(user(u)?),
                _ => {
                    return Err(ApiError::bad_request(
                        "an overwrite names exactly one of role and user_id",
                    ));
                }
            };
            Ok(Overwrite {
                target,
                allow: permissions(&o.allow)?,
                deny: permissions(&o.deny)?,
            })
        })
        .collect()
}

fn created<T: serde::Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

pub async fn list(State(node): N) -> ApiResult<Vec<dto::Space>> {
    Ok(Json(node.spaces().await?))
}

pub async fn create(
    State(node): N,
    payload: Result<Json<CreateSpace>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    Ok(created(node.create_space(req.name).await?))
}

pub async fn show(State(node): N, Path(id): Path<String>) -> ApiResult<dto::Space> {
    Ok(Json(node.space(space_id(&id)?).await?))
}

pub async fn invite(
    State(node): N,
    Path(id): Path<String>,
    payload: Option<Json<CreateInvite>>,
) -> Result<Response, ApiError> {
    let req = payload.map(|Json(v)| v).unwrap_or_default();
    Ok(created(
        node.space_invite(space_id(&id)?, req.max_uses, req.expires_in_ms)
            .await?,
    ))
}

pub async fn revoke_invite(
    State(node): N,
    Path((id, invite)): Path<(String, String)>,
) -> ApiResult<dto::Space> {
    let invite =
        dto::parse_op_id(&invite).ok_or_else(|| ApiError::bad_request("invalid invite id"))?;
    Ok(Json(
        node.space_op(space_id(&id)?, OpBody::InviteRevoke { invite })
            .await?,
    ))
}

pub async fn join(
    State(node): N,
    payload: Result<Json<JoinSpace>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(node.join_space(req.invite).await?),
    )
        .into_response())
}

pub async fn update(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<dto::SpacePatch>, JsonRejection>,
) -> ApiResult<dto::Space> {
    let req = body(payload)?;
    let body = OpBody::Update {
        name: req.name,
        description: req.description,
        share_history: req.share_history,
    };
    Ok(Json(node.space_op(space_id(&id)?, body).await?))
}

pub async fn transfer(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<dto::TransferSpace>, JsonRejection>,
) -> ApiResult<dto::Space> {
    let req = body(payload)?;
    let body = OpBody::TransferOwnership {
        to: user(&req.user_id)?,
    };
    Ok(Json(node.space_op(space_id(&id)?, body).await?))
}

pub async fn leave(State(node): N, Path(id): Path<String>) -> ApiResult<dto::Space> {
    Ok(Json(node.space_op(space_id(&id)?, OpBody::Leave).await?))
}

pub async fn kick(
    State(node): N,
    Path((id, member)): Path<(String, String)>,
) -> ApiResult<dto::Space> {
    let body = OpBody::Kick {
        user: user(&member)?,
    };
    Ok(Json(node.space_op(space_id(&id)?, body).await?))
}

pub async fn ban(
    State(node): N,
    Path((id, member)): Path<(String, String)>,
) -> ApiResult<dto::Space> {
    let body = OpBody::Ban {
        user: user(&member)?,
    };
    Ok(Json(node.space_op(space_id(&id)?, body).await?))
}

pub async fn unban(
    State(node): N,
    Path((id, member)): Path<(String, String)>,
) -> ApiResult<dto::Space> {
    let body = OpBody::Unban {
        user: user(&member)?,
    };
    Ok(Json(node.space_op(space_id(&id)?, body).await?))
}

pub async fn assign_role(
    State(node): N,
    Path((id, member, role)): Path<(String, String, String)>,
) -> ApiResult<dto::Space> {
    let body = OpBody::RoleAssign {
        user: user(&member)?,
        role: role_id(&role)?,
    };
    Ok(Json(node.space_op(space_id(&id)?, body).await?))
}

pub async fn revoke_role(
    State(node): N,
    Path((id, member, role)): Path<(String, String, String)>,
) -> ApiResult<dto::Space> {
    let body = OpBody::RoleRevoke {
        user: user(&member)?,
        role: role_id(&role)?,
    };
    Ok(Json(node.space_op(space_id(&id)?, body).await?))
}

pub async fn create_role(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<CreateRole>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    let body = OpBody::RoleCreate {
        name: req.name,
        color: req.color.unwrap_or(0),
        position: req.position,
        permissions: permissions(&req.permissions)?,
    };
    Ok(created(node.space_op(space_id(&id)?, body).await?))
}

pub async fn update_role(
    State(node): N,
    Path((id, role)): Path<(String, String)>,
    payload: Result<Json<RolePatch>, JsonRejection>,
) -> ApiResult<dto::Space> {
    let req = body(payload)?;
    let body = OpBody::RoleUpdate {
        role: role_id(&role)?,
        name: req.name,
        color: req.color,
        position: req.position,
        permissions: req.permissions.as_deref().map(permissions).transpose()?,
    };
    Ok(Json(node.space_op(space_id(&id)?, body).await?))
}

pub async fn delete_role(
    State(node): N,
    Path((id, role)): Path<(String, String)>,
) -> ApiResult<dto::Space> {
    let body = OpBody::RoleDelete {
        role: role_id(&role)?,
    };
    Ok(Json(node.space_op(space_id(&id)?, body).await?))
}

pub async fn create_channel(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<CreateChannel>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    let body = OpBody::ChannelCreate {
        kind: req.kind.unwrap_or(dto::SpaceChannelKind::Text).into(),
        name: req.name,
        topic: req.topic,
        parent: req.parent.as_deref().map(channel_id).transpose()?,
        position: req.position.unwrap_or(0),
        overwrites: Vec::new(),
    };
    Ok(created(node.space_op(space_id(&id)?, body).await?))
}

pub async fn update_channel(
    State(node): N,
    Path((id, channel)): Path<(String, String)>,
    payload: Result<Json<ChannelPatch>, JsonRejection>,
) -> ApiResult<dto::Space> {
    let req = body(payload)?;
    let body = OpBody::ChannelUpdate {
        channel: channel_id(&channel)?,
        name: req.name,
        topic: req.topic,
        overwrites: req.overwrites.as_deref().map(overwrites).transpose()?,
    };
    Ok(Json(node.space_op(space_id(&id)?, body).await?))
}

pub async fn reorder_channels(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<dto::ChannelOrder>, JsonRejection>,
) -> ApiResult<dto::Space> {
    let req = body(payload)?;
    if req.positions.is_empty() || req.positions.len() > MAX_REORDER {
        return Err(ApiError::bad_request(format!(
            "positions holds 1 to {MAX_REORDER} channels"
        )));
    }
    let positions = req
        .positions
        .iter()
        .map(|p| {
            Ok(ChannelPosition {
                channel: channel_id(&p.channel)?,
                parent: p.parent.as_deref().map(channel_id).transpose()?,
                position: p.position,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let body = OpBody::ChannelReorder { positions };
    Ok(Json(node.space_op(space_id(&id)?, body).await?))
}

pub async fn delete_channel(
    State(node): N,
    Path((id, channel)): Path<(String, String)>,
) -> ApiResult<dto::Space> {
    let body = OpBody::ChannelDelete {
        channel: channel_id(&channel)?,
    };
    Ok(Json(node.space_op(space_id(&id)?, body).await?))
}

pub async fn messages(
    State(node): N,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> ApiResult<dto::ChannelPage> {
    let limit = page.limit.unwrap_or(50).clamp(1, 200);
    Ok(Json(
        node.channel_messages(channel_id(&id)?, page.before, limit)
            .await?,
    ))
}

pub async fn read(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<dto::MarkRead>, JsonRejection>,
) -> ApiResult<dto::Space> {
    let req = body(payload)?;
    let up_to = uuid::Uuid::parse_str(&req.up_to)
        .map_err(|_| ApiError::bad_request("invalid message id"))?;
    Ok(Json(
        node.channel_read(channel_id(&id)?, MessageId(up_to))
            .await?,
    ))
}

/// `POST /channels/{id}/typing`.
pub async fn typing(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<dto::Typing>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let req = body(payload)?;
    node.channel_typing(channel_id(&id)?, req.active).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /spaces/{id}/search`: as `GET /search`, over the channels of one space we may view.
pub async fn search(
    State(node): N,
    Path(id): Path<String>,
    Query(q): Query<dto::SearchQuery>,
) -> ApiResult<dto::SearchResults> {
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    Ok(Json(
        node.space_search(space_id(&id)?, q.q, limit, q.before)
            .await?,
    ))
}

pub async fn send(
    State(node): N,
    Path(id): Path<String>,
    payload: Result<Json<SendChannelMessage>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = body(payload)?;
    let reply_to = req
        .reply_to
        .as_deref()
        .map(|r| uuid::Uuid::parse_str(r).map_err(|_| ApiError::bad_request("invalid message id")))
        .transpose()?;
    Ok(created(
        node.channel_send(channel_id(&id)?, req.body, reply_to)
            .await?,
    ))
}
