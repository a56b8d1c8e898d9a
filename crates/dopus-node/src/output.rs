//! Printing results: human text by default, one JSON document with `--json`.

use serde_json::Value;
use std::io::Write;

/// How to print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json` was given.
    pub json: bool,
}

/// Human text for a list: one line per element of the array `items`, or `empty` when it has none
/// (or is not an array).
pub fn list_text(items: &Value, line: impl FnMut(&Value) -> String, empty: &str) -> String {
    let lines: Vec<String> = items
        .as_array()
        .map(|a| a.iter().map(line).collect())
        .unwrap_or_default();
    if lines.is_empty() {
        empty.to_owned()
    } else {
        lines.join("\n")
    }
}

impl Output {
    /// Prints `value` as JSON, or `human(value)` as text.
    pub fn print(&self, value: &Value, human: impl FnOnce(&Value) -> String) {
        let text = if self.json {
            serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into())
        } else {
            human(value)
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
    }

    /// Prints one JSON line (for streams such as `events`).
    pub fn line(&self, value: &Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }
}

/// A message as one line of text: `[time] sender: body`.
pub fn message_line(m: &Value) -> String {
    let who = if m["outgoing"].as_bool() == Some(true) {
        "me".to_owned()
    } else {
        short_id(m["sender"].as_str().unwrap_or("?"))
    };
    let body = if m["deleted"].as_bool() == Some(true) {
        "(deleted)".to_owned()
    } else {
        m["body"].as_str().unwrap_or("").to_owned()
    };
    let edited = if m["edited_at"].is_null() {
        ""
    } else {
        " (edited)"
    };
    let state = m["state"].as_str().unwrap_or("");
    let reactions: Vec<String> = m["reactions"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| format!("{}×{}", r["emoji"].as_str().unwrap_or(""), r["count"]))
                .collect()
        })
        .unwrap_or_default();
    let mut line = format!(
        "{} {who}: {body}{edited}  [{state}] {}",
        m["sent_at"],
        m["id"].as_str().unwrap_or("")
    );
    if !reactions.is_empty() {
        line.push_str(&format!("  {}", reactions.join(" ")));
    }
    line
}

/// `dopus1abcd…wxyz`.
pub fn short_id(id: &str) -> String {
    if id.len() > 16 {
        format!("{}…{}", &id[..10], &id[id.len() - 4..])
    } else {
        id.to_owned()
    }
}
