//! What the machine's multi-node tests share: seeded nodes on in-memory stores, one step of a
//! node, and the key server's part (bundles published, one-time keys claimed one at a time).
//! Each test file keeps its own network (what it delivers, drops or simulates) around these.

use super::{Event, Inbound, Input, NodeMachine, Output, SignalingState};
use crate::e2e::OlmMachine;
use crate::identity::pickle::SecureRandom;
use crate::identity::test_support::SeededRandom;
use crate::identity::{Device, Identity, PickleKey};
use crate::store::{AccountRecord, Change, MemoryStore, Pickle, Store};
use dopus_proto::bundle::{BUNDLE_VERSION, ClaimedBundle, DeviceBundle, SignedKey};
use dopus_proto::peer::PeerAddress;
use dopus_types::{DeviceId, Timestamp};
use std::collections::VecDeque;

/// Virtual time zero of every test network.
pub(super) const T0: u64 = 1_700_000_000_000;

/// One node: its machine and store, what waits for it, and what it said.
pub(super) struct TestNode<X> {
    pub machine: NodeMachine,
    pub store: MemoryStore,
    pub addr: PeerAddress,
    /// The bundle it published and the one-time keys not claimed yet.
    pub bundle: Option<(DeviceBundle, VecDeque<SignedKey>)>,
    pub inbox: Vec<Inbound>,
    pub inputs: Vec<Input>,
    pub events: Vec<Event>,
    /// What one test file keeps beside (requests it records, a mailbox, …).
    pub x: X,
}

/// Node `i`: a fresh identity and device from seeds derived from `i`, signed in and connected.
pub(super) fn test_node<X>(i: u64, x: X) -> TestNode<X> {
    let mut rng = SeededRandom::new(1000 + i);
    let mut key = [0u8; 32];
    SecureRandom::fill_bytes(&mut rng, &mut key);
    let identity = Identity::generate(&mut rng).expect("identity");
    let mut dev = [0u8; 16];
    SecureRandom::fill_bytes(&mut rng, &mut dev);
    let device = Device::new(&identity, DeviceId::from_random(dev), Timestamp(T0));
    let pk = PickleKey::from_bytes(key);
    let record = AccountRecord {
        user_id: identity.user_id(),
        identity_pickle: Pickle::new(identity.pickle(&pk, &mut rng)),
        device_id: device.device_id().clone(),
        device_keys: device.keys(),
        account_pickle: Pickle::new(device.pickle(&pk, &mut rng)),
        certificate_json: serde_json::to_string(device.certificate().expect("certified"))
            .expect("json"),
        display_name: format!("node{i}"),
        created_at: Timestamp(T0),
    };
    let mut store = MemoryStore::new();
    store
        .apply_one(Change::SaveAccount(record.clone()))
        .expect("account");
    let olm = OlmMachine::from_pickle(
        record.account_pickle.as_str(),
        PickleKey::from_bytes(key),
        Box::new(SeededRandom::new(2000 + i)),
    )
    .expect("olm");
    let machine = NodeMachine::new(
        &store,
        record.clone(),
        olm,
        Box::new(SeededRandom::new(3000 + i)),
    )
    .expect("machine");
    TestNode {
        machine,
        store,
        addr: PeerAddress {
            user: record.user_id,
            device: record.device_id,
        },
        bundle: None,
        inbox: Vec::new(),
        inputs: vec![
            Input::Signaling(SignalingState::Connected),
            Input::Authenticated,
        ],
        events: Vec::new(),
        x,
    }
}

impl<X> TestNode<X> {
    /// Hands the machine its queued inputs and envelopes and lets it prepare. Returns whether
    /// anything moved and what the machine asked for.
    pub fn step(&mut self, now: Timestamp) -> (bool, Vec<Output>) {
        let inputs = std::mem::take(&mut self.inputs);
        let inbox = std::mem::take(&mut self.inbox);
        let mut busy = !inputs.is_empty() || !inbox.is_empty();
        for input in inputs {
            self.machine
                .handle(now, input, &mut self.store)
                .expect("handle");
        }
        if !inbox.is_empty() {
            self.machine
                .handle(now, Input::Envelopes(inbox), &mut self.store)
                .expect("envelopes");
        }
        self.machine.prepare(now, &mut self.store).expect("prepare");
        let mut outputs = Vec::new();
        while let Some(o) = self.machine.poll_output() {
            outputs.push(o);
        }
        busy |= !outputs.is_empty();
        (busy, outputs)
    }

    /// The key server keeps the published bundle and answers with its one-time key count.
    pub fn publish(&mut self, bundle: Box<DeviceBundle>) {
        let otks = bundle.one_time_keys.iter().cloned().collect();
        self.bundle = Some(((*bundle).clone(), otks));
        self.inputs.push(Input::Published {
            bundle,
            result: Ok(50),
        });
    }

    /// Claims this node's bundle with one of its one-time keys (none once they are used up).
    pub fn claim(&mut self) -> Option<ClaimedBundle> {
        self.bundle.as_mut().map(|(b, otks)| ClaimedBundle {
            version: BUNDLE_VERSION,
            certificate: b.certificate.clone(),
            fallback_key: b.fallback_key.clone(),
            one_time_key: otks.pop_front(),
        })
    }
}
