//! A TURN relay for the NAT lab on turn-server-proto (the library of the embedded server in
//! `discordopus-server`), listening on UDP, TCP and TLS like a real deployment: clients whose
//! network blocks UDP reach it over TCP, and over TLS when only 443-style TLS gets out.
//!
//! One task owns the three protocol instances and every relay socket; TCP and TLS streams are
//! framed (STUN header or ChannelData header) by a task per stream, with RFC 8656 §12.5
//! padding: ChannelData is padded to 4 bytes on the way out and its padding skipped on the way
//! in, as coturn does (our client pads and accepts both). Binding requests on any transport are answered here (the client's keepalive).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use turn_server_proto::api::{TurnServerApi, TurnServerPollRet};
use turn_server_proto::server::TurnServer;
use turn_server_proto::types::{Instant as TurnInstant, TransportType};

/// A self-signed certificate for `ip` (an IP address SAN) and the TLS acceptor serving it.
pub fn tls_for(ip: &str) -> (Vec<u8>, tokio_rustls::TlsAcceptor) {
    let key = rcgen::generate_simple_self_signed(vec![ip.to_owned()]).unwrap();
    let der = key.cert.der().to_vec();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(der.clone())],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
        )
        .unwrap();
    (der, tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A client TLS configuration trusting only `cert` (DER).
pub fn tls_client(cert: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(cert.to_vec()))
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

enum In {
    Client {
        idx: usize,
        from: SocketAddr,
        data: Vec<u8>,
    },
    Peer {
        relayed: SocketAddr,
        from: SocketAddr,
        data: Vec<u8>,
    },
    Open {
        idx: usize,
        client: SocketAddr,
        writer: mpsc::Sender<Vec<u8>>,
    },
    Closed {
        idx: usize,
        client: SocketAddr,
    },
}

/// Serves until dropped: UDP (and TCP when `tcp`) on `listen`, TLS on `tls.0` with `tls.1`.
/// Relay sockets are on `listen`'s address.
pub async fn serve(
    listen: SocketAddr,
    user: &str,
    pass: &str,
    tcp: bool,
    tls: Option<(SocketAddr, tokio_rustls::TlsAcceptor)>,
) -> tokio::task::JoinHandle<()> {
    let relay_ip = listen.ip();
    let udp = Arc::new(UdpSocket::bind(listen).await.unwrap());
    let (tx, mut rx) = mpsc::channel::<In>(1024);
    let mut protos: Vec<(SocketAddr, TurnServer)> = vec![(
        listen,
        TurnServer::new(TransportType::Udp, listen, "dopus-lab".into()),
    )];
    let mut accept_tasks = Vec::new();
    if tcp {
        let l = TcpListener::bind(listen).await.unwrap();
        protos.push((
            listen,
            TurnServer::new(TransportType::Tcp, listen, "dopus-lab".into()),
        ));
        accept_tasks.push(tokio::spawn(accept(l, protos.len() - 1, None, tx.clone())));
    }
    if let Some((addr, acceptor)) = tls {
        let l = TcpListener::bind(addr).await.unwrap();
        protos.push((
            addr,
            TurnServer::new(TransportType::Tcp, addr, "dopus-lab".into()),
        ));
        accept_tasks.push(tokio::spawn(accept(
            l,
            protos.len() - 1,
            Some(acceptor),
            tx.clone(),
        )));
    }
    for (_, p) in &mut protos {
        p.add_user(user.into(), pass.into());
    }
    let reader = udp.clone();
    let udp_tx = tx.clone();
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = reader.recv_from(&mut buf).await {
            let data = buf[..n].to_vec();
            if udp_tx
                .send(In::Client { idx: 0, from, data })
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let _tasks = Guard(accept_tasks, udp_task);
        let epoch = Instant::now();
        let t = || TurnInstant::from_nanos((Instant::now() - epoch).as_nanos() as i64);
        let mut relays: HashMap<SocketAddr, (usize, Arc<UdpSocket>)> = HashMap::new();
        let mut writers: HashMap<(usize, SocketAddr), mpsc::Sender<Vec<u8>>> = HashMap::new();
        loop {
            let mut wait = Duration::from_millis(100);
            for (idx, (_, proto)) in protos.iter_mut().enumerate() {
                let mut out = Vec::new();
                while let Some(o) = proto.poll_transmit(t()) {
                    out.push((o.from, o.to, o.data.to_vec()));
                }
                for (from, to, data) in out {
                    route(idx, from, to, data, &udp, &relays, &writers).await;
                }
                match proto.poll(t()) {
                    TurnServerPollRet::AllocateSocket {
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                    } => {
                        let sock = Arc::new(UdpSocket::bind((relay_ip, 0)).await.unwrap());
                        let relayed = sock.local_addr().unwrap();
                        relays.insert(relayed, (idx, sock.clone()));
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                                let data = buf[..n].to_vec();
                                let m = In::Peer {
                                    relayed,
                                    from,
                                    data,
                                };
                                if tx.send(m).await.is_err() {
                                    return;
                                }
                            }
                        });
                        proto.allocated_socket(
                            transport,
                            listen_addr,
                            client_addr,
                            allocation_transport,
                            family,
                            Ok(relayed),
                            t(),
                        );
                        wait = Duration::ZERO;
                    }
                    TurnServerPollRet::WaitUntil(w) => {
                        wait = wait.min(w.saturating_duration_since(t()));
                    }
                    _ => wait = wait.min(Duration::from_millis(10)),
                }
            }
            let msg = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => return },
                () = tokio::time::sleep(wait) => continue,
            };
            match msg {
                In::Open {
                    idx,
                    client,
                    writer,
                } => {
                    writers.insert((idx, client), writer);
                }
                In::Closed { idx, client } => {
                    writers.remove(&(idx, client));
                }
                In::Client { idx, from, data } => {
                    let listen = protos[idx].0;
                    if let Ok(tid) = dopus_proto::stun::parse_binding_request(&data) {
                        let resp = dopus_proto::stun::binding_success(tid, from).to_vec();
                        route(idx, listen, from, resp, &udp, &relays, &writers).await;
                        continue;
                    }
                    let transport = if idx == 0 {
                        TransportType::Udp
                    } else {
                        TransportType::Tcp
                    };
                    let transmit =
                        turn_server_proto::api::Transmit::new(data, transport, from, listen);
                    if let Some(out) = protos[idx].1.recv(transmit, t()) {
                        let out = out.build();
                        route(idx, out.from, out.to, out.data, &udp, &relays, &writers).await;
                    }
                }
                In::Peer {
                    relayed,
                    from,
                    data,
                } => {
                    let Some(&(idx, _)) = relays.get(&relayed) else {
                        continue;
                    };
                    let transmit = turn_server_proto::api::Transmit::new(
                        data,
                        TransportType::Udp,
                        from,
                        relayed,
                    );
                    if let Some(out) = protos[idx].1.recv(transmit, t()) {
                        let out = out.build();
                        route(idx, out.from, out.to, out.data, &udp, &relays, &writers).await;
                    }
                }
            }
        }
    })
}

struct Guard(
    Vec<tokio::task::JoinHandle<()>>,
    tokio::task::JoinHandle<()>,
);

impl Drop for Guard {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
        self.1.abort();
    }
}

/// Sends what a protocol instance produced: to a peer from its relay socket, or to a client on
/// the listener's transport.
async fn route(
    idx: usize,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
    udp: &UdpSocket,
    relays: &HashMap<SocketAddr, (usize, Arc<UdpSocket>)>,
    writers: &HashMap<(usize, SocketAddr), mpsc::Sender<Vec<u8>>>,
) {
    if let Some((_, sock)) = relays.get(&from) {
        let _ = sock.send_to(&data, to).await;
    } else if idx == 0 {
        let _ = udp.send_to(&data, to).await;
    } else if let Some(w) = writers.get(&(idx, to)) {
        let _ = w.try_send(data);
    }
}

async fn accept(
    listener: TcpListener,
    idx: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
    tx: mpsc::Sender<In>,
) {
    for _ in 0..1000 {
        let Ok((stream, client)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => stream_task(stream, idx, client, tx).await,
                Some(acceptor) => {
                    let accepted =
                        tokio::time::timeout(Duration::from_secs(5), acceptor.accept(stream)).await;
                    if let Ok(Ok(s)) = accepted {
                        stream_task(s, idx, client, tx).await;
                    }
                }
            }
        });
    }
}

/// Length of the first whole message in `buf` and of its padding: a STUN message, or a
/// ChannelData padded to 4 bytes (RFC 8656 §12.5).
fn message_len(buf: &[u8]) -> Option<(usize, usize)> {
    let head = buf.get(..4)?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    match head[0] >> 6 {
        0 => Some((20 + len, 0)),
        1 => Some((4 + len, (4 - len % 4) % 4)),
        _ => Some((usize::MAX, 0)),
    }
}

async fn stream_task<S>(stream: S, idx: usize, client: SocketAddr, tx: mpsc::Sender<In>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(256);
    let open = In::Open {
        idx,
        client,
        writer: wtx,
    };
    if tx.send(open).await.is_err() {
        return;
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16_384];
    'outer: loop {
        tokio::select! {
            r = rd.read(&mut chunk) => {
                let n = match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while let Some((len, pad)) = message_len(&buf) {
                    if len > 65_536 {
                        break 'outer;
                    }
                    if buf.len() < len + pad {
                        break;
                    }
                    let data: Vec<u8> = buf.drain(..len).collect();
                    buf.drain(..pad);
                    if tx.send(In::Client { idx, from: client, data }).await.is_err() {
                        return;
                    }
                }
            }
            w = wrx.recv() => match w {
                Some(mut data) => {
                    if data.first().is_some_and(|b| b >> 6 == 1) {
                        data.resize(data.len().next_multiple_of(4), 0);
                    }
                    if wr.write_all(&data).await.is_err() {
                        break;
                    }
                    let _ = wr.flush().await;
                }
                None => break,
            },
        }
    }
    let _ = tx.send(In::Closed { idx, client }).await;
}
