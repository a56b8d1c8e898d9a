import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import type { Transfer, TransferProgress } from "../api/types";
import { initialTransfers, transfersReducer, type TransfersState } from "../lib/transfers";
import { TransfersContext, type TransfersValue } from "../state/transfers";
import { FileCard, UploadTray } from "./FileCard";

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
  dimensions: { width: 640, height: 480 },
  thumbnail: "data:image/jpeg;base64,/9j/4AAQ",
  ...over,
});

const moving: TransferProgress = {
  id: "t1",
  state: "transferring",
  reason: null,
  bytes: 1 << 20,
  total: 4 << 20,
  rate: 2 << 20,
  eta_secs: 2,
  sources: 1,
  dropped: [],
  wire_bytes: 0,
};

function render(transfers: TransfersState, node: React.ReactNode): string {
  const value: TransfersValue = {
    transfers,
    sendFiles: () => undefined,
    act: async () => undefined,
    saveToDownloads: async () => null,
    dismissUpload: () => undefined,
    downloadsDir: "",
    setDownloadsDir: () => undefined,
  };
  return renderToStaticMarkup(<TransfersContext.Provider value={value}>{node}</TransfersContext.Provider>);
}

const withRecord = (t: Transfer, p?: TransferProgress) => {
  let s = transfersReducer(initialTransfers, { type: "record", transfer: t });
  if (p) s = transfersReducer(s, { type: "progress", progress: p });
  return s;
};

describe("FileCard", () => {
  it("a moving download: progress, rate, ETA, pause and cancel, the thumbnail, no content yet", () => {
    const html = render(withRecord(rec(), moving), <FileCard id="t1" name="cat.png" />);
    expect(html).toContain('data-state="transferring"');
    expect(html).toContain("25% · 1.0 MiB of 4.0 MiB · 2.0 MiB/s · 2s left");
    expect(html).toContain('aria-label="Pause cat.png"');
    expect(html).toContain('aria-label="Cancel cat.png"');
    expect(html).not.toContain("Resume");
    expect(html).toContain('data-testid="file-thumbnail"');
    expect(html).not.toContain("/content");
  });

  it("paused with a reason offers resume", () => {
    const html = render(withRecord(rec({ state: "paused", reason: "disk_full" })), <FileCard id="t1" name="cat.png" />);
    expect(html).toContain("Paused: the disk is full");
    expect(html).toContain('aria-label="Resume cat.png"');
    expect(html).not.toContain('aria-label="Pause cat.png"');
  });

  it("a finished image shows the decrypted preview and both saves", () => {
    const html = render(withRecord(rec({ state: "done", bytes: 4 << 20 })), <FileCard id="t1" name="cat.png" />);
    expect(html).toContain('src="/api/v1/transfers/t1/content"');
    expect(html).toContain('href="/api/v1/transfers/t1/content?download=1"');
    expect(html).toContain("Save to downloads");
    expect(html).not.toContain("file-thumbnail");
    expect(html).not.toContain("<progress");
  });

  it("audio and video get players, other types nothing inline", () => {
    const audio = render(withRecord(rec({ state: "done", mime: "audio/ogg", name: "a.ogg" })), <FileCard id="t1" name="a.ogg" />);
    expect(audio).toMatch(/<audio[^>]*src="\/api\/v1\/transfers\/t1\/content"/);
    const video = render(withRecord(rec({ state: "done", mime: "video/webm" })), <FileCard id="t1" name="v.webm" />);
    expect(video).toContain("<video");
    const svg = render(withRecord(rec({ state: "done", mime: "image/svg+xml", thumbnail: null })), <FileCard id="t1" name="x.svg" />);
    expect(svg).not.toMatch(/<img|<video|<audio/);
  });

  it("a failed download says why and offers nothing", () => {
    const html = render(withRecord(rec({ state: "failed", reason: "no_space" })), <FileCard id="t1" name="cat.png" />);
    expect(html).toContain("Failed: not enough free disk space");
    expect(html).not.toMatch(/Pause|Resume|Cancel|Save/);
  });

  it("the sender's own file is viewable at once", () => {
    const html = render(withRecord(rec({ direction: "outgoing" })), <FileCard id="t1" name="cat.png" />);
    expect(html).toContain('data-testid="file-preview-image"');
    expect(html).not.toContain("Save to downloads");
  });
});

describe("UploadTray", () => {
  it("shows files being prepared and upload errors", () => {
    let s = transfersReducer(initialTransfers, {
      type: "upload_start",
      upload: { localId: "u1", conversation: "peer", name: "big.iso", size: 1000, sent: 250, error: null },
    });
    s = transfersReducer(s, {
      type: "upload_start",
      upload: { localId: "u2", conversation: "peer", name: "huge.iso", size: 10, sent: 0, error: "the file does not fit the disk" },
    });
    const html = render(s, <UploadTray conversation="peer" />);
    expect(html).toContain("Preparing");
    expect(html).toContain("big.iso: preparing, 25%");
    expect(html).toContain("Could not send: the file does not fit the disk");
    expect(render(s, <UploadTray conversation="other" />)).toBe("");
  });

  it("shows what the node is preparing, with progress and cancel, and why one was not sent", () => {
    const prep = (id: string, over: Partial<Transfer>) =>
      rec({ id, conversation: "dchan1room", direction: "outgoing", message: null, blob: "", state: "preparing", ...over });
    let s = withRecord(prep("p1", { name: "video.mkv", size: 8 << 20 }), {
      ...moving,
      id: "p1",
      state: "preparing",
      bytes: 2 << 20,
      total: 8 << 20,
      rate: 4 << 20,
      eta_secs: 2,
    });
    s = transfersReducer(s, { type: "record", transfer: prep("p2", { name: "gone.bin", state: "failed", reason: "source_missing" }) });
    const html = render(s, <UploadTray conversation="dchan1room" />);
    expect(html).toContain("video.mkv: preparing, 25%");
    expect(html).toContain("4.0 MiB/s");
    expect(html).toContain("Cancel video.mkv");
    expect(html).toContain("Not sent: Failed: the file is gone");
    expect(html).toContain("Dismiss gone.bin");
    // Announced: it leaves the tray for its message's card.
    s = transfersReducer(s, { type: "record", transfer: prep("p1", { name: "video.mkv", state: "queued", message: "p1", blob: "dblob1y" }) });
    expect(render(s, <UploadTray conversation="dchan1room" />)).not.toContain("video.mkv");
  });
});
