//! The closing handshake: whenever the server closes a connection, the client reads everything
//! the server sent before, the frame that says why and the close code, even while it is still
//! pipelining frames the server will never read (a TCP reset would make the client's kernel
//! throw all of that away).

use crate::common::*;
use dopus_proto::signaling::{ClientFrame, ErrorCode, ServerFrame, auth_signing_bytes};
use dopus_signaling::{ClientError, ConnectionState, Event};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// What a pipelining client read until the server's Close.
#[derive(Debug)]
struct Received {
    frames: Vec<ServerFrame>,
    close: Option<(u16, String)>,
}

impl Received {
    fn last_frame(&self) -> &ServerFrame {
        self.frames.last().expect("no frame before the close")
    }

    fn close_code(&self) -> u16 {
        self.close.as_ref().expect("no close frame").0
    }

    fn count(&self, f: impl Fn(&ServerFrame) -> bool) -> usize {
        self.frames.iter().filter(|x| f(x)).count()
    }
}

/// Splits `ws`: a task writes `frame(i)` for i = 0, 1, … (flushing every 50 frames, at most
/// `max` frames or until the socket refuses) while another starts reading only after
/// `read_after`, so until then the answers pile up in the socket buffers (and once they are
/// full, in the server's send queue, which a reset would discard). The reader panics on a
/// socket error (a reset) before the server's Close.
fn pipeline(
    ws: RawWs,
    max: u64,
    read_after: Duration,
    frame: impl Fn(u64) -> String + Send + 'static,
) -> (JoinHandle<u64>, JoinHandle<Received>) {
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        for i in 0..max {
            if sink.feed(Message::text(frame(i))).await.is_err() {
                break;
            }
            sent += 1;
            if i % 50 == 49 && sink.flush().await.is_err() {
                break;
            }
        }
        let _ = sink.flush().await;
        sent
    });
    let reader = tokio::spawn(async move {
        tokio::time::sleep(read_after).await;
        let mut frames = Vec::new();
        let read = tokio::time::timeout(WAIT, async {
            loop {
                match stream.next().await {
                    Some(Ok(Message::Text(t))) => {
                        frames.push(ServerFrame::parse(t.as_str()).unwrap())
                    }
                    Some(Ok(Message::Close(f))) => {
                        return f.map(|f: CloseFrame| (u16::from(f.code), f.reason.to_string()));
                    }
                    Some(Ok(_)) => {}
                    None => panic!("end of stream before a close frame, after {frames:?}"),
                    Some(Err(e)) => panic!(
                        "socket error before a close frame: {e} (after {} frames)",
                        frames.len()
                    ),
                }
            }
        })
        .await
        .expect("no close within the wait");
        Received {
            frames,
            close: read,
        }
    });
    (writer, reader)
}

/// When the reader starts in the tests whose close comes soon after the first frame.
const LATER: Duration = Duration::from_millis(300);
/// When the reader starts where the answers before the close take a while to produce.
const SLOW: Duration = Duration::from_millis(1_500);

fn ping(i: u64) -> String {
    format!(r#"{{"type":"ping","id":{i}}}"#)
}

fn is_pong(f: &ServerFrame) -> bool {
    matches!(f, ServerFrame::Pong { .. })
}

fn is_error(code: ErrorCode) -> impl Fn(&ServerFrame) -> bool {
    move |f| matches!(f, ServerFrame::Error { code: c, .. } if *c == code)
}

/// Pongs come in request order, starting at 0, with none missing.
fn assert_pongs_in_order(r: &Received) {
    let ids: Vec<u64> = r
        .frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Pong { id } => Some(*id),
            _ => None,
        })
        .collect();
    assert!(ids.iter().copied().eq(0..ids.len() as u64), "{ids:?}");
}

fn unlimited_rate(c: &mut dopus_server::Config) {
    c.limits.rate_per_sec = 1_000_000;
    c.limits.rate_burst = 1_000_000;
}

#[tokio::test]
async fn a_replaced_session_reads_its_answers_the_notice_and_the_close_code() {
    let s = start(unlimited_rate).await;
    let alice = TestUser::new();
    let first = raw_login(&s.url(), &alice, 1).await;
    let (writer, reader) = pipeline(first, 200_000, Duration::from_millis(1_000), ping);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _second = raw_login(&s.url(), &alice, 1).await;
    let got = reader.await.unwrap();
    let sent = writer.await.unwrap();
    assert!(matches!(
        got.last_frame(),
        ServerFrame::Error {
            id: None,
            code: ErrorCode::SessionReplaced,
            ..
        }
    ));
    assert_eq!(got.close, Some((1008, "session_replaced".into())));
    assert_pongs_in_order(&got);
    let pongs = got.count(is_pong);
    assert!(
        pongs > 0,
        "the pipelined frames before the replacement were answered"
    );
    assert!(
        (pongs as u64) < sent,
        "frames were still on the way: {pongs} of {sent}"
    );
}

#[tokio::test]
async fn an_auth_failure_reaches_a_client_that_pipelines_after_its_login() {
    let s = start(|_| {}).await;
    let (alice, mallory) = (TestUser::new(), TestUser::new());
    let mut ws = raw(&s.url()).await;
    let ServerFrame::Challenge {
        server_id,
        challenge,
        ..
    } = raw_recv(&mut ws).await
    else {
        panic!("expected a challenge")
    };
    let device = alice.device(1);
    let auth = ClientFrame::Auth {
        user_id: alice.id,
        device_id: device.clone(),
        challenge,
        signature: mallory.sign(&auth_signing_bytes(&server_id, &challenge.0, &device)),
        quiet_relays: false,
    }
    .to_json();
    // The login, then frames that assume it succeeded, all without reading.
    let (_writer, reader) = pipeline(ws, 100_000, LATER, move |i| {
        if i == 0 { auth.clone() } else { ping(i) }
    });
    let got = reader.await.unwrap();
    assert_eq!(got.frames.len(), 1, "{got:?}");
    assert!(matches!(
        got.frames[0],
        ServerFrame::AuthFailure {
            code: ErrorCode::BadSignature,
            ..
        }
    ));
    assert_eq!(got.close, Some((1008, "auth_failure".into())));
}

#[tokio::test]
async fn too_many_bad_frames_are_each_answered_before_the_close() {
    // Enough bad frames that their answers fill the socket buffers while nobody reads.
    let s = start(|c| {
        unlimited_rate(c);
        c.limits.max_bad_frames = 30_000;
    })
    .await;
    let mallory = TestUser::new();
    let ws = raw_login(&s.url(), &mallory, 1).await;
    let (_writer, reader) = pipeline(ws, 100_000, SLOW, |_| "nonsense".into());
    let got = reader.await.unwrap();
    // 30,000 bad frames are tolerated; the next one is answered and closes.
    assert_eq!(got.count(is_error(ErrorCode::MalformedFrame)), 30_001);
    assert_eq!(got.frames.len(), 30_001);
    assert_eq!(got.close, Some((1008, "too many bad frames".into())));
}

#[tokio::test]
async fn too_many_bad_frames_before_login_close_the_same_way() {
    let s = start(|_| {}).await;
    let mut ws = raw(&s.url()).await;
    let _challenge = raw_recv(&mut ws).await;
    let (_writer, reader) = pipeline(ws, 100_000, LATER, |_| "nonsense".into());
    let got = reader.await.unwrap();
    assert_eq!(got.count(is_error(ErrorCode::MalformedFrame)), 51);
    assert_eq!(got.close_code(), 1008);
}

#[tokio::test]
async fn the_rate_limit_answers_every_frame_it_read_before_it_closes() {
    let s = start(|c| {
        // No refill, so the count does not depend on the machine's speed.
        c.limits.rate_per_sec = 0;
        c.limits.rate_burst = 40_000;
        c.limits.max_rate_violations = 20;
    })
    .await;
    let mallory = TestUser::new();
    let ws = raw_login(&s.url(), &mallory, 1).await;
    let (_writer, reader) = pipeline(ws, 100_000, SLOW, ping);
    let got = reader.await.unwrap();
    assert_eq!(got.count(is_pong), 40_000);
    assert_pongs_in_order(&got);
    // 20 dropped frames are answered and tolerated; the 21st closes.
    assert_eq!(got.count(is_error(ErrorCode::RateLimited)), 21);
    assert_eq!(got.close, Some((1008, "rate_limited".into())));
}

#[tokio::test]
async fn shutdown_tells_logged_in_and_waiting_connections_why() {
    let s = start(unlimited_rate).await;
    let alice = TestUser::new();
    let busy = raw_login(&s.url(), &alice, 1).await;
    let (_writer, busy) = pipeline(busy, 200_000, Duration::from_millis(1_000), ping);
    let mut waiting = raw(&s.url()).await;
    assert!(matches!(
        raw_recv(&mut waiting).await,
        ServerFrame::Challenge { .. }
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let TestServer { server, _dir } = s;
    let stop = tokio::spawn(server.shutdown());
    let got = busy.await.unwrap();
    assert!(matches!(
        got.last_frame(),
        ServerFrame::Error {
            id: None,
            code: ErrorCode::ShuttingDown,
            ..
        }
    ));
    assert_eq!(got.close, Some((1001, "shutting_down".into())));
    assert_pongs_in_order(&got);
    assert!(matches!(
        raw_recv(&mut waiting).await,
        ServerFrame::Error {
            id: None,
            code: ErrorCode::ShuttingDown,
            ..
        }
    ));
    match tokio::time::timeout(WAIT, waiting.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    stop.await.unwrap();
}

#[tokio::test]
async fn a_close_before_login_is_answered_with_a_close() {
    let s = start(|_| {}).await;
    let mut ws = raw(&s.url()).await;
    assert!(matches!(
        raw_recv(&mut ws).await,
        ServerFrame::Challenge { .. }
    ));
    ws.send(Message::Close(None)).await.unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(_))) => {}
        other => panic!("expected the server's close frame, got {other:?}"),
    }
}

/// Two copies of one device: the replaced one stays down (no reconnect that would replace the
/// other in turn) and says why, until it is told to take the session back.
#[tokio::test]
async fn a_replaced_client_stays_down_until_told_to_reconnect() {
    let s = start(|_| {}).await;
    let alice = TestUser::new();
    let mut first = connect(&s.url(), &alice, 1).await;
    let mut second = connect(&s.url(), &alice, 1).await;
    expect(&mut first.events, "the replacement notice", |e| match e {
        Event::ServerNotice {
            code: ErrorCode::SessionReplaced,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    let mut state = first.client.watch_state();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| *s == ConnectionState::Disconnected),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(first.client.is_replaced());
    // Several backoff periods (50–500 ms here) later, nothing has moved.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(first.client.state(), ConnectionState::Disconnected);
    assert_eq!(second.client.state(), ConnectionState::Connected);
    second.client.ping().await.unwrap();
    match first.client.ping().await {
        Err(ClientError::Server {
            code: ErrorCode::SessionReplaced,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // An explicit reconnect takes the session back; now the second copy is the one parked.
    first.client.reconnect();
    first.client.wait_connected(WAIT).await.unwrap();
    assert!(!first.client.is_replaced());
    expect(&mut second.events, "the replacement notice", |e| match e {
        Event::ServerNotice {
            code: ErrorCode::SessionReplaced,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    tokio::time::timeout(WAIT, async {
        while !second.client.is_replaced() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    first.client.ping().await.unwrap();
}
