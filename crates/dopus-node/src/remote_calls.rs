//! `discordopus call USER [--play FILE.opus] [--record OUT.opus]`: a headless call through the
//! running node (docs/media.md, "Headless calls").

use crate::client::ApiClient;
use crate::output::{Output, list_text};
use anyhow::{Context, bail};
use dopus_types::UserId;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn absolute(path: &std::path::Path) -> anyhow::Result<String> {
    let p = std::path::absolute(path)
        .with_context(|| format!("{} is not a usable path", path.display()))?;
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not valid UTF-8", p.display()))
}

/// How often the call's state is read.
const POLL: Duration = Duration::from_millis(100);
/// After the played file ends, received frames still in flight get this long before hanging
/// up.
const TAIL: Duration = Duration::from_millis(300);

/// Progress on stderr (stdout carries the result, JSON with `--json`).
#[allow(
    clippy::print_stderr,
    reason = "the CLI shows the call's progress on stderr"
)]
fn progress(line: &str) {
    eprintln!("{line}");
}

/// Rings `user` (or picks up the call `user` is already placing), plays `play`, records into
/// `record`; hangs up when the played file has played out, or waits for the other side to
/// hang up (`--record` alone, or nothing). Gives up after `max` in all.
pub fn call(
    api: &ApiClient,
    out: Output,
    user: &str,
    play: Option<&std::path::Path>,
    record: Option<&std::path::Path>,
    max: Duration,
) -> anyhow::Result<()> {
    let peer = UserId::parse(user).with_context(|| format!("{user:?} is not a valid user ID"))?;
    let mut body = json!({});
    if let Some(p) = play {
        body["play"] = json!(absolute(p)?);
    }
    if let Some(r) = record {
        body["record"] = json!(absolute(r)?);
    }
    let calls = api.get("/api/v1/calls")?;
    let ringing = calls["calls"].as_array().and_then(|a| {
        a.iter()
            .find(|c| {
                c["user_id"] == json!(peer.to_string())
                    && c["outgoing"] == json!(false)
                    && c["state"] == json!("ringing")
            })
            .cloned()
    });
    let c = match ringing {
        Some(c) => {
            let id = c["id"].as_str().unwrap_or_default().to_owned();
            api.send("POST", &format!("/api/v1/calls/{id}/accept"), &body)?
        }
        None => {
            body["user_id"] = json!(peer.to_string());
            api.send("POST", "/api/v1/calls", &body)?
        }
    };
    let id = c["id"]
        .as_str()
        .context("the node answered without a call id")?
        .to_owned();
    progress(&format!(
        "call {id}: {}",
        if c["outgoing"] == json!(true) {
            "ringing"
        } else {
            "picked up"
        }
    ));
    let start = Instant::now();
    let mut hung_up = false;
    let mut played_out: Option<Instant> = None;
    let mut shown = String::new();
    let last = loop {
        let c = api.get(&format!("/api/v1/calls/{id}"))?;
        let state = c["state"].as_str().unwrap_or("?").to_owned();
        if state != shown {
            progress(&format!("call {id}: {state}"));
            shown.clone_from(&state);
        }
        if state == "ended" {
            // The recording closes when the media task stops: wait for it (bounded).
            let recording = record.is_some() && c["media"]["running"] == json!(true);
            if !recording || start.elapsed() > max {
                break c;
            }
        }
        if play.is_some() && !hung_up && c["media"]["play_done"] == json!(true) {
            let t = *played_out.get_or_insert_with(Instant::now);
            if t.elapsed() >= TAIL {
                api.send("POST", &format!("/api/v1/calls/{id}/hangup"), &json!({}))?;
                hung_up = true;
            }
        }
        if start.elapsed() > max {
            if !hung_up && state != "ended" {
                api.send("POST", &format!("/api/v1/calls/{id}/hangup"), &json!({}))?;
                hung_up = true;
                continue;
            }
            bail!("the call did not end within {} s", max.as_secs());
        }
        std::thread::sleep(POLL);
    };
    out.print(&last, call_line);
    Ok(())
}

/// `calls`: the current and recent calls.
pub fn calls(api: &ApiClient, out: Output) -> anyhow::Result<()> {
    let list = api.get("/api/v1/calls")?;
    out.print(&list, |l| list_text(&l["calls"], call_line, "no calls"));
    Ok(())
}

/// One call as a line of text.
pub fn call_line(c: &Value) -> String {
    let dir = if c["outgoing"] == json!(true) {
        "to"
    } else {
        "from"
    };
    let who = c["user_id"].as_str().unwrap_or("?");
    let mut line = format!(
        "{} {dir} {who}: {}",
        c["id"].as_str().unwrap_or("?"),
        c["state"].as_str().unwrap_or("?")
    );
    if let Some(end) = c["end"].as_str() {
        line.push_str(&format!(" ({end})"));
    }
    if let Some(ms) = c["duration_ms"].as_u64() {
        line.push_str(&format!(", {}:{:02}", ms / 60_000, ms / 1000 % 60));
    }
    let m = &c["media"];
    if m.is_object() {
        line.push_str(&format!(
            ", played {} of {}, recorded {}",
            m["played"].as_u64().unwrap_or(0),
            m["play_total"].as_u64().unwrap_or(0),
            m["recorded"].as_u64().unwrap_or(0)
        ));
    }
    line
}
