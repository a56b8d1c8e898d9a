//! Nothing at info level or above names an IP address (STYLE §4, str0m `Pii<T>`).

use std::io::Write;
use std::sync::{Arc, Mutex};

use dopus_rtc::{CloseReason, DtlsIdentity, IceServer, RtcConfig};

use crate::common::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Single-threaded runtime: the peer tasks run on this thread, under this thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn info_logs_name_no_address() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // A connection with STUN, messages, and a failure (the path that logs at info).
    let stun = stun_server(|from| from).await;
    let cfg = RtcConfig {
        ice_servers: vec![IceServer::parse(&format!("stun:{stun}")).unwrap()],
        ..config()
    };
    let (mut a, mut b) = pair_with(cfg, config(), pass_all(), pass_all(), |s| s).await;
    wait_open(&mut a).await;
    wait_open(&mut b).await;
    a.handle.send(b"secret text".to_vec()).await.unwrap();
    assert_eq!(next_data(&mut b).await, b"secret text");
    a.handle.close().await;
    wait_closed(&mut b).await;

    let mallory = DtlsIdentity::generate().unwrap();
    let fp = mallory.fingerprint().to_owned();
    let (mut c, _d) = pair_with(config(), config(), pass_all(), pass_all(), move |s| {
        s.split("\r\n")
            .map(|l| {
                if l.starts_with("a=fingerprint:") {
                    format!("a=fingerprint:{fp}")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    })
    .await;
    assert!(matches!(wait_closed(&mut c).await, CloseReason::Failed(_)));

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("peer connection failed"),
        "the failure should be logged at info: {text}"
    );
    assert!(!text.contains("127.0.0.1"), "an address leaked: {text}");
    assert!(!text.contains("secret text"), "message text leaked: {text}");
}
