//! Calls at the edge: one media task per active call, moving packets between the call's
//! source and sink and the connection with the peer. The machine decides (ring, accept, hang
//! up, when to add audio to the connection); the actor starts and stops media tasks
//! ([`CallRequest`]) and never sees a packet.
//!
//! Sources and sinks sit behind [`MediaSource`] and [`MediaSink`]: the headless ones play an
//! Ogg Opus file into the call and record the received Opus packets into an Ogg file, never
//! decoding (`discordopus call USER --play F --record O`); the browser leg and native capture
//! plug in here later.

use dopus_core::machine::CallRequest;
use dopus_media::{OggOpusFile, OggOpusWriter, OpusHead, OpusPlayer, OpusTags};
use dopus_rtc::{MediaEvent, MediaStats, PeerHandle};
use dopus_types::{CallId, UserId};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What a live source hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Live {
    /// An Opus packet with its RTP time (48 kHz).
    Audio(u64, Vec<u8>),
    /// A VP8 frame with its RTP time (90 kHz): the camera or the screen.
    Video(u64, Vec<u8>),
    /// The source's viewer asks for a keyframe of the video the peer sends.
    KeyframeRequest,
}

/// Media to put into a call, paced in real time.
pub trait MediaSource: Send {
    /// When the next frame is due, from the start of playback; `None` at the end.
    fn next_due(&self) -> Option<Duration>;
    /// The next frame (RTP time at 48 kHz, Opus packet) if it is due `since_start`.
    fn poll(&mut self, since_start: Duration) -> Option<(u64, Vec<u8>)>;
    /// How many frames it holds in all.
    fn total(&self) -> u64;
    /// A live source (the browser leg) hands out frames as they come, through
    /// [`MediaSource::poll_live`], instead of being paced by `next_due`.
    fn is_live(&self) -> bool {
        false
    }
    /// The next live item; `Ready(None)` when the source ended.
    fn poll_live(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Live>> {
        std::task::Poll::Ready(None)
    }
}

/// Where a call's received media goes.
pub trait MediaSink: Send {
    /// One received frame (RTP time at 48 kHz, Opus packet).
    fn push(&mut self, rtp_time: u64, data: &[u8]) -> Result<(), String>;
    /// The call ended: close the recording.
    fn finish(&mut self) -> Result<(), String>;
    /// One received video frame (RTP time at 90 kHz, VP8); `Ok(false)` when the sink takes
    /// no video (an audio recording), and the frame is dropped.
    fn push_video(&mut self, _rtp_time: u64, _data: &[u8]) -> Result<bool, String> {
        Ok(false)
    }
    /// The peer asks for a keyframe of the video we send: pass it to the encoder, if any.
    fn keyframe_request(&mut self) {}
    /// The video rate the path to the peer allows now (from the peer's loss reports, about
    /// every second): a sink that is also the encoder's leg caps its encoder with it.
    fn path_rate(&mut self, _video_bps: u64) {}
}

/// Plays an Ogg Opus file's packets as they are.
pub struct FileSource {
    player: OpusPlayer,
    total: u64,
}

impl FileSource {
    /// Reads and validates the file.
    pub fn open(path: &std::path::Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
        let file = OggOpusFile::parse(&bytes).map_err(|e| format!("not an Ogg Opus file: {e}"))?;
        let total = file.packets.len() as u64;
        Ok(Self {
            player: OpusPlayer::new(file),
            total,
        })
    }
}

impl MediaSource for FileSource {
    fn next_due(&self) -> Option<Duration> {
        self.player.next_due()
    }
    fn poll(&mut self, since_start: Duration) -> Option<(u64, Vec<u8>)> {
        self.player
            .poll(since_start)
            .map(|(rtp, p)| (rtp, p.data.clone()))
    }
    fn total(&self) -> u64 {
        self.total
    }
}

/// Records received Opus packets into an Ogg Opus file (pages flushed about every second).
pub struct FileSink {
    file: std::fs::File,
    writer: Option<OggOpusWriter>,
}

impl FileSink {
    /// Creates (truncates) the file and writes the headers.
    pub fn create(path: &std::path::Path, serial: u32) -> Result<Self, String> {
        let mut file =
            std::fs::File::create(path).map_err(|e| format!("cannot create the file: {e}"))?;
        let tags = OpusTags {
            vendor: "discordopus".into(),
            comments: Vec::new(),
        };
        let (writer, header) = OggOpusWriter::new(serial, OpusHead::for_recording(2), &tags);
        file.write_all(&header)
            .map_err(|e| format!("cannot write the file: {e}"))?;
        Ok(Self {
            file,
            writer: Some(writer),
        })
    }
}

impl MediaSink for FileSink {
    fn push(&mut self, rtp_time: u64, data: &[u8]) -> Result<(), String> {
        let Some(w) = &mut self.writer else {
            return Err("the recording is closed".into());
        };
        let (bytes, _) = w
            .push_at(rtp_time, data)
            .map_err(|e| format!("a received packet was not Opus: {e}"))?;
        if !bytes.is_empty() {
            self.file
                .write_all(&bytes)
                .map_err(|e| format!("cannot write the recording: {e}"))?;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<(), String> {
        if let Some(w) = self.writer.take() {
            self.file
                .write_all(&w.finish())
                .and_then(|()| self.file.sync_all())
                .map_err(|e| format!("cannot finish the recording: {e}"))?;
        }
        Ok(())
    }
}

/// What the API shows of a call's media.
#[derive(Debug, Clone, Default)]
pub struct MediaStatus {
    /// The media task runs.
    pub running: bool,
    /// The audio m-line is negotiated and the task attached.
    pub ready: bool,
    /// Frames played into the call / in the source.
    pub played: u64,
    /// Frames the source holds.
    pub play_total: Option<u64>,
    /// The source has played out.
    pub play_done: bool,
    /// Frames received and recorded.
    pub recorded: u64,
    /// Where the recording goes.
    pub record_path: Option<String>,
    /// The recording is closed (the call ended).
    pub record_done: bool,
    /// The last media error (a refused frame, a file error).
    pub error: Option<String>,
    /// The connection's media counters, refreshed about every second.
    pub rtc: Option<MediaStats>,
    /// Video frames sent to the peer / received from it (and given to a sink that takes
    /// video).
    pub video_sent: u64,
    /// Video frames received from the peer.
    pub video_received: u64,
    /// Keyframe requests from our viewer passed to the peer / from the peer passed to our
    /// source's encoder.
    pub keyframe_requests_out: u64,
    /// Keyframe requests from the peer passed to the source.
    pub keyframe_requests_in: u64,
    /// The browser leg, if the UI opened one.
    pub browser: Option<dopus_rtc::BrowserLegHandle>,
}

/// One call's media: what the API set up, what the task reports.
#[derive(Default)]
pub struct Session {
    source: Option<Box<dyn MediaSource>>,
    sink: Option<Box<dyn MediaSink>>,
    stop: Option<oneshot::Sender<()>>,
    /// Shown by the API.
    pub status: MediaStatus,
}

/// How a media task asks the actor for the handle of its peer's connection: `false` when the
/// actor is gone. A function, not the actor's mailbox, so this module knows nothing of the
/// actor (the runtime's modules form no cycle).
pub type AskHandle = Arc<dyn Fn(UserId, oneshot::Sender<PeerHandle>) -> bool + Send + Sync>;

/// Every call's media session, shared by the actor (start, stop), the API jobs (play,
/// record) and the media tasks (status).
#[derive(Default, Clone)]
pub struct CallsMedia {
    inner: Arc<Mutex<BTreeMap<CallId, Arc<Mutex<Session>>>>>,
}

impl std::fmt::Debug for CallsMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallsMedia").finish_non_exhaustive()
    }
}

/// Ended calls whose media status is kept.
const KEEP: usize = 16;

impl CallsMedia {
    fn session(&self, call: CallId) -> Arc<Mutex<Session>> {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > KEEP
            && let Some(old) = m
                .iter()
                .find(|(_, s)| !lock(s).status.running && lock(s).stop.is_none())
                .map(|(k, _)| *k)
        {
            m.remove(&old);
        }
        m.entry(call).or_default().clone()
    }

    /// The media status of `call`, if it has media.
    pub fn status(&self, call: &CallId) -> Option<MediaStatus> {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.get(call).map(|s| lock(s).status.clone())
    }

    /// Plays `source` into `call` (once it is active and its audio negotiated).
    pub fn set_source(&self, call: CallId, source: Box<dyn MediaSource>) {
        let s = self.session(call);
        let mut s = lock(&s);
        s.status.play_total = (!source.is_live()).then(|| source.total());
        s.status.play_done = false;
        s.status.played = 0;
        s.source = Some(source);
    }

    /// Records `call` into `sink`.
    pub fn set_sink(&self, call: CallId, sink: Box<dyn MediaSink>, path: String) {
        let s = self.session(call);
        let mut s = lock(&s);
        s.status.record_path = Some(path);
        s.sink = Some(sink);
    }

    /// Plugs a browser leg into `call`: its source and sink replace the call's, and an earlier
    /// leg is closed.
    pub fn set_browser(
        &self,
        call: CallId,
        source: Box<dyn MediaSource>,
        sink: Box<dyn MediaSink>,
        leg: dopus_rtc::BrowserLegHandle,
    ) {
        let s = self.session(call);
        let mut s = lock(&s);
        if let Some(old) = s.status.browser.replace(leg) {
            old.close();
        }
        s.status.play_total = None;
        s.status.play_done = false;
        s.source = Some(source);
        s.sink = Some(sink);
    }

    /// What the machine asks: start or stop a call's media task.
    pub(crate) fn request(
        &self,
        rt: &tokio::runtime::Handle,
        ask_handle: &AskHandle,
        req: CallRequest,
        outgoing: bool,
    ) {
        match req {
            CallRequest::Start { call, peer } => {
                let s = self.session(call);
                let (tx, rx) = oneshot::channel();
                {
                    let mut g = lock(&s);
                    if g.status.running {
                        return;
                    }
                    g.status.running = true;
                    g.stop = Some(tx);
                }
                let task = MediaTask {
                    peer,
                    outgoing,
                    session: s,
                    ask_handle: ask_handle.clone(),
                };
                rt.spawn(task.run(rx));
            }
            CallRequest::Stop { call, .. } => {
                let s = self.session(call);
                let (stop, browser) = {
                    let g = &mut *lock(&s);
                    (g.stop.take(), g.status.browser.clone())
                };
                if let Some(b) = browser {
                    b.close(); // also when the media task never ran (a call that only rang)
                }
                if let Some(stop) = stop {
                    let _ = stop.send(());
                }
            }
        }
    }
}

fn lock(s: &Arc<Mutex<Session>>) -> std::sync::MutexGuard<'_, Session> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The callee's side waits this long after its answer before playing, so the caller has
/// applied that answer when the first frames arrive (str0m drops media it cannot place yet).
const ANSWERER_HOLD: Duration = Duration::from_millis(500);
/// How often the task looks for a new source or sink and refreshes the counters.
const TICK: Duration = Duration::from_millis(250);

struct MediaTask {
    peer: UserId,
    /// Our call (we are the media offerer).
    outgoing: bool,
    session: Arc<Mutex<Session>>,
    ask_handle: AskHandle,
}

impl MediaTask {
    async fn handle(&self) -> Option<PeerHandle> {
        let (tx, rx) = oneshot::channel();
        (self.ask_handle)(self.peer, tx).then_some(())?;
        tokio::time::timeout(Duration::from_secs(2), rx)
            .await
            .ok()?
            .ok()
    }

    fn error(&self, why: String) {
        tracing::debug!(why = %why, "call media");
        lock(&self.session).status.error = Some(why);
    }

    async fn run(self, mut stop: oneshot::Receiver<()>) {
        let mut attached: Option<(
            PeerHandle,
            dopus_rtc::AudioSender,
            mpsc::Receiver<MediaEvent>,
        )> = None;
        let mut source: Option<Box<dyn MediaSource>> = None;
        let mut sink: Option<Box<dyn MediaSink>> = None;
        let mut started: Option<Instant> = None;
        let mut tick = tokio::time::interval(TICK);
        let mut ticks = 0u64;
        loop {
            if attached.is_none()
                && let Some(h) = self.handle().await
            {
                let (tx, rx) = mpsc::channel(512);
                match h.attach_media(tx).await {
                    Ok(sender) => attached = Some((h, sender, rx)),
                    Err(e) => self.error(format!("could not attach to the connection: {e}")),
                }
            }
            {
                let mut s = lock(&self.session);
                // A new source or sink (a reloaded page's browser leg) replaces the current one.
                if let Some(new) = s.source.take() {
                    source = Some(new);
                }
                if let Some(new) = s.sink.take()
                    && let Some(mut old) = sink.replace(new)
                {
                    let _ = old.finish();
                }
            }
            let due = match (&source, started) {
                (Some(src), Some(t0)) => src.next_due().map(|d| t0 + d),
                _ => None,
            };
            let due_at =
                tokio::time::Instant::from_std(due.unwrap_or_else(|| Instant::now() + TICK));
            tokio::select! {
                _ = &mut stop => break,
                ev = async {
                    match &mut attached {
                        Some((_, _, rx)) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match ev {
                    Some(MediaEvent::Ready { .. }) => {
                        lock(&self.session).status.ready = true;
                        if started.is_none() {
                            let hold = if self.outgoing { Duration::ZERO } else { ANSWERER_HOLD };
                            started = Some(Instant::now() + hold);
                        }
                    }
                    Some(MediaEvent::Frame(f)) => {
                        if let Some(k) = &mut sink {
                            match k.push(f.rtp_time, &f.data) {
                                Ok(()) => lock(&self.session).status.recorded += 1,
                                Err(e) => self.error(e),
                            }
                        }
                    }
                    Some(MediaEvent::Video(f)) => {
                        lock(&self.session).status.video_received += 1;
                        if let Some(k) = &mut sink
                            && let Err(e) = k.push_video(f.rtp_time, &f.data)
                        {
                            self.error(e);
                        }
                    }
                    Some(MediaEvent::KeyframeRequest) => {
                        // Already throttled by the connection (one per 500 ms).
                        if let Some(k) = &mut sink {
                            k.keyframe_request();
                            lock(&self.session).status.keyframe_requests_in += 1;
                        }
                    }
                    None => attached = None, // the connection ended: find the next one
                },
                frame = std::future::poll_fn(|cx| match &mut source {
                    Some(src) => src.poll_live(cx),
                    None => std::task::Poll::Pending,
                }), if source.as_ref().is_some_and(|s| s.is_live()) => {
                    let Some(item) = frame else {
                        source = None; // the live source ended (the page went away)
                        continue;
                    };
                    // Before the m-line is ready (and the answerer's hold is over) a live frame
                    // has nowhere to go: it is dropped, as live audio is.
                    let playing = started.is_some_and(|t0| Instant::now() >= t0);
                    if let (true, Some((_, sender, _))) = (playing, &attached) {
                        let (result, counter): (_, fn(&mut MediaStatus) -> &mut u64) = match item {
                            Live::Audio(rtp, data) => (sender.send(rtp, data), |s| &mut s.played),
                            Live::Video(rtp, data) => {
                                (sender.send_video(rtp, data), |s| &mut s.video_sent)
                            }
                            Live::KeyframeRequest => {
                                (sender.request_keyframe(), |s| &mut s.keyframe_requests_out)
                            }
                        };
                        match result {
                            Ok(()) => *counter(&mut lock(&self.session).status) += 1,
                            Err(dopus_rtc::PeerError::Closed) => attached = None,
                            Err(e) => self.error(e.to_string()),
                        }
                    }
                }
                () = tokio::time::sleep_until(due_at), if due.is_some() => {
                    let (Some(src), Some(t0), Some((_, sender, _))) = (&mut source, started, &attached) else {
                        continue;
                    };
                    let since = Instant::now().saturating_duration_since(t0);
                    let mut sent = 0;
                    while let Some((rtp, data)) = src.poll(since) {
                        match sender.send(rtp, data) {
                            Ok(()) => sent += 1,
                            Err(dopus_rtc::PeerError::Closed) => {
                                attached = None;
                                break;
                            }
                            Err(e) => self.error(e.to_string()),
                        }
                    }
                    let done = src.next_due().is_none();
                    let mut s = lock(&self.session);
                    s.status.played += sent;
                    s.status.play_done = done;
                    if done {
                        source = None;
                    }
                }
                _ = tick.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(4) && let Some((h, _, _)) = &attached
                        && let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(1), h.media_stats()).await {
                        if let (Some(rate), Some(k)) = (st.video_rate_bps, &mut sink) {
                            k.path_rate(rate);
                        }
                        lock(&self.session).status.rtc = Some(st);
                    }
                }
            }
        }
        if let Some((h, _, mut rx)) = attached.take() {
            // Frames that already arrived go into the recording before it closes.
            while let Ok(ev) = rx.try_recv() {
                if let (MediaEvent::Frame(f), Some(k)) = (ev, &mut sink)
                    && k.push(f.rtp_time, &f.data).is_ok()
                {
                    lock(&self.session).status.recorded += 1;
                }
            }
            if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(1), h.media_stats()).await
            {
                lock(&self.session).status.rtc = Some(st);
            }
            h.detach_media().await;
        }
        let finished = sink.as_mut().map(|k| k.finish());
        let mut s = lock(&self.session);
        s.status.running = false;
        if let Some(r) = finished {
            s.status.record_done = true;
            if let Err(e) = r {
                s.status.error = Some(e);
            }
        }
    }
}
