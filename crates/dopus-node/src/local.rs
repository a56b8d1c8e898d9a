//! Commands that work on the encrypted store directly (no node running): `id create`,
//! `id show`, `contacts add`, `contacts list`. When a node is running they go through its API.

use crate::account;
use crate::api::dto;
use crate::client::ApiClient;
use crate::output::{Output, list_text};
use crate::passphrase;
use crate::remote::contact_line;
use anyhow::Context;
use dopus_core::store::{AccountRecord, Change, Contact, ContactState, ConversationId, Store};
use dopus_types::UserId;
use serde_json::{Value, json};
use std::path::Path;

fn account_json(a: &AccountRecord) -> Value {
    json!({
        "user_id": a.user_id.to_string(),
        "display_name": a.display_name,
        "device_id": a.device_id.to_string(),
        "device_keys": { "ed25519": a.device_keys.ed25519.to_base64(), "curve25519": a.device_keys.curve25519.to_base64() },
        "fingerprint": account::fingerprint(a.user_id.key()),
        "created_at": a.created_at.as_millis(),
    })
}

fn account_text(v: &Value) -> String {
    format!(
        "user ID:      {}\nname:         {}\ndevice:       {}\n  ed25519:    {}\n  curve25519: {}\nfingerprint:  {}",
        v["user_id"].as_str().unwrap_or(""),
        v["display_name"].as_str().unwrap_or(""),
        v["device_id"].as_str().unwrap_or(""),
        v["device_keys"]["ed25519"].as_str().unwrap_or(""),
        v["device_keys"]["curve25519"].as_str().unwrap_or(""),
        v["fingerprint"].as_str().unwrap_or(""),
    )
}

/// `id create --name NAME`.
pub fn id_create(dir: &Path, out: Output, name: &str) -> anyhow::Result<()> {
    if dopus_store::SqliteStore::exists(dir) {
        anyhow::bail!(
            "an identity already exists in {} (use --data-dir for another one)",
            dir.display()
        );
    }
    let pass = passphrase::for_create()?;
    let (store, record, _, _) = account::create(dir, name, &pass)?;
    store.close()?;
    out.print(&account_json(&record), |v| {
        format!("created your identity\n{}", account_text(v))
    });
    Ok(())
}

/// `id show` with no node running.
pub fn id_show(dir: &Path, out: Output) -> anyhow::Result<()> {
    let (store, record) = account::open(dir, &passphrase::for_unlock()?)?;
    store.close()?;
    out.print(&account_json(&record), account_text);
    Ok(())
}

/// `id show` through a running node.
pub fn id_show_remote(api: &ApiClient, out: Output) -> anyhow::Result<()> {
    let me = api.get("/api/v1/me")?;
    out.print(&me, account_text);
    Ok(())
}

/// A contact in the API's one `Contact` shape (`api::dto`), as `GET /contacts` writes it. With
/// no node running nothing live is known: presence reads offline and there is no connection;
/// the unread count and the last message come from the store, as the node reports them.
fn contact_json(store: &dyn Store, me: &UserId, c: &Contact) -> anyhow::Result<Value> {
    let conversation = ConversationId::Direct(c.user_id);
    let summary = store
        .conversations()?
        .into_iter()
        .find(|s| s.conversation.id == conversation);
    let last_message = match summary.as_ref().and_then(|s| s.last_message.as_ref()) {
        Some(m) => Some(dto::Message::from_record(m, &store.reactions(&m.id)?, me)),
        None => None,
    };
    let live = dto::ContactLive {
        presence: dto::Presence::Offline,
        unread: summary.map_or(0, |s| s.unread),
        last_message,
        connection: dto::Connection::without_peer(true, false),
    };
    Ok(serde_json::to_value(dto::Contact::from_record(c, live))?)
}

/// `contacts add ID [--name NAME]` with no node running.
pub fn contacts_add(dir: &Path, out: Output, id: &str, name: Option<&str>) -> anyhow::Result<()> {
    let user = UserId::parse(id).with_context(|| format!("{id:?} is not a valid user ID"))?;
    let (mut store, me) = account::open(dir, &passphrase::for_unlock()?)?;
    if user == me.user_id {
        anyhow::bail!("that is your own user ID");
    }
    let now = account::now();
    let existing = store.contact(&user)?;
    let contact = Contact {
        user_id: user,
        display_name: name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .or_else(|| existing.as_ref().and_then(|c| c.display_name.clone())),
        verified: existing.as_ref().is_some_and(|c| c.verified),
        blocked: existing.as_ref().is_some_and(|c| c.blocked),
        state: ContactState::Accepted,
        request_note: None,
        created_at: existing.as_ref().map_or(now, |c| c.created_at),
        updated_at: now,
    };
    store.apply_one(Change::SaveContact(contact.clone()))?;
    let shown = contact_json(&store, &me.user_id, &contact)?;
    store.close()?;
    out.print(&shown, |v| format!("added {}", contact_line(v)));
    Ok(())
}

/// `contacts add` through a running node.
pub fn contacts_add_remote(
    api: &ApiClient,
    out: Output,
    id: &str,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let user = UserId::parse(id).with_context(|| format!("{id:?} is not a valid user ID"))?;
    let c = api.send(
        "POST",
        "/api/v1/contacts",
        &json!({ "user_id": user.to_string(), "display_name": name }),
    )?;
    out.print(&c, |v| format!("added {}", contact_line(v)));
    Ok(())
}

/// `contacts list` with no node running.
pub fn contacts_list(dir: &Path, out: Output) -> anyhow::Result<()> {
    let (store, me) = account::open(dir, &passphrase::for_unlock()?)?;
    let contacts = store
        .contacts()?
        .iter()
        .map(|c| contact_json(&store, &me.user_id, c))
        .collect::<anyhow::Result<Vec<Value>>>()?;
    store.close()?;
    out.print(&Value::Array(contacts), |l| {
        list_text(l, contact_line, "no contacts yet")
    });
    Ok(())
}
