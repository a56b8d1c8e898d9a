//! Spaces: a space as the node resolved it (members, roles, channels), invites, and the request
//! bodies of the spaces routes.

use super::{Timestamp, UserId};
use dopus_core::machine::JoinState;
use dopus_core::space::SpaceState;
use dopus_proto::space::{ChannelKind, OpId, Overwrite, OverwriteTarget, Permissions, RoleId};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// A role id as the API writes it: 32 lowercase hex digits (`000…0` is `@everyone`).
pub fn role_id_text(id: &RoleId) -> String {
    id.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses [`role_id_text`]'s form.
pub fn parse_role_id(text: &str) -> Option<RoleId> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(RoleId::from_bytes(bytes))
}

/// An op id (an invite's id) as the API writes it: 64 lowercase hex digits.
pub fn op_id_text(id: &OpId) -> String {
    id.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses [`op_id_text`]'s form.
pub fn parse_op_id(text: &str) -> Option<OpId> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(OpId::from_bytes(bytes))
}

/// Permission names (`view_channel`, `send_messages`, …), in bit order.
pub fn permission_names(p: Permissions) -> Vec<String> {
    p.names().into_iter().map(str::to_owned).collect()
}

/// Where we stand in a space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum SpaceMembership {
    /// A member.
    Member,
    /// We asked to join; no answer yet.
    Joining,
    /// Admitted; the space's log is on its way.
    Accepted,
    /// Our join was refused (`refusal` says why).
    Refused,
    /// We held the space and are no longer a member (left, kicked or banned).
    Former,
}

/// A member of a space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct SpaceMember {
    /// Who.
    pub user_id: UserId,
    /// The owner.
    pub owner: bool,
    /// The roles they hold (not `@everyone`), role ids.
    pub roles: Vec<String>,
    /// The name they gave themselves in this space (their `profile` op), if any. Chosen by
    /// them, not checked: show it with their user id's fingerprint, never alone. Left out
    /// when they have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub display_name: Option<String>,
}

/// Someone who was a member of a space and is not now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct SpaceFormerMember {
    /// Who.
    pub user_id: UserId,
    /// The name they had chosen in this space when they went, if any (a claim: show it with
    /// the fingerprint, like a member's). Left out when they had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub display_name: Option<String>,
}

/// A role of a space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct SpaceRole {
    /// Its id (32 hex digits; all zeros is `@everyone`).
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its colour (`0xRRGGBB`).
    pub color: u32,
    /// Its rank (0 for `@everyone`; higher is more powerful).
    pub position: u32,
    /// What it grants.
    pub permissions: Vec<String>,
}

/// A channel kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum SpaceChannelKind {
    /// Messages.
    Text,
    /// A voice room.
    Voice,
    /// A folder of channels.
    Category,
}

impl From<ChannelKind> for SpaceChannelKind {
    fn from(k: ChannelKind) -> Self {
        match k {
            ChannelKind::Text => Self::Text,
            ChannelKind::Voice => Self::Voice,
            ChannelKind::Category => Self::Category,
        }
    }
}

impl From<SpaceChannelKind> for ChannelKind {
    fn from(k: SpaceChannelKind) -> Self {
        match k {
            SpaceChannelKind::Text => Self::Text,
            SpaceChannelKind::Voice => Self::Voice,
            SpaceChannelKind::Category => Self::Category,
        }
    }
}

/// A channel of a space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct SpaceChannel {
    /// Its id (`dchan1…`): also the conversation id of its messages.
    pub id: String,
    /// Text, voice or category.
    pub kind: SpaceChannelKind,
    /// Its name.
    pub name: String,
    /// Its topic (empty: none).
    pub topic: String,
    /// Its category, if any.
    pub parent: Option<String>,
    /// Its position among its siblings.
    pub position: u32,
    /// Whether we may read it.
    pub can_view: bool,
    /// Whether we may send in it (text channels).
    pub can_send: bool,
    /// Its permission overwrites (a category's apply to its channels first).
    pub overwrites: Vec<ChannelOverwrite>,
    /// Messages from others since we last read the channel (counted up to 100).
    pub unread: u32,
    /// Of those, the ones that mention us (by name, a role we hold, or `@everyone`).
    pub mentions: u32,
}

/// A space as this node resolved it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct Space {
    /// Its id (`dspace1…`).
    pub id: String,
    /// Where we stand.
    pub membership: SpaceMembership,
    /// Why our join was refused (a sentence), when `membership` is `refused`.
    pub refusal: Option<String>,
    /// Its name (empty until the log arrives).
    pub name: String,
    /// Its description.
    pub description: String,
    /// Whether new members get the history sent before they joined.
    pub share_history: bool,
    /// The owner (`null` until the log arrives).
    pub owner: Option<UserId>,
    /// Our permissions across the space.
    pub permissions: Vec<String>,
    /// Members, by user id.
    pub members: Vec<SpaceMember>,
    /// Who was a member and is not now (left, kicked or banned), by user id: their earlier
    /// messages stay in the channels' history, shown under the name they had chosen and marked
    /// as having left.
    pub former_members: Vec<SpaceFormerMember>,
    /// Roles, `@everyone` first, then by position.
    pub roles: Vec<SpaceRole>,
    /// Channels in display order (categories before their channels).
    pub channels: Vec<SpaceChannel>,
    /// Invites made in the space, by id (their codes are shown only to whoever made
    /// them, when they made them).
    pub invites: Vec<SpaceInviteInfo>,
}

/// An invite of a space, as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct SpaceInviteInfo {
    /// Its id (64 hex digits): `DELETE /spaces/{id}/invites/{invite_id}` revokes it.
    pub id: String,
    /// Who made it.
    pub creator: UserId,
    /// Most joins it admits (`null`: unlimited).
    pub max_uses: Option<u32>,
    /// Joins it admitted so far.
    pub uses: u32,
    /// When it expires (`null`: never).
    pub expires_at: Option<Timestamp>,
    /// Whether it was revoked.
    pub revoked: bool,
}

impl Space {
    /// The space as `me` sees it (`state`: its resolved log, if we hold it).
    pub fn new(
        id: &dopus_types::SpaceId,
        state: Option<&SpaceState>,
        join: Option<JoinState>,
        me: &dopus_types::UserId,
    ) -> Self {
        let (membership, refusal) = match (state, join) {
            (Some(s), _) if s.is_member(me) => (SpaceMembership::Member, None),
            (_, Some(JoinState::Refused(r))) => {
                (SpaceMembership::Refused, Some(r.message().to_owned()))
            }
            (_, Some(JoinState::Accepted)) => (SpaceMembership::Accepted, None),
            (_, Some(JoinState::Pending)) => (SpaceMembership::Joining, None),
            (_, None) => (SpaceMembership::Former, None),
        };
        let Some(s) = state else {
            return Self {
                id: id.to_string(),
                membership,
                refusal,
                name: String::new(),
                description: String::new(),
                share_history: false,
                owner: None,
                permissions: Vec::new(),
                members: Vec::new(),
                former_members: Vec::new(),
                roles: Vec::new(),
                channels: Vec::new(),
                invites: Vec::new(),
            };
        };
        let owner = s.owner();
        let members = s
            .members()
            .map(|(u, m)| SpaceMember {
                user_id: u.into(),
                owner: *u == owner,
                roles: m.roles.iter().map(role_id_text).collect(),
                display_name: m.display_name().map(str::to_owned),
            })
            .collect();
        let former_members = s
            .former_members()
            .map(|(u, name)| SpaceFormerMember {
                user_id: u.into(),
                display_name: name.map(str::to_owned),
            })
            .collect();
        let mut roles: Vec<SpaceRole> = s
            .roles()
            .into_iter()
            .map(|r| SpaceRole {
                id: role_id_text(&r.id),
                name: r.name.get().clone(),
                color: *r.color.get(),
                position: *r.position.get(),
                permissions: permission_names(*r.permissions.get()),
            })
            .collect();
        roles.sort_by(|a, b| (a.position, &a.id).cmp(&(b.position, &b.id)));
        let channels = s
            .channel_list()
            .into_iter()
            .map(|c| {
                let p = s.permissions(me, &c.id);
                SpaceChannel {
                    id: c.id.to_string(),
                    kind: c.kind.into(),
                    name: c.name.get().clone(),
                    topic: c.topic.get().clone(),
                    parent: s.parent_of(c).map(|p| p.id.to_string()),
                    position: c.place.get().1,
                    can_view: p.contains(Permissions::VIEW_CHANNEL),
                    can_send: c.kind == ChannelKind::Text
                        && p.contains(Permissions::VIEW_CHANNEL.union(Permissions::SEND_MESSAGES)),
                    overwrites: c
                        .overwrites
                        .get()
                        .iter()
                        .map(ChannelOverwrite::from)
                        .collect(),
                    unread: 0,
                    mentions: 0,
                }
            })
            .collect();
        Self {
            id: id.to_string(),
            membership,
            refusal,
            name: s.name().to_owned(),
            description: s.description().to_owned(),
            share_history: s.share_history(),
            owner: Some((&owner).into()),
            permissions: permission_names(s.base_permissions(me)),
            members,
            former_members,
            roles,
            channels,
            invites: s
                .invites()
                .map(|i| SpaceInviteInfo {
                    id: op_id_text(&i.id),
                    creator: (&i.creator).into(),
                    max_uses: i.max_uses,
                    uses: u32::try_from(i.joins.len()).unwrap_or(u32::MAX),
                    expires_at: i.expires_at.map(Timestamp::from),
                    revoked: i.revoked,
                })
                .collect(),
        }
    }
}

/// `POST /spaces/{id}/invites`: the code to hand out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct SpaceInvite {
    /// The space.
    pub space_id: String,
    /// The invite code (`dinvite1…`); whoever holds it may join until it expires, is used up
    /// or revoked.
    pub code: String,
    /// The invite's id (64 hex digits), to revoke it.
    pub invite_id: String,
}

/// `GET /channels/{id}/messages`: a page of a channel's messages and, on the newest page, the
/// messages still waiting for their key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct ChannelPage {
    /// The messages, oldest first.
    pub messages: Vec<super::Message>,
    /// Whether older messages exist before the first one.
    pub has_more: bool,
    /// Placeholders for messages waiting for their key, oldest first (the newest page only).
    pub waiting: Vec<WaitingMessage>,
}

/// Where a placeholder's wait for its key stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum WaitingState {
    /// The key is being asked for.
    WaitingForKeys,
    /// The session's owner refused to share it (`reason` says why).
    Withheld,
    /// Nobody answered; the message is kept in case the key still comes.
    GaveUp,
}

/// Why a key was withheld.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum WithheldReason {
    /// We may not read that channel (now, or when the session was in use).
    Unauthorized,
    /// The owner no longer holds the session.
    Unavailable,
    /// The space does not share history with new members, and the message predates us.
    HistoryNotShared,
}

/// A channel message that has not been decrypted yet: its key has not reached us.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, TS)]
pub struct WaitingMessage {
    /// `<session_id>:<index>`, stable until the message is decrypted.
    pub id: String,
    /// The session's owner, as the message claims (checked when it is decrypted).
    pub sender: UserId,
    /// When it arrived.
    pub received_at: Timestamp,
    /// Where the wait stands.
    pub state: WaitingState,
    /// Why the key was withheld (`withheld` only).
    pub reason: Option<WithheldReason>,
    /// A sentence for the UI (`withheld` and `gave_up`).
    pub reason_text: Option<String>,
}

impl WaitingMessage {
    /// The placeholder of a waiting message.
    pub fn from_record(w: &dopus_core::store::MegolmWaitingRecord) -> Self {
        use dopus_core::store::MegolmWaitState;
        use dopus_proto::space::WithheldCode;
        let (state, reason, text) = match w.state {
            MegolmWaitState::Waiting => (WaitingState::WaitingForKeys, None, None),
            MegolmWaitState::GaveUp => (
                WaitingState::GaveUp,
                None,
                Some("nobody who holds the key for this message answered"),
            ),
            MegolmWaitState::Withheld(code) => {
                let (reason, text) = match code {
                    WithheldCode::Unauthorized => (
                        WithheldReason::Unauthorized,
                        "the sender did not share this message's key with you",
                    ),
                    WithheldCode::Unavailable => (
                        WithheldReason::Unavailable,
                        "the sender no longer holds this message's key",
                    ),
                    WithheldCode::HistoryNotShared => (
                        WithheldReason::HistoryNotShared,
                        "this space does not share messages from before you joined",
                    ),
                };
                (WaitingState::Withheld, Some(reason), Some(text))
            }
        };
        Self {
            id: format!("{}:{}", w.session_id, w.index),
            sender: (&w.sender_user).into(),
            received_at: w.received_at.into(),
            state,
            reason,
            reason_text: text.map(str::to_owned),
        }
    }
}

/// `POST /spaces`.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
pub struct CreateSpace {
    /// Its name (1 to 100 bytes).
    pub name: String,
}

/// `POST /spaces/{id}/invites` (the body may be left out).
#[derive(Clone, Debug, Default, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct CreateInvite {
    /// How many joins it allows (unlimited if left out).
    pub max_uses: Option<u32>,
    /// How long it stays valid, in milliseconds from now (forever if left out).
    #[ts(type = "number | null")]
    pub expires_in_ms: Option<u64>,
}

/// `POST /spaces/join`.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
pub struct JoinSpace {
    /// The invite code.
    pub invite: String,
}

/// `POST /spaces/{id}/channels`.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct CreateChannel {
    /// Its name.
    pub name: String,
    /// Text (the default), voice or category.
    pub kind: Option<SpaceChannelKind>,
    /// Its topic.
    pub topic: Option<String>,
    /// Its category's id.
    pub parent: Option<String>,
    /// Its position among its siblings (0 if left out).
    pub position: Option<u32>,
}

/// `PATCH /spaces/{id}/channels/{channel_id}`: only the fields present change.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct ChannelPatch {
    /// New name.
    pub name: Option<String>,
    /// New topic.
    pub topic: Option<String>,
    /// The channel's whole list of overwrites (replaces the old one).
    pub overwrites: Option<Vec<ChannelOverwrite>>,
}

/// `PUT /spaces/{id}/channels`: moves channels (the ↑/↓ of the channel list); channels left out
/// keep their place.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
pub struct ChannelOrder {
    /// Where each named channel goes.
    pub positions: Vec<ChannelPlace>,
}

/// Where one channel goes in a [`ChannelOrder`].
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct ChannelPlace {
    /// The channel (`dchan1…`).
    pub channel: String,
    /// The category it moves into (left out: the top level).
    pub parent: Option<String>,
    /// Its position among its siblings (ties sort by channel id).
    pub position: u32,
}

/// A channel's permission overwrite for a role (`role`) or a member (`user_id`): exactly one
/// of them.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct ChannelOverwrite {
    /// The role (32 hex digits; all zeros is `@everyone`).
    pub role: Option<String>,
    /// The member.
    pub user_id: Option<String>,
    /// Permissions granted in the channel.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Permissions taken away in the channel.
    #[serde(default)]
    pub deny: Vec<String>,
}

impl From<&Overwrite> for ChannelOverwrite {
    fn from(o: &Overwrite) -> Self {
        let (role, user_id) = match &o.target {
            OverwriteTarget::Role(r) => (Some(role_id_text(r)), None),
            OverwriteTarget::Member(u) => (None, Some(u.to_string())),
        };
        Self {
            role,
            user_id,
            allow: permission_names(o.allow),
            deny: permission_names(o.deny),
        }
    }
}

/// `PATCH /spaces/{id}`: the space's settings (only the fields present change).
#[derive(Clone, Debug, Default, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct SpacePatch {
    /// New name.
    pub name: Option<String>,
    /// New description (empty clears it).
    pub description: Option<String>,
    /// Whether new members get the history sent before they joined.
    pub share_history: Option<bool>,
}

/// `POST /spaces/{id}/transfer`: hands the space to another member.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
pub struct TransferSpace {
    /// The new owner.
    pub user_id: String,
}

/// `POST /spaces/{id}/roles`.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct CreateRole {
    /// Its name.
    pub name: String,
    /// Its colour (`0xRRGGBB`, 0 if left out).
    pub color: Option<u32>,
    /// Its rank (must be below our own top role).
    pub position: u32,
    /// What it grants (permission names).
    pub permissions: Vec<String>,
}

/// `PATCH /spaces/{id}/roles/{role_id}`: only the fields present change.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct RolePatch {
    /// New name.
    pub name: Option<String>,
    /// New colour.
    pub color: Option<u32>,
    /// New rank.
    pub position: Option<u32>,
    /// New permissions (names).
    pub permissions: Option<Vec<String>>,
}

/// `POST /channels/{id}/messages`.
#[derive(Clone, Debug, Deserialize, Serialize, TS)]
#[ts(optional_fields = nullable)]
pub struct SendChannelMessage {
    /// The text (1 to 16 KiB).
    pub body: String,
    /// The message it answers.
    #[ts(as = "Option<super::MessageId>")]
    pub reply_to: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use dopus_core::space::ControlLog;
    use dopus_core::space::test_support::KeySigner;
    use dopus_types::Timestamp;

    fn state() -> (SpaceState, dopus_types::UserId) {
        let alice = KeySigner::new(1, 1);
        let genesis = ControlLog::genesis_op(
            &alice,
            "Guild",
            [7; 16],
            Permissions::DEFAULT_EVERYONE,
            false,
            Timestamp(1_700_000_000_000),
        );
        let mut log = ControlLog::create(genesis).unwrap();
        log.author(
            &alice,
            dopus_proto::space::OpBody::ChannelCreate {
                kind: ChannelKind::Text,
                name: "general".into(),
                topic: None,
                parent: None,
                position: 0,
                overwrites: Vec::new(),
            },
            Timestamp(1_700_000_000_001),
        )
        .unwrap();
        (log.state().clone(), alice.user())
    }

    #[test]
    fn a_space_as_its_owner_sees_it() {
        let (s, me) = state();
        insta::assert_json_snapshot!(Space::new(s.id(), Some(&s), None, &me));
    }

    #[test]
    fn placeholders_of_messages_waiting_for_keys() {
        use dopus_core::store::{MegolmWaitState, MegolmWaitingRecord};
        use dopus_proto::space::WithheldCode;
        let (_, me) = state();
        let record = |index, state| MegolmWaitingRecord {
            session_id: "c2Vzc2lvbg".into(),
            index,
            sender_user: me,
            sender_device: dopus_types::DeviceId::from_random([3; 16]),
            message: vec![1, 2, 3],
            received_at: Timestamp(1_700_000_000_500),
            space: None,
            channel: None,
            state,
        };
        let page = ChannelPage {
            messages: Vec::new(),
            has_more: false,
            waiting: vec![
                WaitingMessage::from_record(&record(4, MegolmWaitState::Waiting)),
                WaitingMessage::from_record(&record(
                    5,
                    MegolmWaitState::Withheld(WithheldCode::HistoryNotShared),
                )),
                WaitingMessage::from_record(&record(6, MegolmWaitState::GaveUp)),
            ],
        };
        assert_eq!(page.waiting[0].id, "c2Vzc2lvbg:4");
        assert_eq!(
            page.waiting[1].reason,
            Some(WithheldReason::HistoryNotShared)
        );
        assert_eq!(page.waiting[0].reason_text, None);
        insta::assert_json_snapshot!(page);
    }

    #[test]
    fn a_refused_join() {
        let (s, me) = state();
        let dto = Space::new(
            s.id(),
            None,
            Some(JoinState::Refused(
                dopus_proto::space::JoinRefusal::Exhausted,
            )),
            &me,
        );
        assert_eq!(dto.membership, SpaceMembership::Refused);
        insta::assert_json_snapshot!(dto);
    }

    #[test]
    fn role_ids_round_trip_as_hex() {
        let r = RoleId::from_bytes([0xab; 16]);
        assert_eq!(parse_role_id(&role_id_text(&r)), Some(r));
        assert_eq!(parse_role_id("xyz"), None);
        assert_eq!(
            role_id_text(&RoleId::EVERYONE),
            "00000000000000000000000000000000"
        );
    }
}
