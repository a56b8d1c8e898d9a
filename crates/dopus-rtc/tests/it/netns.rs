//! Real NAT traversal: two peers in their own network namespaces behind iptables MASQUERADE
//! routers, a STUN server in a "public" namespace between them, and the signaling done through
//! files. Each peer runs as a child process of this test binary (`ip netns exec … <exe>
//! netns::child`), since a process lives in one network namespace.
//!
//! ```text
//!  [ns a] 10.77.1.2 -- 10.77.1.1 [nat a] 198.18.1.2 -- 198.18.1.1 [pub: STUN :3478 :3479]
//!  [ns b] 10.77.2.2 -- 10.77.2.1 [nat b] 198.18.2.2 -- 198.18.2.1 [pub]
//! ```
//!
//! Needs root, `ip` and `iptables`; without them the tests say so and pass. The namespaces exist
//! only inside this machine (no link to the host's network) and are deleted afterwards.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "child processes report through their log files"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dopus_rtc::{CloseReason, IceServer, PeerConnection, PeerEvent, PeerHandle, RtcConfig};

const ROLE_ENV: &str = "DOPUS_NETNS_ROLE";
const DIR_ENV: &str = "DOPUS_NETNS_DIR";
const STUN_ENV: &str = "DOPUS_NETNS_STUN";
/// `ip:port` of the TURN relay in the public namespace, or empty for none.
const TURN_ENV: &str = "DOPUS_NETNS_TURN";
/// Where the relay listens when a scenario has one (relay sockets on the same address, which
/// both NATs reach through their default route).
const TURN_ADDR: &str = "198.18.1.1:3490";
/// Every child gives up after this long.
const CHILD_LIMIT: Duration = Duration::from_secs(40);

fn have(cmd: &str, version_flag: &str) -> bool {
    Command::new(cmd)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn can_run() -> bool {
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    });
    root && have("ip", "-V") && have("iptables", "--version")
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Five namespaces, removed on drop.
struct Topology {
    names: [String; 5],
}

impl Topology {
    fn a(&self) -> &str {
        &self.names[0]
    }
    fn b(&self) -> &str {
        &self.names[4]
    }
    fn public(&self) -> &str {
        &self.names[2]
    }

    fn build(tag: &str, symmetric: bool) -> Self {
        let id = std::process::id();
        let names = ["a", "nata", "pub", "natb", "b"].map(|n| format!("dopus-{tag}-{id}-{n}"));
        let t = Topology { names };
        let [a, na, p, nb, b] = &t.names;
        for ns in &t.names {
            run(&["ip", "netns", "add", ns]);
        }
        let ip = |ns: &str, rest: &str| {
            let mut args = vec!["ip", "-n", ns];
            args.extend(rest.split_whitespace());
            run(&args);
        };
        let exec = |ns: &str, rest: &str| {
            let mut args = vec!["ip", "netns", "exec", ns];
            args.extend(rest.split_whitespace());
            run(&args);
        };
        ip(
            a,
            &format!("link add eth0 type veth peer name lan netns {na}"),
        );
        ip(
            na,
            &format!("link add wan type veth peer name pub-a netns {p}"),
        );
        ip(
            nb,
            &format!("link add wan type veth peer name pub-b netns {p}"),
        );
        ip(
            b,
            &format!("link add eth0 type veth peer name lan netns {nb}"),
        );
        for (ns, dev, addr) in [
            (a, "eth0", "10.77.1.2/24"),
            (na, "lan", "10.77.1.1/24"),
            (na, "wan", "198.18.1.2/24"),
            (p, "pub-a", "198.18.1.1/24"),
            (p, "pub-b", "198.18.2.1/24"),
            (nb, "wan", "198.18.2.2/24"),
            (nb, "lan", "10.77.2.1/24"),
            (b, "eth0", "10.77.2.2/24"),
        ] {
            ip(ns, &format!("addr add {addr} dev {dev}"));
            ip(ns, &format!("link set {dev} up"));
        }
        for ns in &t.names {
            ip(ns, "link set lo up");
        }
        ip(a, "route add default via 10.77.1.1");
        ip(na, "route add default via 198.18.1.1");
        ip(nb, "route add default via 198.18.2.1");
        ip(b, "route add default via 10.77.2.1");
        // --random-fully gives every new destination a fresh random port: a symmetric NAT.
        let masq = if symmetric {
            "iptables -t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully"
        } else {
            "iptables -t nat -A POSTROUTING -o wan -j MASQUERADE"
        };
        for ns in [na, p, nb] {
            exec(ns, "sysctl -qw net.ipv4.ip_forward=1");
        }
        // A home router's firewall: nothing unsolicited reaches the router itself. Without it
        // the conntrack entry of an early, unsolicited check would push the NAT onto another
        // port for the real flow, and no hole would ever line up.
        let firewall = "iptables -A INPUT -i wan -j DROP";
        for ns in [na, nb] {
            exec(ns, masq);
            exec(ns, firewall);
        }
        t
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in &self.names {
            // Deleting a namespace removes its veth ends and rules with it.
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn spawn_child(ns: &str, role: &str, dir: &Path, stun: &str, turn: &str) -> tokio::process::Child {
    let exe = std::env::current_exe().unwrap();
    let log = std::fs::File::create(dir.join(format!("{role}.log"))).unwrap();
    tokio::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["netns::child", "--exact", "--ignored", "--nocapture"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .env(STUN_ENV, stun)
        .env(TURN_ENV, turn)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

struct Outcome {
    a: String,
    b: String,
}

/// Runs the STUN server and both peers; returns each peer's result line.
async fn scenario(tag: &str, symmetric: bool, stun_ports: &str, relay: bool) -> Option<Outcome> {
    if !can_run() {
        eprintln!("skipped: needs root, ip and iptables");
        return None;
    }
    let topo = Topology::build(tag, symmetric);
    let dir = std::env::temp_dir().join(format!("dopus-netns-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let turn = if relay { TURN_ADDR } else { "" };
    let mut stun = spawn_child(topo.public(), "stun", &dir, stun_ports, turn);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a_servers: Vec<String> = stun_ports
        .split(',')
        .map(|p| format!("198.18.1.1:{p}"))
        .collect();
    let b_servers: Vec<String> = stun_ports
        .split(',')
        .map(|p| format!("198.18.2.1:{p}"))
        .collect();
    let mut a = spawn_child(topo.a(), "a", &dir, &a_servers.join(","), turn);
    let mut b = spawn_child(topo.b(), "b", &dir, &b_servers.join(","), turn);
    let limit = CHILD_LIMIT + Duration::from_secs(10);
    let sa = tokio::time::timeout(limit, a.wait()).await;
    let sb = tokio::time::timeout(limit, b.wait()).await;
    std::fs::write(dir.join("done"), b"").unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), stun.wait()).await;
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let logs = format!("--- a.log\n{}\n--- b.log\n{}", read("a.log"), read("b.log"));
    assert!(
        sa.is_ok_and(|s| s.is_ok_and(|s| s.success())),
        "peer a failed\n{logs}"
    );
    assert!(
        sb.is_ok_and(|s| s.is_ok_and(|s| s.success())),
        "peer b failed\n{logs}"
    );
    let out = Outcome {
        a: read("a.result"),
        b: read("b.result"),
    };
    if std::env::var_os("DOPUS_NETNS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    drop(topo);
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_across_two_masquerading_nats_via_srflx() {
    let Some(out) = scenario("cone", false, "3478", false).await else {
        return;
    };
    for (side, line) in [("a", &out.a), ("b", &out.b)] {
        assert!(line.starts_with("open "), "{side}: {line}");
        // The peer is reached at its NAT's address: srflx, or prflx when its check arrived first.
        assert!(
            line.contains("-> srflx") || line.contains("-> prflx"),
            "{side}: {line}"
        );
        assert!(line.contains("nat=Nat "), "{side}: {line}");
        assert!(line.contains("local=[Host, Srflx]"), "{side}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_symmetric_nats_fail_with_the_symmetric_nat_reason() {
    let Some(out) = scenario("sym", true, "3478,3479", false).await else {
        return;
    };
    for (side, line) in [("a", &out.a), ("b", &out.b)] {
        assert!(
            line.starts_with(
                "failed: no direct path: both sides behind symmetric NAT; configure TURN"
            ),
            "{side}: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_symmetric_nats_connect_through_a_relay() {
    let Some(out) = scenario("symturn", true, "3478,3479", true).await else {
        return;
    };
    for (side, line) in [("a", &out.a), ("b", &out.b)] {
        assert!(line.starts_with("open "), "{side}: {line}");
        // The only pairs that pass go through the relay (ours, the peer's, or both).
        assert!(line.contains("relay"), "{side}: {line}");
        assert!(line.contains("nat=Symmetric"), "{side}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cone_nats_with_a_relay_still_connect_directly() {
    let Some(out) = scenario("coneturn", false, "3478", true).await else {
        return;
    };
    for (side, line) in [("a", &out.a), ("b", &out.b)] {
        assert!(line.starts_with("open "), "{side}: {line}");
        assert!(
            !line.contains("relay ->") && !line.contains("-> relay"),
            "{side}: {line}"
        );
    }
}

/// The child side; does nothing unless started by `scenario`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs only as a child process inside a network namespace"]
async fn child() {
    let (Ok(role), Ok(dir), Ok(stun)) = (
        std::env::var(ROLE_ENV),
        std::env::var(DIR_ENV),
        std::env::var(STUN_ENV),
    ) else {
        return;
    };
    let dir = PathBuf::from(dir);
    if let Ok(filter) = std::env::var("DOPUS_NETNS_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .try_init();
    }
    let work = async {
        match role.as_str() {
            "stun" => {
                let turn = std::env::var(TURN_ENV).unwrap_or_default();
                let _relay = if turn.is_empty() {
                    None
                } else {
                    Some(
                        crate::turn::turn_server_on(turn.parse().unwrap(), "alice", "secret").await,
                    )
                };
                stun_server(&dir, &stun).await
            }
            "a" | "b" => peer(&dir, &role, &stun).await,
            other => panic!("unknown role {other}"),
        }
    };
    tokio::time::timeout(CHILD_LIMIT, work)
        .await
        .expect("child ran out of time");
}

async fn stun_server(dir: &Path, ports: &str) {
    let mut sockets = Vec::new();
    for port in ports.split(',') {
        sockets.push(
            tokio::net::UdpSocket::bind(format!("0.0.0.0:{port}"))
                .await
                .unwrap(),
        );
    }
    for socket in sockets {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            for _ in 0..10_000 {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                if let Ok(tid) = dopus_proto::stun::parse_binding_request(&buf[..n]) {
                    let resp = dopus_proto::stun::binding_success(tid, from);
                    let _ = socket.send_to(&resp, from).await;
                }
            }
        });
    }
    while !dir.join("done").exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Appends a line to a signaling file.
fn post(path: &Path, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(format!("{}\n", line.replace('\n', " ")).as_bytes())
        .unwrap();
}

/// Complete lines of a signaling file from `*seen` on.
fn fetch(path: &Path, seen: &mut usize) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    let lines: Vec<String> = complete.lines().skip(*seen).map(str::to_owned).collect();
    *seen += lines.len();
    lines
}

/// Writes a whole file atomically.
fn publish(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

async fn wait_file(path: &Path) -> String {
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn peer(dir: &Path, role: &str, stun: &str) {
    let turn = std::env::var(TURN_ENV).unwrap_or_default();
    let config = RtcConfig {
        ice_servers: stun
            .split(',')
            .map(|s| IceServer::parse(&format!("stun:{s}")).unwrap())
            .chain((!turn.is_empty()).then(|| {
                IceServer::turn(&format!("turn:{turn}?transport=udp"), "alice", "secret").unwrap()
            }))
            .collect(),
        connect_timeout: Duration::from_secs(12),
        ..RtcConfig::default()
    };
    let other = if role == "a" { "b" } else { "a" };
    let (handle, mut events) = if role == "a" {
        let (h, e, offer) = PeerConnection::offer(config).await.unwrap();
        publish(&dir.join("offer"), &offer);
        let answer = wait_file(&dir.join("answer")).await;
        h.accept_answer(&answer).await.unwrap();
        (h, e)
    } else {
        let offer = wait_file(&dir.join("offer")).await;
        let (h, e, answer) = PeerConnection::answer(config, &offer).await.unwrap();
        publish(&dir.join("answer"), &answer);
        (h, e)
    };
    let mine = dir.join(format!("{role}.cands"));
    let theirs = dir.join(format!("{other}.cands"));
    let mut seen = 0;
    let greeting = format!("hello from {role}");
    let expected = format!("hello from {other}");
    let result = loop {
        for c in fetch(&theirs, &mut seen) {
            handle.add_remote_candidate(&c).await.unwrap();
        }
        let ev = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
        match ev {
            Err(_) => continue,
            Ok(None) => break "ended".to_owned(),
            Ok(Some(PeerEvent::LocalCandidate(c))) => post(&mine, &c),
            Ok(Some(PeerEvent::ChannelOpen)) => handle.send(greeting.clone().into()).await.unwrap(),
            Ok(Some(PeerEvent::Data(d))) => {
                assert_eq!(d, expected.as_bytes());
                break describe(&handle, "open").await;
            }
            Ok(Some(PeerEvent::Closed {
                reason: CloseReason::Failed(r),
            })) => break format!("failed: {r}"),
            Ok(Some(other)) => println!("{role}: {other:?}"),
        }
    };
    println!("{role}: {result}");
    publish(&dir.join(format!("{role}.result")), &result);
    // Stay up until the peer has its greeting too, then leave.
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.close().await;
}

async fn describe(handle: &PeerHandle, what: &str) -> String {
    for _ in 0..100 {
        let d = handle.diagnostics().await.unwrap();
        if let Some(p) = &d.selected_pair {
            return format!(
                "{what} {} -> {} nat={:?} local={:?}",
                p.local, p.remote, d.nat, d.local_candidates
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no selected pair");
}
