//! @mentions in channel messages. A message's text carries them as tokens, as Discord's do:
//! `<@dopus1…>` a member, `<@&` + 32 hex digits + `>` a role, and `@everyone`. The sender lists
//! them in the encrypted payload's [`Mentions`]; a receiver decides whether a message mentions
//! it from the text and the space's current state ([`mentions_me`]), so nothing but the text is
//! stored. `@everyone` counts only from senders with the `mention_everyone` permission.

use super::SpaceState;
use dopus_proto::space::{MAX_MENTIONS, Mentions, Permissions, RoleId};
use dopus_types::UserId;

/// The token that mentions every member.
pub const EVERYONE: &str = "@everyone";

fn parse_role(hex: &str) -> Option<RoleId> {
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(RoleId::from_bytes(bytes))
}

/// The mentions a text carries (at most [`MAX_MENTIONS`] users and roles together; repeats
/// count once; malformed tokens are plain text).
pub fn parse(text: &str) -> Mentions {
    let mut m = Mentions::default();
    let mut rest = text;
    while let Some(i) = rest.find("<@") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find('>') else { break };
        let inner = &rest[..end];
        if m.users.len() + m.roles.len() < MAX_MENTIONS {
            if let Some(hex) = inner.strip_prefix('&') {
                if let Some(r) = parse_role(hex)
                    && !m.roles.contains(&r)
                {
                    m.roles.push(r);
                }
            } else if inner.len() <= 100
                && let Ok(u) = UserId::parse(inner)
                && !m.users.contains(&u)
            {
                m.users.push(u);
            }
        }
        rest = &rest[end..];
    }
    m.everyone = text
        .match_indices(EVERYONE)
        .any(|(i, _)| !text[i + EVERYONE.len()..].starts_with(|c: char| c.is_alphanumeric()));
    m
}

/// Whether `sender`'s message text `text` mentions `me` in the space as it stands: by name,
/// through a role `me` holds, or `@everyone` from a sender allowed to use it. Our own messages
/// never mention us.
pub fn mentions_me(state: &SpaceState, me: &UserId, sender: &UserId, text: &str) -> bool {
    if sender == me || !text.contains('@') {
        return false;
    }
    let m = parse(text);
    if m.users.contains(me) {
        return true;
    }
    if m.everyone
        && state
            .base_permissions(sender)
            .contains(Permissions::MENTION_EVERYONE)
    {
        return true;
    }
    state
        .member(me)
        .is_some_and(|member| m.roles.iter().any(|r| member.roles.contains(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_garbage_is_text() {
        let mut rng = crate::identity::test_support::SeededRandom::new(7);
        let user = crate::identity::Identity::generate(&mut rng)
            .expect("an identity")
            .user_id();
        let role = RoleId::from_bytes([0xab; 16]);
        let text = format!(
            "hi <@{user}> and <@&{}> and <@{user}> @everyone <@nope> <@&zz> <@",
            "ab".repeat(16)
        );
        let m = parse(&text);
        assert_eq!(m.users, vec![user]);
        assert_eq!(m.roles, vec![role]);
        assert!(m.everyone);
        assert!(!parse("@everyones are fine").everyone);
        assert!(parse("").is_empty());
    }
}
