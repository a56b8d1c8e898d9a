// End-to-end smoke of spaces through the UI with REAL components: the signaling server, three
// discordopus nodes (alice, bob, carol: not contacts of each other) and three headless Chromium
// pages. Alice creates a space and makes invite codes; bob and carol join with them; each posts in
// #general and everyone sees every message.
//
//   node e2e/spaces.mjs     (from web/; binaries as for `npm run e2e`)
//
// Screenshots go to <repo>/test-output/screenshots/spaces-*.png, logs to test-output/e2e-logs/.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { E2eError, fail, killAll, readApiFile, removeIfExists, startProcess, waitFor, within } from "./harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
const binDir = process.env.DOPUS_BIN_DIR
  ? resolve(process.env.DOPUS_BIN_DIR)
  : join(process.env.CARGO_TARGET_DIR ? resolve(repo, process.env.CARGO_TARGET_DIR) : join(repo, "target"), "debug");
const NODE_BIN = join(binDir, "discordopus");
const SERVER_BIN = join(binDir, "discordopus-server");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = join(repo, "test-output/screenshots");
const LOGS = join(repo, "test-output/e2e-logs");
const T = 15_000;
const SLOW = 60_000;
const log = (msg) => console.log(`[spaces-e2e ${new Date().toISOString().slice(11, 19)}] ${msg}`);

async function startNode(name, dataDir, serverUrl) {
  removeIfExists(join(dataDir, "api.json"));
  const proc = startProcess(name, NODE_BIN, ["--data-dir", dataDir, "run", "--server", serverUrl, "--api", "127.0.0.1:0"], LOGS);
  const api = await readApiFile(dataDir, proc.child.pid, proc);
  return { proc, api };
}

async function visible(locator, what, timeout = T) {
  try {
    await locator.first().waitFor({ state: "visible", timeout });
  } catch {
    fail(`not visible within ${timeout} ms: ${what}`);
  }
}

async function createIdentity(page, name) {
  const pass = `${name} passphrase 123`;
  await visible(page.getByRole("heading", { name: "Welcome to DiscordOpus" }), `${name}: create-identity screen`);
  await page.getByLabel("Display name", { exact: true }).fill(name);
  await page.getByLabel("Passphrase", { exact: true }).fill(pass);
  await page.getByLabel("Confirm passphrase", { exact: true }).fill(pass);
  await page.getByRole("button", { name: "Create identity" }).click();
  await visible(page.getByTestId("my-user-id"), `${name}: home screen`, SLOW);
  await waitFor(`${name}: connected`, async () => (await page.getByTestId("connection-banner").count()) === 0, SLOW);
}

const channelMessages = (page) => page.getByTestId("channel-messages");

async function post(page, text) {
  const box = page.locator("#composer");
  await box.fill(text);
  await box.press("Enter");
  await visible(channelMessages(page).getByText(text), `own message "${text}"`);
}

async function main() {
  for (const b of [NODE_BIN, SERVER_BIN]) if (!existsSync(b)) fail(`missing ${b}: build web/dist, then cargo build -p dopus-node -p dopus-server`);
  mkdirSync(SHOTS, { recursive: true });
  for (const f of ["spaces-1-created", "spaces-2-joined", "spaces-3-alice", "spaces-3-carol"]) rmSync(join(SHOTS, `${f}.png`), { force: true });
  const tmp = mkdtempSync(join(tmpdir(), "dopus-spaces-e2e-"));
  let browser;
  try {
    const server = startProcess("server", SERVER_BIN, ["--listen", "127.0.0.1:0", "--stun-listen", "127.0.0.1:0", "--data-dir", join(tmp, "server")], LOGS);
    const serverUrl = await waitFor("server listening", () => /listening on (wss?:\/\/127\.0\.0\.1:\d+\S*)/.exec(server.output)?.[1], 20_000);
    const names = ["alice", "bob", "carol"];
    const nodes = {};
    for (const n of names) {
      mkdirSync(join(tmp, n), { recursive: true });
      nodes[n] = await startNode(n, join(tmp, n), serverUrl);
    }
    browser = await within("launch chromium", 30_000, chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
    }));
    const pages = {};
    const errors = [];
    for (const n of names) {
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const p = await ctx.newPage();
      p.setDefaultTimeout(T);
      p.on("pageerror", (e) => errors.push(`${n}: ${e.message}`));
      await p.goto(`${nodes[n].api.url}/?token=${nodes[n].api.token}`);
      await createIdentity(p, n);
      await p.getByRole("button", { name: "Spaces" }).click();
      await visible(p.getByTestId("spaces"), `${n}: spaces view`);
      pages[n] = p;
    }
    const pa = pages.alice;
    await pa.getByLabel("New space name").fill("Guild of Testers");
    await pa.getByRole("button", { name: "Create" }).click();
    await visible(pa.getByRole("heading", { name: "Guild of Testers" }), "alice: the new space");
    await visible(pa.getByRole("button", { name: "# general" }), "alice: #general");
    await pa.screenshot({ path: join(SHOTS, "spaces-1-created.png") });

    for (const n of ["bob", "carol"]) {
      await pa.getByRole("button", { name: "Invite people" }).click();
      const code = await waitFor("an invite code", async () => {
        const v = await pa.getByLabel("Invite code", { exact: true }).inputValue().catch(() => "");
        return v.startsWith("dinvite1") ? v : null;
      });
      const p = pages[n];
      await p.getByLabel("Invite code to join").fill(code);
      await p.getByRole("button", { name: "Join" }).click();
      await visible(p.getByRole("heading", { name: "Guild of Testers" }), `${n}: joined`, SLOW);
      await visible(p.getByRole("button", { name: "# general" }), `${n}: #general`, SLOW);
      // The next invite must be a fresh one.
      await pa.getByRole("button", { name: "Invite people" }).click();
    }
    await pages.bob.screenshot({ path: join(SHOTS, "spaces-2-joined.png") });

    for (const n of names) {
      await visible(pages[n].locator("#composer"), `${n}: composer in #general`, SLOW);
      await post(pages[n], `hello from ${n}`);
    }
    for (const n of names) {
      for (const m of names) {
        await visible(channelMessages(pages[n]).getByText(`hello from ${m}`), `${n} sees ${m}'s message`, SLOW);
      }
    }
    await pa.screenshot({ path: join(SHOTS, "spaces-3-alice.png") });
    await pages.carol.screenshot({ path: join(SHOTS, "spaces-3-carol.png") });
    // Alice (the owner) mentions everyone: bob and carol see the message highlighted; every page
    // lists the three members.
    await post(pa, "@everyone meeting at noon");
    for (const n of ["bob", "carol"]) {
      await visible(
        channelMessages(pages[n]).locator('li[data-mention="true"]').getByText("meeting at noon"),
        `${n}: the mention is highlighted`,
        SLOW,
      );
      await visible(pages[n].getByTestId("space-members").locator(".space-member").nth(2), `${n}: three members listed`);
    }
    await pages.bob.screenshot({ path: join(SHOTS, "spaces-4-mention.png") });
    if (errors.length) fail(`uncaught page errors: ${errors.join("; ")}`);
    log("PASS: three pages created, joined, talked and mentioned in a space");
  } finally {
    if (browser) await browser.close().catch(() => {});
    killAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e instanceof E2eError ? `FAIL: ${e.message}` : e);
  killAll();
  process.exit(1);
});
