// End-to-end of a voice channel through the UI with REAL components: the signaling server, three
// discordopus nodes (alice, bob, carol: members of one space, not contacts) and three headless
// Chromium pages whose microphone is a click-train WAV (Chromium's fake capture device). Each page
// joins the space's "General" voice channel from the channel list; its browser leg (one WebRTC
// connection to its own node over loopback: one m-line up, one per remote participant down)
// carries the audio, and the nodes forward it over their mesh without decoding. Checked:
//   - each page receives audio from both others (getStats per receive m-line, mapped to users by
//     the node's slots: packets grow, energy > 0, concealment under harness.mjs CONCEALMENT_LIMIT_PCT in steady state);
//   - speaking shows: each page marks both others as speaking (from the RFC 6464 levels the nodes
//     forward), and itself;
//   - muting silences: when alice mutes, bob's and carol's m-lines carrying her stop receiving and
//     she stops showing as speaking, while bob and carol still hear each other;
//   - leaving updates the others: carol leaves and alice's and bob's channel lists show two.
//
//   node e2e/voice.mjs     (from web/; binaries as for `npm run e2e`: DOPUS_BIN_DIR, or ../target/debug)
//
// Screenshots go to <repo>/test-output/screenshots/voice-*.png, logs to test-output/e2e-logs/.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  CONCEALMENT_LIMIT_PCT,
  SHOTS,
  UI_TIMEOUT_MS,
  apiCall,
  clickTrainWav,
  createIdentity,
  fail,
  killAll,
  launchWithFakeMicrophone,
  preflight,
  runScript,
  screenshot,
  sleep,
  startNode,
  startServer,
  trackPeerConnections,
  visible,
  waitFor,
  within,
} from "./harness.mjs";

const T = UI_TIMEOUT_MS;
const SLOW = 120_000;
const RUN_LIMIT_MS = 8 * 60_000;
const NAMES = ["alice", "bob", "carol"];
let step = "start";
const log = (msg) => console.log(`[voice-e2e ${new Date().toISOString().slice(11, 19)}] ${msg}`);
const section = (s) => {
  step = s;
  log(`-- ${s}`);
};

const call = apiCall;

async function shot(page, name) {
  await screenshot(page, name);
  log(`screenshot ${name}.png`);
}

/** Per receive m-line of the page's voice leg: packets, energy, concealment (by mid). */
async function slotStats(page) {
  return page.evaluate(async () => {
    const pcs = (window.__dopusPcs ?? []).filter((p) => p.connectionState !== "closed");
    const pc = pcs[pcs.length - 1];
    if (!pc) return null;
    const out = { state: pc.connectionState, sent: 0, slots: {} };
    for (const t of pc.getTransceivers()) {
      if (!t.mid) continue;
      if (t.direction === "sendonly") {
        for (const r of (await t.sender.getStats()).values()) if (r.type === "outbound-rtp") out.sent += r.packetsSent ?? 0;
        continue;
      }
      const s = { packets: 0, energy: 0, concealed: 0, samples: 0, level: 0 };
      for (const r of (await t.receiver.getStats()).values()) {
        if (r.type !== "inbound-rtp") continue;
        s.packets += r.packetsReceived ?? 0;
        s.energy += r.totalAudioEnergy ?? 0;
        s.concealed += r.concealedSamples ?? 0;
        s.samples += r.totalSamplesReceived ?? 0;
      }
      for (const src of t.receiver.getSynchronizationSources()) s.level = Math.max(s.level, src.audioLevel ?? 0);
      out.slots[t.mid] = s;
    }
    return out;
  });
}

/** Which m-line carries whom on a node's browser leg (from `GET /voice`). */
async function slotsOf(node) {
  const v = await call(node, "GET", "/voice");
  const m = {};
  for (const s of v.media?.browser?.slots ?? []) if (s.user_id) m[s.user_id] = s.mid;
  return m;
}

/** Stats of what `listener`'s page receives from `speaker`. */
async function heard(nodes, pages, listener, speaker) {
  const mid = (await slotsOf(nodes[listener]))[nodes[speaker].id];
  if (!mid) return null;
  const s = await slotStats(pages[listener]);
  return s?.slots[mid] ?? null;
}

async function speakingOn(page, userId) {
  return (await page.locator(`[data-testid="voice-peer"][data-user-id="${userId}"]`).getAttribute("data-speaking").catch(() => null)) === "true";
}

/** Whether `userId` shows speaking at least once within `ms`. */
async function showsSpeaking(page, userId, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await speakingOn(page, userId)) return true;
    await sleep(60);
  }
  return false;
}

async function main() {
  preflight();
  mkdirSync(SHOTS, { recursive: true });
  for (const f of ["voice-1-joined", "voice-2-muted", "voice-3-left"]) rmSync(join(SHOTS, `${f}.png`), { force: true });
  const tmp = mkdtempSync(join(tmpdir(), "dopus-voice-e2e-"));
  const wavPath = join(tmp, "clicks.wav");
  writeFileSync(wavPath, clickTrainWav(10));
  let browser;
  const errors = [];
  try {
    section("server and nodes");
    const { url: serverUrl } = await startServer(join(tmp, "server"));
    const nodes = {};
    for (const n of NAMES) {
      nodes[n] = await startNode(n, join(tmp, n), serverUrl);
      await createIdentity(nodes[n], n[0].toUpperCase() + n.slice(1), `${n} passphrase 123`);
    }

    section("a space with a voice channel (through the API)");
    const space = await call(nodes.alice, "POST", "/spaces", { name: "Voice Guild" });
    const vc = space.channels.find((c) => c.kind === "voice" && c.name === "General");
    if (!vc) fail(`the new space has no voice channel General: ${JSON.stringify(space.channels)}`);
    const invite = await call(nodes.alice, "POST", `/spaces/${space.id}/invites`, { max_uses: 2 });
    for (const n of ["bob", "carol"]) {
      await waitFor(`${n} joins the space`, async () => {
        const r = await fetch(`${nodes[n].api.url}/api/v1/spaces/join`, {
          method: "POST",
          headers: { Authorization: `Bearer ${nodes[n].api.token}`, "Content-Type": "application/json" },
          body: JSON.stringify({ invite: invite.code }),
        });
        return r.ok;
      }, SLOW, 1000);
    }
    for (const n of NAMES) {
      await waitFor(`${n} sees three members`, async () => (await call(nodes[n], "GET", `/spaces/${space.id}`)).members?.length === 3, SLOW, 500);
    }

    section("three pages with fake microphones");
    browser = await launchWithFakeMicrophone(chromium, wavPath);
    const pages = {};
    for (const n of NAMES) {
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
      await p.getByRole("button", { name: "Spaces" }).click();
      const pill = p.getByRole("navigation", { name: "Spaces" }).getByRole("button", { name: /^Voice Guild/ });
      await visible(pill, `${n}: the space in the rail`, SLOW);
      await pill.click();
      await visible(p.getByRole("heading", { name: "Voice Guild" }), `${n}: the space`, SLOW);
      pages[n] = p;
    }

    section("everyone joins General from the channel list");
    for (const n of NAMES) {
      await pages[n].locator(`[data-channel="${vc.id}"] [data-testid="voice-join"]`).click();
      await visible(pages[n].getByTestId("voice-panel"), `${n}: the voice bar`);
    }
    for (const n of NAMES) {
      await waitFor(`${n}: the voice leg connects`, async () => (await pages[n].getByTestId("voice-panel").getAttribute("data-leg")) === "connected", SLOW, 200);
      await waitFor(`${n}: three in the channel list`, async () => (await pages[n].locator(`[data-testid="voice-members"][data-channel="${vc.id}"] li`).count()) === 3, SLOW, 200);
    }

    section("each page hears both others");
    for (const l of NAMES) {
      for (const s of NAMES) {
        if (l === s) continue;
        await waitFor(`${l} receives ${s}`, async () => (await heard(nodes, pages, l, s))?.packets > 50, SLOW, 250).catch(async (e) => {
          // What each side's node knows, so a failure here says which hop lost the audio.
          for (const n of [l, s]) log(`${n}'s node: ${JSON.stringify((await call(nodes[n], "GET", "/voice").catch((x) => x.message))?.media ?? null)}`);
          log(`${l}'s page: ${JSON.stringify(await slotStats(pages[l]).catch((x) => x.message))}`);
          throw e;
        });
      }
    }
    await sleep(4000); // past the start: the jitter buffers settle (their first adaptations are not the path's)
    const first = {};
    for (const l of NAMES) for (const s of NAMES) if (l !== s) first[`${l}<${s}`] = await heard(nodes, pages, l, s);
    await sleep(8000);
    for (const l of NAMES) {
      for (const s of NAMES) {
        if (l === s) continue;
        const a = first[`${l}<${s}`];
        const b = await heard(nodes, pages, l, s);
        const packets = b.packets - a.packets;
        const concealedPct = b.samples > a.samples ? (100 * (b.concealed - a.concealed)) / (b.samples - a.samples) : 100;
        log(`${l} hears ${s}: +${packets} packets in 8 s, energy +${(b.energy - a.energy).toFixed(4)}, concealed ${concealedPct.toFixed(2)} %`);
        if (packets < 250) fail(`${l}: only ${packets} packets from ${s} in 8 s (about 400 expected)`);
        if (!(b.energy > a.energy)) fail(`${l}: no audio energy from ${s}`);
        if (!(concealedPct < CONCEALMENT_LIMIT_PCT)) fail(`${l}: ${concealedPct.toFixed(2)} % of ${s}'s audio was concealed (limit ${CONCEALMENT_LIMIT_PCT} %)`);
      }
    }

    section("speaking shows (RFC 6464 levels forwarded by the nodes)");
    for (const l of NAMES) {
      for (const s of NAMES) {
        if (l === s) continue;
        if (!(await showsSpeaking(pages[l], nodes[s].id, 5000))) {
          const sources = await pages[l].evaluate(() => {
            const pc = (window.__dopusPcs ?? []).filter((p) => p.connectionState !== "closed").pop();
            return pc?.getTransceivers().map((t) => ({
              mid: t.mid,
              dir: t.direction,
              now: Date.now(),
              perf: performance.now(),
              src: t.receiver.getSynchronizationSources().map((x) => ({ level: x.audioLevel, ts: x.timestamp })),
            }));
          });
          const peak = await pages[l].evaluate(async () => {
            const pc = (window.__dopusPcs ?? []).filter((p) => p.connectionState !== "closed").pop();
            let max = 0;
            for (let i = 0; i < 200; i++) {
              for (const t of pc?.getTransceivers() ?? []) for (const x of t.receiver.getSynchronizationSources()) max = Math.max(max, x.audioLevel ?? 0);
              await new Promise((r) => setTimeout(r, 10));
            }
            return max;
          });
          const v = await call(nodes[l], "GET", "/voice");
          fail(
            `${l}'s page never shows ${s} speaking; peak level over 2 s ${peak}; sources ${JSON.stringify(sources)}; ` +
              `node peers ${JSON.stringify(v.media?.peers)}; slots ${JSON.stringify(v.media?.browser?.slots)}`,
          );
        }
      }
      const self = pages[l].getByTestId("voice-self-speaking");
      await waitFor(`${l}: shows itself speaking`, async () => (await self.getAttribute("data-speaking")) === "true", T, 50);
    }
    const bobsNode = await call(nodes.bob, "GET", "/voice");
    log(`bob's node: ${JSON.stringify(bobsNode.media?.browser)}`);
    if (!bobsNode.media?.browser?.leg?.connected) fail(`bob's node shows no connected voice leg: ${JSON.stringify(bobsNode.media)}`);
    if (bobsNode.media.browser.leg.refused_sources !== 0) fail(`bob's leg refused datagrams: ${JSON.stringify(bobsNode.media.browser.leg)}`);
    const alicePeer = bobsNode.media.peers.find((p) => p.user_id === nodes.alice.id);
    if (alicePeer?.level_dbov == null) fail(`bob's node saw no audio level from alice: ${JSON.stringify(alicePeer)}`);
    await shot(pages.alice, "voice-1-joined");

    section("alice mutes: the others stop receiving her, and still hear each other");
    await pages.alice.getByTestId("voice-mute").click();
    await waitFor("alice: mute pressed", async () => (await pages.alice.getByTestId("voice-mute").getAttribute("aria-pressed")) === "true", T);
    for (const l of ["bob", "carol"]) {
      await waitFor(`${l}: alice shows muted`, async () => (await pages[l].locator(`[data-testid="voice-peer"][data-user-id="${nodes.alice.id}"] [aria-label="muted"]`).count()) === 1, T, 200);
    }
    await sleep(1500); // what was in flight drains
    const m1 = { bob: await heard(nodes, pages, "bob", "alice"), carol: await heard(nodes, pages, "carol", "alice"), bc: await heard(nodes, pages, "bob", "carol") };
    await sleep(3000);
    const m2 = { bob: await heard(nodes, pages, "bob", "alice"), carol: await heard(nodes, pages, "carol", "alice"), bc: await heard(nodes, pages, "bob", "carol") };
    for (const l of ["bob", "carol"]) {
      const d = m2[l].packets - m1[l].packets;
      log(`${l} while alice is muted: +${d} packets from her in 3 s`);
      if (d > 5) fail(`${l} still receives alice while she is muted (+${d} packets in 3 s)`);
      if (await showsSpeaking(pages[l], nodes.alice.id, 1000)) fail(`${l} shows alice speaking while she is muted`);
    }
    if (!(m2.bc.packets > m1.bc.packets + 50)) fail("bob stopped hearing carol when alice muted");
    await shot(pages.bob, "voice-2-muted");
    await pages.alice.getByTestId("voice-mute").click();
    await waitFor("bob hears alice again after unmute", async () => (await heard(nodes, pages, "bob", "alice"))?.packets > m2.bob.packets + 20, T, 250);

    section("carol leaves: the others see it");
    await pages.carol.getByTestId("voice-leave").click();
    await waitFor("carol: the voice bar leaves", async () => (await pages.carol.getByTestId("voice-panel").count()) === 0, T);
    for (const n of ["alice", "bob", "carol"]) {
      await waitFor(`${n}: two in the channel list`, async () => (await pages[n].locator(`[data-testid="voice-members"][data-channel="${vc.id}"] li`).count()) === 2, T, 200);
    }
    for (const n of ["alice", "bob"]) {
      await waitFor(`${n}: carol is gone from the voice bar`, async () => (await pages[n].locator(`[data-testid="voice-peer"][data-user-id="${nodes.carol.id}"]`).count()) === 0, T, 200);
    }
    await waitFor("carol: no leg left open", async () => (await slotStats(pages.carol)) === null, T);
    await shot(pages.alice, "voice-3-left");

    if (errors.length) fail(`browser console errors:\n  ${errors.join("\n  ")}`);
    log(`PASS: three pages in a voice channel hear each other (packets, energy, concealment < ${CONCEALMENT_LIMIT_PCT} %), speaking shows, mute silences, leave updates the others`);
  } finally {
    if (browser) await within("close browser", 10_000, browser.close()).catch(() => {});
    killAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

runScript("voice-e2e", main, { limitMs: RUN_LIMIT_MS, currentStep: () => step });
