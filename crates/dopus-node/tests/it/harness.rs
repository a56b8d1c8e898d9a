//! The shared test harness: an in-process signaling server, `discordopus` nodes as real processes,
//! their local API over HTTP and their live events over WebSocket.
//!
//! Every wait is bounded: helpers take a deadline and panic with what they were waiting for.

use dopus_server::{Config, RunningServer};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::sync::mpsc;

/// Every heavy test takes this lock: the machine has few cores and WebRTC timing suffers when
/// several node pairs run at once.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The node binary under test.
pub const NODE_BIN: &str = env!("CARGO_BIN_EXE_discordopus");

/// The common environment of every node process: cheap Argon2 and a fixed passphrase.
fn node_command(dir: &Path) -> Command {
    let mut cmd = Command::new(NODE_BIN);
    cmd.env("DISCORDOPUS_INSECURE_FAST_KDF", "1")
        .env("DISCORDOPUS_PASSPHRASE", "pw")
        .env("DISCORDOPUS_LOG", "info,dopus_node=debug")
        .env_remove("DISCORDOPUS_SERVER")
        .env_remove("DISCORDOPUS_DATA_DIR")
        .arg("--data-dir")
        .arg(dir);
    cmd
}

/// Runs `f` without blocking the async runtime's other tasks (the in-process server).
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A signaling server in this test process, on loopback.
pub struct TestServer {
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    running: Option<RunningServer>,
    _dir: TempDir,
}

impl TestServer {
    /// Starts a server with loopback defaults (SQLite under a temporary directory).
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let running = dopus_server::start(Config::loopback(dir.path().join("srv")))
            .await
            .expect("the signaling server starts");
        TestServer {
            url: format!("ws://{}", running.addr),
            running: Some(running),
            _dir: dir,
        }
    }

    /// A server that also runs its TURN relay on loopback (peers on 127.0.0.0/8 allowed).
    pub async fn start_with_turn() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::loopback(dir.path().join("srv"));
        config.turn = Some(dopus_server::TurnSettings::loopback());
        let running = dopus_server::start(config)
            .await
            .expect("the signaling server starts");
        TestServer {
            url: format!("ws://{}", running.addr),
            running: Some(running),
            _dir: dir,
        }
    }

    /// Bytes the embedded TURN relay has relayed so far.
    pub fn turn_relayed_bytes(&self) -> u64 {
        self.running.as_ref().map_or(0, |r| {
            r.metrics
                .turn_relayed_bytes_total
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    /// The server's data directory (its SQLite files).
    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    /// The listening address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().unwrap().addr
    }

    /// Stops the server (gracefully, bounded by its grace period).
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), r.shutdown()).await;
        }
    }
}

/// The local API of one running node.
#[derive(Clone)]
pub struct Api {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The per-launch token.
    pub token: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(url: String, token: String) -> Api {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Api { url, token, agent }
    }

    /// One request; answers the status and the JSON body (`Null` when empty).
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/api/v1{path}", self.url);
        let auth = format!("Bearer {}", self.token);
        blocking(|| {
            let result = match (method, body) {
                ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
                ("DELETE", _) => self
                    .agent
                    .delete(&url)
                    .header("Authorization", &auth)
                    .call(),
                ("POST", b) => self
                    .agent
                    .post(&url)
                    .header("Authorization", &auth)
                    .send_json(b.unwrap_or(json!({}))),
                ("PUT", b) => self
                    .agent
                    .put(&url)
                    .header("Authorization", &auth)
                    .send_json(b.unwrap_or(json!({}))),
                ("PATCH", b) => self
                    .agent
                    .patch(&url)
                    .header("Authorization", &auth)
                    .send_json(b.unwrap_or(json!({}))),
                (m, _) => panic!("unsupported method {m}"),
            };
            let mut resp = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            let value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            };
            (status, value)
        })
    }

    /// A request that must succeed (2xx); answers the body.
    pub fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path} answered {status}: {value}"
        );
        value
    }

    /// Sends a text message; answers the message id.
    pub fn send(&self, to: &str, body: &str) -> String {
        let m = self.ok(
            "POST",
            &format!("/conversations/{to}/messages"),
            Some(json!({ "body": body })),
        );
        m["id"].as_str().expect("a message id").to_owned()
    }

    /// Sends text messages in one batch call (stored together, sealed together when the peer
    /// reads bulk payloads).
    pub fn send_batch(&self, to: &str, bodies: &[String]) {
        let messages: Vec<Value> = bodies.iter().map(|b| json!({ "body": b })).collect();
        self.ok(
            "POST",
            &format!("/conversations/{to}/messages/batch"),
            Some(json!({ "messages": messages })),
        );
    }

    /// The whole conversation with `peer`, oldest first (pages through `before`).
    pub fn history(&self, peer: &str) -> Vec<Value> {
        let mut all: Vec<Value> = Vec::new();
        let mut before: Option<u64> = None;
        for _ in 0..1_000 {
            let q = match before {
                Some(b) => format!("/conversations/{peer}/messages?limit=200&before={b}"),
                None => format!("/conversations/{peer}/messages?limit=200"),
            };
            let page = self.ok("GET", &q, None);
            let msgs = page["messages"].as_array().cloned().unwrap_or_default();
            let has_more = page["has_more"].as_bool().unwrap_or(false);
            let first_seq = msgs.first().and_then(|m| m["seq"].as_u64());
            let mut merged = msgs;
            merged.extend(all);
            all = merged;
            match (has_more, first_seq) {
                (true, Some(seq)) => before = Some(seq),
                _ => return all,
            }
        }
        panic!("history of {peer} did not end after 1,000 pages");
    }

    /// One message of the conversation with `peer`, by id.
    pub fn message(&self, peer: &str, id: &str) -> Option<Value> {
        self.history(peer).into_iter().find(|m| m["id"] == id)
    }

    /// The connection to `peer`.
    pub fn connection(&self, peer: &str) -> Value {
        self.ok("GET", &format!("/contacts/{peer}/connection"), None)
    }
}

/// A raw HTTP/1.1 request to `addr`, to control every header; answers the status code.
pub fn raw_status(addr: &str, request: &str) -> u16 {
    blocking(|| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.windows(2).any(|w| w == b"\r\n") && got.len() < 64 {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&got).to_string();
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"))
    })
}

/// One `discordopus` identity and, while it runs, its process.
pub struct TestNode {
    /// For messages.
    pub name: String,
    /// The user id (`dopus1…`).
    pub user_id: String,
    dir: PathBuf,
    child: Option<Child>,
    api: Option<Api>,
    /// Extra arguments for `discordopus run` (for example `--relay-only`).
    pub run_args: Vec<&'static str>,
    _tmp: TempDir,
}

impl TestNode {
    /// Creates an identity in a fresh data directory (does not start the node).
    pub fn create(name: &str) -> TestNode {
        let mut tmp = tempfile::tempdir().unwrap();
        // `DOPUS_TEST_KEEP=1` keeps every node's data directory (and its node.log) after the
        // test, for a post-mortem.
        if std::env::var_os("DOPUS_TEST_KEEP").is_some() {
            tmp.disable_cleanup(true);
            println!(
                "{name}'s data directory: {}",
                tmp.path().join(name).display()
            );
        }
        let dir = tmp.path().join(name);
        let out = blocking(|| {
            node_command(&dir)
                .args(["--json", "id", "create", "--name", name])
                .output()
                .unwrap()
        });
        assert!(
            out.status.success(),
            "id create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("id create prints JSON");
        let user_id = v["user_id"].as_str().expect("a user id").to_owned();
        TestNode {
            name: name.to_owned(),
            user_id,
            dir,
            child: None,
            api: None,
            run_args: Vec::new(),
            _tmp: tmp,
        }
    }

    /// `contacts add` with no node running (accepted at once on this side).
    pub fn add_contact_offline(&self, other: &TestNode) {
        let out = blocking(|| {
            node_command(&self.dir)
                .args([
                    "--json",
                    "contacts",
                    "add",
                    &other.user_id,
                    "--name",
                    &other.name,
                ])
                .output()
                .unwrap()
        });
        assert!(
            out.status.success(),
            "contacts add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `discordopus run` against `server_url` and waits for its API.
    pub async fn start(&mut self, server_url: &str) {
        self.start_with_env(server_url, &[]).await;
    }

    /// Like [`TestNode::start`], with extra environment variables for this launch.
    pub async fn start_with_env(&mut self, server_url: &str, env: &[(&str, &str)]) {
        assert!(self.child.is_none(), "{} already runs", self.name);
        let api_file = self.dir.join("api.json");
        // A kill -9 leaves the previous launch's file behind.
        let _ = std::fs::remove_file(&api_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("node.log"))
            .unwrap();
        let child = node_command(&self.dir)
            .args([
                "--json",
                "run",
                "--server",
                server_url,
                "--api",
                "127.0.0.1:0",
            ])
            .envs(env.iter().copied())
            .args(&self.run_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let file = loop {
            if let Ok(text) = std::fs::read_to_string(&api_file)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["pid"].as_u64() == Some(u64::from(pid))
            {
                break v;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} exited early ({status}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} wrote no api.json within 60 s:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let api = Api::new(
            file["url"].as_str().unwrap().to_owned(),
            file["token"].as_str().unwrap().to_owned(),
        );
        // Ready means unlocked and logged in to the signaling server.
        let a = api.clone();
        eventually(
            Duration::from_secs(30),
            "node ready and signaling connected",
            || {
                let s = a.ok("GET", "/status", None);
                (s["state"] == "ready" && s["signaling"]["state"] == "connected").then_some(())
            },
        )
        .await;
        self.api = Some(api);
    }

    /// The API of the running node.
    pub fn api(&self) -> &Api {
        self.api.as_ref().expect("the node runs")
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `discordopus --json ARGS…` on this node's data directory (the CLI talks to the
    /// running node); the parsed JSON, or the error text.
    pub fn cli(&self, args: &[&str]) -> Result<Value, String> {
        let out = blocking(|| {
            node_command(&self.dir)
                .arg("--json")
                .args(args)
                .output()
                .unwrap()
        });
        if out.status.success() {
            serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// kill -9: no shutdown, no goodbye, whatever was in flight is lost.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL on Unix
            let _ = c.wait();
        }
        self.api = None;
    }

    /// Copies the (stopped) node's data directory aside: an "old copy" to restore later.
    pub fn backup(&self) -> TempDir {
        assert!(
            self.child.is_none(),
            "stop {} before copying its data",
            self.name
        );
        let copy = tempfile::tempdir().unwrap();
        copy_files(&self.dir, copy.path());
        copy
    }

    /// Replaces the (stopped) node's data with an old copy made by [`TestNode::backup`].
    pub fn restore(&self, copy: &TempDir) {
        assert!(
            self.child.is_none(),
            "stop {} before restoring its data",
            self.name
        );
        std::fs::remove_dir_all(&self.dir).unwrap();
        std::fs::create_dir_all(&self.dir).unwrap();
        copy_files(copy.path(), &self.dir);
    }

    /// The end of this node's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The node's data directory.
    pub fn node_dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the live events WebSocket.
    pub async fn events(&self) -> Events {
        Events::connect(self.api()).await
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Copies the files of a data directory (it has no subdirectories).
fn copy_files(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Two identities that hold each other as accepted contacts, both running.
pub async fn contact_pair(server: &TestServer) -> (TestNode, TestNode) {
    let mut a = blocking(|| TestNode::create("alice"));
    let mut b = blocking(|| TestNode::create("bob"));
    a.add_contact_offline(&b);
    b.add_contact_offline(&a);
    a.start(&server.url).await;
    b.start(&server.url).await;
    (a, b)
}

/// The live event stream of a node.
pub struct Events {
    rx: mpsc::UnboundedReceiver<Value>,
    /// Every event received so far, in order.
    pub seen: Vec<Value>,
}

impl Events {
    async fn connect(api: &Api) -> Events {
        let url = format!(
            "{}/api/v1/events?token={}",
            api.url.replacen("http://", "ws://", 1),
            api.token
        );
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .expect("events socket within 10 s")
        .expect("events socket opens");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (_, mut read) = ws.split();
            while let Some(Ok(msg)) = read.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(t) = msg
                    && let Ok(v) = serde_json::from_str::<Value>(&t)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Events {
            rx,
            seen: Vec::new(),
        }
    }

    /// Takes in whatever arrived, without waiting.
    pub fn drain(&mut self) {
        while let Ok(v) = self.rx.try_recv() {
            self.seen.push(v);
        }
    }

    /// Waits for an event matching `pred` (among new ones), up to `timeout`.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(v)) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Ok(None) => panic!("event stream closed while waiting for {what}"),
                Err(_) => panic!("no event \"{what}\" within {timeout:?}"),
            }
        }
    }

    /// Collects events for `duration`.
    pub async fn collect_for(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(Some(v)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.seen.push(v);
        }
    }
}

/// Polls `f` every 100 ms until it answers `Some`, up to `timeout`.
pub async fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `body` from `from` to the user `to` and waits until the sender shows it `delivered`;
/// returns the message id.
pub async fn send_delivered(from: &TestNode, to: &str, body: &str, timeout: Duration) -> String {
    let id = from.api().send(to, body);
    let api = from.api().clone();
    eventually(timeout, &format!("\"{body}\" delivered"), || {
        (api.message(to, &id)?["state"] == "delivered").then_some(())
    })
    .await;
    id
}

/// Waits until the direct data channel between `a` and `b` is open on `a`'s side.
pub async fn wait_direct(a: &TestNode, b: &TestNode, timeout: Duration) {
    let api = a.api().clone();
    let peer = b.user_id.clone();
    eventually(timeout, "a direct, connected channel", || {
        let c = api.connection(&peer);
        (c["mode"] == "direct" && c["state"] == "connected").then_some(())
    })
    .await;
}

/// splitmix64: a tiny seeded generator, so a failing run can be replayed from its printed seed.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Runs `discordopus --json ARGS…` on the node of data directory `dir` (from any thread).
pub fn cli_at(dir: &Path, args: &[&str]) -> Result<Value, String> {
    let out = node_command(dir).arg("--json").args(args).output().unwrap();
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// An Ogg Opus file at `path` of `n` 20 ms CELT packets with pseudo-random payloads from `seed`
/// (never decoded on the way, so any bytes after a valid TOC do); returns the packets.
pub fn opus_file(path: &Path, n: usize, seed: u64) -> Vec<Vec<u8>> {
    use dopus_media::{OggOpusWriter, OpusHead, OpusTags};
    let mut rng = Rng::new(seed);
    let tags = OpusTags {
        vendor: "dopus test".into(),
        comments: Vec::new(),
    };
    let (mut w, mut bytes) = OggOpusWriter::new(seed as u32, OpusHead::for_recording(1), &tags);
    let mut packets = Vec::new();
    for _ in 0..n {
        let len = 20 + rng.below(100) as usize;
        let mut p = vec![31 << 3]; // CELT fullband 20 ms, one frame
        p.extend((0..len).map(|_| rng.next_u64() as u8));
        bytes.extend(w.push(&p).unwrap());
        packets.push(p);
    }
    bytes.extend(w.finish());
    std::fs::write(path, bytes).unwrap();
    packets
}

/// The packets of a complete Ogg Opus recording at `path`.
pub fn recorded_packets(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = dopus_media::OggOpusFile::parse(&bytes).expect("a valid recording");
    assert!(file.complete, "{} was not closed", path.display());
    file.packets.into_iter().map(|p| p.data).collect()
}

/// Asserts that the recording at `path` holds exactly `played`, in order, byte for byte.
pub fn assert_recording(path: &Path, played: &[Vec<u8>]) {
    let got = recorded_packets(path);
    assert_eq!(
        got.len(),
        played.len(),
        "{}: recorded {} of {} packets",
        path.display(),
        got.len(),
        played.len()
    );
    for (i, (g, w)) in got.iter().zip(played).enumerate() {
        assert_eq!(g, w, "{}: packet {i} differs", path.display());
    }
}

/// A headless call: `recorder` rings `player` with `discordopus call --record recorded`, and once
/// it rings at `player`'s node, `player` picks up with `discordopus call --play played`, which
/// hangs up when the file ends. Returns what each CLI printed: (player's call, recorder's call).
pub async fn played_call(
    player: &TestNode,
    recorder: &TestNode,
    played: &Path,
    recorded: &Path,
    wait: Duration,
) -> (Value, Value) {
    let (dir, player_id, rec) = (
        recorder.data_dir().to_owned(),
        player.user_id.clone(),
        recorded.to_str().unwrap().to_owned(),
    );
    let ringing = std::thread::spawn(move || {
        cli_at(
            &dir,
            &["call", &player_id, "--record", &rec, "--max-secs", "120"],
        )
    });
    let (api, recorder_id) = (player.api().clone(), recorder.user_id.clone());
    eventually(
        wait,
        &format!("{}'s call rings at {}'s", recorder.name, player.name),
        || {
            let (status, calls) = api.call("GET", "/calls", None);
            (status == 200
                && calls["calls"].as_array().is_some_and(|c| {
                    c.iter().any(|c| {
                        c["user_id"] == json!(recorder_id)
                            && c["state"] == "ringing"
                            && c["outgoing"] == false
                    })
                }))
            .then_some(())
        },
    )
    .await;
    let played = played.to_str().unwrap();
    let player_call = player
        .cli(&[
            "call",
            &recorder.user_id,
            "--play",
            played,
            "--max-secs",
            "120",
        ])
        .unwrap_or_else(|e| panic!("{}'s call: {e}", player.name));
    let recorder_call = tokio::task::spawn_blocking(move || ringing.join().unwrap())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the recording call: {e}"));
    (player_call, recorder_call)
}
