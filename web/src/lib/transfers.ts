// File transfers as the UI shows them: the stored records (`GET /transfers`, `transfer` events)
// merged with live progress (`transfer_progress` events, at most 4 a second per transfer), plus
// the browser's own upload phase before the node has a record. Pure: every transition is tested.
import type { Transfer, TransferProgress, TransferReason, TransferState } from "../api/types";

/** One transfer: the record, its latest live progress, and our upload of its bytes if any. */
export interface TransferView {
  record: Transfer | null;
  progress: TransferProgress | null;
}

/** The browser handing a file to its node (before the node's record exists): "preparing". */
export interface LocalUpload {
  localId: string;
  conversation: string;
  name: string;
  size: number;
  /** Bytes the node took so far. */
  sent: number;
  /** Set once the upload failed (the node's message). */
  error: string | null;
}

export interface TransfersState {
  byId: Record<string, TransferView>;
  uploads: LocalUpload[];
}

export const initialTransfers: TransfersState = { byId: {}, uploads: [] };

export type TransfersAction =
  | { type: "list"; transfers: Transfer[] }
  | { type: "record"; transfer: Transfer }
  | { type: "progress"; progress: TransferProgress }
  | { type: "upload_start"; upload: LocalUpload }
  | { type: "upload_progress"; localId: string; sent: number }
  | { type: "upload_done"; localId: string; transfer: Transfer }
  | { type: "upload_failed"; localId: string; error: string }
  | { type: "upload_dismiss"; localId: string }
  | { type: "forget"; id: string };

const FINAL: TransferState[] = ["done", "failed", "cancelled"];

export function isFinal(s: TransferState): boolean {
  return FINAL.includes(s);
}

function withRecord(v: TransferView | undefined, t: Transfer): TransferView {
  // A stored record newer than the live progress wins its state (pause, done, cancel come
  // from the record); live progress keeps its bytes and rate while both say it moves.
  let progress = v?.progress ?? t.progress ?? null;
  // The node's preparing pass counted bytes hashed, not bytes sent: it says nothing once the
  // file is announced (or preparing ended).
  if (progress?.state === "preparing" && t.state !== "preparing") {
    progress = t.progress && t.progress.state !== "preparing" ? t.progress : null;
  }
  if (progress && progress.state !== t.state && (isFinal(t.state) || t.state === "paused" || t.state === "queued")) {
    progress = { ...progress, state: t.state, reason: t.reason, rate: 0, eta_secs: null };
  }
  return { record: t, progress };
}

export function transfersReducer(s: TransfersState, a: TransfersAction): TransfersState {
  switch (a.type) {
    case "list": {
      const byId: Record<string, TransferView> = { ...s.byId };
      for (const t of a.transfers) byId[t.id] = withRecord(s.byId[t.id], t);
      return { ...s, byId };
    }
    case "record":
      return { ...s, byId: { ...s.byId, [a.transfer.id]: withRecord(s.byId[a.transfer.id], a.transfer) } };
    case "progress": {
      const prev = s.byId[a.progress.id];
      // A late progress event must not reopen a transfer whose record already ended.
      if (prev?.record && isFinal(prev.record.state) && !isFinal(a.progress.state)) return s;
      return { ...s, byId: { ...s.byId, [a.progress.id]: { record: prev?.record ?? null, progress: a.progress } } };
    }
    case "upload_start":
      return { ...s, uploads: [...s.uploads, a.upload] };
    case "upload_progress":
      return {
        ...s,
        uploads: s.uploads.map((u) => (u.localId === a.localId ? { ...u, sent: Math.max(u.sent, a.sent) } : u)),
      };
    case "upload_done":
      return {
        byId: { ...s.byId, [a.transfer.id]: withRecord(s.byId[a.transfer.id], a.transfer) },
        uploads: s.uploads.filter((u) => u.localId !== a.localId),
      };
    case "upload_failed":
      return { ...s, uploads: s.uploads.map((u) => (u.localId === a.localId ? { ...u, error: a.error } : u)) };
    case "upload_dismiss":
      return { ...s, uploads: s.uploads.filter((u) => u.localId !== a.localId) };
    case "forget": {
      const byId = { ...s.byId };
      delete byId[a.id];
      return { ...s, byId };
    }
  }
}

/** What a file card shows: state, bytes done of total, rate and ETA (null when unknown). */
export interface Shown {
  state: TransferState;
  reason: TransferReason | null;
  bytes: number;
  total: number;
  rate: number;
  eta: number | null;
}

export function shown(v: TransferView | undefined): Shown | null {
  if (!v) return null;
  const r = v.record;
  const p = v.progress;
  const state = p?.state ?? r?.state ?? "queued";
  const total = p?.total ?? r?.size ?? 0;
  let bytes = p?.bytes ?? r?.bytes ?? 0;
  if (state === "done") bytes = total;
  const moving = state === "transferring" || state === "preparing";
  return {
    state,
    reason: p?.reason ?? r?.reason ?? null,
    bytes,
    total,
    rate: moving ? (p?.rate ?? 0) : 0,
    eta: moving ? (p?.eta_secs ?? null) : null,
  };
}

/** 0–100, whole. */
export function percent(bytes: number, total: number): number {
  if (total <= 0) return 100;
  return Math.max(0, Math.min(100, Math.floor((bytes * 100) / total)));
}

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

export function formatRate(bytesPerSec: number): string {
  return `${formatBytes(bytesPerSec)}/s`;
}

export function formatEta(secs: number | null): string {
  if (secs === null) return "";
  if (secs < 60) return `${secs}s left`;
  if (secs < 3600) return `${Math.floor(secs / 60)}m ${String(secs % 60).padStart(2, "0")}s left`;
  return `${Math.floor(secs / 3600)}h ${String(Math.floor((secs % 3600) / 60)).padStart(2, "0")}m left`;
}

const STATE_LABEL: Record<TransferState, string> = {
  preparing: "Preparing",
  queued: "Waiting",
  connecting: "Connecting",
  transferring: "Transferring",
  paused: "Paused",
  verifying: "Verifying",
  done: "Done",
  failed: "Failed",
  cancelled: "Cancelled",
};

const REASON_LABEL: Record<TransferReason, string> = {
  user: "",
  disk_full: "the disk is full",
  no_space: "not enough free disk space",
  source_changed: "the file changed on the sender's disk",
  hash_mismatch: "the file did not match what was announced",
  no_sources: "nobody who has it is online",
  revoked: "the sender withdrew it",
  io: "a disk error",
  source_missing: "the file is gone",
  unreadable: "the file cannot be read",
  not_sent: "it could not be announced",
};

/** "Paused", "Failed: the disk is full", "Waiting: nobody who has it is online". */
export function stateText(state: TransferState, reason: TransferReason | null): string {
  const why = reason ? REASON_LABEL[reason] : "";
  return why ? `${STATE_LABEL[state]}: ${why}` : STATE_LABEL[state];
}

export function canPause(s: TransferState): boolean {
  return s === "queued" || s === "connecting" || s === "transferring";
}

export function canResume(s: TransferState): boolean {
  return s === "paused";
}

export function canCancel(s: TransferState): boolean {
  return !isFinal(s);
}

/** How the UI may show a file inline: only what the node serves inline (docs/api.md). */
export function previewKind(mime: string): "image" | "video" | "audio" | null {
  if (["image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp"].includes(mime)) return "image";
  if (mime.startsWith("video/")) return "video";
  if (mime.startsWith("audio/")) return "audio";
  return null;
}

/** Whether the node can serve the plaintext now: our own file, or a received one once verified. */
export function contentReady(t: Transfer | null, state: TransferState): boolean {
  if (!t) return false;
  if (t.direction === "outgoing") return state !== "failed" && state !== "cancelled";
  return state === "done";
}

/** A name for a pasted image (the clipboard gives "image.png" or nothing). */
export function pastedName(mime: string, now: Date): string {
  const ext = mime === "image/jpeg" ? "jpg" : (mime.split("/")[1] ?? "png").replace(/[^a-z0-9]/gi, "") || "png";
  const pad = (n: number) => String(n).padStart(2, "0");
  return `Pasted image ${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())} ${pad(now.getHours())}.${pad(now.getMinutes())}.${pad(now.getSeconds())}.${ext}`;
}

/** The upload route for a target: a space channel (`dchan1…`) or a contact (docs/api.md, "Files"). */
export function uploadPath(target: string): string {
  const id = encodeURIComponent(target);
  return target.startsWith("dchan1") ? `/channels/${id}/files/upload` : `/conversations/${id}/files/upload`;
}

/** Our files in `conversation` that the node is preparing (hashing and encrypting) or failed to
 * prepare: not announced yet, so no message shows them. Oldest first. */
export function preparingIn(s: TransfersState, conversation: string): Transfer[] {
  return Object.values(s.byId)
    .map((v) => v.record)
    .filter(
      (r): r is Transfer =>
        !!r && r.conversation === conversation && r.direction === "outgoing" && r.message === null && r.blob === "",
    )
    .sort((a, b) => a.created_at - b.created_at || a.id.localeCompare(b.id));
}
