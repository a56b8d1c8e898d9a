//! Interop with Debian's coturn (`turnserver`, `turnutils_uclient`, `turnutils_peer`): our TURN
//! client against coturn with a shared secret, and coturn's client against our relay. Loopback
//! only, bounded in count and time. Skipped (and passing) when coturn is not installed;
//! `scripts/install-deps.sh --test` installs it.

use std::process::Stdio;
use std::time::Duration;

use dopus_rtc::{IceServer, PathKind, PeerConnection, PeerEvent, RtcConfig};
use dopus_server::TurnSettings;
use dopus_server::turn::rest_password;
use tokio::process::Command;

use crate::common::*;

fn have(bin: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// A free UDP+TCP port on 127.0.0.1 (bound and released: a small race, fine for tests).
fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Kill(tokio::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// How our client reaches coturn in [`our_client_through_coturn`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Udp,
    Tcp,
    Tls,
}

/// Two relay-only `dopus-rtc` peers through `turnserver --use-auth-secret` with REST
/// credentials computed from the secret, reaching it over `via`. Over TCP and TLS coturn pads
/// ChannelData and expects it padded (RFC 8656 §12.5): besides one data channel message, 24
/// messages of 160..184 bytes make relayed packets of every length mod 4 both ways, each of
/// which must arrive intact.
#[allow(clippy::print_stderr, reason = "says why the test is skipped")]
async fn our_client_through_coturn(via: Via) {
    if !have("turnserver") {
        eprintln!("skipped: coturn (turnserver) not installed");
        return;
    }
    let secret = "interop-secret";
    let port = free_port();
    let tls_port = free_port();
    let min = 40_000 + (port % 1000) * 10;
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, key.cert.pem()).unwrap();
    std::fs::write(&key_pem, key.signing_key.serialize_pem()).unwrap();
    let mut args = vec![
        "-n".to_owned(),
        "--listening-ip=127.0.0.1".to_owned(),
        format!("--listening-port={port}"),
        "--relay-ip=127.0.0.1".to_owned(),
        format!("--min-port={min}"),
        format!("--max-port={}", min + 9),
        "--use-auth-secret".to_owned(),
        format!("--static-auth-secret={secret}"),
        "--realm=dopus-interop".to_owned(),
        "--no-dtls".to_owned(),
        "--no-cli".to_owned(),
        "--allow-loopback-peers".to_owned(),
        "--no-stdout-log".to_owned(),
        format!("--pidfile={}", dir.path().join("pid").display()),
        format!("--userdb={}", dir.path().join("db").display()),
    ];
    if via == Via::Tls {
        args.extend([
            format!("--tls-listening-port={tls_port}"),
            format!("--cert={}", cert_pem.display()),
            format!("--pkey={}", key_pem.display()),
        ]);
    } else {
        args.push("--no-tls".to_owned());
    }
    let child = Command::new("turnserver")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let _guard = Kill(child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = match via {
        Via::Udp => format!("turn:127.0.0.1:{port}?transport=udp"),
        Via::Tcp => format!("turn:127.0.0.1:{port}?transport=tcp"),
        Via::Tls => format!("turns:127.0.0.1:{tls_port}"),
    };
    let tls = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(key.cert.der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    };
    let cfg = |who: &str| {
        let user = format!("{}:{who}", unix_now() + 600);
        let pass = rest_password(secret.as_bytes(), &user);
        RtcConfig {
            ice_servers: vec![IceServer::turn(&url, &user, &pass).unwrap()],
            relay_only: true,
            connect_timeout: Duration::from_secs(15),
            turn_tls: Some(tls.clone()),
            ..RtcConfig::loopback()
        }
    };
    let (ha, mut ea, offer) = PeerConnection::offer(cfg("a")).await.unwrap();
    let (hb, mut eb, answer) = PeerConnection::answer(cfg("b"), &offer).await.unwrap();
    ha.accept_answer(&answer).await.unwrap();
    let sizes: Vec<usize> = (160..184).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (mut a_open, mut b_open) = (false, false);
    let mut at_b: Vec<Vec<u8>> = Vec::new();
    let mut at_a: Vec<Vec<u8>> = Vec::new();
    while at_b.len() < 1 + sizes.len() || at_a.len() < sizes.len() {
        tokio::select! {
            e = ea.recv() => match e {
                Some(PeerEvent::LocalCandidate(c)) => { let _ = hb.add_remote_candidate(&c).await; }
                Some(PeerEvent::ChannelOpen) => {
                    a_open = true;
                    ha.send(b"through coturn".to_vec()).await.unwrap();
                    for n in &sizes {
                        ha.send(vec![u8::try_from(*n % 256).unwrap(); *n]).await.unwrap();
                    }
                }
                Some(PeerEvent::Data(d)) => at_a.push(d),
                Some(PeerEvent::Closed { reason }) => panic!("a closed: {reason}"),
                Some(_) => {}
                None => panic!("a ended"),
            },
            e = eb.recv() => match e {
                Some(PeerEvent::LocalCandidate(c)) => { let _ = ha.add_remote_candidate(&c).await; }
                Some(PeerEvent::ChannelOpen) => {
                    b_open = true;
                    for n in &sizes {
                        hb.send(vec![0xa5; *n]).await.unwrap();
                    }
                }
                Some(PeerEvent::Data(d)) => at_b.push(d),
                Some(PeerEvent::Closed { reason }) => panic!("b closed: {reason}"),
                Some(_) => {}
                None => panic!("b ended"),
            },
            () = tokio::time::sleep_until(deadline) => {
                panic!(
                    "{via:?}: timed out (a open {a_open}, b open {b_open}, {} at b, {} at a): {:?}",
                    at_b.len(), at_a.len(), ha.connectivity().await
                );
            }
        }
    }
    assert_eq!(at_b[0], b"through coturn");
    for (got, n) in at_b[1..].iter().zip(&sizes) {
        assert_eq!(got, &vec![u8::try_from(*n % 256).unwrap(); *n], "{via:?}");
    }
    for (got, n) in at_a.iter().zip(&sizes) {
        assert_eq!(got, &vec![0xa5; *n], "{via:?}");
    }
    let c = ha.connectivity().await.unwrap();
    assert!(matches!(c.path, Some(PathKind::Relayed) | None), "{c}");
    let want = match via {
        Via::Udp => dopus_rtc::RelayTransport::Udp,
        Via::Tcp => dopus_rtc::RelayTransport::Tcp,
        Via::Tls => dopus_rtc::RelayTransport::Tls,
    };
    assert_eq!(
        c.relays.last().map(|r| (r.transport, r.state.clone())),
        Some((want, dopus_rtc::RelayState::Ready)),
        "{c:?}"
    );
    ha.close().await;
    hb.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_relays_through_coturn_with_a_shared_secret() {
    our_client_through_coturn(Via::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_pads_channel_data_to_coturn_over_tcp() {
    our_client_through_coturn(Via::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_pads_channel_data_to_coturn_over_tls() {
    our_client_through_coturn(Via::Tls).await;
}

/// coturn's `turnutils_uclient` relays 50 messages of `len` bytes each way through our relay,
/// over UDP or (with `-t`) TCP, and none is lost.
#[allow(clippy::print_stderr, reason = "says why the test is skipped")]
async fn coturns_client_relays(extra: &[&str], len: usize) {
    if !have("turnutils_uclient") || !have("turnutils_peer") {
        eprintln!("skipped: coturn's turnutils not installed");
        return;
    }
    let s = start(|c| {
        c.turn = Some(TurnSettings::loopback());
    })
    .await;
    let relay = s.server.turn_addrs.unwrap().listen;
    let peer_port = free_port();
    let peer = Command::new("turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let _peer = Kill(peer);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = Command::new("timeout")
        .args([
            "30",
            "turnutils_uclient",
            "-W",
            "loopback-test-secret",
            "-u",
            "uclient",
            "-p",
            &relay.port().to_string(),
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
            "-n",
            "50",
            "-m",
            "2",
            "-l",
            &len.to_string(),
            "-c",
            "-X",
            "127.0.0.1",
        ])
        .args(extra)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{text}");
    // "Total lost packets 0 (0.000000%), total send dropped 0 (0.000000%)"
    let lost = text
        .lines()
        .find(|l| l.contains("Total lost packets"))
        .unwrap_or_else(|| panic!("no summary: {text}"));
    assert!(lost.contains("Total lost packets 0 "), "{lost}");
    assert!(
        s.server
            .metrics
            .turn_relayed_bytes_total
            .load(std::sync::atomic::Ordering::Relaxed)
            >= (2 * 2 * 50 * len) as u64,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturns_client_relays_through_our_server() {
    coturns_client_relays(&[], 200).await;
}

/// Over TCP coturn's client pads ChannelData to 4 bytes (RFC 8656 §12.5): with 201-byte
/// messages every one is padded, our relay learns it from the first and strips and adds the
/// padding (with 200 bytes there is none to learn from, as before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturns_padding_client_relays_over_tcp_through_our_server() {
    coturns_client_relays(&["-t"], 201).await;
    coturns_client_relays(&["-t"], 200).await;
}
