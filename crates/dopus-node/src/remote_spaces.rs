//! CLI commands for spaces and channels (through a running node's local API).

use crate::client::ApiClient;
use crate::output::{Output, list_text, message_line};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn space_id(id: &str) -> anyhow::Result<dopus_types::SpaceId> {
    dopus_types::SpaceId::parse(id.trim()).with_context(|| format!("{id:?} is not a space id"))
}

fn channel_id(id: &str) -> anyhow::Result<dopus_types::ChannelId> {
    dopus_types::ChannelId::parse(id.trim()).with_context(|| format!("{id:?} is not a channel id"))
}

fn user(id: &str) -> anyhow::Result<dopus_types::UserId> {
    dopus_types::UserId::parse(id).with_context(|| format!("{id:?} is not a valid user ID"))
}

/// Parses a duration such as `90s`, `30m`, `12h` or `7d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num
        .parse()
        .with_context(|| format!("{text:?} is not a duration (like 30m, 12h or 7d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => bail!("{text:?} is not a duration (like 30m, 12h or 7d)"),
    };
    Ok(Duration::from_secs(secs))
}

/// One space as a few lines of text.
pub fn space_text(s: &Value) -> String {
    let mut out = format!(
        "{}  {}  ({}, {} members)",
        s["id"].as_str().unwrap_or("?"),
        s["name"].as_str().filter(|n| !n.is_empty()).unwrap_or("-"),
        s["membership"].as_str().unwrap_or("?"),
        s["members"].as_array().map_or(0, Vec::len)
    );
    if let Some(r) = s["refusal"].as_str() {
        out.push_str(&format!("\n  refused: {r}"));
    }
    for c in s["channels"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  {} {:<8} {}",
            c["id"].as_str().unwrap_or("?"),
            c["kind"].as_str().unwrap_or("?"),
            c["name"].as_str().unwrap_or("?")
        ));
    }
    out
}

/// `space create NAME`.
pub fn create(api: &ApiClient, out: Output, name: &str) -> anyhow::Result<()> {
    let s = api.send("POST", "/api/v1/spaces", &json!({ "name": name }))?;
    out.print(&s, space_text);
    Ok(())
}

/// `space list`.
pub fn list(api: &ApiClient, out: Output) -> anyhow::Result<()> {
    let l = api.get("/api/v1/spaces")?;
    out.print(&l, |l| list_text(l, space_text, "no spaces yet"));
    Ok(())
}

/// `space show SPACE`: the space, then its members with the name each chose (after the user
/// id, which is what identifies them: a chosen name proves nothing).
pub fn show(api: &ApiClient, out: Output, id: &str) -> anyhow::Result<()> {
    let s = api.get(&format!("/api/v1/spaces/{}", space_id(id)?))?;
    out.print(&s, |s| {
        let mut text = space_text(s);
        for m in s["members"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "\n  member {}{}{}",
                m["user_id"].as_str().unwrap_or("?"),
                m["display_name"]
                    .as_str()
                    .map(|n| format!("  {n:?}"))
                    .unwrap_or_default(),
                if m["owner"] == true { "  (owner)" } else { "" }
            ));
        }
        text
    });
    Ok(())
}

/// `space invite SPACE [--max-uses N] [--expires DURATION]`: prints the code.
pub fn invite(
    api: &ApiClient,
    out: Output,
    id: &str,
    max_uses: Option<u32>,
    expires: Option<&str>,
) -> anyhow::Result<()> {
    let expires_in_ms = expires
        .map(parse_duration)
        .transpose()?
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let mut inv = api.send(
        "POST",
        &format!("/api/v1/spaces/{}/invites", space_id(id)?),
        &json!({ "max_uses": max_uses, "expires_in_ms": expires_in_ms }),
    )?;
    // `--json` prints ids in an `id` field: an invite's is its code (`invite_id` revokes it).
    inv["id"] = inv["code"].clone();
    out.print(&inv, |i| i["code"].as_str().unwrap_or("?").to_owned());
    Ok(())
}

fn invite_line(i: &Value) -> String {
    let uses = match i["max_uses"].as_u64() {
        Some(max) => format!("{}/{max} uses", i["uses"].as_u64().unwrap_or(0)),
        None => format!("{} uses", i["uses"].as_u64().unwrap_or(0)),
    };
    let expiry = match i["expires_at"].as_u64() {
        Some(ms) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            if ms <= now {
                "expired".to_owned()
            } else {
                format!("expires in {} min", (ms - now).div_ceil(60_000))
            }
        }
        None => "no expiry".to_owned(),
    };
    format!(
        "{}  by {}  {uses}  {expiry}{}",
        i["id"].as_str().unwrap_or("?"),
        i["creator"].as_str().unwrap_or("?"),
        if i["revoked"].as_bool() == Some(true) {
            "  revoked"
        } else {
            ""
        }
    )
}

/// `space invites SPACE`.
pub fn invites(api: &ApiClient, out: Output, id: &str) -> anyhow::Result<()> {
    let s = api.get(&format!("/api/v1/spaces/{}", space_id(id)?))?;
    let list = s["invites"].clone();
    out.print(&list, |l| list_text(l, invite_line, "no invites"));
    Ok(())
}

/// `space revoke SPACE INVITE_ID`.
pub fn revoke(api: &ApiClient, out: Output, id: &str, invite: &str) -> anyhow::Result<()> {
    let invite = invite.trim();
    if invite.len() != 64 || !invite.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{invite:?} is not an invite id (64 hex digits: see `space invites`)");
    }
    let s = api.send(
        "DELETE",
        &format!("/api/v1/spaces/{}/invites/{invite}", space_id(id)?),
        &json!({}),
    )?;
    out.print(&s, space_text);
    Ok(())
}

/// `space join CODE [--wait SECONDS]`: asks, then waits until admitted or refused.
pub fn join(api: &ApiClient, out: Output, code: &str, wait: u64) -> anyhow::Result<()> {
    let s = api.send(
        "POST",
        "/api/v1/spaces/join",
        &json!({ "invite": code.trim() }),
    )?;
    let id = s["id"].as_str().unwrap_or_default().to_owned();
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut last = s;
    loop {
        match last["membership"].as_str() {
            Some("member") => break,
            Some("refused") => bail!(
                "{}",
                last["refusal"].as_str().unwrap_or("the invite was refused")
            ),
            _ => {}
        }
        if Instant::now() >= deadline {
            bail!(
                "no answer from the inviter or the members the invite names within {wait} s \
                 (they may be offline); \
                 the request stays queued: see `space show {id}`"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
        last = api.get(&format!("/api/v1/spaces/{id}"))?;
    }
    out.print(&last, space_text);
    Ok(())
}

/// `space leave SPACE`.
pub fn leave(api: &ApiClient, out: Output, id: &str) -> anyhow::Result<()> {
    let s = api.send(
        "POST",
        &format!("/api/v1/spaces/{}/leave", space_id(id)?),
        &json!({}),
    )?;
    out.print(&s, space_text);
    Ok(())
}

/// `space kick|ban SPACE USER`.
pub fn member_action(
    api: &ApiClient,
    out: Output,
    action: &str,
    id: &str,
    member: &str,
) -> anyhow::Result<()> {
    let s = api.send(
        "POST",
        &format!(
            "/api/v1/spaces/{}/members/{}/{action}",
            space_id(id)?,
            user(member)?
        ),
        &json!({}),
    )?;
    out.print(&s, space_text);
    Ok(())
}

/// `space transfer SPACE USER`.
pub fn transfer(api: &ApiClient, out: Output, id: &str, member: &str) -> anyhow::Result<()> {
    let s = api.send(
        "POST",
        &format!("/api/v1/spaces/{}/transfer", space_id(id)?),
        &json!({ "user_id": user(member)?.to_string() }),
    )?;
    out.print(&s, space_text);
    Ok(())
}

/// `space role create SPACE NAME [--position N] [--permissions a,b] [--color RRGGBB]`.
pub fn role_create(
    api: &ApiClient,
    out: Output,
    id: &str,
    name: &str,
    position: u32,
    permissions: &[String],
    color: Option<&str>,
) -> anyhow::Result<()> {
    let color = color
        .map(|c| {
            u32::from_str_radix(c.trim_start_matches('#'), 16)
                .ok()
                .filter(|v| *v <= 0xff_ff_ff)
                .with_context(|| format!("{c:?} is not a colour (RRGGBB hex)"))
        })
        .transpose()?;
    let s = api.send(
        "POST",
        &format!("/api/v1/spaces/{}/roles", space_id(id)?),
        &json!({ "name": name, "position": position, "permissions": permissions, "color": color }),
    )?;
    out.print(&s, space_text);
    Ok(())
}

/// `space role assign|revoke SPACE USER ROLE`.
pub fn role_member(
    api: &ApiClient,
    out: Output,
    method: &str,
    id: &str,
    member: &str,
    role: &str,
) -> anyhow::Result<()> {
    let role = role.trim();
    if role.len() != 32 || !role.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{role:?} is not a role id (32 hex digits: see `space show --json`)");
    }
    let s = api.send(
        method,
        &format!(
            "/api/v1/spaces/{}/members/{}/roles/{role}",
            space_id(id)?,
            user(member)?
        ),
        &json!({}),
    )?;
    out.print(&s, space_text);
    Ok(())
}

/// `channel create SPACE NAME [--voice]`.
pub fn channel_create(
    api: &ApiClient,
    out: Output,
    space: &str,
    name: &str,
    voice: bool,
) -> anyhow::Result<()> {
    let kind = if voice { "voice" } else { "text" };
    let s = api.send(
        "POST",
        &format!("/api/v1/spaces/{}/channels", space_id(space)?),
        &json!({ "name": name, "kind": kind }),
    )?;
    out.print(&s, space_text);
    Ok(())
}

/// `channel send CHANNEL TEXT`.
pub fn channel_send(
    api: &ApiClient,
    out: Output,
    channel: &str,
    text: &str,
    reply_to: Option<&str>,
) -> anyhow::Result<()> {
    let m = api.send(
        "POST",
        &format!("/api/v1/channels/{}/messages", channel_id(channel)?),
        &json!({ "body": text, "reply_to": reply_to }),
    )?;
    out.print(&m, message_line);
    Ok(())
}

/// `channel messages CHANNEL [--limit N]`.
pub fn channel_messages(
    api: &ApiClient,
    out: Output,
    channel: &str,
    limit: u32,
) -> anyhow::Result<()> {
    let page = api.get(&format!(
        "/api/v1/channels/{}/messages?limit={}",
        channel_id(channel)?,
        limit.clamp(1, 200)
    ))?;
    out.print(&page, |p| {
        let mut text = list_text(&p["messages"], message_line, "no messages in this channel");
        for w in p["waiting"].as_array().into_iter().flatten() {
            text.push('\n');
            text.push_str(&waiting_line(w));
        }
        text
    });
    Ok(())
}

/// A message still waiting for its key, as the CLI shows it.
fn waiting_line(w: &serde_json::Value) -> String {
    let sender = w["sender"].as_str().unwrap_or("?");
    match w["state"].as_str() {
        Some("waiting_for_keys") => format!("{sender}: [waiting for keys]"),
        _ => format!(
            "{sender}: [cannot be decrypted: {}]",
            w["reason_text"].as_str().unwrap_or("no key")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let w = serde_json::json!({"sender": "dopus1x", "state": "waiting_for_keys"});
        assert_eq!(waiting_line(&w), "dopus1x: [waiting for keys]");
        let w = serde_json::json!({"sender": "dopus1x", "state": "withheld",
            "reason_text": "the sender no longer holds this message's key"});
        assert_eq!(
            waiting_line(&w),
            "dopus1x: [cannot be decrypted: the sender no longer holds this message's key]"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
