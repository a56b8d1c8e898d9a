// Small display helpers shared by components, kept pure so they can be unit-tested.
import type { Connection } from "../api/types";

export const MODE_TEXT: Record<Connection["mode"], string> = {
  direct: "Direct peer-to-peer",
  relayed: "Relayed through a TURN server",
  mailbox: "Mailbox (stored encrypted until they are online)",
  none: "No connection yet",
};

/** Loopback and LAN paths measure well under a millisecond; "0 ms" would read as "no answer". */
export function formatRtt(ms: number): string {
  return ms < 1 ? "< 1 ms" : `${Math.round(ms)} ms`;
}

export function connectionSummary(c: Pick<Connection, "mode" | "state"> & { rtt_ms?: number | null }): string {
  const rtt = c.rtt_ms != null ? `, ${formatRtt(c.rtt_ms)}` : "";
  return `${MODE_TEXT[c.mode] ?? c.mode} (${c.state}${rtt})`;
}

/** Splits the safety number into its 12 groups of 5 digits, whatever separators the node used. */
export function safetyGroups(s: string): string[] {
  const digits = s.replace(/\D/g, "");
  const groups: string[] = [];
  for (let i = 0; i < digits.length; i += 5) groups.push(digits.slice(i, i + 5));
  return groups;
}

/** ICE servers are edited one per line; blank lines and surrounding spaces are dropped. */
export function parseIceServers(text: string): string[] {
  return text
    .split(/[\n,]/)
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Accepts stun:, stuns:, turn: and turns: URLs, the forms WebRTC understands. */
export function isIceUrl(s: string): boolean {
  return /^(stuns?|turns?):[^\s]+$/i.test(s);
}

export function isServerUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === "ws:" || u.protocol === "wss:") && u.host !== "";
  } catch {
    return false;
  }
}

/** A contact's name for display; requests may arrive before a name is known. */
export function displayName(c: { display_name: string; user_id: string }): string {
  return c.display_name.trim() || `${c.user_id.slice(0, 10)}…${c.user_id.slice(-4)}`;
}

/** Match markers in the node's optional `highlighted` snippet (control characters, never markup). */
const MARK_START = "\u0002";
const MARK_END = "\u0003";

/** Splits a marked snippet into plain and matched runs, so matches render as <mark> with no HTML parsing. */
export function snippetParts(marked: string): { text: string; match: boolean }[] {
  const parts: { text: string; match: boolean }[] = [];
  let match = false;
  let buf = "";
  for (const ch of marked) {
    if (ch === MARK_START || ch === MARK_END) {
      if (buf) parts.push({ text: buf, match });
      buf = "";
      match = ch === MARK_START;
    } else {
      buf += ch;
    }
  }
  if (buf) parts.push({ text: buf, match });
  return parts;
}
