//! Create, open, close, re-key, and every way opening can fail.

use super::{PASSPHRASE, snapshot, temp_store};
use dopus_core::store::{Change, Contact, ContactState, Store, conformance::user};
use dopus_store::{KdfParams, KeyFileError, OpenError, SqliteStore};
use dopus_types::Timestamp;

fn contact(name: &str) -> Change {
    Change::SaveContact(Contact {
        user_id: user(2),
        display_name: Some(name.into()),
        verified: false,
        blocked: false,
        state: ContactState::Accepted,
        request_note: None,
        created_at: Timestamp(1),
        updated_at: Timestamp(1),
    })
}

fn name(store: &SqliteStore) -> Option<String> {
    store
        .contact(&user(2))
        .unwrap()
        .and_then(|c| c.display_name)
}

#[test]
fn reopen_keeps_data_and_pickle_key() {
    let (mut store, _guard) = temp_store();
    let dir = store.dir().to_owned();
    store.apply_one(contact("Bob")).unwrap();
    let pickle_key = *store.pickle_key().as_bytes();
    assert!(dir.join("store.db-wal").exists());
    store.close().unwrap();
    // Close checkpoints the WAL into the database and removes the side files.
    let files: Vec<String> = snapshot(&dir).into_keys().collect();
    assert_eq!(files, ["store.db", "store.key"]);
    let store = SqliteStore::open(&dir, PASSPHRASE).unwrap();
    assert_eq!(name(&store).as_deref(), Some("Bob"));
    assert_eq!(store.pickle_key().as_bytes(), &pickle_key);
    assert_ne!(pickle_key, [0u8; 32]);
}

#[test]
fn wrong_passphrase_fails_and_changes_no_byte() {
    let (mut store, _guard) = temp_store();
    let dir = store.dir().to_owned();
    store.apply_one(contact("Bob")).unwrap();
    store.close().unwrap();
    let before = snapshot(&dir);
    for wrong in [
        "",
        "correct horse battery stapl",
        "CORRECT HORSE BATTERY STAPLE",
    ] {
        let err = SqliteStore::open(&dir, wrong).unwrap_err();
        assert!(matches!(err, OpenError::WrongPassphrase), "{err:?}");
        assert_eq!(err.to_string(), "wrong passphrase");
    }
    assert_eq!(snapshot(&dir), before);
    assert!(SqliteStore::open(&dir, PASSPHRASE).is_ok());
}

#[test]
fn create_refuses_to_overwrite() {
    let (store, _guard) = temp_store();
    let dir = store.dir().to_owned();
    drop(store);
    let before = snapshot(&dir);
    let err = SqliteStore::create(&dir, "another", KdfParams::INSECURE_FOR_TESTS).unwrap_err();
    assert!(matches!(err, OpenError::AlreadyExists), "{err:?}");
    assert_eq!(snapshot(&dir), before);
    // A database without a key file is not overwritten either.
    std::fs::remove_file(dir.join(dopus_store::KEY_FILE_NAME)).unwrap();
    let err = SqliteStore::create(&dir, "another", KdfParams::INSECURE_FOR_TESTS).unwrap_err();
    assert!(matches!(err, OpenError::AlreadyExists), "{err:?}");
}

#[test]
fn missing_store_and_empty_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nothing");
    assert!(!SqliteStore::exists(&path));
    assert!(matches!(
        SqliteStore::open(&path, PASSPHRASE),
        Err(OpenError::NotFound)
    ));
    assert!(matches!(
        SqliteStore::create(&path, "", KdfParams::INSECURE_FOR_TESTS),
        Err(OpenError::EmptyPassphrase)
    ));
    assert!(!path.exists());
}

#[test]
fn creates_private_files() {
    let (store, _guard) = temp_store();
    assert!(SqliteStore::exists(store.dir()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(mode(&store.dir().join(dopus_store::KEY_FILE_NAME)), 0o600);
    }
    let printed = format!("{store:?} {:?}", store.pickle_key());
    assert!(!printed.contains(&format!("{:?}", store.pickle_key().as_bytes())));
    assert!(!printed.contains(&hex_of(store.pickle_key().as_bytes())));
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn change_passphrase_rewraps_only_the_key() {
    let (mut store, _guard) = temp_store();
    let dir = store.dir().to_owned();
    store.apply_one(contact("Bob")).unwrap();
    let pickle_key = *store.pickle_key().as_bytes();
    store.close().unwrap();
    let db_before = std::fs::read(dir.join(dopus_store::DB_FILE_NAME)).unwrap();
    let key_before = std::fs::read(dir.join(dopus_store::KEY_FILE_NAME)).unwrap();

    let err =
        SqliteStore::change_passphrase(&dir, "not it", "new one", KdfParams::INSECURE_FOR_TESTS)
            .unwrap_err();
    assert!(matches!(err, OpenError::WrongPassphrase), "{err:?}");
    assert_eq!(
        std::fs::read(dir.join(dopus_store::KEY_FILE_NAME)).unwrap(),
        key_before
    );
    assert!(matches!(
        SqliteStore::change_passphrase(&dir, PASSPHRASE, "", KdfParams::INSECURE_FOR_TESTS),
        Err(OpenError::EmptyPassphrase)
    ));

    SqliteStore::change_passphrase(&dir, PASSPHRASE, "new one", KdfParams::INSECURE_FOR_TESTS)
        .unwrap();
    assert_eq!(
        std::fs::read(dir.join(dopus_store::DB_FILE_NAME)).unwrap(),
        db_before
    );
    assert_ne!(
        std::fs::read(dir.join(dopus_store::KEY_FILE_NAME)).unwrap(),
        key_before
    );
    assert!(matches!(
        SqliteStore::open(&dir, PASSPHRASE),
        Err(OpenError::WrongPassphrase)
    ));
    let store = SqliteStore::open(&dir, "new one").unwrap();
    assert_eq!(name(&store).as_deref(), Some("Bob"));
    assert_eq!(store.pickle_key().as_bytes(), &pickle_key);
    // Works while the store is open, too.
    SqliteStore::change_passphrase(&dir, "new one", "third", KdfParams::INSECURE_FOR_TESTS)
        .unwrap();
    drop(store);
    assert!(SqliteStore::open(&dir, "third").is_ok());
}

#[test]
fn corrupt_or_future_key_file_is_a_clear_error() {
    let (store, _guard) = temp_store();
    let dir = store.dir().to_owned();
    drop(store);
    let key_path = dir.join(dopus_store::KEY_FILE_NAME);
    let good = std::fs::read_to_string(&key_path).unwrap();

    std::fs::write(&key_path, b"\x00\x01garbage").unwrap();
    let err = SqliteStore::open(&dir, PASSPHRASE).unwrap_err();
    assert!(
        matches!(err, OpenError::KeyFile(KeyFileError::Corrupt(_))),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("the key file is corrupt"),
        "{err}"
    );

    std::fs::write(&key_path, &good[..good.len() / 2]).unwrap();
    let err = SqliteStore::open(&dir, PASSPHRASE).unwrap_err();
    assert!(
        matches!(err, OpenError::KeyFile(KeyFileError::Corrupt(_))),
        "{err:?}"
    );

    std::fs::write(&key_path, good.replace("\"version\": 1", "\"version\": 7")).unwrap();
    let err = SqliteStore::open(&dir, PASSPHRASE).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::KeyFile(KeyFileError::UnsupportedVersion {
                found: 7,
                supported: 1
            })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("update DiscordOpus"), "{err}");

    std::fs::write(&key_path, &good).unwrap();
    assert!(SqliteStore::open(&dir, PASSPHRASE).is_ok());
}

#[test]
fn a_database_from_another_store_is_refused() {
    let (a, _ga) = temp_store();
    let (b, _gb) = temp_store();
    let (dir_a, dir_b) = (a.dir().to_owned(), b.dir().to_owned());
    a.close().unwrap();
    b.close().unwrap();
    std::fs::copy(
        dir_b.join(dopus_store::DB_FILE_NAME),
        dir_a.join(dopus_store::DB_FILE_NAME),
    )
    .unwrap();
    let err = SqliteStore::open(&dir_a, PASSPHRASE).unwrap_err();
    assert!(matches!(err, OpenError::KeyMismatch), "{err:?}");
}
