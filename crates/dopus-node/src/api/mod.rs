//! The node's local API (docs/api.md): REST under `/api/v1`, one WebSocket for events, and the
//! embedded web UI at `/`. Served on 127.0.0.1 only, behind the per-launch token.

pub mod auth;
pub mod dto;
pub mod error;
pub mod events;
mod files;
mod routes;
mod spaces;
pub mod ui;
mod voice;

use crate::runtime::Node;
use auth::AuthConfig;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use std::sync::Arc;

/// Largest request body the API accepts (message text is limited further, to 16 KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Largest request body of `POST /conversations/{id}/messages/batch`, in bytes.
pub const MAX_BATCH_BODY: usize = 8 * 1024 * 1024;
/// Most messages in one `POST /conversations/{id}/messages/batch`.
pub const MAX_BATCH_MESSAGES: usize = 256;

/// Spaces and their channels (docs/api.md, "Spaces").
fn spaces_routes() -> Router<Arc<Node>> {
    use axum::routing::{delete, patch};
    Router::new()
        .route("/spaces", get(spaces::list).post(spaces::create))
        .route("/spaces/join", post(spaces::join))
        .route("/spaces/{id}", get(spaces::show).patch(spaces::update))
        .route("/spaces/{id}/transfer", post(spaces::transfer))
        .route("/spaces/{id}/invites", post(spaces::invite))
        .route(
            "/spaces/{id}/invites/{invite_id}",
            delete(spaces::revoke_invite),
        )
        .route("/spaces/{id}/leave", post(spaces::leave))
        .route("/spaces/{id}/members/{user_id}/kick", post(spaces::kick))
        .route("/spaces/{id}/members/{user_id}/ban", post(spaces::ban))
        .route("/spaces/{id}/bans/{user_id}", delete(spaces::unban))
        .route(
            "/spaces/{id}/members/{user_id}/roles/{role_id}",
            put(spaces::assign_role).delete(spaces::revoke_role),
        )
        .route("/spaces/{id}/roles", post(spaces::create_role))
        .route(
            "/spaces/{id}/roles/{role_id}",
            patch(spaces::update_role).delete(spaces::delete_role),
        )
        .route(
            "/spaces/{id}/channels",
            post(spaces::create_channel).put(spaces::reorder_channels),
        )
        .route(
            "/spaces/{id}/channels/{channel_id}",
            patch(spaces::update_channel).delete(spaces::delete_channel),
        )
        .route(
            "/channels/{id}/messages",
            get(spaces::messages).post(spaces::send),
        )
        .route("/channels/{id}/read", post(spaces::read))
        .route("/channels/{id}/typing", post(spaces::typing))
        .route("/spaces/{id}/search", get(spaces::search))
}

/// The whole local API as one router.
pub fn router(node: Arc<Node>, auth: AuthConfig) -> Router {
    let events = events::EventsState {
        events: node.events().clone(),
    };
    let api = Router::new()
        .route("/status", get(routes::status))
        .route("/identity", post(routes::create_identity))
        .route("/unlock", post(routes::unlock))
        .route("/me", get(routes::me))
        .route("/me/status", put(routes::set_status))
        .route("/me/profile", put(routes::set_profile))
        .route("/contacts", get(routes::contacts).post(routes::add_contact))
        .route(
            "/contacts/{user_id}",
            axum::routing::patch(routes::patch_contact).delete(routes::remove_contact),
        )
        .route("/contacts/{user_id}/request", post(routes::contact_request))
        .route("/contacts/{user_id}/accept", post(routes::contact_accept))
        .route("/contacts/{user_id}/decline", post(routes::contact_decline))
        .route("/contacts/{user_id}/safety", get(routes::safety))
        .route("/contacts/{user_id}/connection", get(routes::connection))
        .route(
            "/contacts/{user_id}/verification",
            get(routes::verification).post(routes::verification_start),
        )
        .route(
            "/contacts/{user_id}/verification/confirm",
            post(routes::verification_confirm),
        )
        .route(
            "/contacts/{user_id}/verification/cancel",
            post(routes::verification_cancel),
        )
        .route(
            "/conversations/{user_id}/messages",
            get(routes::messages).post(routes::send_message),
        )
        .route(
            "/conversations/{user_id}/messages/batch",
            post(routes::send_messages).layer(DefaultBodyLimit::max(MAX_BATCH_BODY)),
        )
        .route("/conversations/{user_id}/typing", post(routes::typing))
        .route("/conversations/{user_id}/read", post(routes::mark_read))
        .route(
            "/messages/{id}",
            put(routes::edit_message).delete(routes::delete_message),
        )
        .route("/messages/{id}/reactions", post(routes::add_reaction))
        .route(
            "/messages/{id}/reactions/{emoji}",
            axum::routing::delete(routes::remove_reaction),
        )
        .route("/conversations/{user_id}/files", post(routes::send_file))
        .route("/channels/{id}/files", post(routes::channel_send_file))
        .route(
            "/conversations/{user_id}/files/upload",
            post(files::upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/channels/{id}/files/upload",
            post(files::channel_upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/transfers/{id}/content", get(files::content))
        .route("/transfers", get(routes::transfers))
        .route("/transfers/{id}", get(routes::transfer))
        .route("/transfers/{id}/save", post(routes::save_transfer))
        .route("/transfers/{id}/{action}", post(routes::transfer_action))
        .route("/calls", get(routes::calls).post(routes::start_call))
        .route("/calls/{id}", get(routes::call))
        .route("/calls/{id}/accept", post(routes::accept_call))
        .route("/calls/{id}/browser", post(routes::call_browser))
        .route("/calls/{id}/{action}", post(routes::call_action))
        .route("/voice", get(voice::state))
        .route("/voice/join", post(voice::join))
        .route("/voice/leave", post(voice::leave))
        .route("/voice/state", post(voice::patch))
        .route("/voice/browser", post(voice::browser))
        .route("/spaces/{id}/voice", get(voice::space))
        .route("/search", get(routes::search))
        .route("/settings", get(routes::settings).put(routes::put_settings))
        .merge(spaces_routes())
        .with_state(node)
        .merge(
            Router::new()
                .route("/events", get(events::events))
                .with_state(events),
        )
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    Router::new()
        .nest("/api/v1", api)
        .route("/", get(ui::index))
        .fallback(ui::fallback)
        .with_state(auth)
}
