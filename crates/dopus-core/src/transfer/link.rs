//! One blob channel (`dopus-blob/1`), both ways: our requests to the peer and the peer's
//! requests to us.
//!
//! Protocol flow:
//! - [`Link::new`] queues our `Hello`; the peer's arrives as [`LinkEvent::Ready`];
//! - as a requester: [`Link::request`] sends a `Get` under a fresh wire request id and
//!   remembers which download and request it belongs to; the answer's `Data` frames come back
//!   as [`LinkEvent::Data`] addressed to that [`TransferRef`], a refusal as
//!   [`LinkEvent::Refused`]; [`Link::cancel`] sends `Cancel` and forgets the id, so late data is
//!   dropped as [`LinkEvent::Stale`];
//! - as a provider: a `Get` is served only if the [`Offers`] for this peer name the blob, it
//!   has not changed, the groups are ones we hold, the request is not larger than
//!   [`LinkConfig::max_request_groups`] and fewer than [`LinkConfig::max_requests`] are being
//!   served; then it becomes a [`LinkOutput::Serve`] job for the I/O half, else an `Error`
//!   frame. "Not offered" and "unknown" get the same answer. `Ask` is answered with `Have`;
//! - a frame that does not decode closes only the request it names: ours becomes
//!   [`LinkEvent::Malformed`] for its download (which drops the holder), the peer's gets an
//!   `Error`; a frame that names no request is counted and ignored.

use super::planner::RequestKey;
use crate::store::TransferId;
use dopus_proto::transfer::{
    BLOB_PROTOCOL_VERSION, BlobErrorCode, BlobFrame, BlobFrameError, GroupSet, MAX_BLOB_MESSAGE,
    RequestId,
};
use dopus_types::BlobHash;
use std::collections::{BTreeMap, VecDeque};

/// Which download and which of its requests an answer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TransferRef {
    /// The download.
    pub transfer: TransferId,
    /// Its request.
    pub key: RequestKey,
}

/// What we serve of one blob to the peer at the other end of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// Groups in the blob.
    pub total_groups: u64,
    /// The groups we hold verified and serve (all of them for a complete blob).
    pub groups: GroupSet,
    /// The source file changed since it was announced: serve nothing, say so.
    pub changed: bool,
}

/// The blobs this node serves to one peer: those announced to it directly or in a channel it
/// is a member of. The runtime implements it over the store.
pub trait Offers {
    /// What we serve of `blob` to this link's peer, or `None` if it was never offered to them.
    fn offer(&self, blob: &BlobHash) -> Option<Offer>;
}

/// Limits of one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// The largest message we accept (announced in our hello).
    pub max_message: usize,
    /// Requests from the peer being served at once; more get `Busy`.
    pub max_requests: usize,
    /// Most groups in one request we serve (4 MiB): bounds what the I/O half holds per request.
    pub max_request_groups: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            max_message: MAX_BLOB_MESSAGE,
            max_requests: 16,
            max_request_groups: 256,
        }
    }
}

/// A request of the peer's that the I/O half should answer: the bao encoding of these groups
/// of this blob, as `Data` frames of at most [`Link::max_message`] bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeJob {
    /// The peer's request id (every data frame carries it).
    pub req: RequestId,
    /// The blob.
    pub blob: BlobHash,
    /// The groups.
    pub groups: GroupSet,
}

/// What the runtime must do for a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkOutput {
    /// Send this message on the blob channel.
    Send(Vec<u8>),
    /// Answer this request (its data frames go after any `Send` queued before it).
    Serve(ServeJob),
    /// Stop answering this request: the peer cancelled it.
    StopServing(RequestId),
}

/// What one incoming message meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent<'a> {
    /// Nothing for anyone else (a request we serve, a hello we already had, an ask answered).
    Handled,
    /// The peer's hello: the link is usable; messages are at most [`Link::max_message`].
    Ready,
    /// The peer speaks another version of the blob protocol: close the channel.
    Incompatible {
        /// The version it announced.
        version: u16,
    },
    /// The peer holds these groups of a blob (answer to an ask, or news).
    Have {
        /// The blob.
        blob: BlobHash,
        /// The groups.
        groups: GroupSet,
    },
    /// Bytes of the answer to one of our requests, for its decoder.
    Data {
        /// Whose request.
        to: TransferRef,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// The peer refused one of our requests, or gave up on it.
    Refused {
        /// Whose request.
        to: TransferRef,
        /// Why.
        code: BlobErrorCode,
    },
    /// A malformed frame named one of our requests: that request is dead, and the holder
    /// should be dropped from its download. The mapping is forgotten.
    Malformed {
        /// Whose request.
        to: TransferRef,
        /// What was wrong.
        error: BlobFrameError,
    },
    /// A frame for a request we no longer wait for (cancelled): ignore it.
    Stale,
    /// A malformed frame that names no request of ours: ignored (counted).
    Ignored {
        /// What was wrong.
        error: BlobFrameError,
    },
}

/// One blob channel (see the module docs).
#[derive(Debug)]
pub struct Link {
    config: LinkConfig,
    peer_max_message: Option<usize>,
    next_req: u32,
    ours: BTreeMap<RequestId, TransferRef>,
    theirs: BTreeMap<RequestId, BlobHash>,
    ignored: u64,
    out: VecDeque<LinkOutput>,
}

impl Link {
    /// A link whose channel just opened; our hello is the first output.
    pub fn new(config: LinkConfig) -> Self {
        let mut link = Self {
            config,
            peer_max_message: None,
            next_req: 0,
            ours: BTreeMap::new(),
            theirs: BTreeMap::new(),
            ignored: 0,
            out: VecDeque::new(),
        };
        link.send(&BlobFrame::Hello {
            version: BLOB_PROTOCOL_VERSION,
            max_message: u32::try_from(config.max_message).unwrap_or(u32::MAX),
        });
        link
    }

    /// Whether the peer's hello arrived.
    pub fn ready(&self) -> bool {
        self.peer_max_message.is_some()
    }

    /// The largest message to send: the smaller of ours and the peer's (64 KiB until its hello).
    pub fn max_message(&self) -> usize {
        self.peer_max_message
            .unwrap_or(MAX_BLOB_MESSAGE)
            .min(self.config.max_message)
            .min(MAX_BLOB_MESSAGE)
    }

    /// Malformed frames ignored so far.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Requests of ours in flight.
    pub fn requests_in_flight(&self) -> usize {
        self.ours.len()
    }

    /// Requests of the peer's being served.
    pub fn serving(&self) -> usize {
        self.theirs.len()
    }

    fn send(&mut self, frame: &BlobFrame<'_>) {
        // Frames built here are valid by construction (non-empty ranges, small); one that is
        // not is a bug we would rather drop than send.
        if let Ok(bytes) = frame.encode() {
            self.out.push_back(LinkOutput::Send(bytes));
        }
    }

    fn refuse(&mut self, req: RequestId, code: BlobErrorCode) {
        self.send(&BlobFrame::Error { req, code });
    }

    /// Asks the peer which groups of `blob` it holds.
    pub fn ask(&mut self, blob: BlobHash) {
        self.send(&BlobFrame::Ask { blob });
    }

    /// Tells the peer we hold `groups` of `blob` (and will serve them).
    pub fn advertise(&mut self, blob: BlobHash, groups: GroupSet) {
        self.send(&BlobFrame::Have { blob, groups });
    }

    /// Sends a `Get` for a download's request; returns the wire id. Empty `groups` send
    /// nothing.
    pub fn request(
        &mut self,
        to: TransferRef,
        blob: BlobHash,
        groups: GroupSet,
    ) -> Option<RequestId> {
        if groups.is_empty() {
            return None;
        }
        let mut req = RequestId(self.next_req);
        while self.ours.contains_key(&req) {
            req = RequestId(req.0.wrapping_add(1));
        }
        self.next_req = req.0.wrapping_add(1);
        self.ours.insert(req, to);
        self.send(&BlobFrame::Get { req, blob, groups });
        Some(req)
    }

    /// Cancels a download's request (if it is in flight here).
    pub fn cancel(&mut self, to: TransferRef) {
        let reqs: Vec<RequestId> = self
            .ours
            .iter()
            .filter(|(_, r)| **r == to)
            .map(|(id, _)| *id)
            .collect();
        for req in reqs {
            self.ours.remove(&req);
            self.send(&BlobFrame::Cancel { req });
        }
    }

    /// Our request `to` got its whole answer: forget its id.
    pub fn request_done(&mut self, to: TransferRef) {
        self.ours.retain(|_, r| *r != to);
    }

    /// The I/O half finished sending the answer to the peer's `req`.
    pub fn served(&mut self, req: RequestId) {
        self.theirs.remove(&req);
    }

    /// The I/O half could not answer the peer's `req` (the source changed, a read failed).
    pub fn serve_failed(&mut self, req: RequestId, code: BlobErrorCode) {
        if self.theirs.remove(&req).is_some() {
            self.refuse(req, code);
        }
    }

    /// The link is closing: every request of ours it carried, so their downloads can be told.
    pub fn close(&mut self) -> Vec<TransferRef> {
        self.theirs.clear();
        std::mem::take(&mut self.ours).into_values().collect()
    }

    /// Handles one message from the peer.
    pub fn handle_message<'a>(&mut self, message: &'a [u8], offers: &dyn Offers) -> LinkEvent<'a> {
        let frame = match BlobFrame::decode(message) {
            Ok(f) => f,
            Err(error) => return self.malformed(message, error),
        };
        match frame {
            BlobFrame::Hello {
                version,
                max_message,
            } => {
                if version != BLOB_PROTOCOL_VERSION {
                    return LinkEvent::Incompatible { version };
                }
                if self.peer_max_message.is_some() {
                    return LinkEvent::Handled;
                }
                self.peer_max_message = Some(usize::try_from(max_message).unwrap_or(usize::MAX));
                LinkEvent::Ready
            }
            BlobFrame::Ask { blob } => {
                let groups = match offers.offer(&blob) {
                    Some(o) if !o.changed => o.groups,
                    _ => GroupSet::new(),
                };
                self.advertise(blob, groups);
                LinkEvent::Handled
            }
            BlobFrame::Have { blob, groups } => LinkEvent::Have { blob, groups },
            BlobFrame::Get { req, blob, groups } => {
                self.handle_get(req, blob, groups, offers);
                LinkEvent::Handled
            }
            BlobFrame::Cancel { req } => {
                if self.theirs.remove(&req).is_some() {
                    self.out.push_back(LinkOutput::StopServing(req));
                }
                LinkEvent::Handled
            }
            BlobFrame::Data { req, bytes } => match self.ours.get(&req) {
                Some(to) => LinkEvent::Data { to: *to, bytes },
                None => LinkEvent::Stale,
            },
            BlobFrame::Error { req, code } => match self.ours.remove(&req) {
                Some(to) => LinkEvent::Refused { to, code },
                None => LinkEvent::Stale,
            },
        }
    }

    fn handle_get(
        &mut self,
        req: RequestId,
        blob: BlobHash,
        groups: GroupSet,
        offers: &dyn Offers,
    ) {
        if self.theirs.contains_key(&req) {
            // The peer reused an id still in flight: refuse the new one, keep serving the old.
            self.refuse(req, BlobErrorCode::BadRequest);
            return;
        }
        if self.theirs.len() >= self.config.max_requests {
            self.refuse(req, BlobErrorCode::Busy);
            return;
        }
        let Some(offer) = offers.offer(&blob) else {
            self.refuse(req, BlobErrorCode::NotFound);
            return;
        };
        if offer.changed {
            self.refuse(req, BlobErrorCode::SourceChanged);
            return;
        }
        let inside = groups.end().is_some_and(|end| end <= offer.total_groups);
        let held = groups.difference(&offer.groups).is_empty();
        if !inside || groups.count() > self.config.max_request_groups {
            self.refuse(req, BlobErrorCode::BadRequest);
            return;
        }
        if !held {
            self.refuse(req, BlobErrorCode::NotFound);
            return;
        }
        self.theirs.insert(req, blob);
        self.out
            .push_back(LinkOutput::Serve(ServeJob { req, blob, groups }));
    }

    fn malformed<'a>(&mut self, message: &[u8], error: BlobFrameError) -> LinkEvent<'a> {
        let Some(req) = BlobFrame::peek_request(message) else {
            self.ignored += 1;
            return LinkEvent::Ignored { error };
        };
        // A Get or Cancel is the peer's own request; Data and Error answer ours.
        let theirs = matches!(message.first(), Some(0x04 | 0x05));
        if theirs {
            if self.theirs.remove(&req).is_some() {
                self.out.push_back(LinkOutput::StopServing(req));
            }
            self.refuse(req, BlobErrorCode::BadRequest);
            self.ignored += 1;
            return LinkEvent::Ignored { error };
        }
        match self.ours.remove(&req) {
            Some(to) => LinkEvent::Malformed { to, error },
            None => {
                self.ignored += 1;
                LinkEvent::Ignored { error }
            }
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<LinkOutput> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    struct Shelf(BTreeMap<BlobHash, Offer>);

    impl Offers for Shelf {
        fn offer(&self, blob: &BlobHash) -> Option<Offer> {
            self.0.get(blob).cloned()
        }
    }

    fn blob(n: u8) -> BlobHash {
        BlobHash::from_bytes([n; 32])
    }

    fn shelf() -> Shelf {
        let mut m = BTreeMap::new();
        m.insert(
            blob(1),
            Offer {
                total_groups: 1000,
                groups: GroupSet::from_range(0..1000),
                changed: false,
            },
        );
        m.insert(
            blob(2),
            Offer {
                total_groups: 1000,
                groups: GroupSet::from_range(0..500),
                changed: false,
            },
        );
        m.insert(
            blob(3),
            Offer {
                total_groups: 10,
                groups: GroupSet::from_range(0..10),
                changed: true,
            },
        );
        Shelf(m)
    }

    fn drain(link: &mut Link) -> Vec<LinkOutput> {
        std::iter::from_fn(|| link.poll_output()).collect()
    }

    fn sent_frames(outputs: &[LinkOutput]) -> Vec<BlobFrame<'_>> {
        outputs
            .iter()
            .filter_map(|o| match o {
                LinkOutput::Send(b) => Some(BlobFrame::decode(b).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn get(req: u32, b: u8, groups: GroupSet) -> Vec<u8> {
        BlobFrame::Get {
            req: RequestId(req),
            blob: blob(b),
            groups,
        }
        .encode()
        .unwrap()
    }

    fn to(n: u64) -> TransferRef {
        TransferRef {
            transfer: TransferId(Uuid::from_u128(1)),
            key: RequestKey(n),
        }
    }

    #[test]
    fn hello_first_then_ready() {
        let mut link = Link::new(LinkConfig::default());
        let out = drain(&mut link);
        assert_eq!(
            sent_frames(&out),
            [BlobFrame::Hello {
                version: 1,
                max_message: 65536
            }]
        );
        let hello = BlobFrame::Hello {
            version: 1,
            max_message: 16384,
        }
        .encode()
        .unwrap();
        assert_eq!(link.handle_message(&hello, &shelf()), LinkEvent::Ready);
        assert_eq!(link.max_message(), 16384);
        let v2 = BlobFrame::Hello {
            version: 2,
            max_message: 16384,
        }
        .encode()
        .unwrap();
        assert_eq!(
            link.handle_message(&v2, &shelf()),
            LinkEvent::Incompatible { version: 2 }
        );
    }

    #[test]
    fn serves_only_what_was_offered() {
        let mut link = Link::new(LinkConfig::default());
        drain(&mut link);
        let shelf = shelf();
        let cases = [
            (get(1, 1, GroupSet::from_range(0..64)), None),
            (
                get(2, 9, GroupSet::from_range(0..1)),
                Some(BlobErrorCode::NotFound),
            ),
            (
                get(3, 2, GroupSet::from_range(490..510)),
                Some(BlobErrorCode::NotFound),
            ),
            (
                get(4, 3, GroupSet::from_range(0..1)),
                Some(BlobErrorCode::SourceChanged),
            ),
            (
                get(5, 1, GroupSet::from_range(990..1001)),
                Some(BlobErrorCode::BadRequest),
            ),
            (
                get(6, 1, GroupSet::from_range(0..257)),
                Some(BlobErrorCode::BadRequest),
            ),
            (
                get(1, 1, GroupSet::from_range(0..1)),
                Some(BlobErrorCode::BadRequest),
            ),
        ];
        for (msg, refusal) in cases {
            let req = BlobFrame::peek_request(&msg).unwrap();
            assert_eq!(link.handle_message(&msg, &shelf), LinkEvent::Handled);
            let out = drain(&mut link);
            match refusal {
                None => assert!(
                    matches!(&out[..], [LinkOutput::Serve(j)] if j.req == req && j.blob == blob(1))
                ),
                Some(code) => assert_eq!(sent_frames(&out), [BlobFrame::Error { req, code }]),
            }
        }
        assert_eq!(link.serving(), 1);
        // Cancel stops the job; an unknown cancel does nothing.
        let cancel = BlobFrame::Cancel { req: RequestId(1) }.encode().unwrap();
        link.handle_message(&cancel, &shelf);
        assert_eq!(drain(&mut link), [LinkOutput::StopServing(RequestId(1))]);
        link.handle_message(&cancel, &shelf);
        assert!(drain(&mut link).is_empty());
    }

    #[test]
    fn too_many_requests_are_busy() {
        let mut link = Link::new(LinkConfig {
            max_requests: 2,
            ..LinkConfig::default()
        });
        drain(&mut link);
        for req in 0..3 {
            link.handle_message(&get(req, 1, GroupSet::from_range(0..1)), &shelf());
        }
        let out = drain(&mut link);
        assert_eq!(out.len(), 3);
        assert_eq!(
            sent_frames(&out),
            [BlobFrame::Error {
                req: RequestId(2),
                code: BlobErrorCode::Busy
            }]
        );
        link.served(RequestId(0));
        link.handle_message(&get(3, 1, GroupSet::from_range(0..1)), &shelf());
        assert!(matches!(&drain(&mut link)[..], [LinkOutput::Serve(_)]));
    }

    #[test]
    fn ask_is_answered_with_have_and_nothing_for_strangers() {
        let mut link = Link::new(LinkConfig::default());
        drain(&mut link);
        for (b, want) in [
            (2, GroupSet::from_range(0..500)),
            (9, GroupSet::new()),
            (3, GroupSet::new()),
        ] {
            let ask = BlobFrame::Ask { blob: blob(b) }.encode().unwrap();
            link.handle_message(&ask, &shelf());
            assert_eq!(
                sent_frames(&drain(&mut link)),
                [BlobFrame::Have {
                    blob: blob(b),
                    groups: want
                }]
            );
        }
    }

    #[test]
    fn answers_are_routed_to_their_download_and_late_ones_dropped() {
        let mut link = Link::new(LinkConfig::default());
        drain(&mut link);
        let a = link
            .request(to(1), blob(1), GroupSet::from_range(0..4))
            .unwrap();
        let b = link
            .request(to(2), blob(1), GroupSet::from_range(4..8))
            .unwrap();
        assert_ne!(a, b);
        assert_eq!(link.requests_in_flight(), 2);
        let data = BlobFrame::Data {
            req: a,
            bytes: b"xyz",
        }
        .encode()
        .unwrap();
        assert_eq!(
            link.handle_message(&data, &shelf()),
            LinkEvent::Data {
                to: to(1),
                bytes: b"xyz"
            }
        );
        let err = BlobFrame::Error {
            req: b,
            code: BlobErrorCode::Busy,
        }
        .encode()
        .unwrap();
        assert_eq!(
            link.handle_message(&err, &shelf()),
            LinkEvent::Refused {
                to: to(2),
                code: BlobErrorCode::Busy
            }
        );
        link.cancel(to(1));
        let out = drain(&mut link);
        assert_eq!(
            sent_frames(&out).last(),
            Some(&BlobFrame::Cancel { req: a })
        );
        assert_eq!(link.handle_message(&data, &shelf()), LinkEvent::Stale);
    }

    #[test]
    fn a_malformed_frame_closes_only_its_request() {
        let mut link = Link::new(LinkConfig::default());
        drain(&mut link);
        let a = link
            .request(to(1), blob(1), GroupSet::from_range(0..4))
            .unwrap();
        let b = link
            .request(to(2), blob(1), GroupSet::from_range(4..8))
            .unwrap();
        // An empty data frame for `a`.
        let mut bad = vec![0x06];
        bad.extend_from_slice(&a.0.to_be_bytes());
        assert!(matches!(
            link.handle_message(&bad, &shelf()),
            LinkEvent::Malformed { to: t, .. } if t == to(1)
        ));
        let data = BlobFrame::Data {
            req: b,
            bytes: b"ok",
        }
        .encode()
        .unwrap();
        assert!(matches!(
            link.handle_message(&data, &shelf()),
            LinkEvent::Data { .. }
        ));
        // A broken Get from the peer is refused by id; garbage is ignored.
        let mut broken_get = get(77, 1, GroupSet::from_range(0..1));
        broken_get.push(0);
        assert!(matches!(
            link.handle_message(&broken_get, &shelf()),
            LinkEvent::Ignored { .. }
        ));
        drain(&mut link);
        assert!(matches!(
            link.handle_message(&[0xee, 1, 2], &shelf()),
            LinkEvent::Ignored { .. }
        ));
        assert_eq!(link.ignored(), 2);
        assert_eq!(link.close(), vec![to(2)]);
    }
}
