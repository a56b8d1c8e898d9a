// End-to-end of files through the UI with REAL components: the signaling server, two discordopus
// nodes (alice and bob, made contacts through their APIs) and two headless Chromium pages. Alice
// attaches an image with the attach button; both pages show its progress (state, percentage,
// rate); bob pauses and resumes it, then sees the decrypted preview served by his own node;
// alice pastes a second image and drops a text file, and both arrive; last, alice attaches an
// image in a space channel and bob sees its preview there.
//
//   node e2e/files.mjs     (from web/; binaries as for `npm run e2e`: DOPUS_BIN_DIR, or ../target/debug)
//
// Screenshots go to <repo>/test-output/screenshots/files-*.png, logs to test-output/e2e-logs/.
import { deflateSync } from "node:zlib";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  CHROMIUM,
  SHOTS,
  UI_TIMEOUT_MS,
  apiCall,
  befriend,
  createIdentity,
  fail,
  killAll,
  pcm16MonoWav,
  preflight,
  screenshot,
  startNode,
  startServer,
  visible,
  waitFor,
  runScript,
  within,
} from "./harness.mjs";

const T = UI_TIMEOUT_MS;
const SLOW = 120_000;
const RUN_LIMIT_MS = 8 * 60_000;
let step = "start";
const log = (msg) => console.log(`[files-e2e ${new Date().toISOString().slice(11, 19)}] ${msg}`);
const section = (s) => {
  step = s;
  log(`-- ${s}`);
};

/** A PNG of `w`×`h` noisy RGB pixels, stored (deflate level 0) so its size is about 3·w·h bytes. */
function png(w, h, seed) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, c]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const raw = Buffer.alloc((w * 3 + 1) * h);
  let x = seed >>> 0 || 1;
  for (let y = 0; y < h; y++) {
    const row = y * (w * 3 + 1);
    raw[row] = 0; // filter: none
    for (let i = 1; i <= w * 3; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      // A gradient with noise: recognisable in a screenshot, incompressible enough.
      raw[row + i] = ((i % 3 === 0 ? y * 255 / h : i % 3 === 1 ? (i / 3) * 255 / w : 128) + (x & 63)) & 0xff;
    }
  }
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([sig, chunk("IHDR", ihdr), chunk("IDAT", deflateSync(raw, { level: 0 })), chunk("IEND", Buffer.alloc(0))]);
}

/** A WAV file: `secs` seconds of a 440 Hz tone, 8 kHz mono 16-bit. */
function wav(secs) {
  const rate = 8000;
  return pcm16MonoWav(rate, rate * secs, (i) => Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / rate)));
}





const card = (page, name) => page.locator(`[data-testid="file-card"]`).filter({ hasText: name });
const stateOf = async (page, name) => ((await card(page, name).first().getByTestId("file-state").textContent().catch(() => "")) ?? "").trim();

async function shot(page, name) {
  await screenshot(page, name);
  log(`screenshot ${name}.png`);
}

async function main() {
  preflight();
  mkdirSync(SHOTS, { recursive: true });
  for (const f of ["files-1-sent", "files-2-progress", "files-3-paused", "files-4-preview", "files-5-paste-drop", "files-6-audio", "files-7-channel"]) {
    rmSync(join(SHOTS, `${f}.png`), { force: true });
  }
  const tmp = mkdtempSync(join(tmpdir(), "dopus-files-e2e-"));
  let browser;
  const errors = [];
  try {
    section("server and nodes");
    const { url: serverUrl } = await startServer(join(tmp, "server"));
    const nodes = {};
    for (const n of ["alice", "bob"]) {
      nodes[n] = await startNode(n, join(tmp, n), serverUrl);
      await createIdentity(nodes[n], n === "alice" ? "Alice" : "Bob", `${n} passphrase 123`);
    }
    const { alice, bob } = nodes;

    section("contacts (through the API)");
    await befriend(alice, bob, "Bob", SLOW);

    section("browser");
    browser = await within("launch chromium", 30_000, chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
    }));
    const pages = {};
    for (const [n, peer] of [["alice", bob], ["bob", alice]]) {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const p = await ctx.newPage();
      p.setDefaultTimeout(T);
      p.on("pageerror", (e) => errors.push(`${n}: uncaught ${e.message}`));
      p.on("console", (m) => {
        if (m.type() === "error") errors.push(`${n}: ${m.text()}`);
      });
      await p.goto(`${nodes[n].api.url}/?token=${nodes[n].api.token}`);
      await visible(p.getByTestId("my-user-id"), `${n}: home screen`, SLOW);
      const button = p.getByRole("navigation", { name: "Conversations" }).locator(`button[data-user-id="${peer.id}"]`);
      await visible(button, `${n}: the contact in the list`, SLOW);
      await button.click();
      await visible(p.locator("#composer"), `${n}: composer`);
      pages[n] = p;
    }
    const pa = pages.alice;
    const pb = pages.bob;

    section("attach an image");
    const big = png(2400, 1800, 7); // about 13 MiB: several seconds on a debug build
    log(`image of ${(big.length / 1048576).toFixed(1)} MiB`);
    await visible(pa.getByRole("button", { name: "Attach files" }), "alice: attach button");
    await pa.getByTestId("attach-input").setInputFiles({ name: "holiday.png", mimeType: "image/png", buffer: big });
    await visible(card(pa, "holiday.png"), "alice: the file card", SLOW);
    // The sender's node serves its own file to its UI at once.
    await visible(card(pa, "holiday.png").getByTestId("file-preview-image"), "alice: her own preview", SLOW);
    await shot(pa, "files-1-sent");

    section("progress on the receiver");
    await visible(card(pb, "holiday.png"), "bob: the file card", SLOW);
    await waitFor("bob: the transfer moves with a percentage", async () => {
      const s = await stateOf(pb, "holiday.png");
      const nums = (await card(pb, "holiday.png").getByTestId("file-numbers").textContent().catch(() => "")) ?? "";
      return s.startsWith("Transferring") && /\d+% · .* · [\d.]+ [KMG]?i?B\/s/.test(nums) && !nums.startsWith("0% ") ? nums : null;
    }, SLOW, 50);
    // The thumbnail alice's browser made travels in the manifest: bob sees it before the file.
    const thumb = card(pb, "holiday.png").getByTestId("file-thumbnail");
    await visible(thumb, "bob: the sender's thumbnail while it transfers");
    const thumbW = await thumb.evaluate((el) => el.naturalWidth);
    if (thumbW !== 160) fail(`the thumbnail is ${thumbW} px wide, not 160`);
    await shot(pb, "files-2-progress");
    // The sender sees its side move too (or already done).
    await waitFor("alice: her side shows progress", async () => /^(Transferring|Done)/.test(await stateOf(pa, "holiday.png")), SLOW, 100);

    section("pause and resume");
    await pb.getByRole("button", { name: "Pause holiday.png" }).click();
    await waitFor("bob: paused", async () => (await stateOf(pb, "holiday.png")).startsWith("Paused"), T);
    const paused = await apiCall(bob, "GET", "/transfers");
    const rec = paused.transfers.find((t) => t.name === "holiday.png");
    if (!rec || rec.state !== "paused") fail(`bob's node does not hold the transfer paused: ${JSON.stringify(rec)}`);
    if (rec.state === "done") fail("the transfer finished before it could be paused");
    await shot(pb, "files-3-paused");
    // Alice's side stops claiming a rate: with nothing asked of it, her upload waits again.
    await waitFor("alice: her upload waits while bob is paused", async () => (await stateOf(pa, "holiday.png")).startsWith("Waiting"), T, 100);
    await pb.getByRole("button", { name: "Resume holiday.png" }).click();
    await waitFor("bob: done", async () => (await stateOf(pb, "holiday.png")) === "Done", SLOW, 200);

    section("preview on the receiver");
    const img = card(pb, "holiday.png").getByTestId("file-preview-image");
    await visible(img, "bob: the preview", T);
    await waitFor("bob: the preview decoded", () => img.evaluate((el) => el.complete && el.naturalWidth === 2400), T);
    await visible(card(pb, "holiday.png").getByRole("link", { name: "Save holiday.png as…" }), "bob: save as");
    await waitFor("alice: her side is done", async () => (await stateOf(pa, "holiday.png")) === "Done", SLOW, 200);
    await shot(pb, "files-4-preview");

    section("paste an image, drop a file");
    const small = png(64, 48, 3);
    await pa.locator("#composer").focus();
    await pa.evaluate((bytes) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(bytes)], "image.png", { type: "image/png" }));
      const ev = new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true });
      document.getElementById("composer").dispatchEvent(ev);
    }, [...small]);
    await pa.evaluate(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(["notes for bob\n"], "notes.txt", { type: "text/plain" }));
      const target = document.querySelector('[data-testid="conversation"]');
      target.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
      target.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    });
    await waitFor("bob: the pasted image arrived", async () => (await stateOf(pb, "Pasted image")) === "Done", SLOW, 200);
    await visible(card(pb, "Pasted image").getByTestId("file-preview-image"), "bob: pasted image preview");
    await waitFor("bob: the dropped file arrived", async () => (await stateOf(pb, "notes.txt")) === "Done", SLOW, 200);
    if (await card(pb, "notes.txt").getByTestId("file-preview-image").count()) fail("a text file got an image preview");
    await shot(pb, "files-5-paste-drop");

    section("an audio file plays from the node");
    await pa.getByTestId("attach-input").setInputFiles({ name: "tone.wav", mimeType: "audio/wav", buffer: wav(2) });
    await waitFor("bob: the audio file arrived", async () => (await stateOf(pb, "tone.wav")) === "Done", SLOW, 200);
    const audio = card(pb, "tone.wav").getByTestId("file-preview-audio");
    await visible(audio, "bob: the audio player");
    // The player reads the decrypted file from bob's node (with byte ranges) and finds 2 s.
    const duration = await waitFor("bob: the player loaded the audio", () =>
      audio.evaluate((el) => (el.readyState >= 1 && Number.isFinite(el.duration) ? el.duration : null)), T);
    if (Math.abs(duration - 2) > 0.1) fail(`the audio lasts ${duration} s, not 2`);
    await shot(pb, "files-6-audio");

    section("a file in a space channel");
    // The space is made and joined through the API (spaces.mjs covers doing it in the UI).
    const space = await apiCall(alice, "POST", "/spaces", { name: "Files Guild" });
    const invite = await apiCall(alice, "POST", `/spaces/${space.id}/invites`, { max_uses: 1 });
    await apiCall(bob, "POST", "/spaces/join", { invite: invite.code });
    for (const p of [pa, pb]) {
      await p.getByRole("button", { name: "Spaces", exact: true }).click();
      const pill = p.getByRole("navigation", { name: "Spaces" }).getByRole("button", { name: /^Files Guild/ });
      await visible(pill, "the space in the rail", SLOW);
      await pill.click();
      const general = p.getByRole("button", { name: "# general" });
      await visible(general, "#general", SLOW);
      await general.click();
      await visible(p.getByTestId("spaces").locator("#composer"), "the channel's composer", SLOW);
    }
    // The channel's composer has the attach button of the direct view.
    const inSpaces = pa.getByTestId("spaces");
    await visible(inSpaces.getByRole("button", { name: "Attach files" }), "alice: attach in the channel");
    await inSpaces.getByTestId("attach-input").setInputFiles({ name: "map.png", mimeType: "image/png", buffer: png(320, 240, 5) });
    await visible(card(pa, "map.png"), "alice: the file card in the channel", SLOW);
    await waitFor("bob: the channel's file arrived", async () => (await stateOf(pb, "map.png")) === "Done", SLOW, 200);
    const chImg = card(pb, "map.png").getByTestId("file-preview-image");
    await visible(chImg, "bob: the channel file's preview");
    await waitFor("bob: the channel preview decoded", () => chImg.evaluate((el) => el.complete && el.naturalWidth === 320), T);
    const chRec = (await apiCall(bob, "GET", "/transfers")).transfers.find((t) => t.name === "map.png");
    if (!chRec || !chRec.conversation.startsWith("dchan1")) fail(`the channel file is not a channel transfer: ${JSON.stringify(chRec)}`);
    await shot(pb, "files-7-channel");

    if (errors.length) fail(`browser console errors:\n  ${errors.join("\n  ")}`);
    log("PASS: attach, progress, pause, resume, preview, paste, drop, an audio player and a file in a channel");
  } finally {
    if (browser) await within("close browser", 10_000, browser.close()).catch(() => {});
    killAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

runScript("files-e2e", main, { limitMs: RUN_LIMIT_MS, currentStep: () => step });
