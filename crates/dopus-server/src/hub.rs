//! The server's shared logic over the backends: attaching and detaching connections, presence
//! between mutual contacts, routing relays live or into mailboxes, and key directory notices.
//!
//! Every method is written against the [`crate::backend`] traits only, so the embedded and the
//! Redis deployments run the same code.

use crate::backend::{
    Backends, BusMessage, Delivery, DeviceEntry, NewItem, PushError, Quota, StoreError,
};
use crate::clock::Clock;
use crate::config::LimitsConfig;
use crate::metrics::Metrics;
use crate::outbox::{LocalConnections, Out, Outbox};
use axum::extract::ws::Utf8Bytes;
use dopus_proto::signaling::{
    DeliveryKind, ErrorCode, Limits, PresenceEntry, Refusal, Sender, ServerFrame, Status,
    deliver_json,
};
use dopus_types::{DeviceId, Timestamp, UserId};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a relay reached.
#[derive(Debug, Default)]
pub(crate) struct RelayReport {
    pub delivered: Vec<DeviceId>,
    pub queued: Vec<DeviceId>,
    pub refused: Vec<Refusal>,
}

/// Shared state of one server process.
#[derive(Debug)]
pub(crate) struct Hub {
    pub node: Arc<str>,
    pub server_id: String,
    pub backends: Backends,
    pub local: Arc<LocalConnections>,
    pub clock: Arc<dyn Clock>,
    pub limits: LimitsConfig,
    pub metrics: Arc<Metrics>,
    /// Issues TURN credentials at login when a relay is configured.
    pub turn: Option<Arc<crate::turn::TurnAuth>>,
    next_conn: AtomicU64,
}

impl Hub {
    pub(crate) fn new(
        node: Arc<str>,
        server_id: String,
        backends: Backends,
        local: Arc<LocalConnections>,
        clock: Arc<dyn Clock>,
        limits: LimitsConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            node,
            server_id,
            backends,
            local,
            clock,
            limits,
            metrics,
            turn: None,
            next_conn: AtomicU64::new(1),
        }
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The quota of `to`'s device mailboxes for items from `from`: the whole mailbox, and the
    /// share of it one sender may fill. Mutual contacts (and a user writing to itself) get the
    /// contact share, everyone else the smaller stranger share, so no single sender, least of
    /// all a stranger, can fill a mailbox and shut out everyone else.
    pub(crate) async fn quota(&self, from: UserId, to: UserId) -> Quota {
        let l = &self.limits;
        let mutual = from == to || self.mutual(from, to).await.unwrap_or(false);
        let percent = u64::from(if mutual {
            l.mailbox_contact_share_percent
        } else {
            l.mailbox_stranger_share_percent
        });
        let share = |total: u64| (total.saturating_mul(percent) / 100).max(1);
        Quota {
            max_items: l.mailbox_max_items,
            max_bytes: l.mailbox_max_bytes,
            sender_max_items: share(l.mailbox_max_items),
            sender_max_bytes: share(l.mailbox_max_bytes),
        }
    }

    /// Whether `a` and `b` list each other in their synced contact lists.
    async fn mutual(&self, a: UserId, b: UserId) -> Result<bool, StoreError> {
        let presence = &self.backends.presence;
        Ok(presence.listed_by(vec![a], b).await?.first() == Some(&true)
            && presence.listed_by(vec![b], a).await?.first() == Some(&true))
    }

    /// How long a contact list is kept after its last sync: as long as the mailbox items whose
    /// shares it decides.
    fn contacts_keep_ms(&self) -> u64 {
        u64::try_from(self.limits.mailbox_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// The limits as announced to clients.
    pub(crate) fn announced_limits(&self) -> Limits {
        let l = &self.limits;
        Limits {
            max_frame_bytes: l.max_frame_bytes as u64,
            max_payload_bytes: l.max_payload_bytes as u64,
            max_contacts: l.max_contacts as u64,
            max_ack_ids: l.max_ack_ids as u64,
            rate_per_sec: u64::from(l.rate_per_sec),
            rate_burst: u64::from(l.rate_burst),
            mailbox_max_items: l.mailbox_max_items,
            mailbox_max_bytes: l.mailbox_max_bytes,
            mailbox_ttl_secs: l.mailbox_ttl.as_secs(),
            one_time_keys_low_threshold: l.otk_low_threshold,
            mailbox_contact_share_percent: u64::from(l.mailbox_contact_share_percent),
            mailbox_stranger_share_percent: u64::from(l.mailbox_stranger_share_percent),
            max_devices_per_user: l.max_devices_per_user as u64,
        }
    }

    fn entry(&self, conn: u64, status: Status) -> DeviceEntry {
        DeviceEntry {
            status,
            node: self.node.clone(),
            conn,
        }
    }

    /// Registers a logged-in connection; an older connection of the same device is closed.
    pub(crate) async fn attach(
        &self,
        user: UserId,
        device: DeviceId,
        outbox: Arc<Outbox>,
    ) -> Result<u64, StoreError> {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = self.local.insert(&user, &device, conn, outbox) {
            old.push(Out::Close(ErrorCode::SessionReplaced));
        }
        let prev = self
            .backends
            .presence
            .attach(user, device.clone(), self.entry(conn, Status::Online))
            .await?;
        if let Some(prev) = prev
            && prev.node != self.node
        {
            let _ = self
                .backends
                .bus
                .deliver(
                    prev,
                    user,
                    device,
                    BusMessage::Close(ErrorCode::SessionReplaced),
                )
                .await;
        }
        self.broadcast_presence(user).await;
        Ok(conn)
    }

    /// Removes a connection and tells mutual contacts if the user's presence changed.
    pub(crate) async fn detach(&self, user: UserId, device: DeviceId, conn: u64) {
        self.local.remove(&user, &device, conn);
        match self
            .backends
            .presence
            .detach(user, device, conn, self.node.clone())
            .await
        {
            // The contact list stays (for mailbox shares) until `prune_contacts` drops it.
            Ok((true, _)) => self.broadcast_presence(user).await,
            Ok((false, _)) => {}
            Err(e) => tracing::warn!(error = %e, "presence detach failed"),
        }
    }

    /// Sets a device's status and tells mutual contacts.
    pub(crate) async fn set_status(
        &self,
        user: UserId,
        device: DeviceId,
        conn: u64,
        status: Status,
    ) -> Result<(), StoreError> {
        self.backends
            .presence
            .set_status(user, device, conn, self.node.clone(), status)
            .await?;
        self.broadcast_presence(user).await;
        Ok(())
    }

    /// What `user` looks like to its mutual contacts: the most present device, invisible as
    /// offline.
    pub(crate) async fn visible_status(&self, user: UserId) -> Result<Status, StoreError> {
        let devices = self.backends.presence.devices(user).await?;
        Ok(Status::most_present(devices.iter().map(|(_, e)| e.status)).as_seen_by_others())
    }

    async fn broadcast_presence(&self, user: UserId) {
        if let Err(e) = self.try_broadcast_presence(user).await {
            tracing::warn!(error = %e, "presence broadcast failed");
        }
    }

    async fn try_broadcast_presence(&self, user: UserId) -> Result<(), StoreError> {
        let contacts = self.backends.presence.contacts(user).await?;
        if contacts.is_empty() {
            return Ok(());
        }
        let status = self.visible_status(user).await?;
        let listed = self
            .backends
            .presence
            .listed_by(contacts.clone(), user)
            .await?;
        let frame: Utf8Bytes = ServerFrame::PresenceUpdate { user, status }
            .to_json()
            .into();
        for (contact, mutual) in contacts.into_iter().zip(listed) {
            if mutual {
                self.send_to_user(contact, BusMessage::Frame(frame.clone()))
                    .await;
            }
        }
        Ok(())
    }

    /// Replaces the user's contacts; returns the status of every mutual contact.
    pub(crate) async fn sync_contacts(
        &self,
        user: UserId,
        contacts: Vec<UserId>,
    ) -> Result<Vec<PresenceEntry>, StoreError> {
        let mut seen = HashSet::new();
        let contacts: Vec<UserId> = contacts
            .into_iter()
            .filter(|c| *c != user && seen.insert(*c))
            .collect();
        let old = self
            .backends
            .presence
            .set_contacts(user, contacts.clone(), self.now(), self.contacts_keep_ms())
            .await?;
        let listed = self
            .backends
            .presence
            .listed_by(contacts.clone(), user)
            .await?;
        let mine = self.visible_status(user).await?;
        let old_set: HashSet<UserId> = old.iter().copied().collect();
        let mut result = Vec::new();
        let mine_frame: Utf8Bytes = ServerFrame::PresenceUpdate { user, status: mine }
            .to_json()
            .into();
        for (contact, mutual) in contacts.iter().zip(listed) {
            if !mutual {
                continue;
            }
            result.push(PresenceEntry {
                user: *contact,
                status: self.visible_status(*contact).await?,
            });
            if !old_set.contains(contact) {
                self.send_to_user(*contact, BusMessage::Frame(mine_frame.clone()))
                    .await;
            }
        }
        let removed: Vec<UserId> = old.into_iter().filter(|c| !seen.contains(c)).collect();
        if !removed.is_empty() {
            let listed = self
                .backends
                .presence
                .listed_by(removed.clone(), user)
                .await?;
            let gone: Utf8Bytes = ServerFrame::PresenceUpdate {
                user,
                status: Status::Offline,
            }
            .to_json()
            .into();
            for (contact, mutual) in removed.into_iter().zip(listed) {
                if mutual {
                    self.send_to_user(contact, BusMessage::Frame(gone.clone()))
                        .await;
                }
            }
        }
        Ok(result)
    }

    /// Sends to every connected device of `user`, ignoring devices that cannot take it.
    pub(crate) async fn send_to_user(&self, user: UserId, msg: BusMessage) {
        let Ok(devices) = self.backends.presence.devices(user).await else {
            return;
        };
        for (device, entry) in devices {
            if matches!(msg, BusMessage::Frame(_)) {
                Metrics::inc(&self.metrics.presence_updates_total);
            }
            let _ = self
                .backends
                .bus
                .deliver(entry, user, device, msg.clone())
                .await;
        }
    }

    /// Sends to one device if it is connected.
    pub(crate) async fn send_to_device(
        &self,
        user: UserId,
        device: &DeviceId,
        msg: BusMessage,
    ) -> Delivery {
        let Ok(devices) = self.backends.presence.devices(user).await else {
            return Delivery::Gone;
        };
        match devices.into_iter().find(|(d, _)| d == device) {
            Some((d, entry)) => self
                .backends
                .bus
                .deliver(entry, user, d, msg)
                .await
                .unwrap_or(Delivery::Gone),
            None => Delivery::Gone,
        }
    }

    /// Routes a relay: live to connected devices, into the mailbox of offline
    /// ones when `store`.
    pub(crate) async fn route(
        &self,
        from: &Sender,
        to: UserId,
        to_device: Option<DeviceId>,
        kind: DeliveryKind,
        payload: &str,
        store: bool,
    ) -> Result<RelayReport, ErrorCode> {
        let internal = |e: StoreError| {
            tracing::warn!(error = %e, "routing failed");
            ErrorCode::InternalError
        };
        // A device that said `offline` is about to leave: it gets storable frames through its
        // mailbox (with an ack) and nothing else.
        let mut online = self.backends.presence.devices(to).await.map_err(internal)?;
        online.retain(|(_, e)| e.status != Status::Offline);
        let mut targets: Vec<DeviceId> = online.iter().map(|(d, _)| d.clone()).collect();
        if store {
            for d in self
                .backends
                .mailbox
                .known_devices(to)
                .await
                .map_err(internal)?
            {
                if !targets.contains(&d) {
                    targets.push(d);
                }
            }
        }
        // A user writing to itself reaches its other devices, never the sending one.
        if to == from.user {
            targets.retain(|d| *d != from.device);
        }
        if let Some(only) = to_device {
            if !targets.contains(&only) {
                return Err(if store {
                    ErrorCode::UnknownDevice
                } else {
                    ErrorCode::RecipientOffline
                });
            }
            targets = vec![only];
        }
        if targets.is_empty() {
            return Err(if store {
                ErrorCode::UnknownRecipient
            } else {
                ErrorCode::RecipientOffline
            });
        }
        let now = self.now();
        // Serialized once for every target device; the payload is copied into it once.
        let live: Utf8Bytes = deliver_json(kind, from, payload, now, None).into();
        let mut report = RelayReport::default();
        // Asked once per relay, and only when something goes to a mailbox.
        let mut quota = None;
        for device in targets {
            let entry = online.iter().find(|(d, _)| *d == device).map(|(_, e)| e);
            if let Some(entry) = entry {
                let delivery = self
                    .backends
                    .bus
                    .deliver(
                        entry.clone(),
                        to,
                        device.clone(),
                        BusMessage::Frame(live.clone()),
                    )
                    .await
                    .unwrap_or(Delivery::Gone);
                match delivery {
                    Delivery::Delivered => {
                        Metrics::inc(&self.metrics.relayed_total);
                        report.delivered.push(device);
                        continue;
                    }
                    Delivery::Busy if !store => {
                        report.refused.push(Refusal {
                            device,
                            code: ErrorCode::RecipientBusy,
                        });
                        continue;
                    }
                    Delivery::Gone if !store => {
                        report.refused.push(Refusal {
                            device,
                            code: ErrorCode::RecipientOffline,
                        });
                        continue;
                    }
                    // Storable and not taken live: queue it, the device fetches it on a poke or
                    // at its next login.
                    Delivery::Busy | Delivery::Gone => {}
                }
            }
            let item = NewItem {
                kind,
                from: from.clone(),
                payload: payload.to_owned(),
                sent_at: now,
                expires_at: now.plus_millis(
                    u64::try_from(self.limits.mailbox_ttl.as_millis()).unwrap_or(u64::MAX),
                ),
            };
            let q = match quota {
                Some(q) => q,
                None => *quota.insert(self.quota(from.user, to).await),
            };
            match self
                .backends
                .mailbox
                .push(to, device.clone(), item, q, now)
                .await
            {
                Ok(_) => {
                    Metrics::inc(&self.metrics.mailbox_stored_total);
                    // The device may have logged in between our presence read and the commit;
                    // a poke makes it look again, so nothing waits for its next login.
                    self.send_to_device(to, &device, BusMessage::Poke).await;
                    report.queued.push(device);
                }
                Err(PushError::Full) => report.refused.push(Refusal {
                    device,
                    code: ErrorCode::MailboxFull,
                }),
                Err(PushError::Store(e)) => {
                    tracing::warn!(error = %e, "mailbox push failed");
                    report.refused.push(Refusal {
                        device,
                        code: ErrorCode::InternalError,
                    });
                }
            }
        }
        if report.delivered.is_empty() && report.queued.is_empty() {
            let code = report
                .refused
                .first()
                .map(|r| r.code)
                .unwrap_or(ErrorCode::RecipientOffline);
            return Err(code);
        }
        Ok(report)
    }

    /// Tells the owners of claimed bundles whose one-time keys run low.
    pub(crate) async fn notify_low_keys(&self, user: UserId, device: &DeviceId, remaining: u64) {
        let threshold = self.limits.otk_low_threshold;
        if remaining >= threshold {
            return;
        }
        let frame: Utf8Bytes = ServerFrame::OneTimeKeysLow {
            remaining,
            threshold,
        }
        .to_json()
        .into();
        self.send_to_device(user, device, BusMessage::Frame(frame))
            .await;
    }
}
