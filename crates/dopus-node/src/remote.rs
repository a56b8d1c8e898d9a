//! CLI commands that talk to a running node through its local API.

use crate::client::ApiClient;
use crate::output::{Output, list_text, message_line, short_id};
use anyhow::Context;
use dopus_types::UserId;
use serde_json::{Value, json};

fn user(id: &str) -> anyhow::Result<UserId> {
    UserId::parse(id).with_context(|| format!("{id:?} is not a valid user ID"))
}

fn message_id(id: &str) -> anyhow::Result<String> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .with_context(|| format!("{id:?} is not a message ID"))
}

/// `status online|away|busy|invisible`.
pub fn set_status(api: &ApiClient, out: Output, status: &str) -> anyhow::Result<()> {
    let me = api.send("PUT", "/api/v1/me/status", &json!({ "status": status }))?;
    out.print(&me, |m| {
        format!("status: {}", m["status"].as_str().unwrap_or("?"))
    });
    Ok(())
}

/// `contacts request|accept|decline ID`.
pub fn contact_action(
    api: &ApiClient,
    out: Output,
    action: &str,
    id: &str,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let id = user(id)?;
    let body = match name {
        Some(n) => json!({ "display_name": n }),
        None => json!({}),
    };
    let c = api.send("POST", &format!("/api/v1/contacts/{id}/{action}"), &body)?;
    out.print(&c, contact_line);
    Ok(())
}

/// `contacts list` through the node (adds presence and unread counts).
pub fn contacts_list(api: &ApiClient, out: Output) -> anyhow::Result<()> {
    let list = api.get("/api/v1/contacts")?;
    out.print(&list, |l| list_text(l, contact_line, "no contacts yet"));
    Ok(())
}

pub fn contact_line(c: &Value) -> String {
    let mut flags = vec![c["state"].as_str().unwrap_or("?").replace('_', " ")];
    if let Some(p) = c["presence"].as_str() {
        flags.push(p.to_owned());
    }
    if c["verified"].as_bool() == Some(true) {
        flags.push("verified".into());
    }
    if c["blocked"].as_bool() == Some(true) {
        flags.push("blocked".into());
    }
    if let Some(n) = c["unread"].as_u64().filter(|n| *n > 0) {
        flags.push(format!("{n} unread"));
    }
    format!(
        "{}  {}  ({})",
        c["user_id"].as_str().unwrap_or("?"),
        c["display_name"].as_str().unwrap_or("-"),
        flags.join(", ")
    )
}

/// `send ID TEXT [--reply-to MSG]`.
pub fn send(
    api: &ApiClient,
    out: Output,
    id: &str,
    text: &str,
    reply_to: Option<&str>,
) -> anyhow::Result<()> {
    let id = user(id)?;
    let reply_to = reply_to.map(message_id).transpose()?;
    let m = api.send(
        "POST",
        &format!("/api/v1/conversations/{id}/messages"),
        &json!({ "body": text, "reply_to": reply_to }),
    )?;
    out.print(&m, message_line);
    Ok(())
}

/// `edit MSG TEXT`.
pub fn edit(api: &ApiClient, out: Output, msg: &str, text: &str) -> anyhow::Result<()> {
    let msg = message_id(msg)?;
    let m = api.send(
        "PUT",
        &format!("/api/v1/messages/{msg}"),
        &json!({ "body": text }),
    )?;
    out.print(&m, message_line);
    Ok(())
}

/// `delete MSG`.
pub fn delete(api: &ApiClient, out: Output, msg: &str) -> anyhow::Result<()> {
    let msg = message_id(msg)?;
    let m = api.send("DELETE", &format!("/api/v1/messages/{msg}"), &json!({}))?;
    out.print(&m, message_line);
    Ok(())
}

/// `react MSG EMOJI [--remove]`.
pub fn react(
    api: &ApiClient,
    out: Output,
    msg: &str,
    emoji: &str,
    remove: bool,
) -> anyhow::Result<()> {
    let msg = message_id(msg)?;
    let m = if remove {
        let enc: String = emoji.bytes().map(|b| format!("%{b:02X}")).collect();
        api.send(
            "DELETE",
            &format!("/api/v1/messages/{msg}/reactions/{enc}"),
            &json!({}),
        )?
    } else {
        api.send(
            "POST",
            &format!("/api/v1/messages/{msg}/reactions"),
            &json!({ "emoji": emoji }),
        )?
    };
    out.print(&m, message_line);
    Ok(())
}

/// `history ID [--limit N]`.
pub fn history(api: &ApiClient, out: Output, id: &str, limit: u32) -> anyhow::Result<()> {
    let id = user(id)?;
    let page = api.get(&format!(
        "/api/v1/conversations/{id}/messages?limit={}",
        limit.clamp(1, 200)
    ))?;
    out.print(&page, |p| {
        list_text(
            &p["messages"],
            message_line,
            &format!("no messages with {}", short_id(&id.to_string())),
        )
    });
    Ok(())
}

/// `search TEXT`.
pub fn search(api: &ApiClient, out: Output, text: &str, limit: u32) -> anyhow::Result<()> {
    let q: String = text
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let res = api.get(&format!(
        "/api/v1/search?q={q}&limit={}",
        limit.clamp(1, 100)
    ))?;
    out.print(&res, |r| {
        list_text(
            &r["results"],
            |hit| {
                format!(
                    "{}  {}",
                    short_id(hit["message"]["conversation"].as_str().unwrap_or("?")),
                    message_line(&hit["message"])
                )
            },
            "no matches",
        )
    });
    Ok(())
}

/// `events`: JSON lines until interrupted.
pub fn events(api: &ApiClient, out: Output) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let url = format!(
        "{}/api/v1/events?token={}",
        api.base_url().replacen("http", "ws", 1),
        api.token()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .context("connecting to the node's event stream")?;
        loop {
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                        let v: Value = serde_json::from_str(&t).unwrap_or(Value::String(t.to_string()));
                        out.line(&v);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(anyhow::Error::new(e).context("event stream failed")),
                    None => return Ok(()),
                },
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    })
}

/// An absolute form of a path given on the command line (the node resolves nothing).
fn absolute(path: &std::path::Path) -> anyhow::Result<String> {
    let p = std::path::absolute(path)
        .with_context(|| format!("{} is not a usable path", path.display()))?;
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not valid UTF-8", p.display()))
}

/// Bytes for people: `1.5 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Seconds for people: `42s`, `3m07s`, `2h05m`.
fn human_secs(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// One transfer as a line of text.
pub fn transfer_line(t: &Value) -> String {
    let size = t["size"].as_u64().unwrap_or(0);
    let live = &t["progress"];
    let state = live["state"]
        .as_str()
        .or(t["state"].as_str())
        .unwrap_or("?");
    let bytes = live["bytes"]
        .as_u64()
        .filter(|_| state != "done")
        .or(t["bytes"].as_u64())
        .unwrap_or(0);
    let pct = (bytes * 100).checked_div(size).unwrap_or(100);
    let dir = if t["direction"].as_str() == Some("outgoing") {
        "→"
    } else {
        "←"
    };
    let mut line = format!(
        "{}  {dir} {}  {} bytes  {} {pct}%",
        t["id"].as_str().unwrap_or("?"),
        t["name"].as_str().unwrap_or("?"),
        size,
        state,
    );
    if let Some(r) = live["reason"].as_str().or(t["reason"].as_str()) {
        line.push_str(&format!(" ({r})"));
    }
    if state == "transferring" {
        let rate = live["rate"].as_u64().unwrap_or(0);
        line.push_str(&format!("  {}/s", human_bytes(rate)));
        if let Some(eta) = live["eta_secs"].as_u64() {
            line.push_str(&format!("  ETA {}", human_secs(eta)));
        }
    }
    if let Some(p) = t["saved_path"].as_str() {
        line.push_str(&format!("  saved: {p}"));
    }
    line
}

/// `send-file TARGET PATH` (TARGET a user ID or a channel ID).
pub fn send_file(
    api: &ApiClient,
    out: Output,
    id: &str,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let url = if let Ok(channel) = dopus_types::ChannelId::parse(id) {
        format!("/api/v1/channels/{channel}/files")
    } else {
        format!("/api/v1/conversations/{}/files", user(id)?)
    };
    let mut t = api.send("POST", &url, &json!({ "path": absolute(path)? }))?;
    // The node hashes and encrypts it first (`preparing`): show how far, then the transfer
    // as announced (or why preparing failed).
    let id = t["id"].as_str().unwrap_or_default().to_owned();
    let started = std::time::Instant::now();
    let mut shown = None;
    while t["state"] == "preparing" && started.elapsed() < PREPARE_WAIT {
        std::thread::sleep(std::time::Duration::from_millis(250));
        t = api.get(&format!("/api/v1/transfers/{}", message_id(&id)?))?;
        let bytes = t["progress"]["bytes"].as_u64().unwrap_or(0);
        if t["state"] == "preparing" && shown != Some(bytes) {
            shown = Some(bytes);
            preparing_line(out, &t);
        }
    }
    out.print(&t, transfer_line);
    if t["state"] == "failed" || t["state"] == "cancelled" {
        anyhow::bail!(
            "the file was not sent: {}",
            t["reason"].as_str().unwrap_or("unknown reason")
        );
    }
    Ok(())
}

/// How long `send-file` follows a file being prepared before it leaves it to the node (a
/// disk reads a few hundred MiB a second: hours cover the largest files).
const PREPARE_WAIT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// One line of preparing progress on stderr (a JSON line with `--json`; stdout keeps the one
/// JSON document).
fn preparing_line(out: Output, t: &serde_json::Value) {
    use std::io::Write;
    let p = &t["progress"];
    let (bytes, total) = (
        p["bytes"].as_u64().unwrap_or(0),
        p["total"].as_u64().or(t["size"].as_u64()).unwrap_or(0),
    );
    let line = if out.json {
        json!({ "id": t["id"], "state": "preparing", "bytes": bytes, "total": total,
                "rate": p["rate"], "eta_secs": p["eta_secs"] })
        .to_string()
    } else {
        let pct = (bytes * 100).checked_div(total).unwrap_or(100);
        format!(
            "preparing {}: {pct}%  {}/s",
            t["name"].as_str().unwrap_or("?"),
            human_bytes(p["rate"].as_u64().unwrap_or(0))
        )
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// `transfers`.
pub fn transfers(api: &ApiClient, out: Output) -> anyhow::Result<()> {
    let list = api.get("/api/v1/transfers")?;
    out.print(&list, |l| {
        list_text(&l["transfers"], transfer_line, "no transfers")
    });
    Ok(())
}

/// `transfer pause|resume|cancel ID`.
pub fn transfer_action(api: &ApiClient, out: Output, id: &str, action: &str) -> anyhow::Result<()> {
    let id = message_id(id)?;
    let t = api.send(
        "POST",
        &format!("/api/v1/transfers/{id}/{action}"),
        &json!({}),
    )?;
    out.print(&t, transfer_line);
    Ok(())
}

/// `save ID DIR` / `transfer save ID DIR`.
pub fn save(api: &ApiClient, out: Output, id: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let id = message_id(id)?;
    let t = api.send(
        "POST",
        &format!("/api/v1/transfers/{id}/save"),
        &json!({ "dir": absolute(dir)? }),
    )?;
    out.print(&t, transfer_line);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_line_shows_live_state_rate_and_eta() {
        let t = json!({
            "id": "t1", "name": "a.bin", "size": 4 << 20, "direction": "incoming",
            "state": "queued", "reason": null, "bytes": 0,
            "progress": {"id": "t1", "state": "transferring", "reason": null,
                "bytes": 1 << 20, "total": 4 << 20, "rate": 3 << 19, "eta_secs": 125, "sources": 1}
        });
        assert_eq!(
            transfer_line(&t),
            "t1  ← a.bin  4194304 bytes  transferring 25%  1.5 MiB/s  ETA 2m05s"
        );
        let paused = json!({
            "id": "t2", "name": "b", "size": 100, "direction": "outgoing",
            "state": "paused", "reason": "user", "bytes": 0, "progress": null
        });
        assert_eq!(
            transfer_line(&paused),
            "t2  → b  100 bytes  paused 0% (user)"
        );
    }
}
