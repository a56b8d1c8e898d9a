// Mouth-to-ear latency of a 1:1 call on loopback, measured from a click train, side by side with
// two Chromium pages connected directly (docs/benchmarks.md, "Calls: mouth-to-ear").
//
//   (cd web && npm ci) && ./scripts/build-web.sh && cargo build -p dopus-node -p dopus-server
//   node bench/media/latency.mjs [--secs 20]
//
// Both runs use one headless Chromium whose fake microphone plays a click train (a 4 ms burst
// every 500 ms). "ours": alice's page -> her browser leg -> alice's node -> the nodes' peer
// connection -> bob's node -> bob's browser leg -> bob's page, set up through the UI (call,
// accept). "direct": two pages with one RTCPeerConnection between them. In both, an onset
// detector (a ScriptProcessor of 256 samples at the AudioContext's rate) runs on the sender's
// microphone track and on the receiver's remote track; each click's onset is timed on the
// shared wall clock (performance.timeOrigin + performance.now(), the same browser process) at
// the sample where it crosses the threshold. The latency of a click is receiver onset minus
// sender onset: capture, encode, the path, the receiver's jitter buffer and decode, up to the
// point where WebAudio reads it (not the speaker). Both runs are measured the same way, so the
// detector's own delay (one buffer, about 5 ms) is in both and cancels in the difference.
// Nothing is asserted: it prints p50/p95/max for both and the difference.
//
//   node bench/media/latency.mjs --loss 5 [--secs 20]     (root: iptables and setpriv)
//
// With --loss PCT, bob's node runs as the user `nobody` and an iptables and an ip6tables rule drop PCT %
// of the UDP datagrams that user sends on loopback (`-m owner --uid-owner` with `-m statistic`; this
// kernel has no netem): bob's node to alice's node (bob → alice) and bob's node to bob's page
// (alice → bob) each lose about PCT %, STUN, DTLS and RTCP included. Each page's concealment
// over the measured window (getStats: concealedSamples / totalSamplesReceived) and packets lost
// are printed with the latencies; the direct run is skipped. The rule is removed at the end.
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
const require = createRequire(join(repo, "web/package.json"));
const { chromium } = require("playwright-core");
const {
  apiCall: api,
  befriend,
  clickTrainWav,
  createIdentity,
  killAll,
  launchWithFakeMicrophone,
  preflight,
  sleep,
  startNode,
  startServer,
  trackPeerConnections,
  waitFor,
} = await import(join(repo, "web/e2e/harness.mjs"));

const LOGS = join(repo, "test-output/bench-logs");
const argSecs = process.argv.indexOf("--secs");
const SECS = argSecs > 0 ? Number(process.argv[argSecs + 1]) : 20;
const argLoss = process.argv.indexOf("--loss");
const LOSS_PCT = argLoss > 0 ? Number(process.argv[argLoss + 1]) : 0;
if (!(LOSS_PCT >= 0 && LOSS_PCT < 100)) throw new Error("--loss takes a percentage in [0, 100)");
const NOBODY = 65534;
/** The iptables rule of --loss (inserted, then deleted with the same arguments). */
const lossRule = () => [
  "OUTPUT", "-o", "lo", "-p", "udp", "-m", "owner", "--uid-owner", String(NOBODY),
  "-m", "statistic", "--mode", "random", "--probability", String(LOSS_PCT / 100), "-j", "DROP",
];
/** One click every half second: a latency up to 490 ms pairs with the right click. */
const PERIOD_MS = 500;
const log = (m) => console.log(`[latency ${new Date().toISOString().slice(11, 19)}] ${m}`);

/** Installed in every page: an onset detector on a track; onsets land in window.__onsets[name]. */
function detectorSource() {
  window.__onsets = {};
  window.__detect = (name, track) => {
    const ctx = new AudioContext({ latencyHint: "interactive" });
    const src = ctx.createMediaStreamSource(new MediaStream([track]));
    const proc = ctx.createScriptProcessor(256, 1, 1);
    const sink = ctx.createGain();
    sink.gain.value = 0;
    const out = (window.__onsets[name] = []);
    let last = -1e9;
    proc.onaudioprocess = (e) => {
      const now = performance.timeOrigin + performance.now();
      const data = e.inputBuffer.getChannelData(0);
      const n = data.length;
      for (let i = 0; i < n; i++) {
        if (Math.abs(data[i]) > 0.1) {
          const t = now - ((n - i) / ctx.sampleRate) * 1000;
          if (t - last > 150) out.push(t);
          last = t;
        }
      }
    };
    src.connect(proc);
    proc.connect(sink);
    sink.connect(ctx.destination);
    // A remote track feeds WebAudio only while a media element plays it (Chromium).
    const a = new Audio();
    a.muted = true;
    a.srcObject = new MediaStream([track]);
    void a.play().catch(() => undefined);
    window.__keep = (window.__keep ?? []).concat([ctx, proc, a]);
  };
}

/** Pairs each receiver onset with the last sender onset before it (within one click period). */
function latencies(sent, got, periodMs = PERIOD_MS) {
  const out = [];
  let j = 0;
  for (const t of got) {
    while (j + 1 < sent.length && sent[j + 1] <= t) j++;
    const d = t - sent[j];
    if (sent[j] <= t && d < periodMs - 10) out.push(d);
  }
  return out;
}

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { n: s.length, p50: q(0.5), p95: q(0.95), max: s[s.length - 1] };
}

/** The page's inbound audio counters on its newest connected peer connection. */
async function inbound(page) {
  return page.evaluate(async () => {
    const pc = (window.__dopusPcs ?? []).filter((x) => x.connectionState === "connected").at(-1);
    const out = { concealed: 0, samples: 0, lost: 0, packets: 0 };
    for (const r of (await pc?.getStats())?.values() ?? []) {
      if (r.type !== "inbound-rtp" || r.kind !== "audio") continue;
      out.concealed += r.concealedSamples ?? 0;
      out.samples += r.totalSamplesReceived ?? 0;
      out.lost += r.packetsLost ?? 0;
      out.packets += r.packetsReceived ?? 0;
    }
    return out;
  });
}

/** Concealment and loss between two `inbound` readings. */
function lossOver(a, b) {
  const samples = b.samples - a.samples;
  const packets = b.packets - a.packets + (b.lost - a.lost);
  return {
    concealed_pct: samples > 0 ? (100 * (b.concealed - a.concealed)) / samples : null,
    lost_pct: packets > 0 ? (100 * (b.lost - a.lost)) / packets : null,
  };
}

async function measure(sender, senderTrack, receiver, receiverTrack) {
  await sender.evaluate(senderTrack);
  await receiver.evaluate(receiverTrack);
  await sleep(SECS * 1000);
  const sent = await sender.evaluate(() => window.__onsets.sent);
  const got = await receiver.evaluate(() => window.__onsets.got);
  if (process.env.LATENCY_DEBUG) {
    const t0 = sent[0] ?? 0;
    log(`sent: ${sent.slice(0, 12).map((t) => (t - t0).toFixed(0)).join(" ")}`);
    log(`got:  ${got.slice(0, 12).map((t) => (t - t0).toFixed(0)).join(" ")}`);
  }
  return { sent: sent.length, got: got.length, ...stats(latencies(sent, got)) };
}

let lossInstalled = false;

async function main() {
  preflight();
  const tmp = mkdtempSync(join(tmpdir(), "dopus-latency-"));
  const wav = join(tmp, "clicks.wav");
  writeFileSync(wav, clickTrainWav(10, PERIOD_MS));
  mkdirSync(LOGS, { recursive: true });
  let browser;
  try {
    const { url: serverUrl } = await startServer(join(tmp, "server"), LOGS);
    const nodes = {};
    for (const n of ["alice", "bob"]) {
      let wrap = [];
      if (LOSS_PCT > 0 && n === "bob") {
        mkdirSync(join(tmp, n), { recursive: true });
        chownSync(join(tmp, n), NOBODY, NOBODY);
        chmodSync(tmp, 0o755);
        wrap = ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--"];
      }
      nodes[n] = await startNode(n, join(tmp, n), serverUrl, { logDir: LOGS, wrap });
      await createIdentity(nodes[n], n, `${n} passphrase 123`);
    }
    if (LOSS_PCT > 0) {
      for (const t of ["iptables", "ip6tables"]) execFileSync(t, ["-I", ...lossRule()]);
      lossInstalled = true;
      log(`--loss ${LOSS_PCT}: ${LOSS_PCT} % of bob's node's loopback UDP is dropped`);
    }
    const { alice, bob } = nodes;
    await befriend(alice, bob, "bob", 120_000);

    browser = await launchWithFakeMicrophone(chromium, wav);
    const pages = {};
    for (const [n, peer] of [["alice", bob], ["bob", alice]]) {
      const ctx = await browser.newContext();
      await trackPeerConnections(ctx);
      await ctx.addInitScript(detectorSource);
      const p = await ctx.newPage();
      await p.goto(`${nodes[n].api.url}/?token=${nodes[n].api.token}`);
      const button = p.getByRole("navigation", { name: "Conversations" }).locator(`button[data-user-id="${peer.id}"]`);
      await button.waitFor({ timeout: 120_000 });
      await button.click();
      pages[n] = p;
    }

    log("ours: call through the UI");
    await pages.alice.getByTestId("call-start").click();
    await pages.bob.getByTestId("call-accept").waitFor({ timeout: 120_000 });
    await pages.bob.getByTestId("call-accept").click();
    const legUp = (p) =>
      p.evaluate(() => {
        const pc = window.__dopusPcs.filter((x) => x.connectionState === "connected").at(-1);
        return !!pc && pc.getReceivers().some((r) => r.track.kind === "audio");
      });
    await waitFor("both legs up", async () => (await legUp(pages.alice)) && (await legUp(pages.bob)), 120_000, 200);
    await sleep(3000); // past the start: both nodes negotiated and the jitter buffers settled
    const before = { alice: await inbound(pages.alice), bob: await inbound(pages.bob) };
    const ours = await measure(
      pages.alice,
      () => window.__detect("sent", window.__dopusPcs.filter((x) => x.connectionState === "connected").at(-1).getSenders()[0].track),
      pages.bob,
      () => window.__detect("got", window.__dopusPcs.filter((x) => x.connectionState === "connected").at(-1).getReceivers()[0].track),
    );
    const heard = {
      alice: lossOver(before.alice, await inbound(pages.alice)),
      bob: lossOver(before.bob, await inbound(pages.bob)),
    };
    const nodeCall = (await api(bob, "GET", "/calls")).calls.find((c) => c.state === "active");
    await pages.alice.getByTestId("call-hangup").click();
    log(`ours: ${JSON.stringify(ours)}; bob's leg ${JSON.stringify(nodeCall?.media?.browser ?? null)}`);
    const pct = (x) => (x === null ? "–" : `${x.toFixed(2)} %`);
    for (const n of ["alice", "bob"]) log(`${n}'s page over the window: concealed ${pct(heard[n].concealed_pct)}, packets lost ${pct(heard[n].lost_pct)}`);
    if (LOSS_PCT > 0) {
      const f = (x) => (x === undefined ? "–" : x.toFixed(1));
      console.log(
        `\n| --loss ${LOSS_PCT} | clicks matched | p50 ms | p95 ms | alice's page: concealed / lost | bob's page: concealed / lost |\n| --- | --- | --- | --- | --- | --- |\n` +
          `| ours | ${ours.n} | ${f(ours.p50)} | ${f(ours.p95)} | ${pct(heard.alice.concealed_pct)} / ${pct(heard.alice.lost_pct)} | ${pct(heard.bob.concealed_pct)} / ${pct(heard.bob.lost_pct)} |`,
      );
      return;
    }

    log("direct: two pages, one RTCPeerConnection");
    const a = await (await browser.newContext()).newPage();
    const b = await (await browser.newContext()).newPage();
    for (const p of [a, b]) {
      await p.addInitScript(detectorSource);
      await p.goto(`${alice.api.url}/?token=${alice.api.token}`);
    }
    const offer = await a.evaluate(async () => {
      window.__pc = new RTCPeerConnection();
      const s = await navigator.mediaDevices.getUserMedia({ audio: true });
      window.__pc.addTrack(s.getAudioTracks()[0], s);
      await window.__pc.setLocalDescription(await window.__pc.createOffer());
      await new Promise((r) => {
        if (window.__pc.iceGatheringState === "complete") return r();
        window.__pc.onicegatheringstatechange = () => window.__pc.iceGatheringState === "complete" && r();
      });
      return window.__pc.localDescription.sdp;
    });
    const answer = await b.evaluate(async (sdp) => {
      window.__pc = new RTCPeerConnection();
      // Played from the start, as the call UI plays its remote audio: a remote track nobody
      // plays fills Chromium's jitter buffer, which then plays fast (about 410 ms per 500 ms
      // click) to drain it, and the first run measured that backlog (239-270 ms), not the path.
      window.__pc.ontrack = (e) => {
        window.__remote = e.track;
        const el = new Audio();
        el.muted = true;
        el.srcObject = new MediaStream([e.track]);
        void el.play().catch(() => undefined);
        window.__remoteEl = el;
      };
      await window.__pc.setRemoteDescription({ type: "offer", sdp });
      await window.__pc.setLocalDescription(await window.__pc.createAnswer());
      await new Promise((r) => {
        if (window.__pc.iceGatheringState === "complete") return r();
        window.__pc.onicegatheringstatechange = () => window.__pc.iceGatheringState === "complete" && r();
      });
      return window.__pc.localDescription.sdp;
    }, offer);
    await a.evaluate((sdp) => window.__pc.setRemoteDescription({ type: "answer", sdp }), answer);
    await waitFor("direct connected", () => b.evaluate(() => window.__pc.connectionState === "connected" && !!window.__remote), 30_000, 100);
    await sleep(3000);
    const direct = await measure(
      a,
      () => window.__detect("sent", window.__pc.getSenders()[0].track),
      b,
      () => window.__detect("got", window.__remote),
    );
    log(`direct: ${JSON.stringify(direct)}`);
    const f = (x) => (x === undefined ? "–" : x.toFixed(1));
    console.log(
      `\n| path | clicks matched | p50 ms | p95 ms | max ms |\n| --- | --- | --- | --- | --- |\n` +
        `| ours (page → node → node → page) | ${ours.n} | ${f(ours.p50)} | ${f(ours.p95)} | ${f(ours.max)} |\n` +
        `| direct (page → page) | ${direct.n} | ${f(direct.p50)} | ${f(direct.p95)} | ${f(direct.max)} |\n` +
        `| difference | | ${f(ours.p50 - direct.p50)} | ${f(ours.p95 - direct.p95)} | |`,
    );
  } finally {
    if (lossInstalled) {
      for (const t of ["iptables", "ip6tables"]) {
        try {
          execFileSync(t, ["-D", ...lossRule()]);
        } catch (e) {
          console.error(`[latency] could not remove the ${t} rule: ${e.message}`);
        }
      }
    }
    if (browser) await browser.close().catch(() => {});
    killAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`[latency] FAIL: ${e.stack ?? e}`);
    killAll();
    process.exit(1);
  },
);
