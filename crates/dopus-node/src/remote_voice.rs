//! `discordopus voice join CHANNEL [--play FILE.opus] [--record OUT.opus]`, `voice leave`,
//! `voice status [SPACE]`: voice channels through the running node, headless (docs/media.md,
//! "Voice channels").

use crate::client::ApiClient;
use crate::output::Output;
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// How often the voice state is read.
const POLL: Duration = Duration::from_millis(100);

fn absolute(path: &std::path::Path) -> anyhow::Result<String> {
    let p = std::path::absolute(path)
        .with_context(|| format!("{} is not a usable path", path.display()))?;
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not valid UTF-8", p.display()))
}

/// Progress on stderr (stdout carries the result, JSON with `--json`).
#[allow(
    clippy::print_stderr,
    reason = "the CLI shows the voice session's progress on stderr"
)]
fn progress(line: &str) {
    eprintln!("{line}");
}

/// How `voice join` runs.
#[derive(Debug, Clone)]
pub struct JoinOptions<'a> {
    /// An Ogg Opus file to play.
    pub play: Option<&'a std::path::Path>,
    /// Where to record (one file per participant, named from this path).
    pub record: Option<&'a std::path::Path>,
    /// Start playing once this many participants are connected.
    pub wait_for: u32,
    /// Leave once nobody has sent audio for this long (after our file played out).
    pub idle: Duration,
    /// Give up (and leave) after this long in all.
    pub max: Duration,
}

fn received(state: &Value) -> u64 {
    state["media"]["peers"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["received"].as_u64()).sum())
        .unwrap_or(0)
}

/// Joins `channel`. Without `--play` or `--record` it returns at once (the node stays in the
/// channel until `voice leave`). With them it plays, records, and leaves once the played file
/// has played out and nobody has sent audio for `idle` (with `--record` alone: once someone
/// was heard and then nobody for `idle`), or when the node is put out of the channel.
pub fn join(
    api: &ApiClient,
    out: Output,
    channel: &str,
    opts: &JoinOptions<'_>,
) -> anyhow::Result<()> {
    let channel = dopus_types::ChannelId::parse(channel.trim())
        .with_context(|| format!("{channel:?} is not a channel id"))?;
    let mut body = json!({ "channel_id": channel.to_string(), "wait_for": opts.wait_for });
    if let Some(p) = opts.play {
        body["play"] = json!(absolute(p)?);
    }
    if let Some(r) = opts.record {
        body["record"] = json!(absolute(r)?);
    }
    let joined = api.send("POST", "/api/v1/voice/join", &body)?;
    if opts.play.is_none() && opts.record.is_none() {
        out.print(&joined, state_line);
        return Ok(());
    }
    progress(&format!("voice: joined {channel}"));
    let start = Instant::now();
    let mut last_count = 0u64;
    let mut last_change = Instant::now();
    let mut left = false;
    // A poll that fails (a pooled HTTP connection closed under us) is tried again a few times
    // before the session is given up: one lost answer must not end a long recording.
    let mut failed_polls = 0u32;
    let last = loop {
        let s = match api.get("/api/v1/voice") {
            Ok(s) => {
                failed_polls = 0;
                s
            }
            Err(e) if failed_polls < 3 => {
                failed_polls += 1;
                tracing::debug!(error = %e, failed_polls, "voice status poll failed; trying again");
                std::thread::sleep(POLL);
                continue;
            }
            Err(e) => return Err(e),
        };
        let count = received(&s);
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        }
        if !left && s["current"].is_null() {
            progress("voice: no longer in the channel");
            left = true;
        }
        if left {
            // The recordings close when the media task stops: wait for it (bounded).
            if s["media"]["running"] != json!(true) || start.elapsed() > opts.max {
                break s;
            }
        } else {
            let played = opts.play.is_none() || s["media"]["play_done"] == json!(true);
            let quiet = last_change.elapsed() >= opts.idle && (opts.play.is_some() || count > 0);
            if (played && quiet) || start.elapsed() > opts.max {
                if start.elapsed() > opts.max {
                    progress(&format!("voice: leaving after {} s", opts.max.as_secs()));
                }
                api.send("POST", "/api/v1/voice/leave", &json!({}))?;
                left = true;
                continue;
            }
        }
        if start.elapsed() > opts.max + Duration::from_secs(10) {
            bail!("the voice session did not end");
        }
        std::thread::sleep(POLL);
    };
    out.print(&last, state_line);
    Ok(())
}

/// `voice leave`.
pub fn leave(api: &ApiClient, out: Output) -> anyhow::Result<()> {
    let s = api.send("POST", "/api/v1/voice/leave", &json!({}))?;
    out.print(&s, state_line);
    Ok(())
}

/// `voice mute|unmute|deafen|undeafen`.
pub fn set(
    api: &ApiClient,
    out: Output,
    muted: Option<bool>,
    deafened: Option<bool>,
) -> anyhow::Result<()> {
    let mut body = json!({});
    if let Some(m) = muted {
        body["muted"] = json!(m);
    }
    if let Some(d) = deafened {
        body["deafened"] = json!(d);
    }
    let s = api.send("POST", "/api/v1/voice/state", &body)?;
    out.print(&s, state_line);
    Ok(())
}

/// `voice status [SPACE]`: our voice state, or who is in each voice channel of a space.
pub fn status(api: &ApiClient, out: Output, space: Option<&str>) -> anyhow::Result<()> {
    match space {
        None => {
            let s = api.get("/api/v1/voice")?;
            out.print(&s, state_line);
        }
        Some(id) => {
            let id = dopus_types::SpaceId::parse(id.trim())
                .with_context(|| format!("{id:?} is not a space id"))?;
            let v = api.get(&format!("/api/v1/spaces/{id}/voice"))?;
            out.print(&v, |v| {
                let mut lines = Vec::new();
                for c in v["channels"].as_array().into_iter().flatten() {
                    lines.push(format!(
                        "{} {}",
                        c["channel_id"].as_str().unwrap_or("?"),
                        c["name"].as_str().unwrap_or("?")
                    ));
                    for p in c["participants"].as_array().into_iter().flatten() {
                        let mut flags = Vec::new();
                        for (k, label) in [
                            ("me", "you"),
                            ("muted", "muted"),
                            ("deafened", "deafened"),
                            ("speaking", "speaking"),
                        ] {
                            if p[k] == json!(true) {
                                flags.push(label);
                            }
                        }
                        if p["may_speak"] == json!(false) {
                            flags.push("cannot speak");
                        }
                        lines.push(format!(
                            "  {}{}",
                            p["user_id"].as_str().unwrap_or("?"),
                            if flags.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", flags.join(", "))
                            }
                        ));
                    }
                }
                if lines.is_empty() {
                    "no voice channels".into()
                } else {
                    lines.join("\n")
                }
            });
        }
    }
    Ok(())
}

/// Our voice state as text.
pub fn state_line(s: &Value) -> String {
    let mut line = match s["current"].as_object() {
        None => "not in a voice channel".to_owned(),
        Some(c) => format!(
            "in voice channel {}{}{}",
            c.get("channel_id").and_then(Value::as_str).unwrap_or("?"),
            if c.get("muted") == Some(&json!(true)) {
                ", muted"
            } else {
                ""
            },
            if c.get("deafened") == Some(&json!(true)) {
                ", deafened"
            } else {
                ""
            },
        ),
    };
    let m = &s["media"];
    if m.is_object() {
        line.push_str(&format!(
            "; played {}/{}",
            m["played"].as_u64().unwrap_or(0),
            m["play_total"].as_u64().unwrap_or(0)
        ));
        for p in m["peers"].as_array().into_iter().flatten() {
            line.push_str(&format!(
                "\n  {}: sent {}, received {}, dropped {}{}",
                p["user_id"].as_str().unwrap_or("?"),
                p["sent"].as_u64().unwrap_or(0),
                p["received"].as_u64().unwrap_or(0),
                p["dropped"].as_u64().unwrap_or(0),
                p["record_path"]
                    .as_str()
                    .map(|r| format!(" → {r}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(e) = m["error"].as_str() {
            line.push_str(&format!("\n  error: {e}"));
        }
    }
    line
}
