//! The simulated signaling server, after docs/signaling.md: authenticated devices, live relay
//! between online devices, a mailbox per device for storable envelopes (delivered after every
//! login in order, deleted by the device's ack), the key directory (publish, claim one
//! one-time key per device or the fallback key, `one_time_keys_low` under 10), presence only
//! between mutual contacts, contact sync. It never parses a payload except to check that no
//! plaintext reaches it and, for a tamper hook, to name the envelope.

use super::{Down, Ev, PLAINTEXT_MARKER, SERVER, Sim, Tamper, TamperCtx, Up};
use dopus_core::machine::{Delivery, Inbound, Input, Via};
use dopus_proto::bundle::{BUNDLE_VERSION, ClaimedBundle, DeviceBundle, SignedKey};
use dopus_proto::peer::{PeerAddress, PeerEnvelope};
use dopus_proto::signaling::Status;
use dopus_types::UserId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Below this many one-time keys the device is told to publish more.
pub const OTK_LOW_THRESHOLD: usize = 10;

#[derive(Debug, Default)]
pub(super) struct Server {
    /// Logged-in devices (one per node): connection generation and status.
    conns: BTreeMap<usize, (u64, Status)>,
    /// Devices that ever logged in or published.
    known: BTreeSet<usize>,
    bundles: BTreeMap<usize, (DeviceBundle, VecDeque<SignedKey>)>,
    mailbox: BTreeMap<usize, BTreeMap<u64, (PeerAddress, Vec<u8>)>>,
    next_mailbox_id: u64,
    contacts: BTreeMap<UserId, BTreeSet<UserId>>,
    /// (claimer, owner) → (one-time keys, fallback keys).
    claims: BTreeMap<(usize, usize), (u64, u64)>,
    /// Copies of each envelope id relayed so far.
    copies: BTreeMap<uuid::Uuid, u32>,
}

impl Server {
    pub(super) fn mailboxes_empty(&self) -> bool {
        self.mailbox.values().all(BTreeMap::is_empty)
    }

    pub(super) fn claims(&self, claimer: usize, owner: usize) -> (u64, u64) {
        self.claims
            .get(&(claimer, owner))
            .copied()
            .unwrap_or_default()
    }
}

impl Sim {
    /// A frame to a logged-in device, in order.
    fn down(&mut self, node: usize, msg: Down) {
        self.down_of(node, msg, false);
    }

    /// A live relay, which the reorder fault may move.
    fn down_of(&mut self, node: usize, msg: Down, may_reorder: bool) {
        let Some(&(generation, _)) = self.server.conns.get(&node) else {
            return;
        };
        let at = self.arrival_of(SERVER, node, 1, may_reorder);
        self.push(
            at,
            Ev::Down {
                node,
                generation,
                msg,
            },
        );
    }

    fn visible(&self, node: usize) -> Status {
        self.server
            .conns
            .get(&node)
            .map_or(Status::Offline, |(_, s)| s.as_seen_by_others())
    }

    fn mutual(&self, a: usize, b: usize) -> bool {
        let (ua, ub) = (self.nodes[a].user, self.nodes[b].user);
        self.server
            .contacts
            .get(&ua)
            .is_some_and(|c| c.contains(&ub))
            && self
                .server
                .contacts
                .get(&ub)
                .is_some_and(|c| c.contains(&ua))
    }

    /// Tells every connected mutual contact of `node` its visible status.
    fn announce(&mut self, node: usize) {
        let status = self.visible(node);
        let user = self.nodes[node].user;
        let others: Vec<usize> = self.server.conns.keys().copied().collect();
        for o in others {
            if o != node && self.mutual(node, o) {
                self.down(o, Down::Input(Input::Presence { user, status }));
            }
        }
    }

    pub(super) fn server_drop(&mut self, node: usize, generation: u64) {
        if self
            .server
            .conns
            .get(&node)
            .is_some_and(|(g, _)| *g == generation)
        {
            self.server.conns.remove(&node);
            self.trace(format!("server-drop {}", self.nodes[node].name));
            self.announce(node);
        }
    }

    pub(super) fn server_frame(&mut self, node: usize, generation: u64, frame: Up) {
        // A frame from a connection that is gone (the node's side moved on) is never read.
        if !self.nodes[node].up || self.nodes[node].sig_gen != generation {
            return;
        }
        if let Up::Login(status) = frame {
            self.login(node, generation, status);
            return;
        }
        if self
            .server
            .conns
            .get(&node)
            .is_none_or(|(g, _)| *g != generation)
        {
            return;
        }
        match frame {
            Up::Login(_) => {}
            Up::Relay {
                to,
                payload,
                store,
                report,
                ..
            } => self.relay(node, to, payload, store, report),
            Up::Fetch(peer) => self.fetch(node, peer),
            Up::Publish(bundle) => self.publish(node, bundle),
            Up::Status(s) => {
                if let Some(c) = self.server.conns.get_mut(&node) {
                    c.1 = s;
                }
                self.announce(node);
            }
            Up::Sync(list) => self.sync(node, list),
            Up::Ack(ids) => {
                if let Some(m) = self.server.mailbox.get_mut(&node) {
                    for id in ids {
                        m.remove(&id);
                    }
                }
            }
        }
    }

    fn login(&mut self, node: usize, generation: u64, status: Status) {
        let old = self.server.conns.insert(node, (generation, status));
        self.server.known.insert(node);
        self.trace(format!(
            "login {} replaced={}",
            self.nodes[node].name,
            old.is_some()
        ));
        self.down(node, Down::Connected);
        if let Some((_, otks)) = self.server.bundles.get(&node)
            && otks.len() < OTK_LOW_THRESHOLD
        {
            let remaining = otks.len() as u64;
            self.down(node, Down::Input(Input::OneTimeKeysLow { remaining }));
        }
        let items: Vec<(u64, PeerAddress, Vec<u8>)> = self
            .server
            .mailbox
            .get(&node)
            .map(|m| {
                m.iter()
                    .map(|(id, (from, p))| (*id, from.clone(), p.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (ack, from, bytes) in items {
            self.down(
                node,
                Down::Input(Input::Envelopes(vec![Inbound {
                    bytes,
                    via: Via::Mailbox { from, ack },
                }])),
            );
        }
        self.announce(node);
    }

    fn sync(&mut self, node: usize, list: Vec<UserId>) {
        let me = self.nodes[node].user;
        let before: BTreeSet<usize> = (0..self.nodes.len())
            .filter(|&o| o != node && self.mutual(node, o))
            .collect();
        let set: BTreeSet<UserId> = list.into_iter().filter(|u| *u != me).collect();
        self.server.contacts.insert(me, set);
        let after: BTreeSet<usize> = (0..self.nodes.len())
            .filter(|&o| o != node && self.mutual(node, o))
            .collect();
        let presence = after
            .iter()
            .map(|&o| (self.nodes[o].user, self.visible(o)))
            .collect();
        self.down(node, Down::Input(Input::ContactsSynced(presence)));
        let status = self.visible(node);
        for &o in after.difference(&before) {
            if self.server.conns.contains_key(&o) {
                self.down(o, Down::Input(Input::Presence { user: me, status }));
            }
        }
        for &o in before.difference(&after) {
            if self.server.conns.contains_key(&o) {
                self.down(
                    o,
                    Down::Input(Input::Presence {
                        user: me,
                        status: Status::Offline,
                    }),
                );
            }
        }
    }

    fn publish(&mut self, node: usize, bundle: Box<DeviceBundle>) {
        let user = self.nodes[node].user;
        let ok = bundle.verify(&user).is_ok()
            && bundle.certificate.user_id == user
            && bundle.certificate.device_id == self.nodes[node].device;
        if !ok {
            self.fail(format!(
                "{} published an invalid bundle",
                self.nodes[node].name
            ));
            self.down(
                node,
                Down::Input(Input::Published {
                    bundle,
                    result: Err("invalid_bundle".into()),
                }),
            );
            return;
        }
        self.server.known.insert(node);
        let entry = self
            .server
            .bundles
            .entry(node)
            .or_insert_with(|| ((*bundle).clone(), VecDeque::new()));
        if entry.0.certificate != bundle.certificate {
            entry.1.clear();
        }
        entry.0 = (*bundle).clone();
        entry.1.extend(bundle.one_time_keys.iter().cloned());
        let count = entry.1.len() as u64;
        self.trace(format!("published {} count={count}", self.nodes[node].name));
        self.down(
            node,
            Down::Input(Input::Published {
                bundle,
                result: Ok(count),
            }),
        );
    }

    fn fetch(&mut self, node: usize, peer: UserId) {
        let Some(&owner) = self.by_user.get(&peer) else {
            self.down(
                node,
                Down::Input(Input::Bundles {
                    peer,
                    result: Err("no_bundle".into()),
                }),
            );
            return;
        };
        let Some((bundle, otks)) = self.server.bundles.get_mut(&owner) else {
            self.down(
                node,
                Down::Input(Input::Bundles {
                    peer,
                    result: Err("no_bundle".into()),
                }),
            );
            return;
        };
        let one_time_key = otks.pop_front();
        let remaining = otks.len();
        let claimed = ClaimedBundle {
            version: BUNDLE_VERSION,
            certificate: bundle.certificate.clone(),
            fallback_key: bundle.fallback_key.clone(),
            one_time_key: one_time_key.clone(),
        };
        let c = self.server.claims.entry((node, owner)).or_default();
        if one_time_key.is_some() {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
        self.trace(format!(
            "claim {} of {} otk={}",
            self.nodes[node].name,
            self.nodes[owner].name,
            one_time_key.is_some()
        ));
        if remaining < OTK_LOW_THRESHOLD && self.server.conns.contains_key(&owner) {
            self.down(
                owner,
                Down::Input(Input::OneTimeKeysLow {
                    remaining: remaining as u64,
                }),
            );
        }
        self.down(
            node,
            Down::Input(Input::Bundles {
                peer,
                result: Ok(vec![claimed]),
            }),
        );
    }

    fn relay(
        &mut self,
        node: usize,
        to: UserId,
        payload: Vec<u8>,
        store: bool,
        report: Option<(u64, usize)>,
    ) {
        if contains(&payload, PLAINTEXT_MARKER.as_bytes()) {
            self.fail(format!(
                "the server saw plaintext in an envelope from {}",
                self.nodes[node].name
            ));
        }
        let Some(&target) = self.by_user.get(&to) else {
            self.relay_result(node, report, Delivery::Failed);
            return;
        };
        let from = super::address(&self.nodes[node]);
        // The hostile server's turn.
        let mut tamper = Tamper::Pass;
        let id = PeerEnvelope::from_json(&payload)
            .ok()
            .map(|e| *e.id.as_uuid());
        let copy = id.map_or(0, |id| {
            let c = self.server.copies.entry(id).or_insert(0);
            *c += 1;
            *c - 1
        });
        if self.reflect_next.remove(&(node, target)) {
            tamper = Tamper::Reflect;
        } else if let Some(hook) = self.tamper_hook.as_mut() {
            tamper = hook(&TamperCtx {
                at_ms: self.now,
                from: node,
                to: target,
                id,
                copy,
            });
        } else if self.faults.tamper > 0 && self.rng.chance(self.faults.tamper) {
            tamper = Tamper::Flip;
        } else if self.faults.relay_drop > 0 && self.rng.chance(self.faults.relay_drop) {
            tamper = Tamper::Drop;
        }
        let (target, payload) = match tamper {
            Tamper::Pass => (target, payload),
            Tamper::Drop => {
                self.trace(format!("server-drops {} -> {}", node, target));
                self.relay_result(node, report, Delivery::Sent);
                return;
            }
            Tamper::Flip => {
                self.trace(format!("server-flips {} -> {} {id:?}", node, target));
                (target, flip(payload))
            }
            Tamper::Reflect => {
                self.trace(format!("server-reflects {} {id:?}", node));
                (node, reflect(payload, &from))
            }
        };
        if self.server.conns.contains_key(&target) {
            self.down_of(
                target,
                Down::Input(Input::Envelopes(vec![Inbound {
                    bytes: payload,
                    via: Via::Relay { from },
                }])),
                true,
            );
            self.relay_result(node, report, Delivery::Sent);
        } else if store && self.server.known.contains(&target) {
            self.server.next_mailbox_id += 1;
            let id = self.server.next_mailbox_id;
            self.server
                .mailbox
                .entry(target)
                .or_default()
                .insert(id, (from, payload));
            self.relay_result(node, report, Delivery::Stored);
        } else {
            self.relay_result(node, report, Delivery::Failed);
        }
    }

    fn relay_result(&mut self, node: usize, report: Option<(u64, usize)>, delivery: Delivery) {
        if let Some((transmit, index)) = report {
            self.down(
                node,
                Down::Result {
                    transmit,
                    index,
                    delivery,
                },
            );
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Flips one byte of the envelope's ciphertext, inside the Olm message body (before its MAC).
fn flip(payload: Vec<u8>) -> Vec<u8> {
    let Ok(mut e) = PeerEnvelope::from_json(&payload) else {
        return payload;
    };
    let n = e.ciphertext.0.len();
    if n > 20 {
        e.ciphertext.0[n - 12] ^= 0x01;
    }
    e.to_json().unwrap_or(payload)
}

/// The envelope as it would come back to its sender: the outer `to` rewritten to the sender.
fn reflect(payload: Vec<u8>, sender: &PeerAddress) -> Vec<u8> {
    let Ok(mut e) = PeerEnvelope::from_json(&payload) else {
        return payload;
    };
    e.to = sender.clone();
    e.to_json().unwrap_or(payload)
}
