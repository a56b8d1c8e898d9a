use dopus_proto::bundle::test_support::{certificate, signed_key};
use dopus_proto::bundle::{BUNDLE_VERSION, DeviceBundle, PrekeyKind};
use dopus_proto::signaling::{ClientFrame, ServerFrame};
use dopus_server::{Config, RunningServer};
use dopus_signaling::{AuthSigner, ClientConfig, Event, SignalingClient};
use dopus_types::{Curve25519Key, DeviceId, DeviceKeys, Ed25519Key, Signature, Timestamp, UserId};
use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_tungstenite::tungstenite::Message;

pub const WAIT: Duration = Duration::from_secs(10);

static SEED: AtomicU8 = AtomicU8::new(1);

/// A user with its identity key.
#[derive(Clone)]
pub struct TestUser {
    pub key: Arc<SigningKey>,
    pub id: UserId,
}

impl TestUser {
    pub fn new() -> Self {
        let seed = SEED.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [seed; 32];
        bytes[0] = 0xA5;
        let key = SigningKey::from_bytes(&bytes);
        let id = UserId::from_key(Ed25519Key::from_bytes(key.verifying_key().as_bytes()).unwrap());
        Self {
            key: Arc::new(key),
            id,
        }
    }

    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature::from_bytes(self.key.sign(msg).to_bytes())
    }

    pub fn device(&self, n: u8) -> DeviceId {
        let mut b = [n; 16];
        b[..8].copy_from_slice(&self.key.verifying_key().as_bytes()[..8]);
        DeviceId::from_random(b)
    }
}

/// Signs with `key` but claims to be `user` (wrong-key tests use a mismatch).
pub struct KeySigner {
    pub user: UserId,
    pub key: Arc<SigningKey>,
}

impl AuthSigner for KeySigner {
    fn user_id(&self) -> UserId {
        self.user
    }
    fn sign(&self, message: &[u8]) -> Signature {
        Signature::from_bytes(self.key.sign(message).to_bytes())
    }
}

pub struct TestServer {
    pub server: RunningServer,
    pub _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn url(&self) -> String {
        self.server.ws_url()
    }
}

pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::loopback(dir.path());
    tweak(&mut config);
    let server = dopus_server::start(config).await.unwrap();
    TestServer { server, _dir: dir }
}

pub fn client_config(url: &str, device: DeviceId) -> ClientConfig {
    let mut c = ClientConfig::new(url, device);
    c.backoff.initial = Duration::from_millis(50);
    c.backoff.max = Duration::from_millis(500);
    c
}

pub struct TestClient {
    pub client: SignalingClient,
    pub events: UnboundedReceiver<Event>,
    pub device: DeviceId,
}

/// Starts a client and waits until it is logged in.
pub async fn connect(url: &str, user: &TestUser, device: u8) -> TestClient {
    connect_with(url, user, device, |_| {}).await
}

/// [`connect`] with changes to the client's configuration.
pub async fn connect_with(
    url: &str,
    user: &TestUser,
    device: u8,
    tweak: impl FnOnce(&mut ClientConfig),
) -> TestClient {
    let device = user.device(device);
    let mut config = client_config(url, device.clone());
    tweak(&mut config);
    let signer = Arc::new(KeySigner {
        user: user.id,
        key: user.key.clone(),
    });
    let (client, events) = SignalingClient::start(config, signer);
    client.wait_connected(WAIT).await.unwrap();
    TestClient {
        client,
        events,
        device,
    }
}

/// Waits for the first event `f` accepts; events it refuses are dropped.
pub async fn expect<T>(
    rx: &mut UnboundedReceiver<Event>,
    what: &str,
    mut f: impl FnMut(Event) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = rx.recv().await.expect("event stream closed");
            if let Some(t) = f(ev) {
                return t;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The next event that is not a state change or login notice.
pub async fn next_app_event(rx: &mut UnboundedReceiver<Event>) -> Event {
    expect(rx, "an application event", |e| match e {
        Event::State(_) | Event::Authenticated { .. } => None,
        other => Some(other),
    })
    .await
}

/// A validly signed bundle for `device` of `user` with `otks` one-time keys named from `first`.
pub fn bundle(user: &TestUser, device: &DeviceId, first: usize, otks: usize) -> DeviceBundle {
    let dev_key = SigningKey::from_bytes(&[device.as_str().as_bytes()[0]; 32]);
    let keys = DeviceKeys {
        ed25519: Ed25519Key::from_bytes(dev_key.verifying_key().as_bytes()).unwrap(),
        curve25519: Curve25519Key::from_bytes([7; 32]),
    };
    let sign_id = |b: &[u8]| user.sign(b);
    let sign_dev = |b: &[u8]| Signature::from_bytes(dev_key.sign(b).to_bytes());
    let cert = certificate(
        user.id,
        device.clone(),
        keys,
        Timestamp(1_700_000_000_000),
        &sign_id,
    );
    DeviceBundle {
        version: BUNDLE_VERSION,
        fallback_key: signed_key(
            PrekeyKind::Fallback,
            &cert,
            "fallback",
            Curve25519Key::from_bytes([9; 32]),
            &sign_dev,
        ),
        one_time_keys: (first..first + otks)
            .map(|i| {
                let mut k = [0u8; 32];
                k[..8].copy_from_slice(&(i as u64).to_be_bytes());
                signed_key(
                    PrekeyKind::OneTime,
                    &cert,
                    &format!("otk{i}"),
                    Curve25519Key::from_bytes(k),
                    &sign_dev,
                )
            })
            .collect(),
        certificate: cert,
    }
}

pub type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw WebSocket, for tests that must misbehave.
pub async fn raw(url: &str) -> RawWs {
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .unwrap()
        .unwrap();
    ws
}

pub async fn raw_send(ws: &mut RawWs, text: impl Into<String>) {
    let text: String = text.into();
    tokio::time::timeout(WAIT, ws.send(Message::text(text)))
        .await
        .unwrap()
        .unwrap();
}

/// The next text frame, parsed.
pub async fn raw_recv(ws: &mut RawWs) -> ServerFrame {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return ServerFrame::parse(t.as_str()).unwrap(),
                Some(Ok(Message::Close(_))) | None => panic!("connection closed"),
                Some(Err(e)) => panic!("socket error: {e}"),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("timed out waiting for a frame")
}

/// Whether the server closes the socket (close frame or EOF) within the wait.
pub async fn raw_closed(ws: &mut RawWs) -> bool {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Logs in over a raw socket and returns it after `auth_success`.
pub async fn raw_login(url: &str, user: &TestUser, device: u8) -> RawWs {
    raw_login_with(url, user, device, None, false).await
}

/// [`raw_login`] offering the protocol versions `versions` (`?v=…`) and asking for quiet relays.
pub async fn raw_login_with(
    url: &str,
    user: &TestUser,
    device: u8,
    versions: Option<&str>,
    quiet_relays: bool,
) -> RawWs {
    let url = match versions {
        Some(v) => format!("{url}?v={v}"),
        None => url.to_owned(),
    };
    let mut ws = raw(&url).await;
    let ServerFrame::Challenge {
        server_id,
        challenge,
        ..
    } = raw_recv(&mut ws).await
    else {
        panic!("expected a challenge")
    };
    let device = user.device(device);
    let sig = user.sign(&dopus_proto::signaling::auth_signing_bytes(
        &server_id,
        &challenge.0,
        &device,
    ));
    let auth = ClientFrame::Auth {
        user_id: user.id,
        device_id: device,
        challenge,
        signature: sig,
        quiet_relays,
    };
    raw_send(&mut ws, auth.to_json()).await;
    loop {
        if let ServerFrame::AuthSuccess { .. } = raw_recv(&mut ws).await {
            return ws;
        }
    }
}

/// One HTTP/1.1 GET over a fresh TCP connection; returns (status line, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.lines().next().unwrap_or("").to_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
