//! Voice channel media at the edge: one task while we are in a voice channel, attached to the
//! connection with every peer of the mesh the machine asks for ([`VoiceRequest`]). Our source
//! is read once and each frame is written to every peer that is ready (fan-out, no decoding);
//! each peer's frames go to a sink of its own (one recording file per participant).
//!
//! ```text
//!             actor ── VoiceRequest::Session{send, peers} ──> voice task
//!                                                        │  source ──┬──> AudioSender(peer 1)
//!  connection(peer 1) ── MediaEvent ─> forwarder ─┐      │           └──> AudioSender(peer 2)
//!  connection(peer 2) ── MediaEvent ─> forwarder ─┴─────>│  sink(peer 1), sink(peer 2)
//! ```
//!
//! What the machine decided is applied here: a peer without `speak` (or all of them while we
//! are deafened) has its frames dropped and counted; while we are muted (or may not speak) the
//! source keeps time but nothing is sent. Packets never pass through the actor.
//!
//! The browser leg (docs/media.md, "Voice channels in the browser"): the page's loopback
//! connection is a second, live source and a set of sinks. What the browser captures goes to
//! every ready peer with its RFC 6464 level; each remote participant is given a down slot (one
//! receive m-line of the page) while they are in the mesh, and their frames go down on it with
//! their level, so the page plays each participant on its own `<audio>` element and reads who
//! speaks without decoding anything.
//!
//! ```text
//!  browser ──LegEvent::Frame{level}──> voice task ──send_with_level──> peer 1, peer 2
//!  browser <──send_down_to(slot, level)── voice task <── peer 1 (slot 0), peer 2 (slot 1)
//! ```

use super::calls::{AskHandle, FileSink, MediaSink, MediaSource};
use dopus_core::machine::{VoicePeer, VoiceRequest};
use dopus_rtc::{AudioSender, BrowserLegHandle, LegEvent, MediaEvent, PeerHandle};
use dopus_types::{ChannelId, SpaceId, UserId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long after its last frame (or its last loud frame, when frames carry levels) a
/// participant still shows as speaking.
pub const SPEAKING_MS: u64 = 300;
/// A frame at or above this RFC 6464 level (dBov) is "loud" (someone speaks).
pub const SPEAKING_DBOV: i8 = dopus_rtc::VOICE_ACTIVITY_DBOV;
/// The answering side of a connection waits this long after `Ready` before sending to that
/// peer, so the offerer has applied the answer when the first frames arrive (as in calls).
const ANSWERER_HOLD: Duration = Duration::from_millis(500);
/// The offering side waits this long, so the far side's voice task (which attaches within a
/// [`TICK`] of the connection appearing) is attached when the first frames arrive: str0m
/// hands frames to no one before that, and they would be lost.
const OFFERER_HOLD: Duration = Duration::from_millis(300);
/// How often the task tries to attach to peers it is not attached to yet.
const TICK: Duration = Duration::from_millis(100);

/// One remote participant's media, as the API shows it.
#[derive(Debug, Clone, Default)]
pub struct PeerMedia {
    /// Attached to its connection.
    pub attached: bool,
    /// The audio m-line is negotiated with it.
    pub ready: bool,
    /// Frames sent to it.
    pub sent: u64,
    /// Frames received from it and kept (recorded, or counted without a recording).
    pub received: u64,
    /// Frames received and dropped (it may not speak, or we are deafened).
    pub dropped: u64,
    /// Its recording.
    pub record_path: Option<String>,
    /// When its last kept frame arrived.
    pub last_frame: Option<Instant>,
    /// The RFC 6464 level of its last kept frame (dBov, −127 to 0), if its frames carry one.
    pub level: Option<i8>,
    /// Its frames carry levels (a browser); a headless source's do not.
    pub levels: bool,
    /// When its last loud frame (at or above [`SPEAKING_DBOV`]) arrived.
    pub last_loud: Option<Instant>,
}

/// Our voice media, as the API shows it.
#[derive(Debug, Clone, Default)]
pub struct VoiceMediaStatus {
    /// The task runs (we are in a channel).
    pub running: bool,
    /// Frames the source has played (sent or not).
    pub played: u64,
    /// Frames the source holds.
    pub play_total: Option<u64>,
    /// The source has played out.
    pub play_done: bool,
    /// When our last frame was sent to at least one peer.
    pub last_sent: Option<Instant>,
    /// The recordings are closed.
    pub record_done: bool,
    /// The last media error.
    pub error: Option<String>,
    /// Per remote participant.
    pub peers: BTreeMap<UserId, PeerMedia>,
    /// The browser leg, while the page has one.
    pub browser: Option<BrowserStatus>,
    /// Our browser's frames carry levels.
    pub self_levels: bool,
    /// When our last loud frame was sent.
    pub self_last_loud: Option<Instant>,
}

/// The browser leg of our voice media.
#[derive(Debug, Clone)]
pub struct BrowserStatus {
    /// Drives the leg (its counters for the API).
    pub leg: BrowserLegHandle,
    /// Each down slot's media id and who it carries now.
    pub slots: Vec<(String, Option<UserId>)>,
}

fn within(t: Option<Instant>, ms: u64) -> bool {
    t.is_some_and(|t| t.elapsed() < Duration::from_millis(ms))
}

impl VoiceMediaStatus {
    /// Whether `user` speaks: a loud frame within [`SPEAKING_MS`] when their frames carry
    /// levels, else any frame we kept within it (a headless source has no levels).
    pub fn speaking(&self, user: &UserId) -> bool {
        self.peers.get(user).is_some_and(|p| {
            if p.levels {
                within(p.last_loud, SPEAKING_MS)
            } else {
                within(p.last_frame, SPEAKING_MS)
            }
        })
    }

    /// Whether we speak: as [`VoiceMediaStatus::speaking`], for what we sent.
    pub fn self_speaking(&self) -> bool {
        if self.self_levels {
            within(self.self_last_loud, SPEAKING_MS)
        } else {
            within(self.last_sent, SPEAKING_MS)
        }
    }
}

/// Where recordings go: `<dir>/<stem>-<user id>.opus` per participant (`-<n>` added when a
/// participant leaves and comes back).
#[derive(Debug, Clone)]
pub struct RecordTo {
    dir: PathBuf,
    stem: String,
}

impl RecordTo {
    /// From the path the user gave (`out.opus` records `out-<user id>.opus` beside it).
    pub fn from_path(path: &std::path::Path) -> Result<Self, String> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .ok_or("the recording path has no directory")?
            .to_path_buf();
        if !dir.is_dir() {
            return Err("the recording directory does not exist".into());
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .ok_or("the recording path has no file name")?
            .to_owned();
        Ok(Self { dir, stem })
    }

    /// The file for `user`'s `n`th stay in the channel (from 0).
    pub fn path_for(&self, user: &UserId, n: u32) -> PathBuf {
        let name = if n == 0 {
            format!("{}-{user}.opus", self.stem)
        } else {
            format!("{}-{user}-{n}.opus", self.stem)
        };
        self.dir.join(name)
    }
}

/// A browser leg opened by the API, not yet taken by the task.
struct PendingBrowser {
    channel: ChannelId,
    handle: BrowserLegHandle,
    events: mpsc::Receiver<LegEvent>,
    slots: Vec<String>,
}

#[derive(Default)]
struct Shared {
    /// The channel the source and recordings below are for (a task serving another channel,
    /// still finishing, leaves them alone).
    media_for: Option<ChannelId>,
    source: Option<Box<dyn MediaSource>>,
    record: Option<RecordTo>,
    /// Start playing once this many peers can be sent to.
    wait_for: usize,
    /// A browser leg the UI opened, for the task serving `media_for` to take.
    browser: Option<PendingBrowser>,
    status: VoiceMediaStatus,
    updates: Option<mpsc::UnboundedSender<VoiceRequest>>,
    stop: Option<oneshot::Sender<()>>,
    /// The channel the task serves.
    serving: Option<(SpaceId, ChannelId)>,
    /// Bumped for each task: a stopped task that is still finishing leaves the next one's
    /// status alone.
    generation: u64,
}

/// Our voice media: set up by the API (play, record), driven by the actor, read by views.
#[derive(Default, Clone)]
pub struct VoiceMedia {
    inner: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for VoiceMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceMedia").finish_non_exhaustive()
    }
}

impl VoiceMedia {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the API shows.
    pub fn status(&self) -> VoiceMediaStatus {
        self.lock().status.clone()
    }

    /// Plays `source` into the channel we are joining (starting once `wait_for` peers can be
    /// sent to), and records every participant as `record` says.
    pub fn set_media(
        &self,
        channel: ChannelId,
        source: Option<Box<dyn MediaSource>>,
        record: Option<RecordTo>,
        wait_for: usize,
    ) {
        let mut s = self.lock();
        s.media_for = Some(channel);
        // The last session's counters are not this one's.
        s.status.peers.clear();
        s.status.error = None;
        s.status.last_sent = None;
        s.status.play_total = source.as_ref().map(|x| x.total());
        s.status.played = 0;
        s.status.play_done = false;
        s.status.self_levels = false;
        s.status.self_last_loud = None;
        s.source = source;
        s.record = record;
        s.wait_for = wait_for.max(1);
    }

    /// Plugs the page's browser leg into the voice media of `channel` (the channel we are in):
    /// it replaces an earlier leg (a reloaded page), whose leg is closed.
    pub fn set_browser(&self, channel: ChannelId, opened: dopus_rtc::OpenedLeg) {
        let mut s = self.lock();
        if let Some(old) = s.browser.take() {
            old.handle.close();
        }
        s.browser = Some(PendingBrowser {
            channel,
            handle: opened.handle,
            events: opened.events,
            slots: opened.slots,
        });
    }

    /// What the machine asks: keep a mesh, or stop.
    pub(crate) fn request(&self, rt: &tokio::runtime::Handle, ask: &AskHandle, req: VoiceRequest) {
        let mut s = self.lock();
        match req {
            VoiceRequest::Session { space, channel, .. } => {
                if s.serving != Some((space, channel))
                    && let Some(stop) = s.stop.take()
                {
                    let _ = stop.send(());
                }
                if s.stop.is_none() {
                    let (stop_tx, stop_rx) = oneshot::channel();
                    let (tx, rx) = mpsc::unbounded_channel();
                    s.stop = Some(stop_tx);
                    s.updates = Some(tx);
                    s.serving = Some((space, channel));
                    s.generation += 1;
                    s.status.running = true;
                    s.status.record_done = false;
                    s.status.error = None;
                    s.status.last_sent = None;
                    s.status.peers.clear();
                    let task = VoiceTask {
                        channel,
                        generation: s.generation,
                        shared: self.clone(),
                        ask: ask.clone(),
                        peers: BTreeMap::new(),
                        send: false,
                        source: None,
                        record: None,
                        stays: BTreeMap::new(),
                        started: None,
                        browser: None,
                    };
                    rt.spawn(task.run(rx, stop_rx));
                }
                if let Some(tx) = &s.updates {
                    let _ = tx.send(req);
                }
            }
            VoiceRequest::Stop => {
                if let Some(stop) = s.stop.take() {
                    let _ = stop.send(());
                }
                // A leg the task never took goes with it.
                if let Some(b) = s.browser.take() {
                    b.handle.close();
                }
                s.updates = None;
                s.serving = None;
            }
        }
    }
}

/// The handle of `peer`'s connection (`None` at once when there is none).
async fn handle(ask: AskHandle, peer: UserId) -> Option<PeerHandle> {
    let (tx, rx) = oneshot::channel();
    ask(peer, tx).then_some(())?;
    tokio::time::timeout(Duration::from_secs(2), rx)
        .await
        .ok()?
        .ok()
}

/// One remote participant inside the task.
struct Leg {
    hear: bool,
    offerer: bool,
    attached: Option<(PeerHandle, AudioSender)>,
    /// When frames may be sent to it (ready, plus the answerer's hold).
    sendable_at: Option<Instant>,
    sink: Option<Box<dyn MediaSink>>,
    /// Bumped on each attach, so a stale forwarder's end is ignored.
    generation: u64,
}

enum Inbound {
    Event(UserId, u64, MediaEvent),
    Gone(UserId, u64),
}

struct VoiceTask {
    channel: ChannelId,
    generation: u64,
    shared: VoiceMedia,
    ask: AskHandle,
    peers: BTreeMap<UserId, Leg>,
    send: bool,
    source: Option<Box<dyn MediaSource>>,
    record: Option<RecordTo>,
    /// How many recordings each participant has had.
    stays: BTreeMap<UserId, u32>,
    started: Option<Instant>,
    browser: Option<TaskBrowser>,
}

/// The browser leg inside the task.
struct TaskBrowser {
    handle: BrowserLegHandle,
    events: mpsc::Receiver<LegEvent>,
    /// Each down slot's media id and who it carries.
    slots: Vec<(String, Option<UserId>)>,
}

impl TaskBrowser {
    /// `user`'s slot, given the first free one if they have none (`None`: all taken).
    fn slot_for(&mut self, user: UserId) -> (Option<usize>, bool) {
        if let Some(i) = self.slots.iter().position(|(_, u)| *u == Some(user)) {
            return (Some(i), false);
        }
        match self.slots.iter().position(|(_, u)| u.is_none()) {
            Some(i) => {
                self.slots[i].1 = Some(user);
                (Some(i), true)
            }
            None => (None, false),
        }
    }

    /// Frees `user`'s slot; whether they had one.
    fn free(&mut self, user: &UserId) -> bool {
        let mut freed = false;
        for (_, u) in &mut self.slots {
            if u.as_ref() == Some(user) {
                *u = None;
                freed = true;
            }
        }
        freed
    }

    fn status(&self) -> BrowserStatus {
        BrowserStatus {
            leg: self.handle.clone(),
            slots: self.slots.clone(),
        }
    }
}

/// The next event of the browser leg, or never without one.
async fn browser_event(b: &mut Option<TaskBrowser>) -> Option<LegEvent> {
    match b {
        Some(b) => b.events.recv().await,
        None => std::future::pending().await,
    }
}

impl VoiceTask {
    /// Our status, unless a newer task owns it.
    fn status(&self, f: impl FnOnce(&mut VoiceMediaStatus)) {
        let mut s = self.shared.lock();
        if s.generation == self.generation {
            f(&mut s.status);
        }
    }

    fn error(&self, why: String) {
        tracing::debug!(why = %why, "voice media");
        self.status(|s| s.error = Some(why));
    }

    fn peer_status(&self, user: &UserId, f: impl FnOnce(&mut PeerMedia)) {
        self.status(|s| f(s.peers.entry(*user).or_default()));
    }

    /// Applies a new mesh from the machine.
    fn update(&mut self, req: VoiceRequest) {
        let VoiceRequest::Session { send, peers, .. } = req else {
            return;
        };
        self.send = send;
        tracing::debug!(send, peers = ?peers.iter().map(|p| p.user.short()).collect::<Vec<_>>(), "voice: mesh");
        let wanted: BTreeMap<UserId, VoicePeer> = peers.into_iter().map(|p| (p.user, p)).collect();
        let gone: Vec<UserId> = self
            .peers
            .keys()
            .filter(|u| !wanted.contains_key(u))
            .copied()
            .collect();
        for u in gone {
            if let Some(leg) = self.peers.remove(&u) {
                self.close_leg(u, leg);
            }
        }
        for (u, p) in wanted {
            let leg = self.peers.entry(u).or_insert_with(|| Leg {
                hear: p.hear,
                offerer: p.offerer,
                attached: None,
                sendable_at: None,
                sink: None,
                generation: 0,
            });
            leg.hear = p.hear;
        }
    }

    fn close_leg(&mut self, user: UserId, mut leg: Leg) {
        if let Some(b) = &mut self.browser
            && b.free(&user)
        {
            let st = b.status();
            self.status(|s| s.browser = Some(st));
        }
        if let Some((h, _)) = leg.attached.take() {
            tokio::spawn(async move { h.detach_media().await });
        }
        if let Some(mut k) = leg.sink.take()
            && let Err(e) = k.finish()
        {
            self.error(e);
        }
        self.peer_status(&user, |p| {
            p.attached = false;
            p.ready = false;
        });
    }

    /// Attaches to every peer not attached yet (each answer is immediate when it has no
    /// connection).
    async fn attach_missing(&mut self, merged: &mpsc::Sender<Inbound>) {
        let missing: Vec<UserId> = self
            .peers
            .iter()
            .filter(|(_, l)| l.attached.is_none())
            .map(|(u, _)| *u)
            .collect();
        for u in missing {
            let Some(h) = handle(self.ask.clone(), u).await else {
                continue;
            };
            let (tx, mut rx) = mpsc::channel(512);
            match h.attach_media(tx).await {
                Ok(sender) => {
                    let Some(leg) = self.peers.get_mut(&u) else {
                        h.detach_media().await;
                        continue;
                    };
                    leg.generation += 1;
                    leg.sendable_at = None;
                    let generation = leg.generation;
                    leg.attached = Some((h, sender));
                    tracing::debug!(peer = %u.short(), generation, "voice: attached");
                    self.peer_status(&u, |p| p.attached = true);
                    let merged = merged.clone();
                    tokio::spawn(async move {
                        while let Some(ev) = rx.recv().await {
                            if merged
                                .send(Inbound::Event(u, generation, ev))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        let _ = merged.send(Inbound::Gone(u, generation)).await;
                    });
                }
                Err(e) => self.error(format!("could not attach to a connection: {e}")),
            }
        }
    }

    fn on_event(&mut self, user: UserId, generation: u64, ev: MediaEvent) {
        let record = self.record.clone();
        let Some(leg) = self
            .peers
            .get_mut(&user)
            .filter(|l| l.generation == generation)
        else {
            return;
        };
        match ev {
            MediaEvent::Ready { .. } => {
                tracing::debug!(peer = %user.short(), generation, offerer = leg.offerer, "voice: ready");
                if leg.sendable_at.is_none() {
                    let hold = if leg.offerer {
                        OFFERER_HOLD
                    } else {
                        ANSWERER_HOLD
                    };
                    leg.sendable_at = Some(Instant::now() + hold);
                }
                let mut path = None;
                if leg.sink.is_none()
                    && let Some(r) = &record
                {
                    let n = self.stays.entry(user).or_insert(0);
                    let p = r.path_for(&user, *n);
                    *n += 1;
                    let serial =
                        u32::from_le_bytes(user.key().as_bytes()[..4].try_into().unwrap_or([0; 4]));
                    match FileSink::create(&p, serial) {
                        Ok(k) => {
                            leg.sink = Some(Box::new(k));
                            path = Some(p.display().to_string());
                        }
                        Err(e) => {
                            let why = e;
                            let generation = self.generation;
                            let mut s = self.shared.lock();
                            if s.generation == generation {
                                s.status.error = Some(why);
                            }
                        }
                    }
                }
                self.peer_status(&user, |p| {
                    p.ready = true;
                    if path.is_some() {
                        p.record_path = path;
                    }
                });
            }
            MediaEvent::Frame(f) => {
                if !leg.hear {
                    self.peer_status(&user, |p| p.dropped += 1);
                    return;
                }
                let mut err = None;
                if let Some(k) = &mut leg.sink
                    && let Err(e) = k.push(f.rtp_time, &f.data)
                {
                    err = Some(e);
                }
                let level = f.audio_level;
                let mut slots = None;
                if let Some(b) = &mut self.browser {
                    let (slot, assigned) = b.slot_for(user);
                    if let Some(slot) = slot {
                        // A full queue or a closed leg loses the frame (counted by the leg).
                        let _ = b.handle.send_down_to(slot, f.rtp_time, f.data, level);
                    }
                    if assigned {
                        slots = Some(b.status());
                    }
                }
                let now = Instant::now();
                self.status(|s| {
                    if let Some(b) = slots {
                        s.browser = Some(b);
                    }
                    let p = s.peers.entry(user).or_default();
                    p.received += 1;
                    p.last_frame = Some(now);
                    p.level = level;
                    if let Some(l) = level {
                        p.levels = true;
                        if l >= SPEAKING_DBOV {
                            p.last_loud = Some(now);
                        }
                    }
                });
                if let Some(e) = err {
                    self.error(e);
                }
            }
            // Video in voice channels is not built: a peer's video is dropped (the connection
            // counted it), and nothing of ours answers a keyframe request.
            MediaEvent::Video(_) | MediaEvent::KeyframeRequest => {}
        }
    }

    /// Peers our frames may go to now.
    fn sendable(&self, now: Instant) -> usize {
        self.peers
            .values()
            .filter(|l| l.attached.is_some() && l.sendable_at.is_some_and(|t| t <= now))
            .count()
    }

    async fn run(
        mut self,
        mut updates: mpsc::UnboundedReceiver<VoiceRequest>,
        mut stop: oneshot::Receiver<()>,
    ) {
        let (merged_tx, mut merged) = mpsc::channel::<Inbound>(1024);
        let mut tick = tokio::time::interval(TICK);
        let mut wait_for = 1usize;
        loop {
            {
                let mut s = self.shared.lock();
                if s.media_for == Some(self.channel) {
                    if self.source.is_none()
                        && let Some(src) = s.source.take()
                    {
                        self.source = Some(src);
                        self.started = None;
                        wait_for = s.wait_for.max(1);
                    }
                    if self.record.is_none() {
                        self.record = s.record.clone();
                    }
                }
                if s.browser
                    .as_ref()
                    .is_some_and(|b| b.channel == self.channel)
                    && let Some(b) = s.browser.take()
                {
                    if let Some(old) = self.browser.take() {
                        old.handle.close();
                    }
                    let tb = TaskBrowser {
                        handle: b.handle,
                        events: b.events,
                        slots: b.slots.into_iter().map(|m| (m, None)).collect(),
                    };
                    if s.generation == self.generation {
                        s.status.browser = Some(tb.status());
                    }
                    self.browser = Some(tb);
                }
            }
            let now = Instant::now();
            if self.started.is_none() && self.source.is_some() && self.sendable(now) >= wait_for {
                tracing::debug!(wait_for, "voice: source starts");
                self.started = Some(now);
            }
            let due = match (&self.source, self.started) {
                (Some(src), Some(t0)) => src.next_due().map(|d| t0 + d),
                _ => None,
            };
            let due_at =
                tokio::time::Instant::from_std(due.unwrap_or_else(|| Instant::now() + TICK));
            tokio::select! {
                _ = &mut stop => break,
                req = updates.recv() => match req {
                    Some(r) => {
                        self.update(r);
                        self.attach_missing(&merged_tx).await;
                    }
                    None => break,
                },
                inbound = merged.recv() => match inbound {
                    Some(Inbound::Event(u, g, ev)) => self.on_event(u, g, ev),
                    Some(Inbound::Gone(u, g)) => {
                        tracing::debug!(peer = %u.short(), generation = g, "voice: connection gone");
                        if let Some(l) = self.peers.get_mut(&u).filter(|l| l.generation == g) {
                            l.attached = None;
                            l.sendable_at = None;
                            self.peer_status(&u, |p| { p.attached = false; p.ready = false; });
                        }
                    }
                    None => break,
                },
                () = tokio::time::sleep_until(due_at), if due.is_some() => self.play(),
                ev = browser_event(&mut self.browser) => match ev {
                    Some(LegEvent::Frame { rtp_time, data, level }) => {
                        self.forward_up(rtp_time, data, level);
                    }
                    // No video in voice channels yet (docs/media.md, "Not yet").
                    Some(LegEvent::Connected | LegEvent::Video { .. } | LegEvent::KeyframeRequest { .. }) => {}
                    Some(LegEvent::Closed { reason }) => {
                        tracing::debug!(reason = %reason, "voice: the browser leg closed");
                        self.browser = None;
                    }
                    None => self.browser = None,
                },
                _ = tick.tick() => self.attach_missing(&merged_tx).await,
            }
        }
        // Frames that already arrived go into the recordings before they close.
        while let Ok(inbound) = merged.try_recv() {
            if let Inbound::Event(u, g, ev @ MediaEvent::Frame(_)) = inbound {
                self.on_event(u, g, ev);
            }
        }
        self.finish().await;
    }

    /// Sends a frame the browser captured to every peer that can take it, with its level.
    fn forward_up(&mut self, rtp_time: u64, data: Vec<u8>, level: Option<i8>) {
        if !self.send {
            return; // muted, deafened or without `speak`: nothing leaves this node
        }
        let now = Instant::now();
        let mut sent_to: Vec<UserId> = Vec::new();
        let mut error = None;
        for (u, leg) in &mut self.peers {
            let Some((_, sender)) = &leg.attached else {
                continue;
            };
            if leg.sendable_at.is_none_or(|t| t > now) {
                continue;
            }
            match sender.send_with_level(rtp_time, data.clone(), level) {
                Ok(()) => sent_to.push(*u),
                Err(dopus_rtc::PeerError::Closed) => {
                    leg.attached = None;
                    leg.sendable_at = None;
                }
                Err(e) => error = Some(e.to_string()),
            }
        }
        self.status(|s| {
            if !sent_to.is_empty() {
                s.last_sent = Some(now);
            }
            if let Some(l) = level {
                s.self_levels = true;
                if l >= SPEAKING_DBOV {
                    s.self_last_loud = Some(now);
                }
            }
            for u in sent_to {
                s.peers.entry(u).or_default().sent += 1;
            }
            if let Some(e) = error {
                s.error = Some(e);
            }
        });
    }

    /// Sends every frame that is due to every peer that can take it.
    fn play(&mut self) {
        let (Some(src), Some(t0)) = (&mut self.source, self.started) else {
            return;
        };
        let now = Instant::now();
        let since = now.saturating_duration_since(t0);
        let mut played = 0u64;
        let mut sent_any = false;
        let mut errors = Vec::new();
        let mut sent_to: Vec<UserId> = Vec::new();
        while let Some((rtp, data)) = src.poll(since) {
            played += 1;
            if !self.send {
                continue;
            }
            for (u, leg) in &mut self.peers {
                let Some((_, sender)) = &leg.attached else {
                    continue;
                };
                if leg.sendable_at.is_none_or(|t| t > now) {
                    continue;
                }
                match sender.send(rtp, data.clone()) {
                    Ok(()) => {
                        sent_any = true;
                        sent_to.push(*u);
                    }
                    Err(dopus_rtc::PeerError::Closed) => {
                        leg.attached = None;
                        leg.sendable_at = None;
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        let done = src.next_due().is_none();
        if done {
            self.source = None;
        }
        self.status(|s| {
            s.played += played;
            s.play_done = done;
            if sent_any {
                s.last_sent = Some(now);
            }
            for u in sent_to {
                s.peers.entry(u).or_default().sent += 1;
            }
            if let Some(e) = errors.pop() {
                s.error = Some(e);
            }
        });
    }

    async fn finish(mut self) {
        if let Some(b) = self.browser.take() {
            b.handle.close();
        }
        let legs = std::mem::take(&mut self.peers);
        for (u, mut leg) in legs {
            if let Some((h, _)) = leg.attached.take() {
                h.detach_media().await;
            }
            if let Some(mut k) = leg.sink.take()
                && let Err(e) = k.finish()
            {
                self.error(e);
            }
            self.peer_status(&u, |p| {
                p.attached = false;
                p.ready = false;
            });
        }
        self.status(|s| {
            s.running = false;
            s.record_done = true;
            s.browser = None;
        });
    }
}
