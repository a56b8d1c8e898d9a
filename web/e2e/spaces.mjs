// End-to-end test of spaces through the UI with REAL components: the signaling server, three
// discordopus nodes (alice, bob, carol: not contacts of each other) and three headless Chromium
// pages. Alice creates a space and invites bob and carol from its settings page (one-use codes, a
// QR code); all talk in #general with a reply, a reaction, an edit and a delete; alice mentions
// bob with the picker and everyone; alice creates and moves a channel, makes a role and gives it
// to bob (who may then delete others' messages), denies @everyone posting in the new channel
// (bob's composer gives way to a notice), and kicks carol, whose UI says she is out. Names come
// from each member's profile op: every page names the others in its member list and on their
// messages, and carol's last message stays on bob's page under her name, marked "(left)".
//
//   node e2e/spaces.mjs     (from web/; binaries as for `npm run e2e`)
//
// Screenshots go to <repo>/test-output/screenshots/spaces-*.png, logs to test-output/e2e-logs/.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";
import {
  CHROMIUM,
  SHOTS,
  UI_TIMEOUT_MS,
  fail,
  killAll,
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
const SLOW = 60_000;
const RUN_LIMIT_MS = 10 * 60_000;
const log = (msg) => console.log(`[spaces-e2e ${new Date().toISOString().slice(11, 19)}] ${msg}`);



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

const channelMessages = (page) => page.getByTestId("messages");
/** The newest message whose own text (not a reply quote) holds `text`. */
const msgWith = (page, text) =>
  channelMessages(page).getByTestId("message").filter({ has: page.getByTestId("message-body").filter({ hasText: text }) }).last();

async function post(page, text) {
  const box = page.locator("#composer");
  await box.fill(text);
  await box.press("Enter");
  await visible(msgWith(page, text), `own message "${text}"`);
}


/** Alice makes an invite on the settings page (one use, a day) and hands its code over. */
async function inviteFromSettings(pa) {
  await pa.getByRole("button", { name: "Invite people" }).click();
  await visible(pa.getByTestId("space-settings"), "alice: the settings page");
  await pa.getByLabel("Expires after").selectOption({ label: "1 day" });
  await pa.getByLabel("Max uses").fill("1");
  const codeBox = pa.getByLabel("Invite code", { exact: true });
  const before = (await codeBox.count()) ? await codeBox.inputValue() : "";
  await pa.getByRole("button", { name: "Create invite" }).click();
  const code = await waitFor("a fresh invite code", async () => {
    const v = await pa.getByLabel("Invite code", { exact: true }).inputValue().catch(() => "");
    return v.startsWith("dinvite1") && v !== before ? v : null;
  });
  await visible(pa.getByTestId("invite-qr"), "alice: the invite's QR code");
  return code;
}

async function shot(page, name) {
  await screenshot(page, `spaces-${name}`);
}

async function main() {
  preflight();
  mkdirSync(SHOTS, { recursive: true });
  const tmp = mkdtempSync(join(tmpdir(), "dopus-spaces-e2e-"));
  let browser;
  const pages = {};
  try {
    const { url: serverUrl } = await startServer(join(tmp, "server"));
    const names = ["alice", "bob", "carol"];
    const nodes = {};
    for (const n of names) {
      nodes[n] = await startNode(n, join(tmp, n), serverUrl);
    }
    browser = await within("launch chromium", 30_000, chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
    }));
    const ids = {};
    const errors = [];
    // Members who are not contacts show the name they chose in the space with a short form of
    // their user ID, the fingerprint (Spaces.tsx; docs/spaces.md, "Member names").
    const short = (n) => `${n} (${ids[n].slice(0, 10)}…${ids[n].slice(-4)})`;
    for (const n of names) {
      const ctx = await browser.newContext({ viewport: { width: 1400, height: 860 } });
      const p = await ctx.newPage();
      p.setDefaultTimeout(T);
      p.on("pageerror", (e) => errors.push(`${n}: ${e.message}`));
      await p.goto(`${nodes[n].api.url}/?token=${nodes[n].api.token}`);
      await createIdentity(p, n);
      ids[n] = (await p.getByTestId("my-user-id").textContent()).trim();
      await p.getByRole("button", { name: "Spaces" }).click();
      await visible(p.getByTestId("spaces"), `${n}: spaces view`);
      pages[n] = p;
    }
    const { alice: pa, bob: pb, carol: pc } = pages;
    await pa.getByLabel("New space name").fill("Guild of Testers");
    await pa.getByRole("button", { name: "Create" }).click();
    await visible(pa.getByRole("heading", { name: "Guild of Testers" }), "alice: the new space");
    await visible(pa.getByRole("button", { name: "# general" }), "alice: #general");
    await shot(pa, "1-created");

    log("invites from the settings page");
    const codes = {};
    for (const n of ["bob", "carol"]) {
      const code = await inviteFromSettings(pa);
      codes[n] = code;
      if (n === "bob") await shot(pa, "2-invite-qr");
      const p = pages[n];
      // Bob pastes the link form, carol the bare code: the join box takes both.
      await p.getByLabel("Invite code to join").fill(n === "bob" ? `discordopus://join/${code}` : code);
      await p.getByRole("button", { name: "Join" }).click();
      await visible(p.getByRole("heading", { name: "Guild of Testers" }), `${n}: joined`, SLOW);
      await visible(p.getByRole("button", { name: "# general" }), `${n}: #general`, SLOW);
    }
    // Both one-use invites are used up now, and listed so.
    await waitFor("alice's invite list shows both invites used up", async () => {
      await pa.getByRole("tab", { name: "Invites" }).click();
      return (await pa.getByTestId("invite-list").locator("tbody tr").filter({ hasText: "used up" }).count()) === 2;
    }, SLOW, 500);
    await pa.getByRole("button", { name: "Close settings" }).click();
    await shot(pb, "3-joined");

    log("talk, reply, react, edit");
    for (const n of names) {
      await visible(pages[n].locator("#composer"), `${n}: composer in #general`, SLOW);
      await post(pages[n], `hello from ${n}`);
    }
    for (const n of names) {
      for (const m of names) await visible(msgWith(pages[n], `hello from ${m}`), `${n} sees ${m}'s message`, SLOW);
    }
    // Names from the profile ops: each member's chosen name (with its fingerprint) in the
    // others' member lists and on their messages.
    for (const n of names) {
      for (const m of names.filter((x) => x !== n)) {
        await visible(pages[n].getByTestId("space-members").locator(".space-member").filter({ hasText: short(m) }), `${n}'s member list names ${m}`, SLOW);
        await visible(msgWith(pages[n], `hello from ${m}`).locator(".author").filter({ hasText: short(m) }), `${n} sees ${m}'s name on the message`, SLOW);
      }
    }
    // Bob replies to alice.
    const alicesHello = msgWith(pb, "hello from alice");
    await alicesHello.hover();
    await alicesHello.getByRole("button", { name: "Reply" }).click();
    await post(pb, "welcome back, alice");
    for (const n of ["alice", "carol"]) {
      await visible(msgWith(pages[n], "welcome back, alice").getByTestId("reply-quote").filter({ hasText: "hello from alice" }), `${n} sees bob's reply quote`, SLOW);
    }
    // Carol reacts to bob's reply.
    const reply = msgWith(pc, "welcome back, alice");
    await reply.hover();
    await reply.getByRole("button", { name: "Add reaction" }).click();
    await pc.getByRole("button", { name: "React with 👍" }).click();
    for (const n of names) await visible(msgWith(pages[n], "welcome back, alice").getByTestId("reaction"), `${n} sees carol's reaction`, SLOW);
    // Alice edits her hello.
    const mine = msgWith(pa, "hello from alice");
    await mine.hover();
    await mine.getByRole("button", { name: "Edit" }).click();
    const editBox = pa.getByRole("textbox", { name: "Edit message" });
    await editBox.fill("hello from alice, edited");
    await editBox.press("Enter");
    for (const n of ["bob", "carol"]) {
      await visible(msgWith(pages[n], "hello from alice, edited").getByText("(edited)"), `${n} sees alice's edit`, SLOW);
    }
    // Bob may not delete alice's message (no delete button); alice, the owner, may delete carol's.
    const bobSeesAlice = msgWith(pb, "hello from alice, edited");
    await bobSeesAlice.hover();
    if ((await bobSeesAlice.getByRole("button", { name: "Delete" }).count()) !== 0) fail("bob is offered to delete alice's message");
    const carols = msgWith(pa, "hello from carol");
    await carols.hover();
    await carols.getByRole("button", { name: "Delete" }).click();
    await carols.getByRole("alertdialog", { name: "Delete message" }).getByRole("button", { name: "Delete" }).click();
    for (const n of ["bob", "carol"]) {
      await waitFor(`${n} sees carol's message deleted`, async () => (await msgWith(pages[n], "hello from carol").count()) === 0, SLOW);
    }
    await shot(pc, "4-talk-carol");

    log("mentions");
    // Alice mentions bob with the picker; bob's copy is highlighted and shows his name.
    const box = pa.locator("#composer");
    await box.fill("");
    // Bob is not alice's contact, so the picker finds him by a piece of his user ID.
    await box.pressSequentially(`ping @${ids.bob.slice(8, 16)}`);
    await visible(pa.getByTestId("mention-suggest").getByRole("option", { name: `@${short("bob")}` }), "alice: the mention picker offers bob");
    await shot(pa, "5-mention-picker");
    await box.press("Enter");
    await box.pressSequentially("please review");
    await box.press("Enter");
    await visible(channelMessages(pb).locator('[data-mention="true"]').filter({ hasText: "@bob please review" }), "bob: alice's mention is highlighted", SLOW);
    if ((await channelMessages(pc).locator('[data-mention="true"]').filter({ hasText: "please review" }).count()) !== 0) {
      fail("carol sees a mention of bob highlighted as hers");
    }
    await post(pa, "@everyone meeting at noon");
    for (const n of ["bob", "carol"]) {
      await visible(channelMessages(pages[n]).locator('[data-mention="true"]').filter({ hasText: "meeting at noon" }), `${n}: the @everyone mention is highlighted`, SLOW);
      await visible(pages[n].getByTestId("space-members").locator(".space-member").nth(2), `${n}: three members listed`);
    }
    await shot(pb, "6-mention");

    log("channels");
    // Bob may not manage channels: no tools, and the list says why.
    await visible(pb.getByTestId("no-manage-channels"), "bob: told he cannot manage channels");
    await pa.getByRole("button", { name: "Create channel" }).click();
    await pa.getByLabel("Channel name").fill("announcements");
    await pa.getByLabel("Channel topic").fill("news from the guild");
    await pa.getByRole("form", { name: "Create channel" }).getByRole("button", { name: "Create", exact: true }).click();
    await visible(pa.getByTestId("channel-topic").filter({ hasText: "news from the guild" }), "alice: the new channel is open");
    await visible(pb.getByRole("button", { name: "# announcements" }), "bob sees the new channel", SLOW);
    // Alice moves it above #general (text channels move among text ones); bob's list follows.
    const nth = (page, i) => page.locator(".channel-item").nth(i).textContent();
    await waitFor("alice's list puts #announcements below #general", async () => (await nth(pa, 1))?.includes("announcements"), T, 200);
    await pa.getByRole("button", { name: "Move announcements up" }).click();
    await waitFor("alice's list puts #announcements first", async () => (await nth(pa, 0))?.includes("announcements"), T, 200);
    await waitFor("bob's channel list puts #announcements first", async () => {
      const first = await pb.locator(".channel-item").first().textContent();
      return first?.includes("announcements");
    }, SLOW, 300);
    // A category, and #announcements dragged onto its header: bob sees it inside.
    await pa.getByRole("button", { name: "Create channel" }).click();
    await pa.getByLabel("Category: groups channels").check();
    await pa.getByLabel("Channel name").fill("Info");
    await pa.getByRole("form", { name: "Create channel" }).getByRole("button", { name: "Create", exact: true }).click();
    await visible(pa.locator(".channel-category").filter({ hasText: "INFO" }), "alice: the Info category");
    await pa.locator(".channel-row").filter({ hasText: "announcements" }).dragTo(pa.locator(".channel-category").filter({ hasText: "INFO" }));
    await visible(pb.getByRole("region", { name: "Category Info" }).getByRole("button", { name: "# announcements" }), "bob sees #announcements under Info", SLOW);
    await shot(pb, "7-channel");

    log("roles");
    await pa.getByRole("button", { name: "Space settings" }).click();
    await pa.getByRole("tab", { name: "Roles" }).click();
    await pa.getByLabel("New role name").fill("Mods");
    await pa.getByRole("button", { name: "Create role" }).click();
    const modsRole = pa.getByTestId("role-list").getByRole("button", { name: "Mods", exact: true });
    await visible(modsRole, "alice: the Mods role");
    await modsRole.click();
    await pa.getByRole("checkbox", { name: "Manage messages" }).check();
    await pa.getByRole("button", { name: "Save role" }).click();
    await shot(pa, "8-roles");
    // A second role lands on top (the owner's new roles do); dragging Mods onto it puts Mods first.
    await pa.getByLabel("New role name").fill("Helpers");
    await pa.getByRole("button", { name: "Create role" }).click();
    const roleRows = pa.getByTestId("role-list").locator(".settings-role");
    await waitFor("Helpers listed first", async () => (await roleRows.first().textContent())?.includes("Helpers"), T, 200);
    await roleRows.filter({ hasText: "Mods" }).dragTo(roleRows.filter({ hasText: "Helpers" }));
    await waitFor("Mods dragged above Helpers", async () => (await roleRows.first().textContent())?.includes("Mods"), SLOW, 200);
    await pa.getByRole("tab", { name: "Members" }).click();
    // The box follows the node's answer (the role op resolved), not the click.
    const bobsMods = pa.getByRole("checkbox", { name: `Mods role for ${short("bob")}` });
    await bobsMods.click();
    await waitFor("alice's node answers: bob holds Mods", () => bobsMods.isChecked(), SLOW, 200);
    await visible(pb.getByTestId("space-members").locator(".space-member").filter({ hasText: "Mods" }), "bob's member list shows the Mods role", SLOW);
    // Bob, now a moderator, is offered to delete others' messages.
    const aliceAgain = msgWith(pb, "meeting at noon");
    await waitFor("bob may delete alice's message now", async () => {
      await aliceAgain.hover();
      return (await aliceAgain.getByRole("button", { name: "Delete" }).count()) === 1;
    }, SLOW, 300);
    await shot(pa, "8-members");

    log("channel permissions");
    // Only alice may post in #announcements: @everyone is denied "Send messages" there.
    await pa.getByRole("tab", { name: "Channels" }).click();
    await pa.getByLabel("Channel to edit").selectOption({ label: "# announcements" });
    await pa.getByLabel("Add an entry for").selectOption({ label: "@everyone" });
    await pa.getByRole("button", { name: "Add", exact: true }).click();
    await pa.getByLabel("Send messages for @everyone").selectOption("deny");
    await pa.getByRole("button", { name: "Save permissions" }).click();
    await pb.getByRole("button", { name: "# announcements" }).click();
    await visible(pb.getByText("You cannot send messages in this channel."), "bob may not post in #announcements", SLOW);
    await shot(pb, "8-read-only");
    await pb.getByRole("button", { name: "# general" }).click();

    log("kick");
    await post(pc, "carol was here");
    await visible(msgWith(pb, "carol was here"), "bob sees carol's last message", SLOW);
    await pa.getByRole("tab", { name: "Members" }).click();
    await pa.getByRole("button", { name: `Kick ${short("carol")}` }).click();
    await pa.getByRole("button", { name: "Yes, kick" }).click();
    await visible(pc.getByTestId("space-status").filter({ hasText: "no longer a member" }), "carol's UI says she is out", SLOW);
    await waitFor("bob's member list drops carol", async () => (await pb.getByTestId("space-members").locator(".space-member").count()) === 2, SLOW, 300);
    // What carol said stays, under her name, marked as having left.
    await visible(msgWith(pb, "carol was here").locator(".author").filter({ hasText: `${short("carol")} (left)` }), "bob sees carol's message marked (left)", SLOW);
    await shot(pc, "9-kicked-carol");
    await shot(pa, "9-kicked-alice");

    log("refused invites");
    // Carol's one-use code is spent: asking again is refused, and her page says why.
    await pc.getByLabel("Invite code to join").fill(codes.carol);
    await pc.getByRole("button", { name: "Join" }).click();
    await visible(pc.getByTestId("space-status").filter({ hasText: "used as many times as it allows" }), "carol: the spent invite is refused with its reason", SLOW);
    // A revoked invite: alice makes one and revokes it from the list; carol's try is refused.
    const revokedCode = await inviteFromSettings(pa);
    const activeRow = pa.getByTestId("invite-list").locator("tbody tr").filter({ hasText: "active" });
    await activeRow.getByRole("button", { name: /^Revoke invite/ }).click();
    await visible(pa.getByTestId("invite-list").locator("tbody tr").filter({ hasText: "revoked" }), "alice: the invite listed as revoked");
    await pc.getByLabel("Invite code to join").fill(revokedCode);
    await pc.getByRole("button", { name: "Join" }).click();
    await visible(pc.getByTestId("space-status").filter({ hasText: "this invite was revoked" }), "carol: the revoked invite is refused", SLOW);
    // Garbage is refused at once with the node's message.
    await pc.getByLabel("Invite code to join").fill("dinvite1notacode");
    await pc.getByRole("button", { name: "Join" }).click();
    await visible(pc.locator(".toasts").getByText(/invite/i), "carol: a malformed code is refused at once");
    await shot(pc, "10-refused");

    log("contact from the member list");
    // Bob asks alice to be a contact from the member list; once she accepts (in her direct
    // messages), bob's channel names her instead of showing a piece of her ID.
    await pb.getByRole("button", { name: `Add ${short("alice")} as a contact` }).click();
    await pa.getByRole("button", { name: "Direct messages" }).click();
    await pa.getByRole("button", { name: /^Accept/ }).click();
    await visible(channelMessages(pb).locator(".author").filter({ hasText: /^alice$/ }), "bob's channel names alice", SLOW);
    if ((await pb.getByRole("button", { name: `Add ${short("alice")} as a contact` }).count()) !== 0) fail("bob is still offered to add alice");

    // Narrow windows drop the member list; a phone-width page does not scroll sideways.
    await pb.setViewportSize({ width: 900, height: 800 });
    await waitFor("bob at 900 px: no member list", async () => !(await pb.getByTestId("space-members").isVisible()), T, 200);
    await shot(pb, "11-narrow");
    await pb.setViewportSize({ width: 390, height: 800 });
    const sideways = await pb.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (sideways > 1) fail(`bob's 390 px page scrolls sideways by ${sideways} px`);
    await shot(pb, "11-phone");
    if (errors.length) fail(`uncaught page errors: ${errors.join("; ")}`);
    log("PASS: three pages: invites from settings, talk with a reply, a reaction, an edit and a moderator delete, mentions with the picker, a channel made and moved, a role given, a kick");
  } catch (e) {
    // What each page showed when it failed.
    for (const [n, p] of Object.entries(pages)) await p.screenshot({ path: join(SHOTS, `spaces-failed-${n}.png`) }).catch(() => {});
    throw e;
  } finally {
    if (browser) await browser.close().catch(() => {});
    killAll();
    rmSync(tmp, { recursive: true, force: true });
  }
}

runScript("spaces-e2e", main, { limitMs: RUN_LIMIT_MS });
