// End-to-end test with REAL components: the signaling server, two discordopus nodes (alice, bob) and
// two headless Chromium pages driving the UI each node serves. No mocks: if a binary is missing the
// run fails and says how to build it.
//
//   npm run e2e            (from web/; binaries from ../target/debug unless DOPUS_BIN_DIR is set)
//
// Screenshots go to <repo>/test-output/screenshots/, process logs to <repo>/test-output/e2e-logs/.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  CHROMIUM,
  E2E_LOGS,
  SHOTS,
  fail,
  killAll,
  preflight,
  sleep,
  startNode as startNodeProcess,
  startServer,
  stopProcess,
  waitFor,
  runScript,
  within,
} from "./harness.mjs";

const LOGS = E2E_LOGS;
const KEEP = process.env.E2E_KEEP === "1";
/** Default bound for one UI expectation; network paths (WebRTC, mailbox) get longer ones below. */
const T = 15_000;
const SLOW = 45_000;
const PASS = { alice: "alice passphrase 1", bob: "bob passphrase 22" };
/** The whole run's cap; the performance step fits its waits in what is left of it. */
const RUN_LIMIT_MS = 10 * 60_000;
const runStarted = Date.now();

let step = "start";
const log = (msg) => console.log(`[e2e ${new Date().toISOString().slice(11, 19)}] ${msg}`);
function section(name) {
  step = name;
  log(`— ${name}`);
}

async function startNode(name, dataDir, serverUrl) {
  // Link previews are off unless turned on in settings; this flag only lets them reach the
  // test's page on 127.0.0.1 (a node refuses loopback and private addresses otherwise).
  const { proc, api } = await startNodeProcess(name, dataDir, serverUrl, { extraArgs: ["--link-preview-allow-private"] });
  log(`${name} node pid ${proc.child.pid} at ${api.url}`);
  // The binary embeds web/dist at compile time; a binary built before the UI serves a placeholder.
  const res = await within("GET / on the node", 10_000, fetch(api.url + "/"));
  const html = await res.text();
  if (!html.includes('id="root"')) {
    fail(`${name}'s node does not serve the built UI at / (got ${res.status}: ${html.slice(0, 160)}…);` +
      ` run ./scripts/build-web.sh, then rebuild dopus-node so it embeds web/dist`);
  }
  return { proc, api };
}

function watchConsole(page, who, errors) {
  page.on("console", (m) => {
    if (m.type() === "error") errors.push({ who, step, text: m.text() });
  });
  page.on("pageerror", (e) => errors.push({ who, step, text: `uncaught: ${e.message}` }));
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
  log(`screenshot ${name}.png`);
}

/**
 * Test hooks installed in every page before the app loads. Headless Chromium pages are always
 * "visible", so the test hides a page by overriding document.visibilityState and firing the
 * event the app listens to; and it records each Notification the page shows (the browser's
 * real Notification is still constructed).
 */
function TEST_HOOKS() {
  window.__shown = [];
  const Real = window.Notification;
  if (Real) {
    class Recorded extends Real {
      constructor(title, opts) {
        super(title, opts);
        window.__shown.push({ title, body: opts?.body ?? "", tag: opts?.tag ?? "" });
      }
    }
    Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
    Recorded.requestPermission = (...a) => Real.requestPermission(...a);
    window.Notification = Recorded;
  }
  let hidden = false;
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  window.__setHidden = (h) => {
    hidden = h;
    document.dispatchEvent(new Event("visibilitychange"));
  };
}

const setHidden = (page, hidden) => page.evaluate((h) => window.__setHidden(h), hidden);

/** Posts messages through a node's API in batches (as a bot or an import would). */
async function postBatch(api, peer, bodies) {
  for (let i = 0; i < bodies.length; i += 250) {
    const chunk = bodies.slice(i, i + 250).map((body) => ({ body }));
    const res = await within(`POST batch at ${i}`, 30_000, fetch(`${api.url}/api/v1/conversations/${peer}/messages/batch`, {
      method: "POST",
      headers: { Authorization: `Bearer ${api.token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ messages: chunk }),
    }));
    if (res.status !== 201) fail(`POST …/messages/batch answered ${res.status}: ${await res.text()}`);
  }
}

/** No element of the page sticks out sideways. */
async function noSidewaysScroll(page, what) {
  const { sw, iw } = await page.evaluate(() => ({ sw: document.documentElement.scrollWidth, iw: window.innerWidth }));
  if (sw > iw) fail(`${what}: the page scrolls sideways (scrollWidth ${sw} > width ${iw})`);
}

/** Every visible button, link and field is at least 44×44 px (phone touch targets). */
async function touchTargets(page, what) {
  const small = await page.evaluate(() => {
    const out = [];
    for (const el of document.querySelectorAll("button, a[href], input, select, textarea, [role=button]")) {
      const r = el.getBoundingClientRect();
      const style = getComputedStyle(el);
      if (r.width === 0 || r.height === 0 || style.visibility === "hidden" || el.closest(".sr-only, .skip-link")) continue;
      if (el.matches("input[type=checkbox], input[type=file]")) continue;
      if (el.closest(".md-link, .md-spoiler, .body")) continue; // links inside message text flow with the text
      if (r.height < 43.5 || (r.width < 43.5 && !el.matches("input, textarea, select"))) {
        out.push(`${el.tagName.toLowerCase()}[${el.getAttribute("aria-label") ?? el.textContent?.trim().slice(0, 20)}] ${Math.round(r.width)}×${Math.round(r.height)}`);
      }
    }
    return out;
  });
  if (small.length) fail(`${what}: touch targets under 44 px: ${small.slice(0, 8).join("; ")}`);
}

const msgs = (page) => page.locator('[data-testid="message"]');
const msgWith = (page, text) => msgs(page).filter({ hasText: text }).last();
/** Messages loaded in the open conversation (the list is virtualised: only some are rendered). */
const loadedCount = async (page) => Number(await page.getByTestId("messages").getAttribute("data-loaded"));

async function expectVisible(locator, what, timeout = T) {
  try {
    await locator.first().waitFor({ state: "visible", timeout });
  } catch {
    fail(`not visible within ${timeout} ms: ${what}`);
  }
}

async function expectText(locator, re, what, timeout = T) {
  await waitFor(what, async () => re.test((await locator.first().textContent({ timeout: 1000 })) ?? ""), timeout);
}

async function createIdentity(page, name, pass) {
  await expectVisible(page.getByRole("heading", { name: "Welcome to DiscordOpus" }), `${name}: create-identity screen`);
  await page.getByLabel("Display name", { exact: true }).fill(name);
  await page.getByLabel("Passphrase", { exact: true }).fill(pass);
  await page.getByLabel("Confirm passphrase", { exact: true }).fill(pass + "x");
  await page.getByRole("button", { name: "Create identity" }).click();
  await expectVisible(page.getByText("The two passphrases differ."), `${name}: mismatch error`);
  await page.getByLabel("Confirm passphrase", { exact: true }).fill(pass);
  await page.getByRole("button", { name: "Create identity" }).click();
  await expectVisible(page.getByTestId("my-user-id"), `${name}: home screen with own ID`, SLOW);
  const id = ((await page.getByTestId("my-user-id").textContent()) ?? "").trim();
  if (!/^dopus1[a-z0-9]{58}$/.test(id)) fail(`${name}: shown ID is not a dopus1 ID: ${id}`);
  return id;
}

// Contacts are found by user ID, not by name: which name a node shows for a new contact (the one
// given when adding, or the one the peer announced) is the node's business.
const contactButton = (page, id) => page.getByRole("navigation", { name: "Conversations" }).locator(`button[data-user-id="${id}"]`);
const composer = (page) => page.locator("#composer");

async function openContact(page, id, who) {
  const button = contactButton(page, id);
  await expectVisible(button, `contact ${who} in the list`, SLOW);
  await button.click();
  await expectVisible(composer(page), `composer for ${who}`);
}

async function send(page, text) {
  const box = composer(page);
  await box.fill(text);
  await box.press("Enter");
  await expectVisible(msgWith(page, text), `own message "${text}" shown`);
}

async function main() {
  preflight();
  // Screenshots describe this run only.
  rmSync(SHOTS, { recursive: true, force: true });
  mkdirSync(SHOTS, { recursive: true });
  mkdirSync(LOGS, { recursive: true });
  const tmp = mkdtempSync(join(tmpdir(), "dopus-e2e-"));
  log(`data in ${tmp}`);
  const errors = [];
  let browser;
  try {
    section("signaling server");
    // Port 0 everywhere (STUN included, on loopback only); the server prints one line with its URL.
    const { url: serverUrl } = await startServer(join(tmp, "server"));
    log(`signaling server at ${serverUrl}`);

    section("nodes");
    const dirs = { alice: join(tmp, "alice"), bob: join(tmp, "bob") };
    mkdirSync(dirs.alice, { recursive: true });
    mkdirSync(dirs.bob, { recursive: true });
    const alice = await startNode("alice", dirs.alice, serverUrl);
    let bob = await startNode("bob", dirs.bob, serverUrl);

    section("browser");
    browser = await within("launch chromium", 30_000, chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ],
      // Playwright gives every launch a fresh temporary --user-data-dir of its own (and refuses one
      // passed in args), so no profile state survives between runs.
    }));
    // One context per user: cookies are per host, not per port, so two nodes on 127.0.0.1 would
    // overwrite each other's dopus_token cookie in a shared context.
    // Notifications are allowed in both contexts, as if the user had said yes to the prompt.
    const ctxA = await browser.newContext({ viewport: { width: 1280, height: 800 }, permissions: ["notifications"] });
    const ctxB = await browser.newContext({ viewport: { width: 1280, height: 800 }, permissions: ["notifications"] });
    for (const ctx of [ctxA, ctxB]) await ctx.addInitScript(TEST_HOOKS);
    const pa = await ctxA.newPage();
    const pb = await ctxB.newPage();
    for (const p of [pa, pb]) p.setDefaultTimeout(T);
    watchConsole(pa, "alice", errors);
    watchConsole(pb, "bob", errors);

    section("onboarding");
    await pa.goto(`${alice.api.url}/?token=${alice.api.token}`);
    if (pa.url().includes("token=")) fail(`the token stayed in the address bar: ${pa.url()}`);
    await pb.goto(`${bob.api.url}/?token=${bob.api.token}`);
    await expectVisible(pa.getByRole("heading", { name: "Welcome to DiscordOpus" }), "alice: create-identity screen");
    await shot(pa, "01-onboarding");
    const aliceId = await createIdentity(pa, "Alice", PASS.alice);
    const bobId = await createIdentity(pb, "Bob", PASS.bob);
    log(`alice ${aliceId.slice(0, 12)}…, bob ${bobId.slice(0, 12)}…`);
    // Both nodes reach the signaling server: the banner must go away by itself.
    for (const [who, page] of [["alice", pa], ["bob", pb]]) {
      await waitFor(`${who}: connection banner gone`, async () => (await page.getByTestId("connection-banner").count()) === 0, SLOW);
    }
    await expectVisible(pa.getByRole("img", { name: "QR code of your user ID" }), "QR code");

    section("add contact");
    const input = pa.getByRole("textbox", { name: "Their user ID" });
    const typo = bobId.slice(0, 20) + (bobId[20] === "q" ? "p" : "q") + bobId.slice(21);
    await input.fill(typo);
    await pa.getByRole("button", { name: "Send request" }).click();
    await expectVisible(pa.getByText("This user ID has a typo"), "typo error for a mistyped ID");
    await input.fill(bobId.toUpperCase());
    await pa.getByRole("textbox", { name: "Name for them (optional)" }).fill("Bob");
    await pa.getByRole("button", { name: "Send request" }).click();
    await expectVisible(pa.getByTestId("outgoing-request"), "alice: outgoing request pending");
    await shot(pa, "02-home-your-id-and-pending-request");

    section("accept");
    const req = pb.getByTestId("incoming-request");
    await expectVisible(req, "bob: incoming request", SLOW);
    await shot(pb, "03-incoming-request");
    await pb.getByRole("button", { name: /^Accept/ }).click();

    section("messages both ways");
    await openContact(pa, bobId, "bob");
    await send(pa, "Hello Bob, this is Alice");
    await send(pa, "A second message to delete later");
    // Bob is on the Friends page: an unread badge must appear on Alice.
    const aliceEntry = contactButton(pb, aliceId);
    await expectVisible(aliceEntry, "bob: Alice in the contact list", SLOW);
    await waitFor("bob: unread count on Alice", async () => /unread/.test((await aliceEntry.getAttribute("aria-label")) ?? ""), SLOW);
    await openContact(pb, aliceId, "alice");
    await expectVisible(msgWith(pb, "Hello Bob, this is Alice"), "bob receives alice's message", SLOW);

    section("typing indicator");
    const bobBox = composer(pb);
    await bobBox.pressSequentially("Hi Alice", { delay: 30 });
    await expectText(pa.getByTestId("typing"), / is typing…/, "alice sees Bob typing", SLOW);
    await shot(pa, "04-typing-indicator");
    await bobBox.press("Enter");
    await expectVisible(msgWith(pa, "Hi Alice"), "alice receives bob's reply", SLOW);
    // The list is not a live region (rows mount while scrolling); new messages are announced apart.
    await expectText(pa.getByTestId("announce"), /^Bob: Hi Alice$/, "alice's live region announces bob's reply");
    await waitFor("typing indicator cleared", async () => !/typing/.test((await pa.getByTestId("typing").textContent()) ?? ""), 10_000);
    // Shift+Enter makes a newline, not a send.
    await bobBox.fill("line one");
    await bobBox.press("Shift+Enter");
    await bobBox.pressSequentially("line two");
    if (!((await bobBox.inputValue()).includes("\n"))) fail("Shift+Enter did not insert a newline");
    await bobBox.press("Enter");
    await expectVisible(msgWith(pa, "line two"), "alice receives a two-line message", SLOW);

    section("delivery state");
    const firstOwn = msgWith(pa, "Hello Bob, this is Alice");
    await waitFor("alice's first message delivered or read", async () => /^(delivered|read)$/.test((await firstOwn.getAttribute("data-state")) ?? ""), SLOW);
    // Read receipts are off by default (docs/api.md), so bob having read it must not show.
    if ((await firstOwn.getAttribute("data-state")) === "read") fail("a read receipt arrived although read receipts are off by default");

    section("reaction");
    const bobsMsg = msgWith(pa, "Hi Alice");
    await bobsMsg.hover();
    await bobsMsg.getByRole("button", { name: "Add reaction" }).click();
    await pa.getByRole("button", { name: "React with 👍" }).click();
    await expectVisible(bobsMsg.getByTestId("reaction"), "alice sees her reaction");
    await expectVisible(msgWith(pb, "Hi Alice").getByTestId("reaction"), "bob sees alice's reaction", SLOW);

    section("reply");
    await bobsMsg.hover();
    await bobsMsg.getByRole("button", { name: "Reply" }).click();
    await send(pa, "Replying to you");
    await expectText(msgWith(pb, "Replying to you"), /In reply to/, "bob sees the reply quote", SLOW);
    // The quote jumps to the message it answers.
    await msgWith(pb, "Replying to you").getByTestId("reply-quote").click();
    await expectVisible(pb.locator('[data-testid="message"].highlight').filter({ hasText: "Hi Alice" }), "the reply quote jumps to the original");

    section("keyboard");
    // Shift+Tab from the message box reaches the newest message; arrows move; R replies; Escape cancels.
    await composer(pb).focus();
    await pb.keyboard.press("Shift+Tab");
    await waitFor("a message has keyboard focus", () => pb.evaluate(() => document.activeElement?.getAttribute("data-testid") === "message"), T);
    await pb.keyboard.press("ArrowUp");
    await pb.keyboard.press("r");
    await expectVisible(pb.locator(".reply-bar"), "reply bar opened from the keyboard");
    await composer(pb).press("Escape");
    await waitFor("reply cancelled with Escape", async () => (await pb.locator(".reply-bar").count()) === 0, T);

    section("edit");
    // Escape leaves the editor and puts focus back on the message.
    await firstOwn.hover();
    await firstOwn.getByRole("button", { name: "Edit" }).click();
    await pa.getByRole("textbox", { name: "Edit message" }).press("Escape");
    await waitFor("focus back on the message after Escape", () =>
      pa.evaluate(() => document.activeElement?.textContent?.includes("Hello Bob, this is Alice") && document.activeElement?.getAttribute("data-testid") === "message"), T);
    await firstOwn.hover();
    await firstOwn.getByRole("button", { name: "Edit" }).click();
    const editBox = pa.getByRole("textbox", { name: "Edit message" });
    await editBox.fill("Hello Bob, this is Alice (edited text)");
    await editBox.press("Enter");
    await expectVisible(msgWith(pb, "edited text"), "bob sees the edit", SLOW);
    await expectText(msgWith(pb, "edited text"), /\(edited\)/, "bob sees the edited mark", SLOW);

    section("delete");
    const doomed = msgWith(pa, "A second message to delete later");
    await doomed.hover();
    await doomed.getByRole("button", { name: "Delete" }).click();
    await doomed.getByRole("alertdialog", { name: "Delete message" }).getByRole("button", { name: "Delete" }).click();
    await waitFor("bob sees the deletion", async () => (await msgs(pb).filter({ hasText: "A second message to delete later" }).count()) === 0, SLOW);
    await expectVisible(pb.getByText("This message was deleted."), "bob sees the deleted placeholder", SLOW);
    await shot(pb, "05-conversation");
    await shot(pa, "06-conversation-alice");

    section("rich text and links");
    {
      const rich = "**bold** _italic_ __under__ ~~gone~~ ||hidden bit|| `code` see https://example.org/page and [your bank](https://evil.example/login)";
      await composer(pa).fill(rich);
      await composer(pa).press("Enter");
      const m = msgWith(pb, "your bank");
      await expectVisible(m, "bob receives the rich text message", SLOW);
      for (const [sel, text] of [["strong", "bold"], ["em", "italic"], ["u", "under"], ["del", "gone"], ["code.md-code", "code"]]) {
        await expectText(m.locator(sel), new RegExp(text), `bob sees <${sel}>${text}`);
      }
      const spoiler = m.locator(".md-spoiler");
      if (await spoiler.evaluate((el) => el.classList.contains("shown"))) fail("a spoiler is shown before it is clicked");
      await spoiler.click();
      await expectVisible(m.locator(".md-spoiler.shown"), "spoiler revealed on click");
      const link = m.locator('a[href="https://example.org/page"]');
      await expectVisible(link, "autolink");
      if ((await link.getAttribute("target")) !== "_blank" || (await link.getAttribute("rel")) !== "noopener noreferrer") {
        fail(`autolink opens unsafely: target=${await link.getAttribute("target")} rel=${await link.getAttribute("rel")}`);
      }
      await expectText(m.getByTestId("link-target"), /https:\/\/evil\.example\/login/, "masked link shows its real target");
      await composer(pa).fill("```rust\nfn main() { println!(\"hi\"); }\n```");
      await composer(pa).press("Enter");
      await expectVisible(pb.locator("pre.md-pre .hljs-keyword"), "bob sees a highlighted code block", SLOW);
      // Message text is never HTML: these stay inert text on the other side.
      await send(pa, '<img src=x onerror="window.xssA=1"> <script>window.xssB=1</script>');
      await send(pa, "[click me](javascript:window.xssC=1)");
      await expectVisible(msgWith(pb, "click me"), "bob receives the javascript: link", SLOW);
      if ((await pb.locator('[data-testid="message-body"] img, [data-testid="message-body"] script').count()) > 0) fail("message text became HTML");
      if ((await msgWith(pb, "click me").locator("a").count()) > 0) fail("a javascript: link became a link");
      await msgWith(pb, "click me").click();
      if (await pb.evaluate(() => window.xssA || window.xssB || window.xssC)) fail("injected script ran");
      // Link previews are off by default, and a receiver never fetches a link: a page on a local
      // HTTP server, sent as a link, must get no request from either node or either browser.
      const hits = [];
      const site = createServer((req, res) => {
        hits.push(req.url);
        res.writeHead(200, { "Content-Type": "text/html" });
        res.end("<title>Preview me</title>");
      });
      await new Promise((r) => site.listen(0, "127.0.0.1", r));
      const siteUrl = `http://127.0.0.1:${site.address().port}/article`;
      await send(pa, `read ${siteUrl}`);
      await expectVisible(msgWith(pb, siteUrl), "bob receives the link", SLOW);
      await pb.waitForTimeout(1500);
      site.close();
      if (hits.length) fail(`a link preview was fetched although previews are off: ${hits.join(", ")}`);
      if (await pb.getByTestId("link-preview").count()) fail("a link preview appeared although previews are off");
      await send(pa, "🎉🎉");
      await expectVisible(pb.getByTestId("jumbo-emoji").filter({ hasText: "🎉🎉" }), "bob sees two emoji large", SLOW);
      await shot(pb, "06b-rich-text");
    }

    section("emoji picker");
    {
      await pa.getByRole("button", { name: "Emoji", exact: true }).click();
      const picker = pa.getByTestId("emoji-picker");
      await expectVisible(picker, "emoji picker");
      await picker.getByRole("searchbox", { name: "Search emoji" }).fill("rocket");
      await expectVisible(picker.getByRole("button", { name: "rocket" }), "search finds the rocket");
      await shot(pa, "06c-emoji-picker");
      await picker.getByRole("button", { name: "rocket" }).first().click();
      if (!(await composer(pa).inputValue()).includes("🚀")) fail("the picked emoji is not in the message box");
      await composer(pa).pressSequentially(" :fire", { delay: 20 });
      await expectVisible(pa.getByTestId("emoji-suggest"), ":shortcode suggestions");
      await composer(pa).press("Enter");
      if (!(await composer(pa).inputValue()).includes("🔥")) fail(":fire + Enter did not insert 🔥");
      await composer(pa).press("Enter");
      await expectVisible(msgWith(pb, "🚀"), "bob receives the emoji message", SLOW);
      // Any emoji as a reaction, found by search; it comes back as a recent one.
      const target = msgWith(pa, "Hi Alice");
      await target.hover();
      await target.getByRole("button", { name: "Add reaction" }).click();
      await pa.getByTestId("emoji-picker").getByRole("searchbox", { name: "Search emoji" }).fill("avocado");
      await pa.getByTestId("emoji-picker").getByRole("button", { name: /avocado/ }).first().click();
      await expectVisible(target.getByTestId("reaction").filter({ hasText: "🥑" }), "alice's avocado reaction");
      await expectVisible(msgWith(pb, "Hi Alice").getByTestId("reaction").filter({ hasText: "🥑" }), "bob sees the avocado", SLOW);
    }

    section("notifications");
    {
      await setHidden(pb, true);
      await send(pa, "Ping while your tab is hidden");
      const shown = await waitFor("bob's page shows a notification", async () => {
        const list = await pb.evaluate(() => window.__shown);
        return list.find((n) => n.body.includes("Ping while your tab is hidden"));
      }, SLOW);
      if (shown.title !== "Alice") fail(`notification title is ${JSON.stringify(shown.title)}, expected the sender's name`);
      await waitFor("bob's tab title counts the unread message", async () => /^\(1\) /.test(await pb.title()), T);
      const badge = await pb.locator('link[rel="icon"]').getAttribute("data-unread");
      if (badge !== "1") fail(`favicon badge says ${badge}, expected 1`);
      const chimes = Number(await pb.evaluate(() => document.documentElement.dataset.chimes ?? "0"));
      log(`notification shown: ${JSON.stringify(shown)}; chimes played: ${chimes}`);
      // Muted conversations stay silent.
      await pb.evaluate(() => window.__setHidden(false));
      await pb.getByTestId("mute-toggle").click();
      await setHidden(pb, true);
      const before = await pb.evaluate(() => window.__shown.length);
      await send(pa, "Quiet: you muted me");
      await expectVisible(msgWith(pb, "Quiet: you muted me"), "bob receives the muted message", SLOW);
      await pb.waitForTimeout(500);
      if ((await pb.evaluate(() => window.__shown.length)) !== before) fail("a muted conversation notified");
      await setHidden(pb, false);
      await pb.getByTestId("mute-toggle").click();
      await waitFor("bob's title back to no unread", async () => (await pb.title()) === "DiscordOpus", T);
    }

    section("presence");
    await pb.getByRole("combobox", { name: "Your status" }).selectOption("busy");
    await expectText(pa.getByTestId("peer-presence"), /Do not disturb/, "alice sees Bob as busy", SLOW);
    await pb.getByRole("combobox", { name: "Your status" }).selectOption("online");
    await expectText(pa.getByTestId("peer-presence"), /Online/, "alice sees Bob online again", SLOW);

    section("details and safety number");
    {
      // Recorded, not asserted: what the node reports about the path (candidate types, RTT).
      const res = await within("GET connection", 10_000, fetch(`${alice.api.url}/api/v1/contacts/${bobId}/connection`, { headers: { Authorization: `Bearer ${alice.api.token}` } }));
      log(`alice → bob connection: ${res.status} ${await res.text()}`);
      const list = await (await within("GET contacts", 10_000, fetch(`${alice.api.url}/api/v1/contacts`, { headers: { Authorization: `Bearer ${alice.api.token}` } }))).json();
      log(`alice's contact list says: ${JSON.stringify(list.find((c) => c.user_id === bobId)?.connection)}`);
    }
    await pa.getByRole("button", { name: "Contact details" }).click();
    await expectVisible(pa.getByTestId("safety-number"), "safety number", T);
    const groups = await pa.getByTestId("safety-number").locator("span").allTextContents();
    if (groups.length !== 12 || !groups.every((g) => /^\d{5}$/.test(g))) fail(`safety number is not 12×5 digits: ${groups.join(" ")}`);
    await pa.getByLabel(/^Mark .* as verified$/).check();
    await expectVisible(pa.getByText("Verified", { exact: true }), "verified pill");
    await expectText(pa.getByTestId("connection-mode"), /Direct|Relayed|Mailbox/, "connection panel shows the path");
    await shot(pa, "07-contact-details");

    section("emoji verification");
    // Alice starts; Bob sees the same seven emoji; both confirm; both end "verified".
    await pa.getByRole("button", { name: "Verify with emoji" }).click();
    // Bob is told at once, in the conversation, that Alice started one.
    await expectVisible(pb.getByTestId("verify-prompt"), "bob is told that alice started an emoji verification", SLOW);
    await shot(pb, "07b-verification-prompt");
    await pb.getByTestId("verify-prompt").getByRole("button", { name: "Compare emoji" }).click();
    const sasA = pa.getByTestId("sas");
    const sasB = pb.getByTestId("sas");
    await expectVisible(sasB.getByRole("button", { name: "They match" }), "bob: emoji to compare", SLOW);
    await expectVisible(sasA.getByRole("button", { name: "They match" }), "alice: emoji to compare", SLOW);
    const emojiA = await sasA.locator(".sas-name").allTextContents();
    const emojiB = await sasB.locator(".sas-name").allTextContents();
    if (emojiA.length !== 7 || emojiA.join() !== emojiB.join()) fail(`SAS emoji differ or are not 7: ${emojiA} vs ${emojiB}`);
    await shot(pb, "08-emoji-verification");
    await sasA.getByRole("button", { name: "They match" }).click();
    await sasB.getByRole("button", { name: "They match" }).click();
    await expectText(sasA, /Verified/, "alice: verification complete", SLOW);
    await expectText(sasB, /Verified/, "bob: verification complete", SLOW);
    await pb.getByRole("button", { name: "Close details" }).click();
    await pa.getByRole("button", { name: "Close details" }).click();

    section("search");
    await pa.keyboard.press("Control+k");
    await pa.getByRole("searchbox", { name: "Search all messages" }).fill("Replying");
    await expectVisible(pa.locator(".search-result").filter({ hasText: "Replying" }), "search result");
    await shot(pa, "09-search");
    await pa.locator(".search-result").filter({ hasText: "Replying" }).first().click();
    await expectVisible(pa.locator('[data-testid="message"].highlight').filter({ hasText: "Replying to you" }), "search hit highlighted in the conversation");
    await pa.getByRole("button", { name: "Close search" }).click();

    section("settings");
    await pa.getByRole("button", { name: "Settings" }).click();
    await expectVisible(pa.getByRole("heading", { name: "Settings" }), "settings dialog");
    await shot(pa, "10-settings");
    const settingsDialog = pa.getByRole("dialog", { name: "Settings" });
    const saveTheme = async (theme) => {
      await pa.getByLabel("Theme").selectOption(theme);
      await pa.getByRole("button", { name: "Save" }).click();
      await settingsDialog.waitFor({ state: "hidden", timeout: T });
      // Saved on the node, not only previewed in the page.
      const res = await within("GET /settings", 10_000, fetch(`${alice.api.url}/api/v1/settings`, { headers: { Authorization: `Bearer ${alice.api.token}` } }));
      const saved = await res.json();
      if (saved.theme !== theme) fail(`settings theme on the node is ${saved.theme}, expected ${theme}`);
      if ((await pa.evaluate(() => document.documentElement.dataset.theme)) !== theme) fail(`page theme is not ${theme}`);
    };
    await saveTheme("light");
    await shot(pa, "11-light-theme");
    await pa.getByRole("button", { name: "Settings" }).click();
    await saveTheme("dark");

    section("link preview");
    // Alice turns previews on: her node (only hers) fetches the page once and sends title and
    // description inside the encrypted message; bob's node and both browsers fetch nothing.
    await pa.getByRole("button", { name: "Settings" }).click();
    await pa.getByLabel("Link previews for links I send").check();
    await pa.getByRole("button", { name: "Save" }).click();
    await settingsDialog.waitFor({ state: "hidden", timeout: T });
    const previewHits = [];
    const previewSite = createServer((req, res) => {
      previewHits.push(req.headers["user-agent"] ?? "");
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
      res.end('<html><head><title>Avocado facts</title><meta property="og:description" content="Everything about 🥑"></head><body>x</body></html>');
    });
    await new Promise((r) => previewSite.listen(0, "127.0.0.1", r));
    const previewUrl = `http://127.0.0.1:${previewSite.address().port}/avocado`;
    await send(pa, `look ${previewUrl}`);
    const bobCard = msgWith(pb, previewUrl).getByTestId("link-preview");
    await expectVisible(bobCard.filter({ hasText: "Avocado facts" }), "bob sees alice's link preview", SLOW);
    await expectVisible(bobCard.filter({ hasText: "Everything about" }), "the preview's description", SLOW);
    previewSite.close();
    if (previewHits.length !== 1 || !previewHits[0].startsWith("DiscordOpus-link-preview")) {
      fail(`the page was fetched ${previewHits.length} times (${previewHits.join(", ")}); expected once, by alice's node`);
    }
    await shot(pb, "11b-link-preview");
    await pa.getByRole("button", { name: "Settings" }).click();
    await pa.getByLabel("Link previews for links I send").uncheck();
    await pa.getByRole("button", { name: "Save" }).click();
    await settingsDialog.waitFor({ state: "hidden", timeout: T });

    section("profile");
    await pa.getByRole("button", { name: "Settings" }).click();
    await pa.getByLabel("Status text").fill("testing profiles");
    await pa.getByRole("button", { name: "Update profile" }).click();
    await expectVisible(pa.getByText(/Profile saved/), "the profile save is answered");
    log(`profile save says: ${(await pa.getByTestId("profile-settings").getByRole("status").textContent())?.trim()}`);
    await pa.getByRole("button", { name: "Cancel" }).click();
    await pa.getByRole("dialog", { name: "Settings" }).waitFor({ state: "hidden", timeout: T });
    // The card travels end to end encrypted to bob, whose details panel shows it.
    await openContact(pb, aliceId, "alice");
    await pb.getByRole("button", { name: "Contact details" }).click();
    await expectVisible(pb.locator(".profile-status", { hasText: "testing profiles" }), "bob sees alice's status text", SLOW);
    await pb.getByRole("button", { name: "Close details" }).click();

    section("read receipts");
    // Off by default; bob turns them on, then alice's next message must reach "read" while bob looks.
    await pb.getByRole("button", { name: "Settings" }).click();
    const bobReceipts = pb.getByLabel("Send read receipts");
    if (await bobReceipts.isChecked()) fail("read receipts are on by default");
    await bobReceipts.check();
    await pb.getByRole("button", { name: "Save" }).click();
    await pb.getByRole("dialog", { name: "Settings" }).waitFor({ state: "hidden", timeout: T });
    await send(pa, "Tell me when you have read this");
    await expectVisible(msgWith(pb, "Tell me when you have read this"), "bob receives the receipt test message", SLOW);
    await waitFor("alice's message marked read", async () => (await msgWith(pa, "Tell me when you have read this").getAttribute("data-state")) === "read", SLOW);

    section("unread divider and jump to present");
    {
      // Bob looks elsewhere while 60 messages arrive, then opens the conversation.
      await pb.getByRole("button", { name: "Friends" }).click();
      await postBatch(alice.api, bobId, Array.from({ length: 60 }, (_, i) => `unread ${i + 1}`));
      await waitFor("bob's badge counts 60 unread", async () => /60 unread/.test((await contactButton(pb, aliceId).getAttribute("aria-label")) ?? ""), SLOW);
      await contactButton(pb, aliceId).click();
      const divider = pb.getByTestId("unread-divider");
      await expectVisible(divider, "the new messages divider");
      const first = await divider.evaluate((el) => el.nextElementSibling?.querySelector('[data-testid="message-body"]')?.textContent ?? "");
      if (first.trim() !== "unread 1") fail(`the divider is above ${JSON.stringify(first)}, expected the first unread message`);
      const inView = await divider.evaluate((el) => {
        const r = el.getBoundingClientRect();
        const box = el.closest('[data-testid="messages"]').getBoundingClientRect();
        return r.top >= box.top - 1 && r.bottom <= box.bottom + 1;
      });
      if (!inView) fail("opening did not land at the first unread message");
      const bar = pb.getByTestId("jump-to-present");
      await expectVisible(bar, "the jump to present bar");
      await shot(pb, "12a-unread-divider");
      const stillUnread = Number((/(\d+) unread/.exec((await contactButton(pb, aliceId).getAttribute("aria-label")) ?? "") ?? [])[1] ?? 0);
      if (!(stillUnread > 0 && stillUnread < 60)) fail(`after landing, ${stillUnread} should stay unread (only messages on screen are read)`);
      await bar.click();
      await waitFor("jumped to the newest message", async () =>
        pb.getByTestId("messages").evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight < 60), T);
      await waitFor("all read once seen", async () => !/unread/.test((await contactButton(pb, aliceId).getAttribute("aria-label")) ?? ""), T);
      await waitFor("the bar goes away at the present", async () => (await bar.count()) === 0, T);
    }

    section("drafts and last conversation survive a reload");
    await composer(pb).fill("a draft I have not sent");
    await pb.reload();
    await expectVisible(composer(pb), "bob's last conversation reopens by itself", SLOW);
    if ((await composer(pb).inputValue()) !== "a draft I have not sent") fail("the draft was lost on reload");
    await composer(pb).fill("");

    section("history paging");
    // 70 more messages through alice's real API (Bearer token, as the CLI does), then bob reloads:
    // the first page holds the newest 50, scrolling to the top must fetch older ones with before=seq
    // and keep the message that was on top in view.
    const BULK = 70;
    for (let i = 1; i <= BULK; i++) {
      const res = await within(`POST message ${i}`, 10_000, fetch(`${alice.api.url}/api/v1/conversations/${bobId}/messages`, {
        method: "POST",
        headers: { Authorization: `Bearer ${alice.api.token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ body: `bulk message ${i}` }),
      }));
      if (res.status !== 201) fail(`POST /conversations/{id}/messages answered ${res.status}: ${await res.text()}`);
    }
    await expectVisible(msgWith(pb, `bulk message ${BULK}`), "bob receives the bulk messages", SLOW);
    await pb.reload();
    await openContact(pb, aliceId, "alice");
    await expectVisible(msgWith(pb, `bulk message ${BULK}`), "bob's first page after reload", SLOW);
    const firstCount = await loadedCount(pb);
    if (firstCount > 50) fail(`first page holds ${firstCount} messages; expected at most 50 before scrolling`);
    const rendered = await msgs(pb).count();
    if (rendered >= firstCount) log(`note: all ${rendered} loaded messages are rendered (the window covers the first page)`);
    const topBefore = await pb.getByTestId("messages").getAttribute("data-first-loaded");
    await pb.getByTestId("messages").evaluate((el) => { el.scrollTop = 0; });
    await waitFor("an older page to load", async () => (await loadedCount(pb)) > firstCount, T);
    const inView = await pb.locator(`[data-message-id="${topBefore}"]`).evaluate((el) => {
      const box = el.getBoundingClientRect();
      const list = el.closest('[data-testid="messages"]').getBoundingClientRect();
      return box.bottom > list.top && box.top < list.bottom;
    });
    if (!inView) fail("after loading older messages the previously top message left the view (scroll position not kept)");
    await waitFor("the whole history loaded by scrolling up", async () => {
      await pb.getByTestId("messages").evaluate((el) => { el.scrollTop = 0; });
      return (await msgs(pb).filter({ hasText: "Hello Bob, this is Alice" }).count()) > 0;
    }, SLOW, 300);
    {
      // Virtualised: the page holds the whole history but renders only a window of it.
      const loaded = await loadedCount(pb);
      const rendered = await msgs(pb).count();
      log(`history: ${loaded} messages loaded, ${rendered} rendered`);
      if (loaded > 100 && rendered >= loaded) fail(`all ${loaded} loaded messages are rendered: the list is not virtualised`);
    }
    {
      // From the top of a long history, ↑ in the empty box edits bob's last message, far below
      // and not rendered: it must be brought into view; Escape gives it focus; End and Home move
      // focus to the newest and the oldest message, each scrolled into view.
      const inView = (loc) => loc.evaluate((el) => {
        const r = el.getBoundingClientRect();
        const box = el.closest('[data-testid="messages"]').getBoundingClientRect();
        return r.top >= box.top - 1 && r.bottom <= box.bottom + 1;
      });
      const focusedId = () => pb.evaluate(() => document.activeElement?.closest("[data-message-id]")?.getAttribute("data-message-id") ?? null);
      await composer(pb).focus();
      await composer(pb).press("ArrowUp");
      const editor = pb.getByRole("textbox", { name: "Edit message" });
      await expectVisible(editor, "↑ opens the editor on bob's last message");
      await waitFor("the ↑ editor scrolled into view", () => inView(editor), T);
      const edited = await focusedId();
      await editor.press("Escape");
      await waitFor("Escape puts focus on the edited message", async () => edited !== null && (await focusedId()) === edited, T);
      await pb.keyboard.press("End");
      await waitFor("End focuses the newest message, in view", async () => {
        const id = await focusedId();
        return id !== null && id === (await msgs(pb).last().getAttribute("data-message-id")) && (await inView(pb.locator(`[data-message-id="${id}"]`)));
      }, T);
      await pb.keyboard.press("Home");
      await waitFor("Home focuses the oldest loaded message, in view", async () => {
        const id = await focusedId();
        return id !== null && id === (await pb.getByTestId("messages").getAttribute("data-first-loaded")) && (await inView(pb.locator(`[data-message-id="${id}"]`)));
      }, T);
      log("the ↑ editor came into view from the top of the history; Escape focused the edited message; End and Home focused the newest and the oldest, each in view");
      await composer(pb).focus();
    }
    await shot(pb, "12-history-paged");
    // A search hit older than the loaded page: the conversation pages back until it is there.
    await pa.reload();
    await openContact(pa, bobId, "bob");
    await pa.keyboard.press("Control+k");
    await pa.getByRole("searchbox", { name: "Search all messages" }).fill("bulk message 2");
    const oldHit = pa.locator(".search-result").filter({ has: pa.locator(".snippet", { hasText: /^bulk message 2$/ }) });
    await expectVisible(oldHit, "search result for an old message");
    await oldHit.first().click();
    await expectVisible(
      pa.locator('[data-testid="message"].highlight').filter({ has: pa.locator('[data-testid="message-body"]', { hasText: /^bulk message 2$/ }) }),
      "old search hit paged in and highlighted",
      SLOW,
    );
    await pa.getByRole("button", { name: "Close search" }).click();

    section("phone layout (390 px)");
    {
      await pb.setViewportSize({ width: 390, height: 844 });
      await pb.getByRole("button", { name: "Back to conversations" }).click();
      await expectVisible(contactButton(pb, aliceId), "the conversation list fills the phone screen");
      await noSidewaysScroll(pb, "390 px list");
      await touchTargets(pb, "390 px list");
      await shot(pb, "16-phone-list");
      await contactButton(pb, aliceId).click();
      await expectVisible(composer(pb), "the conversation opens full screen");
      if (await pb.getByRole("navigation", { name: "Conversations" }).count()) fail("the list stays on screen beside the conversation at 390 px");
      await noSidewaysScroll(pb, "390 px conversation");
      await touchTargets(pb, "390 px conversation");
      await shot(pb, "17-phone-conversation");
      await pb.getByRole("button", { name: "Emoji", exact: true }).click();
      await shot(pb, "18-phone-emoji-picker");
      await pb.keyboard.press("Escape");
      await pb.setViewportSize({ width: 320, height: 640 });
      await noSidewaysScroll(pb, "320 px conversation");
      await shot(pb, "19-phone-320");
      await pb.setViewportSize({ width: 1280, height: 800 });
      await expectVisible(contactButton(pb, aliceId), "back to the wide layout");
    }

    section("block and unblock");
    await pa.getByRole("button", { name: "Contact details" }).click();
    await pa.getByTestId("manage-contact").getByRole("button", { name: "Block" }).click();
    await pa.getByRole("alertdialog", { name: "Block contact" }).getByRole("button", { name: "Block" }).click();
    await expectVisible(pa.getByText("You blocked this contact."), "alice's composer is replaced after blocking");
    await pa.getByTestId("manage-contact").getByRole("button", { name: "Unblock" }).click();
    await expectVisible(composer(pa), "alice can write again after unblocking");
    await pa.getByRole("button", { name: "Close details" }).click();

    section("invisible");
    await pb.getByRole("combobox", { name: "Your status" }).selectOption("invisible");
    await expectText(pa.getByTestId("peer-presence"), /Offline/, "alice sees invisible Bob as offline", SLOW);
    await expectVisible(pb.getByTestId("invisible-pill"), "bob is told he is invisible");
    // A direct connection would give him away: his node closes them while invisible and
    // answers no offer, so alice's chip must leave "direct" and stay away from it.
    await waitFor("alice's connection chip no longer says direct", async () => !(await pa.getByTestId("conn-chip").getAttribute("class"))?.includes("conn-direct"), SLOW);
    await pa.waitForTimeout(1500);
    const chipWhileInvisible = (await pa.getByTestId("conn-chip").textContent())?.trim();
    if (/direct/i.test(chipWhileInvisible ?? "")) fail(`alice's chip says ${chipWhileInvisible} while bob is invisible`);
    log(`while bob is invisible, alice's connection chip says: ${chipWhileInvisible}`);
    await pb.getByRole("combobox", { name: "Your status" }).selectOption("online");
    await expectText(pa.getByTestId("peer-presence"), /Online/, "alice sees Bob online again", SLOW);

    section("offline peer");
    await stopProcess(bob.proc);
    log("bob's node stopped");
    await expectVisible(pb.getByTestId("connection-banner"), "bob's page shows the lost-node banner", T);
    await shot(pb, "13-node-gone-banner");
    await send(pa, "Are you there? (sent while you were offline)");
    bob = await startNode("bob", dirs.bob, serverUrl);
    await pb.goto(`${bob.api.url}/?token=${bob.api.token}`);
    await expectVisible(pb.getByRole("heading", { name: "Welcome back" }), "bob: unlock screen");
    await pb.getByLabel("Passphrase", { exact: true }).fill("not the passphrase");
    await pb.getByRole("button", { name: "Unlock" }).click();
    await expectVisible(pb.getByText("Wrong passphrase. Try again."), "bob: wrong passphrase error");
    await shot(pb, "14-unlock-wrong-passphrase");
    await pb.getByLabel("Passphrase", { exact: true }).fill(PASS.bob);
    await pb.getByRole("button", { name: "Unlock" }).click();
    await openContact(pb, aliceId, "alice");
    await expectVisible(msgWith(pb, "Are you there? (sent while you were offline)"), "bob receives the message sent while offline", 60_000);
    await shot(pb, "15-offline-message-arrived");

    section("performance: 10,000 messages (reported, not asserted)");
    {
      // Reported, never asserted: if delivery is slow the step says how far it got and measures
      // what did arrive. Its waits fit in what is left of the run's 10 minutes.
      const N = 10_000;
      await pb.getByRole("button", { name: "Friends" }).click();
      const bobsView = async () => {
        const res = await within("GET /contacts (bob)", 10_000, fetch(`${bob.api.url}/api/v1/contacts`, { headers: { Authorization: `Bearer ${bob.api.token}` } }));
        if (res.status !== 200) return { unread: 0, newest: 0 };
        const alice = (await res.json()).find((c) => c.user_id === aliceId);
        const newest = Number((/^perf (\d+) /.exec(alice?.last_message?.body ?? "") ?? [])[1] ?? 0);
        return { unread: alice?.unread ?? 0, newest };
      };
      const baseline = (await bobsView().catch(() => ({ unread: 0 }))).unread;
      const badge = async () => Number((/(\d+) unread/.exec((await contactButton(pb, aliceId).getAttribute("aria-label")) ?? "") ?? [])[1] ?? 0);
      const t0 = Date.now();
      await postBatch(alice.api, bobId, Array.from({ length: N }, (_, i) => `perf ${i + 1} ${i % 7 === 0 ? "**bold** and `code`" : "plain words here"}`));
      const posted = Date.now() - t0;
      // Delivered = bob's list counts all N unread. Not "shows perf 10000": a message re-sent
      // late is ordered after the others (docs/peer-protocol.md, "Order"), so the newest one
      // shown may be another. Leave ~100 s of the run for opening, scrolling and closing down.
      // E2E_PERF_WAIT_MS shortens the wait, to try the partial-delivery path.
      const cap = Number(process.env.E2E_PERF_WAIT_MS) || 240_000;
      const budget = Math.min(cap, Math.max(20_000, Math.min(240_000, RUN_LIMIT_MS - (Date.now() - runStarted) - 100_000)));
      let seen = { unread: 0, newest: 0 };
      let shown = 0;
      let nodeHadAll = null;
      const deadline = Date.now() + budget;
      while (Date.now() < deadline) {
        seen = await bobsView().catch(() => seen);
        if (nodeHadAll === null && seen.unread - baseline >= N) nodeHadAll = Date.now() - t0;
        shown = await badge().catch(() => shown);
        if (shown >= baseline + N) break;
        await sleep(500);
      }
      const delivered = Date.now() - t0;
      const arrived = Math.max(0, seen.unread - baseline);
      const complete = shown >= baseline + N;
      // Where the newest messages ended up, as numbers only: a late re-send shows as a gap.
      const order = await within("GET latest page (bob)", 10_000, fetch(`${bob.api.url}/api/v1/conversations/${aliceId}/messages?limit=8`, { headers: { Authorization: `Bearer ${bob.api.token}` } }))
        .then((r) => r.json())
        .then((p) => (p.messages ?? []).map((m) => (/^perf (\d+) /.exec(m.body ?? "") ?? [])[1] ?? "·").join(" "))
        .catch((e) => `unknown (${e.message})`);
      if (complete) {
        log(
          `PERF ${N} messages posted in ${posted} ms (40 batches of 250); delivered to bob's list (badge ${shown}) in ${delivered} ms ` +
            `(bob's node had all in ${nodeHadAll ?? "?"} ms); newest 8 in bob's order: ${order}`,
        );
      } else {
        log(
          `PERF ${N} messages posted in ${posted} ms; delivery NOT complete ${delivered} ms after the first post (waited ${budget} ms after the last): ` +
            `bob's node counts ${arrived} new unread from alice, his list ${shown - baseline}; newest 8 in bob's order: ${order}; measuring what arrived`,
        );
      }
      if (seen.newest === 0 && arrived === 0 && shown <= baseline) {
        log("PERF nothing arrived: open and scroll not measured");
      } else {
        const opened = Date.now();
        await contactButton(pb, aliceId).click();
        await expectVisible(msgs(pb).filter({ hasText: "perf" }).first(), "the 10k conversation renders", SLOW);
        const openMs = Date.now() - opened;
        await pb.getByTestId("jump-to-present").click().catch(() => undefined);
        await pb.waitForTimeout(500);
        // Scroll up for 8 s, a screenful per frame, letting older pages load; time every frame.
        const frames = await pb.getByTestId("messages").evaluate(
          (el) =>
            new Promise((resolve) => {
              const times = [];
              let last = performance.now();
              const end = last + 8000;
              const step = (now) => {
                times.push(now - last);
                last = now;
                el.scrollTop = Math.max(0, el.scrollTop - 400);
                if (now < end) requestAnimationFrame(step);
                else resolve(times);
              };
              requestAnimationFrame(step);
            }),
        );
        frames.sort((a, b) => a - b);
        const pct = (p) => frames[Math.min(frames.length - 1, Math.floor(frames.length * p))].toFixed(1);
        const loaded = await loadedCount(pb);
        const rendered = await msgs(pb).count();
        const cdp = await ctxB.newCDPSession(pb);
        // Count what is alive: nodes and objects left from rows scrolled away are garbage, not held.
        await cdp.send("HeapProfiler.collectGarbage");
        await cdp.send("Performance.enable");
        const { metrics } = await cdp.send("Performance.getMetrics");
        const metric = (name) => metrics.find((m) => m.name === name)?.value ?? 0;
        log(
          `PERF ${complete ? N : `${arrived} of ${N}`} messages: open ${openMs} ms; ` +
            `scroll frames ${frames.length}, p50 ${pct(0.5)} ms, p95 ${pct(0.95)} ms, max ${pct(1)} ms; ` +
            `${loaded} messages loaded in the page, ${rendered} rendered; JS heap ${(metric("JSHeapUsedSize") / 1048576).toFixed(1)} MiB, ` +
            `DOM nodes ${metric("Nodes")}; load ${loadavg()[0].toFixed(1)}`,
        );
      }
    }

    section("console");
    // Failed loads the test provoked on purpose (wrong passphrase, stopped node) are expected noise.
    const expected = (e) =>
      e.step === "offline peer" && /401|WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(e.text);
    const bad = errors.filter((e) => !expected(e));
    if (bad.length) fail(`browser console errors:\n${bad.map((e) => `  [${e.who} @ ${e.step}] ${e.text}`).join("\n")}`);
    log(`console clean apart from ${errors.length} expected entr${errors.length === 1 ? "y" : "ies"} (offline step):`);
    for (const e of errors) log(`  [${e.who}] ${e.text.slice(0, 160)}`);
    log("PASS");
  } finally {
    if (errors.length) log(`console entries: ${errors.length}`);
    try {
      await within("close browser", 10_000, browser?.close() ?? Promise.resolve());
    } catch {
      // The browser is killed with the process group below.
    }
    killAll();
    if (!KEEP) rmSync(tmp, { recursive: true, force: true });
  }
}

runScript("e2e", main, { limitMs: RUN_LIMIT_MS, currentStep: () => step, onFailure: () => console.error(`[e2e] process logs: ${LOGS}`) });
