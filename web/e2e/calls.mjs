// End-to-end of a 1:1 voice call through the UI with REAL components: the signaling server, two
// discordopus nodes (alice and bob, made contacts through their APIs) and two headless Chromium
// pages whose microphone is a click-train WAV (Chromium's fake capture device). Alice calls bob
// from the conversation header, bob's page rings and he accepts; each page's browser leg (its
// WebRTC connection to its own node over loopback) carries the audio: alice's page -> alice's
// node -> (the nodes' peer connection) -> bob's node -> bob's page, and back. Each side's
// getStats must show inbound audio packets growing, an audio level above zero and concealment
// under CONCEALMENT_LIMIT_PCT (harness.mjs) in steady state; when alice mutes, bob's inbound packets stop and his level falls to
// zero; alice turns her camera on (Chromium's fake camera, a moving test pattern): bob's page shows
// her video (videoWidth > 0, framesDecoded growing), and off again stops it; she shares her screen
// (it replaces the camera on the same m-line) and bob sees it; then alice hangs up and both
// conversations show the call's entry; bob declines a second
// call and alice cancels a third (the "Call declined" / "Declined call" and "Cancelled call" /
// "Missed call" entries).
//
//   node e2e/calls.mjs     (from web/; binaries as for `npm run e2e`: DOPUS_BIN_DIR, or ../target/debug)
//
// Screenshots go to <repo>/test-output/screenshots/calls-*.png, logs to test-output/e2e-logs/.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  CONCEALMENT_LIMIT_PCT,
  SHOTS,
  UI_TIMEOUT_MS,
  apiCall,
  befriend,
  clickTrainWav,
  createIdentity,
  fail,
  killAll,
  launchWithFakeMicrophone,
  preflight,
  screenshot,
  sleep,
  startNode,
  startServer,
  trackPeerConnections,
  visible,
  waitFor,
  runScript,
  within,
} from "./harness.mjs";

const T = UI_TIMEOUT_MS;
const SLOW = 120_000;
const RUN_LIMIT_MS = 8 * 60_000;
let step = "start";
const log = (msg) => console.log(`[calls-e2e ${new Date().toISOString().slice(11, 19)}] ${msg}`);
const section = (s) => {
  step = s;
  log(`-- ${s}`);
};

/** The audio counters of the page's browser leg (the last RTCPeerConnection the page made that is not closed). */
async function legStats(page) {
  return page.evaluate(async () => {
    const pcs = (window.__dopusPcs ?? []).filter((p) => p.connectionState !== "closed");
    const pc = pcs[pcs.length - 1];
    if (!pc) return null;
    const out = { state: pc.connectionState, packets: 0, level: 0, energy: 0, concealed: 0, samples: 0, sent: 0, jitterBufferMs: null };
    for (const r of (await pc.getStats()).values()) {
      if (r.type === "inbound-rtp" && r.kind === "audio") {
        out.packets += r.packetsReceived ?? 0;
        out.level = Math.max(out.level, r.audioLevel ?? 0);
        out.energy += r.totalAudioEnergy ?? 0;
        out.concealed += r.concealedSamples ?? 0;
        out.samples += r.totalSamplesReceived ?? 0;
        if (r.jitterBufferEmittedCount) out.jitterBufferMs = (1000 * r.jitterBufferDelay) / r.jitterBufferEmittedCount;
      }
      if (r.type === "outbound-rtp" && r.kind === "audio") out.sent += r.packetsSent ?? 0;
    }
    return out;
  });
}

/** The highest audio level seen over `ms` (the level is instantaneous: clicks come and go). */
async function peakLevel(page, ms) {
  let peak = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const s = await legStats(page);
    peak = Math.max(peak, s?.level ?? 0);
    await sleep(50);
  }
  return peak;
}

/** The video counters of the page's leg: frames decoded from the peer, frames we encoded. */
async function videoStats(page) {
  return page.evaluate(async () => {
    const pcs = (window.__dopusPcs ?? []).filter((p) => p.connectionState !== "closed");
    const pc = pcs[pcs.length - 1];
    const out = { decoded: 0, width: 0, encoded: 0, pli: 0, firOrPliSent: 0 };
    if (!pc) return out;
    for (const r of (await pc.getStats()).values()) {
      if (r.type === "inbound-rtp" && r.kind === "video") {
        out.decoded += r.framesDecoded ?? 0;
        out.width = Math.max(out.width, r.frameWidth ?? 0);
        out.firOrPliSent += (r.pliCount ?? 0) + (r.firCount ?? 0);
      }
      if (r.type === "outbound-rtp" && r.kind === "video") {
        out.encoded += r.framesEncoded ?? 0;
        out.pli += (r.pliCount ?? 0) + (r.firCount ?? 0);
      }
    }
    return out;
  });
}

/** The size of the page's remote <video>, or null when it is not shown. */
async function remoteVideoSize(page) {
  return page.evaluate(() => {
    const v = document.querySelector('[data-testid="call-remote-video"]');
    return v ? { w: v.videoWidth, h: v.videoHeight } : null;
  });
}

/** Frames bob's page decodes over `ms`. */
async function decodedOver(page, ms) {
  const a = await videoStats(page);
  await sleep(ms);
  const b = await videoStats(page);
  return b.decoded - a.decoded;
}

async function shot(page, name) {
  await screenshot(page, name);
  log(`screenshot ${name}.png`);
}

async function main() {
  preflight();
  mkdirSync(SHOTS, { recursive: true });
  for (const f of ["calls-1-ringing", "calls-2-incoming", "calls-3-active", "calls-4-muted", "calls-5-ended", "calls-6-missed", "calls-7-video", "calls-8-screen"]) {
    rmSync(join(SHOTS, `${f}.png`), { force: true });
  }
  const tmp = mkdtempSync(join(tmpdir(), "dopus-calls-e2e-"));
  const wavPath = join(tmp, "clicks.wav");
  writeFileSync(wavPath, clickTrainWav(10));
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

    section("browser with a fake microphone (click train)");
    browser = await launchWithFakeMicrophone(chromium, wavPath);
    const pages = {};
    for (const [n, peer] of [["alice", bob], ["bob", alice]]) {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      await trackPeerConnections(ctx);
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

    section("alice calls bob");
    await pa.getByTestId("call-start").click();
    await waitFor("alice: ringing", async () => (await pa.getByTestId("call-panel").getAttribute("data-phase").catch(() => null)) === "outgoing", T);
    await shot(pa, "calls-1-ringing");
    await visible(pb.getByTestId("call-incoming"), "bob: the incoming call rings", SLOW);
    await shot(pb, "calls-2-incoming");

    section("bob accepts; audio both ways");
    await pb.getByTestId("call-accept").click();
    for (const [n, p] of [["alice", pa], ["bob", pb]]) {
      await waitFor(`${n}: active`, async () => (await p.getByTestId("call-panel").getAttribute("data-phase").catch(() => null)) === "active", SLOW);
      await waitFor(`${n}: the browser leg connects`, async () => (await legStats(p))?.state === "connected", SLOW, 200);
    }
    // Audio flows once both nodes negotiated the call's m-line: wait for packets on both pages.
    for (const [n, p] of [["alice", pa], ["bob", pb]]) {
      await waitFor(`${n}: inbound audio packets`, async () => (await legStats(p))?.packets > 50, SLOW, 250);
    }
    await sleep(2000); // past the start (the jitter buffer settles; its first concealment is not the path's)
    const first = { alice: await legStats(pa), bob: await legStats(pb) };
    await sleep(6000);
    const second = { alice: await legStats(pa), bob: await legStats(pb) };
    for (const n of ["alice", "bob"]) {
      const a = first[n];
      const b = second[n];
      const packets = b.packets - a.packets;
      const concealedPct = b.samples > a.samples ? (100 * (b.concealed - a.concealed)) / (b.samples - a.samples) : 100;
      const level = await peakLevel(pages[n], 1500);
      log(
        `${n}: +${packets} packets in 6 s, peak level ${level.toFixed(3)}, energy ${(b.energy - a.energy).toFixed(4)}, ` +
          `concealed ${concealedPct.toFixed(2)} %, jitter buffer ${b.jitterBufferMs?.toFixed(1) ?? "?"} ms`,
      );
      if (packets < 200) fail(`${n}: only ${packets} inbound audio packets in 6 s (20 ms frames: about 300 expected)`);
      if (!(level > 0)) fail(`${n}: the inbound audio level stayed at 0`);
      if (!(b.energy > a.energy)) fail(`${n}: no inbound audio energy`);
      if (!(concealedPct < CONCEALMENT_LIMIT_PCT)) fail(`${n}: ${concealedPct.toFixed(2)} % of the received audio was concealed (limit ${CONCEALMENT_LIMIT_PCT} %)`);
    }
    const nodeCall = (await apiCall(bob, "GET", "/calls")).calls.find((c) => c.state === "active");
    if (!nodeCall?.media?.browser?.connected) fail(`bob's node shows no connected browser leg: ${JSON.stringify(nodeCall?.media)}`);
    if (nodeCall.media.browser.refused_sources !== 0) fail(`bob's leg refused datagrams: ${JSON.stringify(nodeCall.media.browser)}`);
    log(`bob's node: ${JSON.stringify(nodeCall.media.browser)}`);
    await visible(pa.getByTestId("call-stats"), "alice: the connection figures");
    await waitFor("alice: the duration runs", async () => /^\d+:\d\d$/.test((await pa.getByTestId("call-duration").textContent()) ?? ""), T);
    await shot(pa, "calls-3-active");

    section("alice mutes: bob's inbound audio stops");
    await pa.getByTestId("call-mute").click();
    await waitFor("alice: mute pressed", async () => (await pa.getByTestId("call-mute").getAttribute("aria-pressed")) === "true", T);
    await sleep(1500); // what was in flight drains
    const m1 = await legStats(pb);
    await sleep(3000);
    const m2 = await legStats(pb);
    const level = await peakLevel(pb, 1000);
    log(`bob while alice is muted: +${m2.packets - m1.packets} packets in 3 s, peak level ${level.toFixed(3)}`);
    if (m2.packets - m1.packets > 5) fail(`bob still receives audio while alice is muted (+${m2.packets - m1.packets} packets in 3 s)`);
    if (level > 0.001) fail(`bob's audio level stays at ${level} while alice is muted`);
    // Bob still sends: alice still hears him.
    const a1 = await legStats(pa);
    await sleep(1500);
    const a2 = await legStats(pa);
    if (!(a2.packets > a1.packets)) fail("alice stopped hearing bob when she muted herself");
    await shot(pa, "calls-4-muted");
    await pa.getByTestId("call-mute").click();
    await waitFor("bob hears alice again after unmute", async () => {
      const s = await legStats(pb);
      return s.packets > m2.packets + 20;
    }, T, 250);

    section("alice turns her camera on: bob sees it; off stops it");
    await pa.getByTestId("call-camera").click();
    await waitFor("alice: camera pressed", async () => (await pa.getByTestId("call-camera").getAttribute("aria-pressed")) === "true", T);
    await visible(pa.getByTestId("call-local-video"), "alice: her own preview");
    await waitFor("bob: alice's video shows (videoWidth > 0)", async () => ((await remoteVideoSize(pb))?.w ?? 0) > 0, 15_000, 200);
    const camFrames = await decodedOver(pb, 2000);
    const size = await remoteVideoSize(pb);
    log(`bob sees alice's camera: ${size.w}x${size.h}, +${camFrames} frames decoded in 2 s; alice ${JSON.stringify(await videoStats(pa))}, bob ${JSON.stringify(await videoStats(pb))}`);
    if (camFrames < 10) fail(`bob's page decoded only ${camFrames} frames of alice's camera in 2 s`);
    const vcall = (await apiCall(bob, "GET", "/calls")).calls.find((c) => c.state === "active");
    log(`bob's node video: ${JSON.stringify(vcall?.media?.video)}`);
    const acall = (await apiCall(alice, "GET", "/calls")).calls.find((c) => c.state === "active");
    log(`alice's node video: ${JSON.stringify(acall?.media?.video)}, her page's cap ${acall?.media?.browser?.cap_bps} bit/s`);
    if (!(vcall?.media?.video?.received > 0)) fail(`bob's node forwarded no video: ${JSON.stringify(vcall?.media?.video)}`);
    await shot(pb, "calls-7-video");
    await pa.getByTestId("call-camera").click();
    await waitFor("alice: camera released", async () => (await pa.getByTestId("call-camera").getAttribute("aria-pressed")) === "false", T);
    await sleep(1000); // frames in flight
    const offFrames = await decodedOver(pb, 2000);
    log(`bob after alice's camera went off: +${offFrames} frames decoded in 2 s`);
    if (offFrames > 3) fail(`bob still decodes alice's video after she turned her camera off (+${offFrames} in 2 s)`);
    await waitFor("bob: the remote video leaves the stage", async () => (await remoteVideoSize(pb)) === null, 5000, 200);

    section("alice shares her screen: bob sees it");
    await pa.getByTestId("call-screen").click();
    await waitFor("alice: screen share pressed", async () => (await pa.getByTestId("call-screen").getAttribute("aria-pressed")) === "true", T);
    await waitFor("bob: alice's screen shows", async () => ((await remoteVideoSize(pb))?.w ?? 0) > 0, 15_000, 200);
    const screenFrames = await decodedOver(pb, 2000);
    const ssize = await remoteVideoSize(pb);
    log(`bob sees alice's screen: ${ssize.w}x${ssize.h}, +${screenFrames} frames decoded in 2 s`);
    if (screenFrames < 3) fail(`bob's page decoded only ${screenFrames} frames of alice's screen in 2 s`);
    await shot(pb, "calls-8-screen");
    await pa.getByTestId("call-screen").click();
    await waitFor("alice: screen share stopped", async () => (await pa.getByTestId("call-screen").getAttribute("aria-pressed")) === "false", T);

    section("alice hangs up");
    await pa.getByTestId("call-hangup").click();
    for (const [n, p] of [["alice", pa], ["bob", pb]]) {
      await waitFor(`${n}: the call bar leaves`, async () => (await p.getByTestId("call-panel").count()) === 0, T);
      await waitFor(`${n}: the entry in the conversation`, async () => /Call ended/.test((await p.getByTestId("messages").textContent()) ?? ""), T);
      await waitFor(`${n}: the browser leg closed`, async () => (await legStats(p)) === null, T);
    }
    const ended = (await apiCall(bob, "GET", "/calls")).calls[0];
    if (ended?.state !== "ended" || ended.end !== "completed") fail(`bob's node: the call is ${JSON.stringify(ended?.state)} / ${ended?.end}`);
    await shot(pb, "calls-5-ended");

    section("bob declines a second call; alice cancels a third");
    await pa.getByTestId("call-start").click();
    await visible(pb.getByTestId("call-incoming"), "bob: the second call rings", SLOW);
    await pb.getByTestId("call-decline").click();
    await waitFor("alice: the call bar leaves", async () => (await pa.getByTestId("call-panel").count()) === 0, T);
    await waitFor("alice: 'Call declined' in the conversation", async () => /Call declined/.test((await pa.getByTestId("messages").textContent()) ?? ""), T);
    await waitFor("bob: 'Declined call' in the conversation", async () => /Declined call/.test((await pb.getByTestId("messages").textContent()) ?? ""), T);
    await waitFor("alice: the call button is back", async () => !(await pa.getByTestId("call-start").isDisabled()), T);
    await pa.getByTestId("call-start").click();
    await visible(pb.getByTestId("call-incoming"), "bob: the third call rings", SLOW);
    await pa.getByTestId("call-hangup").click();
    await waitFor("bob: the ring stops", async () => (await pb.getByTestId("call-incoming").count()) === 0, T);
    await waitFor("bob: 'Missed call' in the conversation", async () => /Missed call/.test((await pb.getByTestId("messages").textContent()) ?? ""), T);
    await waitFor("alice: 'Cancelled call' in the conversation", async () => /Cancelled call/.test((await pa.getByTestId("messages").textContent()) ?? ""), T);
    await waitFor("alice: no leg left open", async () => (await legStats(pa)) === null, T);
    await shot(pb, "calls-6-missed");

    if (errors.length) fail(`browser console errors:\n  ${errors.join("\n  ")}`);
    log(`PASS: ring, accept, audio both ways (packets, level, concealment < ${CONCEALMENT_LIMIT_PCT} %), mute stops it, camera on/off, screen share, hang up, decline, missed`);
  } finally {
    if (browser) await within("close browser", 10_000, browser.close()).catch(() => {});
    killAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

runScript("calls-e2e", main, { limitMs: RUN_LIMIT_MS, currentStep: () => step });
