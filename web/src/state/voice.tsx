// Voice channels for the whole UI: who is in each channel (from `GET /spaces/{id}/voice` and the
// live `voice` events), where we are, and this page's browser leg while we are in a channel: one
// WebRTC connection to our own node over loopback with one m-line up (the microphone, fanned out
// by the node to every participant) and one receive-only m-line per remote participant (the node
// says which m-line carries whom). Mute, deafen, push-to-talk, per-participant volume (the
// `<audio>` element's volume), speaking from the RFC 6464 levels the node forwards, and the
// join/leave sounds (WebAudio tones, no files). The pure parts are in lib/voice.ts.
import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import { voiceApi } from "../api/voice";
import type { MyVoice, SpaceVoice, VoiceState } from "../api/types";
import { browserStorage } from "../lib/prefs";
import {
  SpeakingTracker,
  applySpaceVoice,
  channelOf,
  clampVolume,
  elementVolume,
  isPttEvent,
  joinedAndLeft,
  micOpen,
  others,
  parsePtt,
  parseVolumes,
  permissionProblem,
  sameSet,
  usersByMid,
  type PttPrefs,
  type Slot,
  type VoiceRoster,
} from "../lib/voice";
import { describeError, useStore } from "./store";

/** Remote participants heard at once (the node's mesh holds 8 with us). */
export const RECEIVE_SLOTS = 7;

export interface VoiceValue {
  roster: VoiceRoster;
  /** Where we are (null: in no voice channel). */
  current: MyVoice | null;
  /** The browser leg's connection state. */
  leg: RTCPeerConnectionState | "none";
  /** Who speaks now: user ids, and our own id when we do. */
  speaking: Set<string>;
  /** Per-participant volume in percent, by user id. */
  volumes: Record<string, number>;
  ptt: PttPrefs;
  /** The push-to-talk key is held. */
  pttHeld: boolean;
  /** Why joining, the microphone or the leg failed, if they did. */
  error: string | null;
  /** A permission note while in the channel (e.g. no `speak`). */
  note: string | null;
  /** Reads `spaceId`'s channels now (and keeps them current from events). */
  watch(spaceId: string): void;
  join(spaceId: string, channelId: string): Promise<void>;
  leave(): Promise<void>;
  setMuted(m: boolean): Promise<void>;
  setDeafened(d: boolean): Promise<void>;
  setVolume(userId: string, percent: number): void;
  setPtt(p: PttPrefs): void;
}

export const VoiceContext = createContext<VoiceValue | null>(null);

export function useVoice(): VoiceValue {
  const v = useContext(VoiceContext);
  if (!v) throw new Error("useVoice outside VoiceProvider");
  return v;
}

const PTT_KEY = "dopus:voice-ptt";
const VOLUME_KEY = "dopus:voice-volumes";

/** A short tone pair: rising when someone joins, falling when someone leaves. */
function tone(ctx: AudioContext | null, rising: boolean): void {
  if (!ctx) return;
  try {
    const t0 = ctx.currentTime;
    const [a, b] = rising ? [520, 780] : [780, 520];
    for (const [i, f] of [a, b].entries()) {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "sine";
      osc.frequency.value = f;
      const start = t0 + i * 0.09;
      gain.gain.setValueAtTime(0, start);
      gain.gain.linearRampToValueAtTime(0.12, start + 0.01);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.08);
      osc.connect(gain).connect(ctx.destination);
      osc.start(start);
      osc.stop(start + 0.09);
    }
  } catch {
    // No audio output: the sounds are a nicety.
  }
}

/** The page's side of the voice leg. */
class VoiceLeg {
  readonly pc: RTCPeerConnection;
  stream: MediaStream | null = null;
  sender: RTCRtpSender | null = null;
  /** Receive m-line → its `<audio>` element. */
  readonly audio = new Map<string, HTMLAudioElement>();
  closed = false;
  private sending = true;

  constructor(onState: (s: RTCPeerConnectionState) => void, onTrack: () => void) {
    // No STUN or TURN: the node is on this machine and answers with a loopback candidate only.
    this.pc = new RTCPeerConnection({ iceServers: [] });
    this.pc.ontrack = (e) => {
      const mid = e.transceiver.mid;
      if (!mid) return;
      const a = this.audio.get(mid) ?? new Audio();
      a.autoplay = true;
      a.dataset.testid = "voice-audio";
      a.dataset.mid = mid;
      a.srcObject = new MediaStream([e.track]);
      this.audio.set(mid, a);
      void a.play().catch(() => undefined);
      onTrack();
    };
    this.pc.onconnectionstatechange = () => onState(this.pc.connectionState);
  }

  /** Opens the leg; returns a microphone problem (the leg still opens to listen). */
  async open(): Promise<string | null> {
    let micError: string | null = null;
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (e) {
      micError = `No microphone: ${e instanceof Error ? e.message : String(e)}. You can still listen.`;
    }
    if (this.closed) return micError;
    const track = this.stream?.getAudioTracks()[0] ?? null;
    const up = this.pc.addTransceiver(track ?? "audio", { direction: "sendonly", streams: this.stream ? [this.stream] : [] });
    this.sender = up.sender;
    for (let i = 0; i < RECEIVE_SLOTS; i++) this.pc.addTransceiver("audio", { direction: "recvonly" });
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    const answer = await voiceApi.browser(this.pc.localDescription?.sdp ?? offer.sdp ?? "");
    if (this.closed) return micError;
    await this.pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    return micError;
  }

  /** Sends the microphone or nothing at all (no track: not even silence is encoded). */
  async setSending(on: boolean): Promise<void> {
    if (this.sending === on || !this.sender) return;
    this.sending = on;
    const track = this.stream?.getAudioTracks()[0] ?? null;
    await this.sender.replaceTrack(on ? track : null);
  }

  /** RFC 6464 levels of what each receive m-line carries (linear 0..1), by mid. */
  levels(): Map<string, number> {
    const out = new Map<string, number>();
    for (const t of this.pc.getTransceivers()) {
      if (!t.mid || t.direction !== "recvonly") continue;
      let level = 0;
      for (const s of t.receiver.getSynchronizationSources()) {
        // Only fresh readings: a source is listed for 10 s after its last packet, with that
        // packet's level, and a muted participant sends nothing at all. (The timestamp is
        // wall-clock in Chromium; a browser giving it relative to the time origin is handled too.)
        const age = Math.min(Math.abs(Date.now() - s.timestamp), Math.abs(performance.now() - s.timestamp));
        if (typeof s.audioLevel === "number" && age < 500) level = Math.max(level, s.audioLevel);
      }
      out.set(t.mid, level);
    }
    return out;
  }

  private lastEnergy: { energy: number; duration: number } | null = null;

  /**
   * The microphone's mean level (linear RMS, 0..1) since the last call, from the media source's
   * `totalAudioEnergy` and `totalSamplesDuration` (an instantaneous `audioLevel` misses short
   * sounds between readings).
   */
  async ownLevel(): Promise<number> {
    if (!this.sending || !this.sender) {
      this.lastEnergy = null;
      return 0;
    }
    let energy = 0;
    let duration = 0;
    const stats = await this.pc.getStats();
    stats.forEach((r: { type?: string; kind?: string; totalAudioEnergy?: number; totalSamplesDuration?: number }) => {
      if (r.type === "media-source" && r.kind === "audio") {
        energy += r.totalAudioEnergy ?? 0;
        duration += r.totalSamplesDuration ?? 0;
      }
    });
    const prev = this.lastEnergy;
    this.lastEnergy = { energy, duration };
    if (!prev || duration <= prev.duration) return 0;
    return Math.sqrt(Math.max(0, energy - prev.energy) / (duration - prev.duration));
  }

  close(): void {
    this.closed = true;
    this.stream?.getTracks().forEach((t) => t.stop());
    this.pc.close();
    for (const a of this.audio.values()) a.srcObject = null;
    this.audio.clear();
  }
}

export function VoiceProvider({ children }: { children: ReactNode }) {
  const { state, subscribe, actions } = useStore();
  const [roster, setRoster] = useState<VoiceRoster>({});
  const [current, setCurrent] = useState<MyVoice | null>(null);
  const [leg, setLeg] = useState<RTCPeerConnectionState | "none">("none");
  const [slots, setSlots] = useState<Slot[]>([]);
  const [speaking, setSpeaking] = useState<Set<string>>(() => new Set());
  const store = browserStorage();
  const [volumes, setVolumes] = useState<Record<string, number>>(() => parseVolumes(store?.getItem(VOLUME_KEY) ?? null));
  const [ptt, setPttState] = useState<PttPrefs>(() => parsePtt(store?.getItem(PTT_KEY) ?? null));
  const [pttHeld, setPttHeld] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const legRef = useRef<VoiceLeg | null>(null);
  const [tracks, setTracks] = useState(0);
  const watched = useRef<Set<string>>(new Set());
  const tracker = useRef(new SpeakingTracker());
  const audioCtx = useRef<AudioContext | null>(null);
  const prevOthers = useRef<string[] | null>(null);
  const me = state.me?.user_id ?? null;
  const ready = state.node === "ready";
  const socketOpen = state.socket === "open";

  const take = useCallback((v: VoiceState) => {
    setCurrent(v.current);
    const b = v.media?.browser;
    if (b) setSlots(b.slots.map((s) => ({ mid: s.mid, user_id: s.user_id })));
  }, []);

  const watch = useCallback((spaceId: string) => {
    watched.current.add(spaceId);
    voiceApi
      .space(spaceId)
      .then((v) => setRoster((r) => applySpaceVoice(r, v)))
      .catch(() => undefined);
  }, []);

  // Our place on start and after every (re)connect of the events socket, and the watched spaces.
  useEffect(() => {
    if (!ready || !socketOpen) return;
    voiceApi.state().then(take, () => undefined);
    for (const s of watched.current) watch(s);
  }, [ready, socketOpen, take, watch]);

  useEffect(
    () =>
      subscribe((e) => {
        if (e.type !== "voice") return;
        const v: SpaceVoice = e.voice;
        setRoster((r) => applySpaceVoice(r, v));
        // Our own place may have changed too (kicked, `connect` taken away).
        voiceApi.state().then(take, () => undefined);
      }),
    [subscribe, take],
  );

  const closeLeg = () => {
    legRef.current?.close();
    legRef.current = null;
    setLeg("none");
    setSlots([]);
    setSpeaking(new Set());
  };

  // The leg follows our place: open while we are in a channel.
  const inChannel = current ? `${current.space_id}/${current.channel_id}` : null;
  useEffect(() => {
    if (!inChannel) {
      if (legRef.current) closeLeg();
      return;
    }
    closeLeg();
    const l = new VoiceLeg(
      (s) => legRef.current === l && setLeg(s),
      () => setTracks((n) => n + 1),
    );
    legRef.current = l;
    setLeg("new");
    l.open().then(
      (micError) => setError(micError),
      (e) => setError(`Voice could not start: ${describeError(e)}`),
    );
    return () => {
      if (legRef.current === l) closeLeg();
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [inChannel]);

  // While in a channel: which m-line carries whom (it changes as people come and go).
  useEffect(() => {
    if (!inChannel) return;
    const t = setInterval(() => voiceApi.state().then(take, () => undefined), 1000);
    return () => clearInterval(t);
  }, [inChannel, take]);

  // The microphone goes up when not muted and, with push-to-talk, while the key is held.
  const muted = current?.muted ?? false;
  const deafened = current?.deafened ?? false;
  const open = micOpen(muted || deafened, ptt, pttHeld);
  useEffect(() => {
    void legRef.current?.setSending(open).catch(() => undefined);
  }, [open, leg]);

  // Volumes and deafen on every participant's element.
  const byMid = useMemo(() => usersByMid(slots), [slots]);
  useEffect(() => {
    const l = legRef.current;
    if (!l) return;
    for (const [mid, a] of l.audio) {
      const user = byMid.get(mid);
      a.volume = elementVolume(user ? (volumes[user] ?? 100) : 100);
      a.muted = deafened;
      if (user) a.dataset.userId = user;
      else delete a.dataset.userId;
    }
  }, [byMid, volumes, deafened, tracks]);

  // Speaking: remote levels from the forwarded RFC 6464 headers, ours from the microphone. A
  // receiver lists only its last packet's level, so it is read every 20 ms (cheap, no stats
  // call) to see each packet; ours is the microphone's mean level over each 150 ms.
  useEffect(() => {
    if (!inChannel) return;
    const fast = setInterval(() => {
      const l = legRef.current;
      if (!l) return;
      const now = Date.now();
      for (const [mid, level] of l.levels()) {
        const user = byMid.get(mid);
        if (user) tracker.current.note(user, level, now);
      }
    }, 20);
    const slow = setInterval(() => {
      const l = legRef.current;
      const finish = () => {
        const s = tracker.current.speaking(Date.now());
        setSpeaking((prev) => (sameSet(prev, s) ? prev : s));
      };
      if (l && me && open) {
        l.ownLevel().then(
          (lv) => {
            tracker.current.note(me, lv, Date.now());
            finish();
          },
          finish,
        );
      } else finish();
    }, 150);
    return () => {
      clearInterval(fast);
      clearInterval(slow);
    };
  }, [inChannel, byMid, me, open]);

  // Push-to-talk.
  useEffect(() => {
    if (!ptt.enabled || !inChannel) {
      setPttHeld(false);
      return;
    }
    const down = (e: KeyboardEvent) => {
      if (isPttEvent(e.code, ptt, e.target as HTMLElement | null)) {
        e.preventDefault();
        setPttHeld(true);
      }
    };
    const up = (e: KeyboardEvent) => {
      if (e.code === ptt.key) setPttHeld(false);
    };
    const blur = () => setPttHeld(false);
    window.addEventListener("keydown", down);
    window.addEventListener("keyup", up);
    window.addEventListener("blur", blur);
    return () => {
      window.removeEventListener("keydown", down);
      window.removeEventListener("keyup", up);
      window.removeEventListener("blur", blur);
    };
  }, [ptt, inChannel]);

  // Join and leave sounds for the channel we are in.
  const here = current ? channelOf(roster, current.space_id, current.channel_id) : null;
  const otherIds = others(here)
    .map((p) => p.user_id)
    .join(",");
  useEffect(() => {
    if (!inChannel) {
      if (prevOthers.current !== null) tone(audioCtx.current, false);
      prevOthers.current = null;
      return;
    }
    const now = otherIds ? otherIds.split(",") : [];
    if (prevOthers.current === null) {
      tone(audioCtx.current, true);
    } else {
      const { joined, left } = joinedAndLeft(prevOthers.current, now);
      if (joined.length) tone(audioCtx.current, true);
      else if (left.length) tone(audioCtx.current, false);
    }
    prevOthers.current = now;
  }, [inChannel, otherIds]);

  useEffect(() => () => closeLeg(), []);

  const fail = useCallback((e: unknown) => setError(describeError(e)), []);

  const value = useMemo<VoiceValue>(
    () => ({
      roster,
      current,
      leg,
      speaking,
      volumes,
      ptt,
      pttHeld,
      error,
      note: here ? permissionProblem(here, "speak") : null,
      watch,
      async join(spaceId, channelId) {
        const c = channelOf(roster, spaceId, channelId);
        const problem = permissionProblem(c, "connect");
        if (problem) {
          setError(problem);
          return;
        }
        setError(null);
        try {
          // A user gesture: the sounds may play from now on.
          if (!audioCtx.current && typeof AudioContext !== "undefined") audioCtx.current = new AudioContext();
          take(await voiceApi.join(channelId));
          watch(spaceId);
        } catch (e) {
          fail(e);
        }
      },
      async leave() {
        try {
          take(await voiceApi.leave());
          setError(null);
        } catch (e) {
          fail(e);
        }
      },
      async setMuted(m) {
        try {
          // Unmuting also undeafens, as in every voice app.
          take(await voiceApi.set(m ? { muted: true } : { muted: false, deafened: false }));
        } catch (e) {
          fail(e);
        }
      },
      async setDeafened(d) {
        try {
          take(await voiceApi.set(d ? { deafened: true } : { deafened: false }));
        } catch (e) {
          fail(e);
        }
      },
      setVolume(userId, percent) {
        setVolumes((v) => {
          const next = { ...v, [userId]: clampVolume(percent) };
          store?.setItem(VOLUME_KEY, JSON.stringify(next));
          return next;
        });
      },
      setPtt(p) {
        setPttState(p);
        store?.setItem(PTT_KEY, JSON.stringify(p));
      },
    }),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [roster, current, leg, speaking, volumes, ptt, pttHeld, error, here, watch, take, fail, actions],
  );

  return <VoiceContext.Provider value={value}>{children}</VoiceContext.Provider>;
}
