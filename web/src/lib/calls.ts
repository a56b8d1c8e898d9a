// Pure helpers of the call UI: what a call's state means on screen, its duration, and the
// browser leg's figures from two getStats samples (tested in calls.test.ts).
import type { Call } from "../api/types";

/** What the call bar shows for a call. */
export type CallPhase = "incoming" | "outgoing" | "active" | "ended";

export function phaseOf(c: Call): CallPhase {
  if (c.state === "ended") return "ended";
  if (c.state === "active") return "active";
  return c.outgoing ? "outgoing" : "incoming";
}

/** The call to show: the newest one that is not over, if any. */
export function currentCall(calls: Call[]): Call | null {
  let best: Call | null = null;
  for (const c of calls) {
    if (c.state === "ended") continue;
    if (!best || c.created_at > best.created_at) best = c;
  }
  return best;
}

/** `m:ss`, or `h:mm:ss` from an hour. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** The duration of an active call now (the node's figure moved on by the time since it was read). */
export function liveDuration(c: Call, readAt: number, now: number): number {
  return (c.duration_ms ?? 0) + Math.max(0, now - readAt);
}

/** One reading of the browser leg's getStats. */
export interface LegSample {
  at: number;
  inPackets: number;
  inBytes: number;
  outBytes: number;
  concealed: number;
  samples: number;
  audioLevel: number;
  jitterMs: number | null;
}

type StatLike = { type?: string; kind?: string; [k: string]: unknown };

const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : 0);

/** Reads the audio counters out of a getStats report (any iterable of stats objects). */
export function sampleOf(report: Iterable<StatLike>, at: number): LegSample {
  const s: LegSample = { at, inPackets: 0, inBytes: 0, outBytes: 0, concealed: 0, samples: 0, audioLevel: 0, jitterMs: null };
  for (const r of report) {
    if (r.kind !== "audio" && r.type !== "media-source") continue;
    if (r.type === "inbound-rtp") {
      s.inPackets += num(r.packetsReceived);
      s.inBytes += num(r.bytesReceived);
      s.concealed += num(r.concealedSamples);
      s.samples += num(r.totalSamplesReceived);
      s.audioLevel = Math.max(s.audioLevel, num(r.audioLevel));
      if (typeof r.jitter === "number") s.jitterMs = r.jitter * 1000;
    } else if (r.type === "outbound-rtp") {
      s.outBytes += num(r.bytesSent);
    }
  }
  return s;
}

/** Figures between two samples: bit rates in kbit/s, concealment in percent of what was played. */
export interface LegFigures {
  inKbps: number;
  outKbps: number;
  concealedPct: number | null;
  audioLevel: number;
  jitterMs: number | null;
  inPackets: number;
}

export function figures(prev: LegSample | null, cur: LegSample): LegFigures {
  const dt = prev ? (cur.at - prev.at) / 1000 : 0;
  const rate = (a: number, b: number) => (dt > 0 ? Math.max(0, ((b - a) * 8) / dt / 1000) : 0);
  return {
    inKbps: prev ? rate(prev.inBytes, cur.inBytes) : 0,
    outKbps: prev ? rate(prev.outBytes, cur.outBytes) : 0,
    concealedPct: cur.samples > 0 ? (100 * cur.concealed) / cur.samples : null,
    audioLevel: cur.audioLevel,
    jitterMs: cur.jitterMs,
    inPackets: cur.inPackets,
  };
}

/** The path line: "Direct · host ↔ srflx", "Relayed (TURN)", … */
export function pathLabel(c: Call): string {
  const conn = c.connection;
  const mode = conn.mode === "direct" ? "Direct" : conn.mode === "relayed" ? "Relayed (TURN)" : "Not connected";
  const pair = conn.local_candidate && conn.remote_candidate ? ` · ${conn.local_candidate} ↔ ${conn.remote_candidate}` : "";
  return mode + pair;
}

/** Words for how a call ended, from our side. */
export function endLabel(c: Call): string {
  switch (c.end) {
    case "completed":
      return "Call ended";
    case "declined":
      return c.outgoing ? "Call declined" : "Declined";
    case "busy":
      return c.outgoing ? "Busy in another call" : "Missed (you were in another call)";
    case "unsupported":
      return "Their app cannot take calls";
    case "no_answer":
      return "No answer";
    case "missed":
      return "Missed call";
    case "cancelled":
      return "Cancelled";
    default:
      return "Call ended";
  }
}
