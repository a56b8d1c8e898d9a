//! The NAT lab: two peers in their own network namespaces behind emulated NATs, a STUN server
//! and a TURN relay in a "public" namespace between them, the signaling done through files.
//! Each peer runs as a child process of this test binary (`ip netns exec … <exe>
//! netns::child`), since a process lives in one network namespace.
//!
//! ```text
//!  [ns a] 10.77.1.2 -- 10.77.1.1 [nat a] 198.18.1.2 -- 198.18.1.1 [pub: STUN :3478 :3479,
//!  [ns b] 10.77.2.2 -- 10.77.2.1 [nat b] 198.18.2.2 -- 198.18.2.1        TURN :3490 udp/tcp, :5349 tls]
//! ```
//!
//! NAT types (RFC 4787 terms: mapping / filtering), each built from iptables in the router
//! namespace (this kernel has conntrack, `xt_recent` and the nft-backed iptables, no netem):
//!
//! | type | mapping | filtering | rules |
//! | --- | --- | --- | --- |
//! | open (no NAT) | none | none | plain forwarding; the public side routes the LAN to it |
//! | full cone | endpoint-independent | endpoint-independent | MASQUERADE + DNAT of all inbound UDP to the host |
//! | restricted cone | endpoint-independent | address-dependent | MASQUERADE + `recent --set --rdest` on the way out, DNAT of inbound UDP whose source address is in that list |
//! | port-restricted cone | endpoint-independent | address-and-port-dependent | MASQUERADE (conntrack lets in only replies of a tracked flow) |
//! | symmetric | address-and-port-dependent | address-and-port-dependent | MASQUERADE `--random-fully` |
//!
//! Linux MASQUERADE keeps the source port when the tuple is free (one host behind each router,
//! so always): the same external port for every destination, an endpoint-independent mapping.
//! Every NAT router also drops unsolicited packets to itself (INPUT), like a home router.
//!
//! Needs root, `ip`, `iptables` (and `conntrack` for the flush test); without them the tests say
//! so and pass. The namespaces exist only inside this machine (no link to the host's network)
//! and are deleted afterwards.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "child processes report through their log files; the matrix prints its table"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dopus_rtc::{CloseReason, IceServer, PeerConnection, PeerEvent, PeerHandle, RtcConfig};

const ROLE_ENV: &str = "DOPUS_NETNS_ROLE";
const DIR_ENV: &str = "DOPUS_NETNS_DIR";
const STUN_ENV: &str = "DOPUS_NETNS_STUN";
/// Peers: the TURN URLs, space-separated (empty for none). The public namespace: which relay to
/// run ("" none, "udp", or "all" for UDP, TCP and TLS).
const TURN_ENV: &str = "DOPUS_NETNS_TURN";
/// Peers: keep the connection up and measure its recovery from a flushed NAT mapping.
const FLUSH_ENV: &str = "DOPUS_NETNS_FLUSH";
/// The relay: UDP and TCP on this address, TLS on `TURN_TLS`; relay sockets on its address,
/// which both NATs reach through their default route.
const TURN_ADDR: &str = "198.18.1.1:3490";
const TURN_TLS: &str = "198.18.1.1:5349";
const TURN_IP: &str = "198.18.1.1";
/// Every child gives up after this long.
const CHILD_LIMIT: Duration = Duration::from_secs(45);
/// How long after the first message a connection's path is read.
const SETTLE: Duration = Duration::from_secs(2);
/// Within this long of a flushed mapping data must flow again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);

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

/// What a router does to its LAN's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nat {
    Open,
    FullCone,
    Restricted,
    PortRestricted,
    Symmetric,
}

impl Nat {
    const ALL: [Nat; 5] = [
        Nat::Open,
        Nat::FullCone,
        Nat::Restricted,
        Nat::PortRestricted,
        Nat::Symmetric,
    ];

    fn label(self) -> &'static str {
        match self {
            Nat::Open => "no NAT",
            Nat::FullCone => "full cone",
            Nat::Restricted => "restricted cone",
            Nat::PortRestricted => "port-restricted cone",
            Nat::Symmetric => "symmetric",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Nat::Open => "op",
            Nat::FullCone => "fc",
            Nat::Restricted => "rc",
            Nat::PortRestricted => "pr",
            Nat::Symmetric => "sy",
        }
    }

    /// The iptables rules of a router whose LAN host is `host`.
    fn rules(self, host: &str) -> Vec<String> {
        let masq = "-t nat -A POSTROUTING -o wan -j MASQUERADE";
        // A home router's firewall: nothing unsolicited reaches the router itself. Without it
        // the conntrack entry of an early, unsolicited check would push the NAT onto another
        // port for the real flow, and no hole would ever line up.
        let firewall = "-A INPUT -i wan -j DROP".to_owned();
        match self {
            Nat::Open => vec![],
            Nat::FullCone => vec![
                masq.to_owned(),
                format!("-t nat -A PREROUTING -i wan -p udp -j DNAT --to-destination {host}"),
                firewall,
            ],
            Nat::Restricted => vec![
                masq.to_owned(),
                "-A FORWARD -i lan -o wan -m recent --name contacted --set --rdest".to_owned(),
                format!(
                    "-t nat -A PREROUTING -i wan -p udp -m recent --name contacted --rcheck \
                     --rsource -j DNAT --to-destination {host}"
                ),
                firewall,
            ],
            Nat::PortRestricted => vec![masq.to_owned(), firewall],
            // --random-fully gives every new destination a fresh random port.
            Nat::Symmetric => vec![format!("{masq} --random-fully"), firewall],
        }
    }

    /// Whether a direct path exists between a peer behind `self` and one behind `other`.
    fn direct_with(self, other: Nat) -> bool {
        // Only a port-restricted filter in front of a symmetric mapping (or two symmetric
        // mappings) stops hole punching: the symmetric side's checks leave from a port the
        // other side never sent to.
        !matches!(
            (self, other),
            (Nat::Symmetric, Nat::Symmetric | Nat::PortRestricted)
                | (Nat::PortRestricted, Nat::Symmetric)
        )
    }
}

/// What side A's network lets out (side B is never blocked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    Nothing,
    /// No UDP leaves the LAN: the relay only over TCP or TLS.
    Udp,
    /// No UDP and no TCP to the relay's TURN port: TLS only.
    UdpAndTcp,
}

#[derive(Clone, Copy, Debug)]
struct Lab {
    a: Nat,
    b: Nat,
    block_a: Block,
    /// "" (no relay), "udp" or "all".
    relay: &'static str,
    flush: bool,
    /// With `flush`: instead of flushing the NATs, A's address changes (10.77.1.2 -> .3).
    renumber: bool,
}

impl Lab {
    fn pair(a: Nat, b: Nat) -> Self {
        Lab {
            a,
            b,
            block_a: Block::Nothing,
            relay: "udp",
            flush: false,
            renumber: false,
        }
    }

    fn tag(&self) -> String {
        let block = match self.block_a {
            Block::Nothing => "",
            Block::Udp => "-nu",
            Block::UdpAndTcp => "-nt",
        };
        let flush = match (self.flush, self.renumber) {
            (true, true) => "-rn",
            (true, false) => "-fl",
            _ => "",
        };
        let relay = if self.relay.is_empty() { "-nr" } else { "" };
        format!("{}{}{block}{flush}{relay}", self.a.tag(), self.b.tag())
    }

    /// The TURN URLs the peers use.
    fn turn_urls(&self) -> String {
        match self.relay {
            "" => String::new(),
            "udp" => format!("turn:{TURN_ADDR}?transport=udp"),
            _ => format!("turn:{TURN_ADDR} turns:{TURN_TLS}?transport=tcp"),
        }
    }
}

/// Five namespaces, removed on drop.
struct Topology {
    names: [String; 5],
}

impl Topology {
    fn a(&self) -> &str {
        &self.names[0]
    }
    fn nat_a(&self) -> &str {
        &self.names[1]
    }
    fn public(&self) -> &str {
        &self.names[2]
    }
    fn nat_b(&self) -> &str {
        &self.names[3]
    }
    fn b(&self) -> &str {
        &self.names[4]
    }

    fn build(tag: &str, lab: &Lab) -> Self {
        let id = std::process::id();
        let names = ["a", "na", "p", "nb", "b"].map(|n| format!("dopus-{tag}-{id}-{n}"));
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
        let iptables = |ns: &str, rule: &str| exec(ns, &format!("iptables -w 10 {rule}"));
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
        for ns in [na, p, nb] {
            exec(ns, "sysctl -qw net.ipv4.ip_forward=1");
        }
        for (ns, nat, i) in [(na, lab.a, 1), (nb, lab.b, 2)] {
            if nat == Nat::Open {
                // Not translated: the LAN's addresses are public, routed by the public side.
                ip(p, &format!("route add 10.77.{i}.0/24 via 198.18.{i}.2"));
            }
            for rule in nat.rules(&format!("10.77.{i}.2")) {
                iptables(ns, &rule);
            }
        }
        let port = TURN_ADDR.rsplit(':').next().unwrap_or_default();
        match lab.block_a {
            Block::Nothing => {}
            Block::Udp => iptables(na, "-I FORWARD -i lan -p udp -j DROP"),
            Block::UdpAndTcp => {
                iptables(na, "-I FORWARD -i lan -p udp -j DROP");
                iptables(
                    na,
                    &format!("-I FORWARD -i lan -p tcp --dport {port} -j DROP"),
                );
            }
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

fn spawn_child(
    ns: &str,
    role: &str,
    dir: &Path,
    stun: &str,
    turn: &str,
    flush: bool,
) -> tokio::process::Child {
    let exe = std::env::current_exe().unwrap();
    let log = std::fs::File::create(dir.join(format!("{role}.log"))).unwrap();
    let mut cmd = tokio::process::Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .args(["netns::child", "--exact", "--ignored", "--nocapture"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .env(STUN_ENV, stun)
        .env(TURN_ENV, turn)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true);
    if flush {
        cmd.env(FLUSH_ENV, "1");
    }
    cmd.spawn().unwrap()
}

#[derive(Debug)]
struct Outcome {
    a: String,
    b: String,
    /// With `flush`: each side's recovery line.
    flush_a: String,
    flush_b: String,
}

/// Waits for `path` to exist, at most `limit`.
async fn wait_exists(path: &Path, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Builds the lab, runs the STUN server, the relay and both peers; returns each peer's result
/// line. `None` when this machine cannot run it.
async fn scenario(lab: Lab) -> Option<Outcome> {
    if !can_run() {
        eprintln!("skipped: needs root, ip and iptables");
        return None;
    }
    let tag = lab.tag();
    let topo = {
        let tag = tag.clone();
        tokio::task::spawn_blocking(move || Topology::build(&tag, &lab))
            .await
            .unwrap()
    };
    let dir = std::env::temp_dir().join(format!("dopus-netns-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut public = spawn_child(topo.public(), "pub", &dir, "3478,3479", lab.relay, false);
    // The public side is up (and the relay's certificate written) before the peers start.
    assert!(
        wait_exists(&dir.join("pub.ready"), Duration::from_secs(10)).await,
        "the public namespace never came up"
    );
    let stun = |i: u8| format!("198.18.{i}.1:3478,198.18.{i}.1:3479");
    let turn = lab.turn_urls();
    let mut a = spawn_child(topo.a(), "a", &dir, &stun(1), &turn, lab.flush);
    let mut b = spawn_child(topo.b(), "b", &dir, &stun(2), &turn, lab.flush);
    if lab.flush {
        let both = wait_exists(&dir.join("a.result"), CHILD_LIMIT).await
            && wait_exists(&dir.join("b.result"), CHILD_LIMIT).await;
        if both {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (na, nb) = (topo.nat_a().to_owned(), topo.nat_b().to_owned());
            let a_ns = topo.a().to_owned();
            let renumber = lab.renumber;
            tokio::task::spawn_blocking(move || {
                if renumber {
                    // A moves to another address on its network (a DHCP renumbering): the
                    // old one, and the routes through it, are gone.
                    run(&[
                        "ip",
                        "-n",
                        &a_ns,
                        "addr",
                        "del",
                        "10.77.1.2/24",
                        "dev",
                        "eth0",
                    ]);
                    run(&[
                        "ip",
                        "-n",
                        &a_ns,
                        "addr",
                        "add",
                        "10.77.1.3/24",
                        "dev",
                        "eth0",
                    ]);
                    run(&[
                        "ip",
                        "-n",
                        &a_ns,
                        "route",
                        "add",
                        "default",
                        "via",
                        "10.77.1.1",
                    ]);
                } else {
                    for ns in [na, nb] {
                        run(&["ip", "netns", "exec", &ns, "conntrack", "-F"]);
                    }
                }
            })
            .await
            .unwrap();
            std::fs::write(dir.join("flushed"), b"").unwrap();
        }
    }
    let limit = CHILD_LIMIT + Duration::from_secs(10);
    let sa = tokio::time::timeout(limit, a.wait()).await;
    let sb = tokio::time::timeout(limit, b.wait()).await;
    std::fs::write(dir.join("done"), b"").unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), public.wait()).await;
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let logs = format!(
        "[{tag}]\n--- a.log\n{}\n--- b.log\n{}\n--- pub.log\n{}",
        read("a.log"),
        read("b.log"),
        read("pub.log")
    );
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
        flush_a: read("a.flush"),
        flush_b: read("b.flush"),
    };
    if std::env::var_os("DOPUS_NETNS_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    drop(topo);
    Some(out)
}

/// A field `key=value` of a result line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The path in a result line, as the table shows it.
fn path_of(line: &str) -> &str {
    field(line, "path").unwrap_or("none")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pair_of_nat_types_connects_directly_where_it_can() {
    if !can_run() {
        eprintln!("skipped: needs root, ip and iptables");
        return;
    }
    let mut labs = Vec::new();
    for (i, &a) in Nat::ALL.iter().enumerate() {
        for &b in &Nat::ALL[i..] {
            labs.push(Lab::pair(a, b));
        }
    }
    // Namespaces are independent: several pairs at once keep the whole matrix short.
    let permits = Arc::new(tokio::sync::Semaphore::new(5));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, lab) in labs.iter().copied().enumerate() {
        let permits = permits.clone();
        set.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            (i, scenario(lab).await)
        });
    }
    let mut outcomes: Vec<Option<Outcome>> = labs.iter().map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (i, out) = r.unwrap();
        outcomes[i] = out;
    }
    let mut table = String::from(
        "| A's NAT | B's NAT | connected | path (A) | A: local -> remote | B: local -> remote | \
         A's time to open |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut wrong = Vec::new();
    for (lab, out) in labs.iter().zip(&outcomes) {
        let Some(out) = out else { continue };
        let open = out.a.starts_with("open ") && out.b.starts_with("open ");
        let pair = |l: &str| {
            field(l, "pair")
                .map(|p| p.replace("->", " -> "))
                .unwrap_or_else(|| "–".into())
        };
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} ms |\n",
            lab.a.label(),
            lab.b.label(),
            if open { "yes" } else { "**no**" },
            path_of(&out.a),
            pair(&out.a),
            pair(&out.b),
            field(&out.a, "open_ms").unwrap_or("–"),
        ));
        let relayed = path_of(&out.a) == "Relayed" || path_of(&out.b) == "Relayed";
        let direct_expected = lab.a.direct_with(lab.b);
        if !open || relayed == direct_expected {
            wrong.push(format!(
                "{} / {}: expected {}; a: {}; b: {}",
                lab.a.label(),
                lab.b.label(),
                if direct_expected { "direct" } else { "relayed" },
                out.a,
                out.b
            ));
        }
    }
    eprintln!(
        "NAT matrix ({} pairs, {:.1} s):\n{table}",
        labs.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = std::env::var_os("DOPUS_NAT_TABLE") {
        std::fs::write(path, &table).unwrap();
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Side A's network lets no UDP out: it reaches the relay over TCP; with TCP to the TURN port
/// blocked too, over TLS. B (behind a port-restricted NAT) reaches A's relayed address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_blocked_reaches_the_relay_over_tcp_then_tls() {
    for (block, transport) in [(Block::Udp, "tcp"), (Block::UdpAndTcp, "tls")] {
        let lab = Lab {
            block_a: block,
            relay: "all",
            ..Lab::pair(Nat::PortRestricted, Nat::PortRestricted)
        };
        let Some(out) = scenario(lab).await else {
            return;
        };
        eprintln!("{block:?}: a: {}\n b: {}", out.a, out.b);
        for (side, line) in [("a", &out.a), ("b", &out.b)] {
            assert!(line.starts_with("open "), "{block:?} {side}: {line}");
            assert_eq!(path_of(line), "Relayed", "{block:?} {side}: {line}");
        }
        assert_eq!(
            field(&out.a, "relay"),
            Some(transport),
            "{block:?}: {}",
            out.a
        );
    }
}

/// Both NATs forget every mapping (conntrack flushed) while data flows between
/// port-restricted cones: data flows again within ten seconds on both sides, on the same direct
/// pair (the NATs keep the ports, so the next packet out makes the same mapping again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_nat_mapping_recovers_within_ten_seconds() {
    flush_and_recover(Nat::PortRestricted, Nat::PortRestricted).await;
}

/// The same between two symmetric NATs on a relayed pair. The flush moves each side's mapping
/// toward the relay to a new random port and the relay no longer knows either allocation's
/// 5-tuple: each side notices the silence after `path_loss_timeout` (5 s), asks the relay where
/// it sees it (a new address: the allocation is lost, a new one is made), and the first offerer
/// restarts ICE through the signaling files with a fresh allocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_mapping_on_a_relayed_pair_recovers_within_ten_seconds() {
    flush_and_recover(Nat::Symmetric, Nat::Symmetric).await;
}

/// A's address changes mid-conversation (no NAT on either side, so the direct host pair
/// dies with it). The connection notices the new address within its 2 s interface poll,
/// binds new sockets and restarts ICE itself: its first state event is the restart offer,
/// not the `Disconnected` of 5 s of silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_local_address_restarts_ice_without_waiting_for_silence() {
    let lab = Lab {
        flush: true,
        renumber: true,
        ..Lab::pair(Nat::Open, Nat::Open)
    };
    let Some(out) = scenario(lab).await else {
        return;
    };
    eprintln!(
        "renumbered: a: {} | {}\n b: {} | {}",
        out.a, out.flush_a, out.b, out.flush_b
    );
    for (side, line) in [("a", &out.flush_a), ("b", &out.flush_b)] {
        assert!(line.starts_with("recovered "), "{side}: {line}");
    }
    let states = field(&out.flush_a, "states").unwrap_or_default();
    assert!(
        states.starts_with("RestartOffer@"),
        "a restarted on the address change, before any path loss: {}",
        out.flush_a
    );
}

async fn flush_and_recover(a: Nat, b: Nat) {
    if !have("conntrack", "--version") {
        eprintln!("skipped: needs conntrack");
        return;
    }
    let lab = Lab {
        flush: true,
        ..Lab::pair(a, b)
    };
    let Some(out) = scenario(lab).await else {
        return;
    };
    eprintln!(
        "{} / {}: a: {} | {}\n b: {} | {}",
        a.label(),
        b.label(),
        out.a,
        out.flush_a,
        out.b,
        out.flush_b
    );
    for (side, line) in [("a", &out.flush_a), ("b", &out.flush_b)] {
        assert!(
            line.starts_with("recovered "),
            "{} / {} {side}: {line}",
            a.label(),
            b.label()
        );
        // The call's frames flowed before the flush and flow again after it (the gap is the
        // media_ms field: time from the flush to the first frame written after it).
        let count = |key: &str| field(line, key).and_then(|v| v.parse::<u32>().ok());
        assert!(count("frames_before").unwrap_or(0) > 0, "{side}: {line}");
        assert!(count("frames_after").unwrap_or(0) > 0, "{side}: {line}");
        let media_ms = count("media_ms").unwrap_or(u32::MAX);
        assert!(
            u128::from(media_ms) <= RECOVERY_LIMIT.as_millis(),
            "{side}: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_symmetric_nats_without_a_relay_fail_with_the_symmetric_nat_reason() {
    let lab = Lab {
        relay: "",
        ..Lab::pair(Nat::Symmetric, Nat::Symmetric)
    };
    let Some(out) = scenario(lab).await else {
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
async fn port_restricted_cones_without_a_relay_connect_via_srflx() {
    let lab = Lab {
        relay: "",
        ..Lab::pair(Nat::PortRestricted, Nat::PortRestricted)
    };
    let Some(out) = scenario(lab).await else {
        return;
    };
    for (side, line) in [("a", &out.a), ("b", &out.b)] {
        assert!(line.starts_with("open "), "{side}: {line}");
        // The peer is reached at its NAT's address: srflx, or prflx when its check arrived first.
        let pair = field(line, "pair").unwrap_or_default();
        assert!(
            pair.ends_with("->srflx") || pair.ends_with("->prflx"),
            "{side}: {line}"
        );
        assert!(line.contains("nat=EndpointIndependent "), "{side}: {line}");
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
    let turn = std::env::var(TURN_ENV).unwrap_or_default();
    let flush = std::env::var_os(FLUSH_ENV).is_some();
    let work = async {
        match role.as_str() {
            "pub" => public(&dir, &stun, &turn).await,
            "a" | "b" => peer(&dir, &role, &stun, &turn, flush).await,
            other => panic!("unknown role {other}"),
        }
    };
    tokio::time::timeout(CHILD_LIMIT, work)
        .await
        .expect("child ran out of time");
}

/// The public namespace: STUN on `ports`, and the relay `relay` asks for.
async fn public(dir: &Path, ports: &str, relay: &str) {
    let listen = TURN_ADDR.parse().unwrap();
    let _relay = match relay {
        "" => None,
        "udp" => Some(crate::relay::serve(listen, "alice", "secret", false, None).await),
        _ => {
            let (cert, acceptor) = crate::relay::tls_for(TURN_IP);
            std::fs::write(dir.join("relay-cert.der"), cert).unwrap();
            let tls = Some((TURN_TLS.parse().unwrap(), acceptor));
            Some(crate::relay::serve(listen, "alice", "secret", true, tls).await)
        }
    };
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
    std::fs::write(dir.join("pub.ready"), b"").unwrap();
    while !dir.join("done").exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(r) = _relay {
        r.abort();
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

/// Sends a local candidate or an ICE restart offer to the peer: one line in our signaling file
/// (an offer's SDP goes in a file of its own, named by the line).
fn signal_out(dir: &Path, role: &str, ev: PeerEvent) {
    let mine = dir.join(format!("{role}.cands"));
    match ev {
        PeerEvent::LocalCandidate(c) => post(&mine, &c),
        PeerEvent::RestartOffer(sdp) => {
            let name = format!("{role}.restart-offer.{}", unique());
            publish(&dir.join(&name), &sdp);
            post(&mine, &format!("restart-offer {name}"));
        }
        _ => {}
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Applies what the peer signalled since `*seen`: candidates, an ICE restart offer (answered
/// through our file) or the answer to ours.
async fn signal_in(dir: &Path, role: &str, handle: &PeerHandle, seen: &mut usize) {
    let other = if role == "a" { "b" } else { "a" };
    for line in fetch(&dir.join(format!("{other}.cands")), seen) {
        // An audio m-line (the call's) is negotiated the same way as a restart.
        if let Some(name) = line
            .strip_prefix("restart-offer ")
            .or_else(|| line.strip_prefix("media-offer "))
        {
            let offer = std::fs::read_to_string(dir.join(name)).unwrap();
            match handle.accept_offer(&offer).await {
                Ok(answer) => {
                    let name = format!("{role}.restart-answer.{}", unique());
                    publish(&dir.join(&name), &answer);
                    post(
                        &dir.join(format!("{role}.cands")),
                        &format!("restart-answer {name}"),
                    );
                }
                Err(e) => println!("{role}: restart offer refused: {e}"),
            }
        } else if let Some(name) = line.strip_prefix("restart-answer ") {
            let answer = std::fs::read_to_string(dir.join(name)).unwrap();
            if let Err(e) = handle.accept_answer(&answer).await {
                println!("{role}: restart answer refused: {e}");
            }
        } else if let Err(e) = handle.add_remote_candidate(&line).await {
            println!("{role}: candidate refused: {e}");
        }
    }
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

async fn peer(dir: &Path, role: &str, stun: &str, turn: &str, flush: bool) {
    let started = Instant::now();
    let turn_tls = if turn.contains("turns:") {
        let cert = std::fs::read(dir.join("relay-cert.der")).unwrap();
        Some(crate::relay::tls_client(&cert))
    } else {
        None
    };
    let config = RtcConfig {
        ice_servers: stun
            .split(',')
            .map(|s| IceServer::parse(&format!("stun:{s}")).unwrap())
            .chain(
                turn.split_whitespace()
                    .map(|url| IceServer::turn(url, "alice", "secret").unwrap()),
            )
            .collect(),
        turn_tls,
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
    let mut seen = 0;
    let greeting = format!("hello from {role}");
    let expected = format!("hello from {other}");
    let mut open_ms = None;
    let result = loop {
        signal_in(dir, role, &handle, &mut seen).await;
        let ev = tokio::time::timeout(Duration::from_millis(50), events.recv()).await;
        match ev {
            Err(_) => continue,
            Ok(None) => break "ended".to_owned(),
            Ok(Some(ev @ (PeerEvent::LocalCandidate(_) | PeerEvent::RestartOffer(_)))) => {
                signal_out(dir, role, ev);
            }
            Ok(Some(PeerEvent::ChannelOpen)) => {
                open_ms = Some(started.elapsed().as_millis());
                handle.send(greeting.clone().into()).await.unwrap();
            }
            Ok(Some(PeerEvent::Data(d))) => {
                assert_eq!(d, expected.as_bytes());
                // ICE may nominate a relayed pair whose checks passed first and move to a
                // better one as its checks pass: the path is read once it has settled.
                let settle = Instant::now() + SETTLE;
                while Instant::now() < settle {
                    signal_in(dir, role, &handle, &mut seen).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let line = describe(&handle).await;
                break format!("open {line} open_ms={}", open_ms.unwrap_or_default());
            }
            Ok(Some(PeerEvent::Closed {
                reason: CloseReason::Failed(r),
            })) => break format!("failed: {r}"),
            Ok(Some(other)) => println!("{role}: {other:?}"),
        }
    };
    println!("{role}: {result}");
    let opened = result.starts_with("open ");
    publish(&dir.join(format!("{role}.result")), &result);
    if flush && opened {
        let line = ride_out_a_flush(dir, role, &handle, &mut events, &mut seen).await;
        println!("{role}: {line}");
        publish(&dir.join(format!("{role}.flush")), &line);
    } else {
        // Stay up until the peer has its greeting and its path too, then leave.
        tokio::time::sleep(SETTLE + Duration::from_secs(1)).await;
    }
    // Bounded: in one CI run (2026-12-08) a peer whose result was already published never saw
    // its close return after the other had left, and the child ran out of time. The pair's
    // result is what this test checks; the hang is logged here and left to a test of its own.
    if tokio::time::timeout(Duration::from_secs(5), handle.close())
        .await
        .is_err()
    {
        println!("{role}: close did not return within 5 s");
    }
}

/// Sends a numbered message every 100 ms; once the lab has flushed the NATs' mappings (the
/// `flushed` file), waits for the first message the peer sent after it saw the flush.
async fn ride_out_a_flush(
    dir: &Path,
    role: &str,
    handle: &PeerHandle,
    events: &mut dopus_rtc::PeerEvents,
    seen: &mut usize,
) -> String {
    let other = if role == "a" { "b" } else { "a" };
    let mut flushed_at: Option<Instant> = None;
    let mut recovered: Option<Duration> = None;
    let mut states = Vec::new();
    // A call rides along: both sides attach a media task, A adds the audio m-line, and each
    // side writes a frame every tick (an opaque payload naming the phase: nothing decodes it).
    let (sink, mut media) = tokio::sync::mpsc::channel(4096);
    let audio = handle.attach_media(sink).await.unwrap();
    if role == "a" {
        let offer = handle.add_audio().await.unwrap();
        let name = format!("a.media-offer.{}", unique());
        publish(&dir.join(&name), &offer);
        post(&dir.join("a.cands"), &format!("media-offer {name}"));
    }
    let mut audio_ready = false;
    let mut rtp_time = 0u64;
    let mut media_recovered: Option<Duration> = None;
    let (mut frames_before, mut frames_after) = (0u32, 0u32);
    let limit = Instant::now() + Duration::from_secs(35);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    'ride: for n in 0u32.. {
        if Instant::now() > limit {
            break;
        }
        if flushed_at.is_none() && dir.join("flushed").exists() {
            flushed_at = Some(Instant::now());
        }
        if let Some(at) = flushed_at {
            // Keep the connection busy until the peer has recovered too (or never will).
            let peer_done = dir.join(format!("{other}.flush")).exists();
            if (recovered.is_some() && peer_done) || at.elapsed() > RECOVERY_LIMIT * 2 {
                break;
            }
        }
        let phase = if flushed_at.is_some() {
            "after"
        } else {
            "before"
        };
        // A send error means the connection is gone; the events say why.
        let _ = handle.send(format!("{phase} {role} {n}").into()).await;
        if audio_ready {
            rtp_time += 4800; // 100 ms of 48 kHz audio per tick
            let _ = audio.send(rtp_time, format!("{phase} {role} {n}").into_bytes());
        }
        signal_in(dir, role, handle, seen).await;
        let deadline = tick.tick();
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                m = media.recv() => match m {
                    Some(dopus_rtc::MediaEvent::Ready { .. }) => audio_ready = true,
                    Some(dopus_rtc::MediaEvent::Frame(f)) => {
                        if f.data.starts_with(b"after ") {
                            frames_after += 1;
                            if media_recovered.is_none()
                                && let Some(at) = flushed_at
                            {
                                media_recovered = Some(at.elapsed());
                            }
                        } else {
                            frames_before += 1;
                        }
                    }
                    Some(_) | None => {}
                },
                ev = events.recv() => match ev {
                    None => break,
                    Some(PeerEvent::Data(d)) => {
                        if d.starts_with(b"after ")
                            && recovered.is_none()
                            && let Some(at) = flushed_at
                        {
                            let r = at.elapsed();
                            recovered = Some(r);
                            let line = format!("recovered recovery_ms={}", r.as_millis());
                            publish(&dir.join(format!("{role}.flush")), &line);
                        }
                    }
                    Some(PeerEvent::State(s)) => {
                        states.push(format!("{s:?}@{}", since_flush(flushed_at)));
                    }
                    Some(ev @ (PeerEvent::LocalCandidate(_) | PeerEvent::RestartOffer(_))) => {
                        if matches!(ev, PeerEvent::RestartOffer(_)) {
                            states.push(format!("RestartOffer@{}", since_flush(flushed_at)));
                        }
                        signal_out(dir, role, ev);
                    }
                    Some(PeerEvent::Closed { reason }) => {
                        if recovered.is_some() {
                            break 'ride; // the peer is done too
                        }
                        return format!("closed after the flush: {reason:?}; states {states:?}");
                    }
                    Some(_) => {}
                },
            }
        }
    }
    match (flushed_at, recovered) {
        (None, _) => "the lab never flushed".to_owned(),
        (Some(_), Some(r)) if r <= RECOVERY_LIMIT => {
            let line = describe(handle).await;
            let media = media_recovered.map_or("none".to_owned(), |m| m.as_millis().to_string());
            format!(
                "recovered recovery_ms={} media_ms={media} frames_before={frames_before} \
                 frames_after={frames_after} {line} states={}",
                r.as_millis(),
                states.join(",")
            )
        }
        (Some(_), r) => format!("not recovered ({r:?}); states {states:?}"),
    }
}

/// Milliseconds since the flush, for the lab's event log ("-" before it).
fn since_flush(at: Option<Instant>) -> String {
    at.map_or("-".to_owned(), |at| at.elapsed().as_millis().to_string())
}

/// `path=… pair=local->remote nat=… local=[…] relay=transport` of a connection.
async fn describe(handle: &PeerHandle) -> String {
    for _ in 0..100 {
        let (Ok(d), Ok(c)) = (handle.diagnostics().await, handle.connectivity().await) else {
            return "closed".to_owned();
        };
        if let (Some(p), Some(path)) = (&d.selected_pair, c.path) {
            let relay = c
                .relays
                .iter()
                .rev()
                .find(|r| r.state == dopus_rtc::RelayState::Ready)
                .map_or("none".to_owned(), |r| r.transport.to_string());
            return format!(
                "path={path:?} pair={}->{} nat={:?} local={:?} relay={relay}",
                p.local, p.remote, d.nat, d.local_candidates
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no selected pair");
}
