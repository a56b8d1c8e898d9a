import { describe, expect, it } from "vitest";
import type { Transfer, TransferProgress } from "../api/types";
import {
  canCancel,
  canPause,
  canResume,
  contentReady,
  formatBytes,
  formatEta,
  formatRate,
  initialTransfers,
  pastedName,
  percent,
  preparingIn,
  previewKind,
  shown,
  stateText,
  transfersReducer,
  uploadPath,
} from "./transfers";

const rec = (over: Partial<Transfer> = {}): Transfer => ({
  id: "t1",
  conversation: "dopus1peer",
  message: "t1",
  direction: "incoming",
  name: "cat.png",
  mime: "image/png",
  size: 4 << 20,
  blob: "dblob1x",
  state: "queued",
  reason: null,
  bytes: 0,
  saved_path: null,
  created_at: 1,
  updated_at: 1,
  progress: null,
  dimensions: null,
  thumbnail: null,
  ...over,
});

const prog = (over: Partial<TransferProgress> = {}): TransferProgress => ({
  id: "t1",
  state: "transferring",
  reason: null,
  bytes: 1 << 20,
  total: 4 << 20,
  rate: 1 << 20,
  eta_secs: 3,
  sources: 1,
  dropped: [],
  wire_bytes: 0,
  ...over,
});

describe("transfers reducer", () => {
  it("merges records and live progress", () => {
    let s = transfersReducer(initialTransfers, { type: "list", transfers: [rec()] });
    expect(shown(s.byId.t1)?.state).toBe("queued");
    s = transfersReducer(s, { type: "progress", progress: prog() });
    const v = shown(s.byId.t1)!;
    expect(v).toMatchObject({ state: "transferring", bytes: 1 << 20, total: 4 << 20, rate: 1 << 20, eta: 3 });
    expect(s.byId.t1!.record?.name).toBe("cat.png");
  });

  it("a paused or finished record stops the rate and ETA", () => {
    let s = transfersReducer(initialTransfers, { type: "progress", progress: prog() });
    s = transfersReducer(s, { type: "record", transfer: rec({ state: "paused", reason: "user", bytes: 1 << 20 }) });
    expect(shown(s.byId.t1)).toMatchObject({ state: "paused", reason: "user", rate: 0, eta: null, bytes: 1 << 20 });
    s = transfersReducer(s, { type: "record", transfer: rec({ state: "done", bytes: 4 << 20 }) });
    expect(shown(s.byId.t1)).toMatchObject({ state: "done", bytes: 4 << 20 });
  });

  it("a late progress event does not reopen a finished transfer", () => {
    let s = transfersReducer(initialTransfers, { type: "record", transfer: rec({ state: "done" }) });
    s = transfersReducer(s, { type: "progress", progress: prog() });
    expect(shown(s.byId.t1)?.state).toBe("done");
  });

  it("tracks the browser's upload phase until the node has a record", () => {
    let s = transfersReducer(initialTransfers, {
      type: "upload_start",
      upload: { localId: "u1", conversation: "dopus1peer", name: "a.bin", size: 100, sent: 0, error: null },
    });
    s = transfersReducer(s, { type: "upload_progress", localId: "u1", sent: 60 });
    s = transfersReducer(s, { type: "upload_progress", localId: "u1", sent: 40 });
    expect(s.uploads[0]!.sent).toBe(60);
    s = transfersReducer(s, { type: "upload_done", localId: "u1", transfer: rec({ id: "t9", direction: "outgoing" }) });
    expect(s.uploads).toHaveLength(0);
    expect(s.byId.t9?.record?.direction).toBe("outgoing");
    s = transfersReducer(s, {
      type: "upload_start",
      upload: { localId: "u2", conversation: "dopus1peer", name: "b.bin", size: 1, sent: 0, error: null },
    });
    s = transfersReducer(s, { type: "upload_failed", localId: "u2", error: "the file does not fit the disk" });
    expect(s.uploads[0]!.error).toMatch(/disk/);
    s = transfersReducer(s, { type: "upload_dismiss", localId: "u2" });
    expect(s.uploads).toHaveLength(0);
  });
});

describe("formatting", () => {
  it("bytes, rates, ETA and percentages", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(250 << 20)).toBe("250 MiB");
    expect(formatRate(3 << 19)).toBe("1.5 MiB/s");
    expect(formatEta(null)).toBe("");
    expect(formatEta(42)).toBe("42s left");
    expect(formatEta(125)).toBe("2m 05s left");
    expect(formatEta(7500)).toBe("2h 05m left");
    expect(percent(1, 3)).toBe(33);
    expect(percent(5, 0)).toBe(100);
    expect(percent(9, 3)).toBe(100);
  });

  it("states with reasons", () => {
    expect(stateText("paused", "user")).toBe("Paused");
    expect(stateText("paused", "disk_full")).toBe("Paused: the disk is full");
    expect(stateText("failed", "no_space")).toBe("Failed: not enough free disk space");
    expect(stateText("queued", "no_sources")).toBe("Waiting: nobody who has it is online");
  });

  it("which buttons apply", () => {
    expect([canPause("transferring"), canResume("transferring"), canCancel("transferring")]).toEqual([true, false, true]);
    expect([canPause("paused"), canResume("paused"), canCancel("paused")]).toEqual([false, true, true]);
    expect([canPause("done"), canResume("done"), canCancel("done")]).toEqual([false, false, false]);
  });
});

describe("previews", () => {
  it("only what the node serves inline", () => {
    expect(previewKind("image/png")).toBe("image");
    expect(previewKind("video/mp4")).toBe("video");
    expect(previewKind("audio/ogg")).toBe("audio");
    expect(previewKind("image/svg+xml")).toBeNull();
    expect(previewKind("text/html")).toBeNull();
  });

  it("content is ready for our own files, and received ones once done", () => {
    expect(contentReady(rec({ direction: "outgoing" }), "queued")).toBe(true);
    expect(contentReady(rec({ direction: "outgoing" }), "cancelled")).toBe(false);
    expect(contentReady(rec(), "transferring")).toBe(false);
    expect(contentReady(rec(), "done")).toBe(true);
    expect(contentReady(null, "done")).toBe(false);
  });

  it("names pasted images by time", () => {
    expect(pastedName("image/png", new Date(2026, 11, 7, 9, 5, 3))).toBe("Pasted image 2026-12-07 09.05.03.png");
    expect(pastedName("image/jpeg", new Date(2026, 0, 1, 0, 0, 0))).toMatch(/\.jpg$/);
  });
});

describe("preparing on the node", () => {
  const preparing = (over: Partial<Transfer> = {}) =>
    rec({ direction: "outgoing", message: null, blob: "", state: "preparing", conversation: "dchan1abc", ...over });

  it("shows hashing progress, then forgets it once the file is announced", () => {
    let s = transfersReducer(initialTransfers, { type: "record", transfer: preparing() });
    s = transfersReducer(s, { type: "progress", progress: prog({ state: "preparing", bytes: 2 << 20, rate: 1 << 20, eta_secs: 2 }) });
    let v = shown(s.byId.t1)!;
    expect(v.state).toBe("preparing");
    expect(percent(v.bytes, v.total)).toBe(50);
    expect(v.rate).toBe(1 << 20);
    expect(v.eta).toBe(2);
    expect(preparingIn(s, "dchan1abc").map((t) => t.id)).toEqual(["t1"]);
    expect(preparingIn(s, "dopus1other")).toEqual([]);
    // Announced: a stored record with its message; the bytes hashed say nothing of the bytes sent.
    s = transfersReducer(s, { type: "record", transfer: preparing({ state: "queued", message: "t1", blob: "dblob1x" }) });
    v = shown(s.byId.t1)!;
    expect(v.state).toBe("queued");
    expect(v.bytes).toBe(0);
    expect(preparingIn(s, "dchan1abc")).toEqual([]);
  });

  it("keeps a failed preparing with its reason until dismissed", () => {
    let s = transfersReducer(initialTransfers, { type: "record", transfer: preparing() });
    s = transfersReducer(s, { type: "progress", progress: prog({ state: "preparing", bytes: 1 << 20 }) });
    s = transfersReducer(s, { type: "record", transfer: preparing({ state: "failed", reason: "source_missing" }) });
    const v = shown(s.byId.t1)!;
    expect(stateText(v.state, v.reason)).toBe("Failed: the file is gone");
    expect(preparingIn(s, "dchan1abc")).toHaveLength(1);
    s = transfersReducer(s, { type: "forget", id: "t1" });
    expect(preparingIn(s, "dchan1abc")).toEqual([]);
    expect(s.byId.t1).toBeUndefined();
  });

  it("names every preparing failure", () => {
    expect(stateText("failed", "unreadable")).toBe("Failed: the file cannot be read");
    expect(stateText("failed", "not_sent")).toBe("Failed: it could not be announced");
  });

  it("uploads to a channel or to a contact", () => {
    expect(uploadPath("dchan1q9x")).toBe("/channels/dchan1q9x/files/upload");
    expect(uploadPath("dopus1abc")).toBe("/conversations/dopus1abc/files/upload");
  });
});
