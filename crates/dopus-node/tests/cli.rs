//! The offline CLI (issue 2): `id create`, `id show`, `contacts add`, `contacts list`, run as the
//! real binary against a temporary data directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn discordopus(dir: &Path, pass: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_discordopus"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("DISCORDOPUS_PASSPHRASE", pass)
        .env("DISCORDOPUS_INSECURE_FAST_KDF", "1")
        .env_remove("DISCORDOPUS_DATA_DIR")
        .output()
        .expect("run discordopus")
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn files_digest(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn create_show_and_refuse_a_second_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("alice");
    let created = json(&discordopus(
        &dir,
        "pw",
        &["id", "create", "--name", "Alice", "--json"],
    ));
    let id = created["user_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("dopus1") && id.len() == 64, "{id}");
    dopus_types::UserId::parse(&id).unwrap();
    assert_eq!(created["display_name"], "Alice");
    assert!(created["device_keys"]["ed25519"].as_str().unwrap().len() >= 43);
    assert!(created["device_keys"]["curve25519"].as_str().unwrap().len() >= 43);

    let shown = json(&discordopus(&dir, "pw", &["id", "show", "--json"]));
    assert_eq!(shown["user_id"], created["user_id"]);
    assert_eq!(shown["device_id"], created["device_id"]);
    assert_eq!(shown["fingerprint"], created["fingerprint"]);

    let again = discordopus(&dir, "pw", &["id", "create", "--name", "Mallory"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    // Human output names the ID too.
    let text = discordopus(&dir, "pw", &["id", "show"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains(&id));
}

#[test]
fn a_wrong_passphrase_is_a_clear_error_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    json(&discordopus(
        &dir,
        "right",
        &["id", "create", "--name", "A", "--json"],
    ));
    let before = files_digest(&dir);
    let out = discordopus(&dir, "wrong", &["id", "show"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        files_digest(&dir),
        before,
        "a failed unlock must not touch the store"
    );
}

#[test]
fn contacts_add_and_list_refuse_typos_and_our_own_id() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let me = json(&discordopus(
        &a,
        "pw",
        &["id", "create", "--name", "A", "--json"],
    ));
    let bob = json(&discordopus(
        &b,
        "pw",
        &["id", "create", "--name", "B", "--json"],
    ));
    let bob_id = bob["user_id"].as_str().unwrap();

    // A one-character typo is refused, never taken for another user.
    let mut typo = bob_id.to_owned().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'q' { b'p' } else { b'q' };
    let typo = String::from_utf8(typo).unwrap();
    let out = discordopus(&a, "pw", &["contacts", "add", &typo]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("typo"), "{}", stderr(&out));

    let out = discordopus(
        &a,
        "pw",
        &["contacts", "add", me["user_id"].as_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("own user ID"), "{}", stderr(&out));

    // Upper case works (IDs are case-insensitive).
    let added = json(&discordopus(
        &a,
        "pw",
        &[
            "contacts",
            "add",
            &bob_id.to_uppercase(),
            "--name",
            "Bob",
            "--json",
        ],
    ));
    assert_eq!(added["user_id"], bob["user_id"]);
    let list = json(&discordopus(&a, "pw", &["contacts", "list", "--json"]));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["user_id"], bob["user_id"]);
    assert_eq!(list[0]["display_name"], "Bob");
    assert_eq!(list[0]["verified"], false);
    assert_eq!(list[0]["blocked"], false);

    // Renaming keeps one entry.
    json(&discordopus(
        &a,
        "pw",
        &["contacts", "add", bob_id, "--name", "Robert", "--json"],
    ));
    let list = json(&discordopus(&a, "pw", &["contacts", "list", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["display_name"], "Robert");
}

#[test]
fn commands_without_an_identity_say_how_to_create_one() {
    let tmp = tempfile::tempdir().unwrap();
    let out = discordopus(&tmp.path().join("none"), "pw", &["id", "show"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("id create"), "{}", stderr(&out));
    let out = discordopus(&tmp.path().join("none"), "pw", &["send", "x", "y"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no running node"), "{}", stderr(&out));
}
