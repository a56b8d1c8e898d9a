use crate::common::*;
use dopus_proto::stun::{binding_request, parse_binding_success};
use dopus_server::{Config, TlsFiles};
use std::sync::Arc;

#[tokio::test]
async fn healthz_and_metrics_answer() {
    let s = start(|_| {}).await;
    let alice = TestUser::new();
    let a = connect(&s.url(), &alice, 1).await;
    a.client.ping().await.unwrap();
    let (status, body) = http_get(s.server.addr, "/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), "ok");
    let (status, body) = http_get(s.server.addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    for name in [
        "dopus_connections 1",
        "dopus_connections_authenticated 1",
        "dopus_auth_success_total 1",
        "dopus_auth_failure_total 0",
        "dopus_relayed_frames_total 0",
        "dopus_mailbox_depth 0",
    ] {
        assert!(body.contains(name), "missing {name} in\n{body}");
    }
    // Metrics never carry user ids or addresses.
    assert!(!body.contains("dopus1"));
    assert!(!body.contains("127.0.0.1"));
}

#[tokio::test]
async fn stun_binding_requests_are_answered() {
    let s = start(|c| c.stun_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let stun = s.server.stun_addr.unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    // Junk first: ignored, the server keeps serving.
    sock.send_to(b"hello", stun).await.unwrap();
    let tid = [42u8; 12];
    sock.send_to(&binding_request(tid), stun).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, stun);
    assert_eq!(parse_binding_success(&buf[..n]).unwrap(), (tid, me));
}

#[tokio::test]
async fn tls_connections_work_with_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut config = Config::loopback(dir.path());
    config.tls = Some(TlsFiles {
        cert: cert_path,
        key: key_path,
    });
    let server = dopus_server::start(config).await.unwrap();
    assert!(server.ws_url().starts_with("wss://"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = format!("wss://localhost:{}/ws", server.addr.port());
    let alice = TestUser::new();
    let mut config = client_config(&url, alice.device(1));
    config.tls = Some(Arc::new(tls));
    let signer = Arc::new(KeySigner {
        user: alice.id,
        key: alice.key.clone(),
    });
    let (client, _events) = dopus_signaling::SignalingClient::start(config, signer);
    client.wait_connected(WAIT).await.unwrap();
    client.ping().await.unwrap();
    // A client that does not trust the certificate never gets in.
    let (plain, _e) = dopus_signaling::SignalingClient::start(
        client_config(&url, alice.device(2)),
        Arc::new(KeySigner {
            user: alice.id,
            key: alice.key.clone(),
        }),
    );
    assert!(
        plain
            .wait_connected(std::time::Duration::from_millis(500))
            .await
            .is_err()
    );
    plain.shutdown().await;
    client.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_says_offline() {
    let dir = tempfile::tempdir().unwrap();
    let server = dopus_server::start(Config::loopback(dir.path()))
        .await
        .unwrap();
    let alice = TestUser::new();
    let mut a = connect(&server.ws_url(), &alice, 1).await;
    server.shutdown().await;
    let code = expect(&mut a.events, "shutting down notice", |e| match e {
        dopus_signaling::Event::ServerNotice { code, .. } => Some(code),
        _ => None,
    })
    .await;
    assert_eq!(code, dopus_proto::signaling::ErrorCode::ShuttingDown);
    expect(&mut a.events, "disconnected", |e| match e {
        dopus_signaling::Event::State(dopus_signaling::ConnectionState::Disconnected) => Some(()),
        _ => None,
    })
    .await;
    a.client.shutdown().await;
}

#[tokio::test]
async fn the_client_reconnects_by_itself_after_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = dopus_server::start(Config::loopback(dir.path()))
        .await
        .unwrap();
    let addr = server.addr;
    let alice = TestUser::new();
    let mut a = connect(&server.ws_url(), &alice, 1).await;
    server.shutdown().await;
    expect(&mut a.events, "disconnected", |e| match e {
        dopus_signaling::Event::State(dopus_signaling::ConnectionState::Disconnected) => Some(()),
        _ => None,
    })
    .await;
    assert!(matches!(
        a.client.ping().await,
        Err(dopus_signaling::ClientError::NotConnected)
    ));
    let mut config = Config::loopback(dir.path());
    config.listen = addr;
    let _server = dopus_server::start(config).await.unwrap();
    a.client.wait_connected(WAIT).await.unwrap();
    a.client.ping().await.unwrap();
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn info_logs_carry_no_payloads_or_user_ids() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    // Global, because the server logs from tokio's worker threads; other tests' logs land here
    // too, which only widens what this test checks.
    let _ = tracing::subscriber::set_global_default(subscriber);
    let s = start(|_| {}).await;
    let (alice, bob, mallory) = (TestUser::new(), TestUser::new(), TestUser::new());
    let a = connect(&s.url(), &alice, 1).await;
    let b = connect(&s.url(), &bob, 1).await;
    a.client
        .relay(bob.id, None, "secret-payload-7f3a".into(), true)
        .await
        .unwrap();
    b.client.shutdown().await;
    a.client
        .relay(bob.id, None, "secret-payload-7f3a".into(), true)
        .await
        .unwrap();
    let signer = Arc::new(KeySigner {
        user: mallory.id,
        key: alice.key.clone(),
    });
    let (bad, mut events) =
        dopus_signaling::SignalingClient::start(client_config(&s.url(), mallory.device(1)), signer);
    expect(&mut events, "auth failure", |e| match e {
        dopus_signaling::Event::AuthFailed { .. } => Some(()),
        _ => None,
    })
    .await;
    bad.shutdown().await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("login refused"),
        "the failed login should be logged:\n{text}"
    );
    assert!(
        !text.contains("secret-payload"),
        "a payload leaked:\n{text}"
    );
    for u in [&alice, &bob, &mallory] {
        assert!(
            !text.contains(&u.id.to_string()),
            "a user id leaked:\n{text}"
        );
    }
}

#[test]
fn the_server_never_depends_on_core_store_or_vodozemac() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "dopus-server",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(
        tree.contains("dopus-proto"),
        "cargo tree looks wrong:\n{tree}"
    );
    for forbidden in ["dopus-core", "dopus-store", "vodozemac"] {
        assert!(
            !tree
                .lines()
                .any(|l| l.split_whitespace().next() == Some(forbidden)),
            "dopus-server depends on {forbidden}"
        );
    }
}
