// Calls for the whole UI: the current call (from `GET /calls` and the live `call` events), the
// browser leg (this page's WebRTC connection to its own node over loopback: the microphone and
// the camera or screen go up, the peer's audio and video come down; docs/media.md), mute,
// deafen, camera, screen share, devices, and the figures (the node's path and RTT, the leg's
// getStats).
import { createContext, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import { callsApi } from "../api/calls";
import type { Call } from "../api/types";
import { currentCall, figures, sampleOf, type LegFigures, type LegSample } from "../lib/calls";
import { browserStorage } from "../lib/prefs";
import { describeError, useStore } from "./store";

export interface Devices {
  mics: MediaDeviceInfo[];
  speakers: MediaDeviceInfo[];
  cameras: MediaDeviceInfo[];
}

export interface CallsValue {
  /** The call that rings or runs, if any. */
  call: Call | null;
  /** When `call` was last read from the node (for the live duration). */
  readAt: number;
  /** The browser leg's connection state. */
  leg: RTCPeerConnectionState | "none";
  muted: boolean;
  deafened: boolean;
  devices: Devices;
  mic: string;
  speaker: string;
  camera: string;
  figures: LegFigures | null;
  /** Why the microphone or the leg failed, if they did. */
  mediaError: string | null;
  /** Our camera is on (sent unless the screen replaces it). */
  cameraOn: boolean;
  /** We share our screen (it replaces the camera on the video m-line). */
  screenOn: boolean;
  /** What we send, for the local preview (the screen while shared, else the camera). */
  localVideo: MediaStream | null;
  /** The peer's video (camera or screen), once the leg has its video m-line. */
  remoteVideo: MediaStream | null;
  setCameraOn(on: boolean): void;
  setScreenOn(on: boolean): void;
  start(userId: string): Promise<void>;
  accept(): Promise<void>;
  decline(): Promise<void>;
  hangup(): Promise<void>;
  setMuted(m: boolean): void;
  setDeafened(d: boolean): void;
  setMic(id: string): void;
  setSpeaker(id: string): void;
  setCamera(id: string): void;
}

export const CallsContext = createContext<CallsValue | null>(null);

export function useCalls(): CallsValue {
  const v = useContext(CallsContext);
  if (!v) throw new Error("useCalls outside CallsProvider");
  return v;
}

const MIC_KEY = "dopus:mic";
const SPEAKER_KEY = "dopus:speaker";
const CAMERA_KEY = "dopus:camera";

/** The page's side of the loopback leg. */
class Leg {
  readonly pc: RTCPeerConnection;
  readonly audio: HTMLAudioElement;
  stream: MediaStream | null = null;
  sender: RTCRtpSender | null = null;
  /** The video m-line's sender: the camera, or the screen while it is shared. */
  videoSender: RTCRtpSender | null = null;
  camera: MediaStream | null = null;
  screen: MediaStream | null = null;
  remoteVideo: MediaStream | null = null;
  closed = false;
  onRemoteVideo: (s: MediaStream) => void = () => undefined;

  constructor(onState: (s: RTCPeerConnectionState) => void) {
    // No STUN or TURN: the node is on this machine and answers with a loopback candidate only.
    this.pc = new RTCPeerConnection({ iceServers: [] });
    this.audio = new Audio();
    this.audio.autoplay = true;
    this.audio.dataset.testid = "call-audio";
    this.pc.ontrack = (e) => {
      if (e.track.kind === "video") {
        this.remoteVideo = new MediaStream([e.track]);
        this.onRemoteVideo(this.remoteVideo);
        return;
      }
      this.audio.srcObject = new MediaStream([e.track]);
      void this.audio.play().catch(() => undefined);
    };
    this.pc.onconnectionstatechange = () => onState(this.pc.connectionState);
  }

  async open(callId: string, mic: string): Promise<string | null> {
    let micError: string | null = null;
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: mic ? { deviceId: { exact: mic }, echoCancellation: true, noiseSuppression: true, autoGainControl: true } : true,
      });
    } catch (e) {
      micError = `No microphone: ${e instanceof Error ? e.message : String(e)}. You can still listen.`;
    }
    if (this.closed) return micError;
    const track = this.stream?.getAudioTracks()[0] ?? null;
    const t = this.pc.addTransceiver(track ?? "audio", { direction: "sendrecv", streams: this.stream ? [this.stream] : [] });
    this.sender = t.sender;
    // The video m-line from the start, without a track: the camera and the screen are put on it
    // and taken off with replaceTrack, so turning them on or off never renegotiates
    // (docs/media.md, "Video in calls").
    this.videoSender = this.pc.addTransceiver("video", { direction: "sendrecv" }).sender;
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    const answer = await callsApi.browser(callId, this.pc.localDescription?.sdp ?? offer.sdp ?? "");
    if (this.closed) return micError;
    await this.pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    return micError;
  }

  /** Muted: the sender has no track, so nothing is encoded or sent (not even silence). */
  async setMuted(muted: boolean): Promise<void> {
    const track = this.stream?.getAudioTracks()[0] ?? null;
    if (track) track.enabled = !muted;
    await this.sender?.replaceTrack(muted ? null : track);
  }

  async useMic(id: string, muted: boolean): Promise<void> {
    const next = await navigator.mediaDevices.getUserMedia({ audio: id ? { deviceId: { exact: id } } : true });
    this.stream?.getTracks().forEach((t) => t.stop());
    this.stream = next;
    await this.setMuted(muted);
  }

  /** Camera on (with that device, or the default) or off; the screen, while shared, stays on the m-line. */
  async setCamera(on: boolean, id: string): Promise<void> {
    this.camera?.getTracks().forEach((t) => t.stop());
    this.camera = null;
    if (on) {
      this.camera = await navigator.mediaDevices.getUserMedia({
        video: id ? { deviceId: { exact: id }, width: 640, height: 480 } : { width: 640, height: 480 },
      });
    }
    if (!this.screen) await this.videoSender?.replaceTrack(this.camera?.getVideoTracks()[0] ?? null);
  }

  /** Screen share on or off: it replaces the camera on the video m-line while it lasts. */
  async setScreen(on: boolean, onEnded: () => void): Promise<void> {
    this.screen?.getTracks().forEach((t) => t.stop());
    this.screen = null;
    if (on) {
      this.screen = await navigator.mediaDevices.getDisplayMedia({ video: { frameRate: 15 }, audio: false });
      const track = this.screen.getVideoTracks()[0] ?? null;
      // The browser's own "Stop sharing" button ends the track.
      if (track) track.onended = onEnded;
      await this.videoSender?.replaceTrack(track);
      return;
    }
    await this.videoSender?.replaceTrack(this.camera?.getVideoTracks()[0] ?? null);
  }

  async useSpeaker(id: string): Promise<void> {
    const a = this.audio as HTMLAudioElement & { setSinkId?: (id: string) => Promise<void> };
    if (a.setSinkId) await a.setSinkId(id);
  }

  close(): void {
    this.closed = true;
    this.stream?.getTracks().forEach((t) => t.stop());
    this.camera?.getTracks().forEach((t) => t.stop());
    this.screen?.getTracks().forEach((t) => t.stop());
    this.pc.close();
    this.audio.srcObject = null;
  }
}

export function CallsProvider({ children }: { children: ReactNode }) {
  const { state, subscribe, actions } = useStore();
  const [call, setCall] = useState<Call | null>(null);
  const [readAt, setReadAt] = useState(() => Date.now());
  const [leg, setLeg] = useState<RTCPeerConnectionState | "none">("none");
  const [muted, setMutedState] = useState(false);
  const [deafened, setDeafenedState] = useState(false);
  const [devices, setDevices] = useState<Devices>({ mics: [], speakers: [], cameras: [] });
  const store = browserStorage();
  const [mic, setMicId] = useState(() => store?.getItem(MIC_KEY) ?? "");
  const [speaker, setSpeakerId] = useState(() => store?.getItem(SPEAKER_KEY) ?? "");
  const [camera, setCameraId] = useState(() => store?.getItem(CAMERA_KEY) ?? "");
  const [fig, setFig] = useState<LegFigures | null>(null);
  const [mediaError, setMediaError] = useState<string | null>(null);
  const [cameraOn, setCameraOnState] = useState(false);
  const [screenOn, setScreenOnState] = useState(false);
  const [localVideo, setLocalVideo] = useState<MediaStream | null>(null);
  const [remoteVideo, setRemoteVideo] = useState<MediaStream | null>(null);
  const legRef = useRef<{ callId: string; leg: Leg } | null>(null);
  const prevSample = useRef<LegSample | null>(null);
  const mutedRef = useRef(muted);
  mutedRef.current = muted;
  const ready = state.node === "ready";
  const socketOpen = state.socket === "open";

  const closeLeg = () => {
    legRef.current?.leg.close();
    legRef.current = null;
    prevSample.current = null;
    setLeg("none");
    setFig(null);
    setCameraOnState(false);
    setScreenOnState(false);
    setLocalVideo(null);
    setRemoteVideo(null);
  };

  const showLocal = (l: Leg) => setLocalVideo(l.screen ?? l.camera);

  const openLeg = async (callId: string) => {
    if (legRef.current?.callId === callId) return;
    closeLeg();
    const l = new Leg((s) => legRef.current?.leg === l && setLeg(s));
    l.onRemoteVideo = (s) => legRef.current?.leg === l && setRemoteVideo(s);
    legRef.current = { callId, leg: l };
    setLeg("new");
    try {
      const err = await l.open(callId, mic);
      setMediaError(err);
      if (mutedRef.current) await l.setMuted(true);
      if (speaker) await l.useSpeaker(speaker).catch(() => undefined);
    } catch (e) {
      setMediaError(`The call's audio could not start: ${describeError(e)}`);
    }
  };

  const track = (c: Call) => {
    setReadAt(Date.now());
    setCall((cur) => {
      if (c.state === "ended") return cur && cur.id === c.id ? null : cur;
      if (cur && cur.id !== c.id && cur.created_at > c.created_at) return cur;
      return c;
    });
  };

  // The current call on start and after every (re)connect of the events socket.
  useEffect(() => {
    if (!ready || !socketOpen) return;
    let live = true;
    callsApi
      .list()
      .then((l) => {
        if (!live) return;
        setReadAt(Date.now());
        setCall(currentCall(l.calls));
      })
      .catch(() => undefined);
    return () => {
      live = false;
    };
  }, [ready, socketOpen]);

  useEffect(() => subscribe((e) => e.type === "call" && track(e.call)), [subscribe]);

  // The leg follows the call: open while we ring out or once we picked up, closed when it ends.
  useEffect(() => {
    const wantLeg = call && (call.state === "active" || (call.state === "ringing" && call.outgoing));
    if (wantLeg && legRef.current?.callId !== call.id) void openLeg(call.id);
    if (!call && legRef.current) {
      closeLeg();
      setMutedState(false);
      setDeafenedState(false);
      setMediaError(null);
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [call?.id, call?.state]);

  // While a call runs: the node's view (path, RTT, media counters) and the leg's getStats, each second.
  useEffect(() => {
    if (!call || call.state !== "active") return;
    const id = call.id;
    const timer = setInterval(() => {
      callsApi
        .get(id)
        .then((c) => track(c))
        .catch(() => undefined);
      const l = legRef.current?.leg;
      if (!l) return;
      l.pc
        .getStats()
        .then((r) => {
          const cur = sampleOf(r.values() as Iterable<{ type?: string; kind?: string }>, Date.now());
          setFig(figures(prevSample.current, cur));
          prevSample.current = cur;
        })
        .catch(() => undefined);
    }, 1000);
    return () => clearInterval(timer);
  }, [call?.id, call?.state]);

  // Devices, refreshed when they change (labels appear once the microphone was allowed).
  useEffect(() => {
    const md = navigator.mediaDevices;
    if (!md?.enumerateDevices) return;
    const load = () =>
      md
        .enumerateDevices()
        .then((all) =>
          setDevices({
            mics: all.filter((d) => d.kind === "audioinput"),
            speakers: all.filter((d) => d.kind === "audiooutput"),
            cameras: all.filter((d) => d.kind === "videoinput"),
          }),
        )
        .catch(() => undefined);
    void load();
    md.addEventListener?.("devicechange", load);
    return () => md.removeEventListener?.("devicechange", load);
  }, [leg]);

  useEffect(() => () => closeLeg(), []);

  const value = useMemo<CallsValue>(
    () => ({
      call,
      readAt,
      leg,
      muted,
      deafened,
      devices,
      mic,
      speaker,
      camera,
      figures: fig,
      mediaError,
      cameraOn,
      screenOn,
      localVideo,
      remoteVideo,
      setCameraOn(on) {
        const l = legRef.current?.leg;
        if (!l) return;
        setCameraOnState(on);
        l.setCamera(on, camera)
          .then(() => showLocal(l))
          .catch((e) => {
            setCameraOnState(false);
            setMediaError(`The camera cannot be used: ${describeError(e)}`);
          });
      },
      setScreenOn(on) {
        const l = legRef.current?.leg;
        if (!l) return;
        const ended = () => {
          if (legRef.current?.leg !== l) return;
          setScreenOnState(false);
          void l.setScreen(false, () => undefined).then(() => showLocal(l));
        };
        setScreenOnState(on);
        l.setScreen(on, ended)
          .then(() => showLocal(l))
          .catch((e) => {
            setScreenOnState(false);
            // Cancelling the browser's picker is not an error worth a banner.
            if (e instanceof DOMException && e.name === "NotAllowedError") return;
            setMediaError(`The screen cannot be shared: ${describeError(e)}`);
          });
      },
      async start(userId) {
        try {
          track(await callsApi.start(userId));
        } catch (e) {
          actions.notify(describeError(e), "error");
        }
      },
      async accept() {
        if (!call) return;
        try {
          track(await callsApi.accept(call.id));
        } catch (e) {
          actions.notify(describeError(e), "error");
        }
      },
      async decline() {
        if (!call) return;
        try {
          track(await callsApi.decline(call.id));
        } catch (e) {
          actions.notify(describeError(e), "error");
        }
      },
      async hangup() {
        if (!call) return;
        try {
          track(await callsApi.hangup(call.id));
        } catch (e) {
          actions.notify(describeError(e), "error");
        }
      },
      setMuted(m) {
        // Undeafening by unmuting, as in every voice app: speaking while deafened makes no sense.
        if (!m && deafened) setDeafenedState(false);
        setMutedState(m);
        if (legRef.current) void legRef.current.leg.setMuted(m);
        if (!m && legRef.current) legRef.current.leg.audio.muted = false;
      },
      setDeafened(d) {
        setDeafenedState(d);
        const l = legRef.current?.leg;
        if (l) l.audio.muted = d;
        // Deafened means muted too; undeafening restores the microphone.
        setMutedState(d);
        if (l) void l.setMuted(d);
      },
      setMic(id) {
        setMicId(id);
        store?.setItem(MIC_KEY, id);
        legRef.current?.leg.useMic(id, muted).catch((e) => setMediaError(`That microphone cannot be used: ${describeError(e)}`));
      },
      setSpeaker(id) {
        setSpeakerId(id);
        store?.setItem(SPEAKER_KEY, id);
        legRef.current?.leg.useSpeaker(id).catch(() => setMediaError("That speaker cannot be used in this browser."));
      },
      setCamera(id) {
        setCameraId(id);
        store?.setItem(CAMERA_KEY, id);
        const l = legRef.current?.leg;
        if (l && cameraOn) {
          l.setCamera(true, id)
            .then(() => showLocal(l))
            .catch((e) => setMediaError(`That camera cannot be used: ${describeError(e)}`));
        }
      },
    }),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [call, readAt, leg, muted, deafened, devices, mic, speaker, camera, fig, mediaError, cameraOn, screenOn, localVideo, remoteVideo, actions],
  );

  return <CallsContext.Provider value={value}>{children}</CallsContext.Provider>;
}
