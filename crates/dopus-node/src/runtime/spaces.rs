//! The spaces half of [`Node`]: commands sent to the actor as jobs, reads as queries
//! (docs/api.md, "Spaces").

use super::{Node, NodeError, NodeResult, api_to_node, views};
use crate::api::dto;
use dopus_core::store::{ConversationId, MessageId};
use dopus_proto::space::{ChannelKind, InviteCode, OpBody, Permissions};
use dopus_types::{ChannelId, SpaceId, Timestamp};

impl Node {
    /// `GET /spaces`.
    pub async fn spaces(&self) -> NodeResult<Vec<dto::Space>> {
        self.read(|v| Ok(views::spaces(v.machine, v.store))).await
    }

    /// `GET /spaces/{id}`.
    pub async fn space(&self, id: SpaceId) -> NodeResult<dto::Space> {
        self.read(move |v| {
            if v.machine.space(&id).is_none() && v.machine.join_state(&id).is_none() {
                return Err(NodeError::NotFound("space"));
            }
            Ok(views::space(v.machine, v.store, &id))
        })
        .await
    }

    /// `POST /spaces`.
    pub async fn create_space(&self, name: String) -> NodeResult<dto::Space> {
        self.write(move |cx| {
            let id = cx
                .machine
                .create_space(cx.now, cx.store, &name)
                .map_err(|e| cx.command(e))?;
            Ok(views::space(cx.machine, cx.store, &id))
        })
        .await
    }

    /// `POST /spaces/{id}/invites`.
    pub async fn space_invite(
        &self,
        id: SpaceId,
        max_uses: Option<u32>,
        expires_in_ms: Option<u64>,
    ) -> NodeResult<dto::SpaceInvite> {
        self.write(move |cx| {
            let expires_at =
                expires_in_ms.map(|ms| Timestamp(cx.now.as_millis().saturating_add(ms)));
            let code = cx
                .machine
                .space_invite(cx.now, cx.store, id, max_uses, expires_at)
                .map_err(|e| cx.command(e))?;
            // The invite's id: the op whose key the code's secret derives.
            let invite_id = InviteCode::parse(&code)
                .ok()
                .and_then(|c| {
                    let key = dopus_core::space::invite::invite_key(&c.secret);
                    cx.machine.space(&id)?.invite_by_key(&key).map(|i| i.id)
                })
                .map(|i| dto::op_id_text(&i))
                .unwrap_or_default();
            Ok(dto::SpaceInvite {
                space_id: id.to_string(),
                code,
                invite_id,
            })
        })
        .await
    }

    /// `POST /spaces/join`: asks the inviter; the answer comes as a `space` event.
    pub async fn join_space(&self, code: String) -> NodeResult<dto::Space> {
        self.write(move |cx| {
            let id = cx
                .machine
                .join_space(cx.now, cx.store, &code)
                .map_err(|e| cx.command(e))?;
            Ok(views::space(cx.machine, cx.store, &id))
        })
        .await
    }

    /// Every other change to a space (leave, kick, ban, roles, channels): one op.
    pub async fn space_op(&self, id: SpaceId, body: OpBody) -> NodeResult<dto::Space> {
        self.write(move |cx| {
            cx.machine
                .space_op(cx.now, cx.store, id, body)
                .map_err(|e| cx.command(e))?;
            Ok(views::space(cx.machine, cx.store, &id))
        })
        .await
    }

    /// `POST /channels/{id}/read`: the space, with the channel's counts cleared.
    pub async fn channel_read(
        &self,
        channel: ChannelId,
        up_to: MessageId,
    ) -> NodeResult<dto::Space> {
        self.write(move |cx| {
            let space = cx
                .machine
                .channel_space(&channel)
                .ok_or(NodeError::NotFound("channel"))?;
            cx.machine
                .channel_mark_read(cx.store, channel, up_to)
                .map_err(|e| cx.command(e))?;
            Ok(views::space(cx.machine, cx.store, &space))
        })
        .await
    }

    /// `GET /channels/{id}/messages`.
    pub async fn channel_messages(
        &self,
        channel: ChannelId,
        before: Option<u64>,
        limit: usize,
    ) -> NodeResult<dto::ChannelPage> {
        self.read(move |v| {
            if v.machine.channel_space(&channel).is_none() {
                return Err(NodeError::NotFound("channel"));
            }
            let page = views::conversation_messages(
                v.store,
                &v.machine.me(),
                ConversationId::Channel(channel),
                before,
                limit,
            )
            .map_err(api_to_node)?;
            let waiting = if before.is_none() {
                channel_waiting(v.store, &channel)?
            } else {
                Vec::new()
            };
            Ok(dto::ChannelPage {
                messages: page.messages,
                has_more: page.has_more,
                waiting,
            })
        })
        .await
    }

    /// `POST /channels/{id}/messages`.
    pub async fn channel_send(
        &self,
        channel: ChannelId,
        body: String,
        reply_to: Option<uuid::Uuid>,
    ) -> NodeResult<dto::Message> {
        self.write(move |cx| {
            let me = cx.machine.me();
            let m = cx
                .machine
                .channel_send(cx.now, cx.store, channel, body, reply_to.map(MessageId))
                .map_err(|e| cx.command(e))?;
            Ok(dto::Message::from_record(&m, &[], &me))
        })
        .await
    }

    /// `POST /channels/{id}/typing`: live to the channel's readers, throttled (never stored).
    pub async fn channel_typing(&self, channel: ChannelId, active: bool) -> NodeResult<()> {
        self.write(move |cx| {
            cx.machine
                .channel_typing(cx.now, &*cx.store, channel, active)
                .map_err(|e| cx.command(e))
        })
        .await
    }

    /// `GET /spaces/{id}/search`: the decrypted messages of the space's channels we may view,
    /// newest first, a page of `limit` older than `before`.
    pub async fn space_search(
        &self,
        id: SpaceId,
        q: String,
        limit: usize,
        before: Option<u64>,
    ) -> NodeResult<dto::SearchResults> {
        self.read(move |v| {
            let state = v.machine.space(&id).ok_or(NodeError::NotFound("space"))?;
            let me = v.machine.me();
            if !state.is_member(&me) {
                return Err(NodeError::NotFound("space"));
            }
            let channels: Vec<ConversationId> = state
                .channel_list()
                .into_iter()
                .filter(|c| c.kind == ChannelKind::Text)
                .filter(|c| {
                    state
                        .permissions(&me, &c.id)
                        .contains(Permissions::VIEW_CHANNEL)
                })
                .map(|c| ConversationId::Channel(c.id))
                .collect();
            views::search_within(v.store, &me, &q, Some(channels), limit, before)
                .map_err(api_to_node)
        })
        .await
    }
}

/// Most placeholders a channel page or event carries.
const MAX_PLACEHOLDERS: usize = 200;

/// A channel's messages waiting for their key, as placeholders (docs/api.md, "Waiting for
/// keys").
pub(super) fn channel_waiting(
    store: &dyn dopus_core::store::Store,
    channel: &ChannelId,
) -> NodeResult<Vec<dto::WaitingMessage>> {
    Ok(store
        .megolm_waiting_in_channel(channel, MAX_PLACEHOLDERS)
        .map_err(|e| NodeError::Internal(Box::new(e)))?
        .iter()
        .map(dto::WaitingMessage::from_record)
        .collect())
}
