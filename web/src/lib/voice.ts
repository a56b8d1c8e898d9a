// Pure helpers of the voice channel UI (tested in voice.test.ts): who is in which channel from
// `GET /spaces/{id}/voice` and the live `voice` events, who joined or left (for the sounds),
// which downstream slot of the browser leg carries whom, speaking from RFC 6464 levels,
// push-to-talk keys, per-participant volume, and what a missing permission means.
import type { SpaceVoice, VoiceChannel, VoiceParticipant } from "../api/types";

/** Every space's voice channels we know, by space id. */
export type VoiceRoster = Record<string, SpaceVoice>;

/** The roster with one space's channels replaced (from a `voice` event or a read). */
export function applySpaceVoice(roster: VoiceRoster, v: SpaceVoice): VoiceRoster {
  return { ...roster, [v.space_id]: v };
}

/** A channel of the roster, if known. */
export function channelOf(roster: VoiceRoster, spaceId: string, channelId: string): VoiceChannel | null {
  return roster[spaceId]?.channels.find((c) => c.channel_id === channelId) ?? null;
}

/** The others in a channel (not us), in the node's order. */
export function others(c: VoiceChannel | null): VoiceParticipant[] {
  return (c?.participants ?? []).filter((p) => !p.me);
}

/** Who came and who went between two lists of user ids (order does not matter). */
export function joinedAndLeft(before: string[], after: string[]): { joined: string[]; left: string[] } {
  const b = new Set(before);
  const a = new Set(after);
  return { joined: after.filter((u) => !b.has(u)), left: before.filter((u) => !a.has(u)) };
}

/** One downstream slot of the browser leg: an m-line (`mid`) and who it carries now. */
export interface Slot {
  mid: string;
  user_id: string | null;
}

/** Who each m-line carries, by mid (slots carrying nobody are left out). */
export function usersByMid(slots: Slot[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const s of slots) if (s.user_id) m.set(s.mid, s.user_id);
  return m;
}

/**
 * Speaking from an RFC 6464 level as a browser reports it (`RTCRtpSynchronizationSource.audioLevel`
 * or getStats' `audioLevel`: linear, 0 silent to 1 loudest, from the ssrc-audio-level header the
 * node forwards). The threshold is about −45 dBov: above room noise after Chromium's noise
 * suppression, below any voice.
 */
export const SPEAKING_LEVEL = 0.0056; // 10^(-45/20)

/** How long a participant still shows as speaking after their last loud packet. */
export const SPEAKING_HOLD_MS = 400;

export function isLoud(level: number | null | undefined): boolean {
  return typeof level === "number" && Number.isFinite(level) && level >= SPEAKING_LEVEL;
}

/** Tracks when each key (user id, or "me") was last loud; speaking = loud within the hold. */
export class SpeakingTracker {
  private last = new Map<string, number>();

  /** Notes a level reading for `key` at `now` (ms). */
  note(key: string, level: number | null | undefined, now: number): void {
    if (isLoud(level)) this.last.set(key, now);
  }

  /** Who speaks at `now`. */
  speaking(now: number): Set<string> {
    const s = new Set<string>();
    for (const [k, t] of this.last) if (now - t <= SPEAKING_HOLD_MS) s.add(k);
    return s;
  }

  forget(key: string): void {
    this.last.delete(key);
  }
}

/** Whether two sets hold the same keys. */
export function sameSet(a: Set<string>, b: Set<string>): boolean {
  if (a.size !== b.size) return false;
  for (const k of a) if (!b.has(k)) return false;
  return true;
}

/** Per-participant volume in percent (0 to 100; 100 is as received), applied as the
 * participant's `<audio>` element volume. */
export const MAX_VOLUME = 100;

export function clampVolume(v: unknown): number {
  const n = typeof v === "number" ? v : Number(v);
  if (!Number.isFinite(n)) return 100;
  return Math.min(MAX_VOLUME, Math.max(0, Math.round(n)));
}

/** The `<audio>` element volume for a percentage. */
export function elementVolume(percent: number): number {
  return clampVolume(percent) / 100;
}

/** Stored volumes (user id → percent); anything odd is dropped. */
export function parseVolumes(raw: string | null): Record<string, number> {
  if (!raw) return {};
  try {
    const v = JSON.parse(raw) as unknown;
    if (!v || typeof v !== "object" || Array.isArray(v)) return {};
    const out: Record<string, number> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (typeof x === "number" && /^dopus1[a-z0-9]{10,100}$/.test(k)) out[k] = clampVolume(x);
    }
    return out;
  } catch {
    return {};
  }
}

/** Push-to-talk settings, kept in this browser. */
export interface PttPrefs {
  enabled: boolean;
  /** A `KeyboardEvent.code` ("Space", "KeyV", "ControlLeft", …). */
  key: string;
}

export const DEFAULT_PTT: PttPrefs = { enabled: false, key: "KeyV" };

/** Reads stored push-to-talk settings; anything odd gives the default. */
export function parsePtt(raw: string | null): PttPrefs {
  if (!raw) return DEFAULT_PTT;
  try {
    const v = JSON.parse(raw) as Partial<PttPrefs>;
    const key = typeof v.key === "string" && /^[A-Za-z0-9]{1,24}$/.test(v.key) ? v.key : DEFAULT_PTT.key;
    return { enabled: v.enabled === true, key };
  } catch {
    return DEFAULT_PTT;
  }
}

/** A key code as a person reads it: "KeyV" → "V", "Digit1" → "1", "ControlLeft" → "Left Ctrl". */
export function keyLabel(code: string): string {
  if (/^Key[A-Z]$/.test(code)) return code.slice(3);
  if (/^Digit\d$/.test(code)) return code.slice(5);
  const side = /(Left|Right)$/.exec(code)?.[1];
  const base = side ? code.slice(0, -side.length) : code;
  const names: Record<string, string> = { Control: "Ctrl", Meta: "Meta", Alt: "Alt", Shift: "Shift", Space: "Space", Backquote: "`" };
  const name = names[base] ?? base;
  return side ? `${side} ${name}` : name;
}

/**
 * Whether a key event is the push-to-talk key and may be taken: never while typing in a text
 * field (a letter key would otherwise open the microphone on every keystroke).
 */
export function isPttEvent(code: string, prefs: PttPrefs, target: { tagName?: string; isContentEditable?: boolean } | null): boolean {
  if (!prefs.enabled || code !== prefs.key) return false;
  const tag = target?.tagName?.toUpperCase();
  if (target?.isContentEditable || tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT") return false;
  return true;
}

/** Whether the microphone goes up: not muted, and the key held when push-to-talk is on. */
export function micOpen(muted: boolean, ptt: PttPrefs, keyHeld: boolean): boolean {
  return !muted && (!ptt.enabled || keyHeld);
}

/** Why we may not join or speak in a channel, in words (null: nothing missing). */
export function permissionProblem(c: VoiceChannel | null, want: "connect" | "speak"): string | null {
  if (!c) return null;
  if (!c.can_connect) return `You may not join ${c.name}: your roles lack the Connect permission in this channel.`;
  if (want === "speak" && !c.can_speak)
    return `You may listen in ${c.name} but not speak: your roles lack the Speak permission. The others' nodes drop your audio.`;
  return null;
}
