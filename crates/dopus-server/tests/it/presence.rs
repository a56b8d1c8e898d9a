use crate::common::*;
use dopus_proto::signaling::Status;
use dopus_signaling::{DeliveryKind, Event};
use dopus_types::UserId;
use std::time::Duration;

async fn presence_of(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    who: UserId,
) -> Status {
    expect(events, "a presence update", |e| match e {
        Event::Presence { user, status } if user == who => Some(status),
        _ => None,
    })
    .await
}

/// The next application event must be the marker relay from `from`: proves that nothing (such
/// as a presence update) was queued before it.
async fn next_is_marker(c: &mut TestClient, from: UserId) {
    match next_app_event(&mut c.events).await {
        Event::Incoming(i) => {
            assert_eq!(i.from.user, from);
            assert_eq!(i.payload, "marker");
        }
        other => panic!("expected the marker, got {other:?}"),
    }
}

#[tokio::test]
async fn presence_flows_between_mutual_contacts_only() {
    let s = start(|_| {}).await;
    let (alice, bob, carol) = (TestUser::new(), TestUser::new(), TestUser::new());
    let mut a = connect(&s.url(), &alice, 1).await;
    let mut b = connect(&s.url(), &bob, 1).await;
    let mut c = connect(&s.url(), &carol, 1).await;

    // Alice lists Bob and Carol; only Bob lists Alice back. Carol lists Alice.
    assert!(
        a.client
            .sync_contacts(vec![bob.id])
            .await
            .unwrap()
            .is_empty()
    );
    let seen = b.client.sync_contacts(vec![alice.id]).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].user, seen[0].status), (alice.id, Status::Online));
    // Becoming mutual tells Alice about Bob.
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Online);
    assert!(
        c.client
            .sync_contacts(vec![alice.id])
            .await
            .unwrap()
            .is_empty()
    );

    a.client.set_status(Status::Busy).await.unwrap();
    assert_eq!(presence_of(&mut b.events, alice.id).await, Status::Busy);
    // Carol lists Alice but Alice does not list Carol: Carol must have seen nothing.
    a.client
        .relay(carol.id, None, "marker".into(), false)
        .await
        .unwrap();
    next_is_marker(&mut c, alice.id).await;
    let _ = &mut a;
}

#[tokio::test]
async fn invisible_looks_offline_and_removal_hides_presence() {
    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let mut a = connect(&s.url(), &alice, 1).await;
    let b = connect(&s.url(), &bob, 1).await;
    a.client.sync_contacts(vec![bob.id]).await.unwrap();
    b.client.sync_contacts(vec![alice.id]).await.unwrap();
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Online);

    b.client.set_status(Status::Invisible).await.unwrap();
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Offline);
    // An invisible user is reported offline in a fresh sync as well.
    let seen = a.client.sync_contacts(vec![bob.id]).await.unwrap();
    assert_eq!(seen[0].status, Status::Offline);
    b.client.set_status(Status::Away).await.unwrap();
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Away);

    // Bob drops Alice: Alice is told Bob is offline and hears nothing more.
    b.client.sync_contacts(vec![]).await.unwrap();
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Offline);
    b.client.set_status(Status::Online).await.unwrap();
    b.client
        .relay(alice.id, None, "marker".into(), false)
        .await
        .unwrap();
    next_is_marker(&mut a, bob.id).await;
}

#[tokio::test]
async fn several_devices_show_the_most_present_status() {
    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let mut a = connect(&s.url(), &alice, 1).await;
    let b1 = connect(&s.url(), &bob, 1).await;
    b1.client.sync_contacts(vec![alice.id]).await.unwrap();
    a.client.sync_contacts(vec![bob.id]).await.unwrap();
    b1.client.set_status(Status::Away).await.unwrap();
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Away);

    let b2 = connect(&s.url(), &bob, 2).await;
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Online);
    b2.client.set_status(Status::Busy).await.unwrap();
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Busy);
    // The busy device says goodbye: the away one remains (updates may repeat a status).
    b2.client.shutdown().await;
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Away);
    let b2_gone = async {
        loop {
            let r = a
                .client
                .relay(bob.id, None, "x".into(), false)
                .await
                .unwrap();
            if r.delivered.len() == 1 {
                return r;
            }
        }
    };
    tokio::time::timeout(WAIT, b2_gone).await.unwrap();
    b1.client.shutdown().await;
    loop {
        if presence_of(&mut a.events, bob.id).await == Status::Offline {
            break;
        }
    }
}

#[tokio::test]
async fn a_dropped_connection_goes_offline_after_the_ping_timeout() {
    let s = start(|c| {
        c.limits.ping_interval = Duration::from_millis(200);
        c.limits.ping_timeout = Duration::from_millis(200);
    })
    .await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let mut a = connect(&s.url(), &alice, 1).await;
    a.client.sync_contacts(vec![bob.id]).await.unwrap();
    // Bob logs in on a raw socket, syncs, then never reads again: pongs stop.
    let mut ws = raw_login(&s.url(), &bob, 1).await;
    raw_send(
        &mut ws,
        dopus_proto::signaling::ClientFrame::SyncContacts {
            id: 1,
            contacts: vec![alice.id],
            more: false,
        }
        .to_json(),
    )
    .await;
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Online);
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Offline);
    drop(ws);
}

#[tokio::test]
async fn a_closed_socket_goes_offline_at_once() {
    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let mut a = connect(&s.url(), &alice, 1).await;
    a.client.sync_contacts(vec![bob.id]).await.unwrap();
    let mut ws = raw_login(&s.url(), &bob, 1).await;
    raw_send(
        &mut ws,
        dopus_proto::signaling::ClientFrame::SyncContacts {
            id: 1,
            contacts: vec![alice.id],
            more: false,
        }
        .to_json(),
    )
    .await;
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Online);
    drop(ws);
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Offline);
}

#[tokio::test]
async fn contacts_and_status_are_resynced_after_a_reconnect() {
    let s = start(|_| {}).await;
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let mut a = connect(&s.url(), &alice, 1).await;
    let mut b = connect(&s.url(), &bob, 1).await;
    a.client.sync_contacts(vec![bob.id]).await.unwrap();
    b.client.sync_contacts(vec![alice.id]).await.unwrap();
    b.client.set_status(Status::Away).await.unwrap();
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Online);
    assert_eq!(presence_of(&mut a.events, bob.id).await, Status::Away);
    // Another login of Bob's same device replaces the client's session; told to reconnect, the
    // client logs in again and re-sends its contacts and status.
    let ws = raw_login(&s.url(), &bob, 1).await;
    drop(ws);
    expect(&mut b.events, "replaced", |e| match e {
        Event::ServerNotice { .. } => Some(()),
        _ => None,
    })
    .await;
    while !b.client.is_replaced() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    b.client.reconnect();
    expect(&mut b.events, "reconnected", |e| match e {
        Event::Authenticated { .. } => Some(()),
        _ => None,
    })
    .await;
    loop {
        if presence_of(&mut a.events, bob.id).await == Status::Away {
            break;
        }
    }
    let r = a
        .client
        .relay(bob.id, None, "after".into(), false)
        .await
        .unwrap();
    assert_eq!(r.delivered.len(), 1);
    let got = expect(&mut b.events, "relay", |e| match e {
        Event::Incoming(i) if i.kind == DeliveryKind::Relay => Some(i.payload),
        _ => None,
    })
    .await;
    assert_eq!(got, "after");
}
