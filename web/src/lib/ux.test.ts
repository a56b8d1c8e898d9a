import { describe, expect, it } from "vitest";
import { initials } from "../components/Avatar";
import { buildEntries, insertAt, searchEmoji, shortcodeAt } from "./emoji";
import { layoutFor, MIN_WIDTH, visiblePanes } from "./layout";
import { badgeText, notificationFor, pageTitle, type NotifyContext } from "./notify";
import { DEFAULT_NOTIFY, memoryStorage, Prefs } from "./prefs";
import { ALICE, BOB, msg } from "./testutil";
import { atPresent, firstUnread, lastOnScreen, readUpTo, showJumpBar, totalUnread, unreadAfter } from "./unread";

describe("unread navigation", () => {
  const history = [
    msg({ id: "a", seq: 1 }),
    msg({ id: "b", seq: 2, outgoing: true, sender: ALICE }),
    msg({ id: "c", seq: 3 }),
    msg({ id: "d", seq: 4, deleted: true, body: null }),
    msg({ id: "e", seq: 5 }),
    msg({ id: "f", seq: 6 }),
  ];

  it("puts the divider before the first unread incoming message", () => {
    expect(firstUnread(history, 0)).toEqual({ id: null, missing: false });
    expect(firstUnread(history, 1)).toEqual({ id: "f", missing: false });
    // Deleted and outgoing messages do not count.
    expect(firstUnread(history, 3)).toEqual({ id: "c", missing: false });
    expect(firstUnread(history, 4)).toEqual({ id: "a", missing: false });
  });

  it("asks for older pages when the unread reach further back than what is loaded", () => {
    expect(firstUnread(history, 5)).toEqual({ id: null, missing: true });
  });

  it("a message counts as seen once it has been fully on screen", () => {
    const placed = [
      { id: "a", top: 0, bottom: 50 },
      { id: "c", top: 50, bottom: 100 },
      { id: "e", top: 100, bottom: 150 },
      { id: "f", top: 150, bottom: 200 },
    ];
    expect(lastOnScreen(placed, 0, 120)).toBe("c");
    expect(lastOnScreen(placed, 60, 200)).toBe("f");
    expect(lastOnScreen([{ id: "x", top: 80, bottom: 150 }], 0, 100)).toBeNull();
    // A message taller than the view counts once its top is in view.
    expect(lastOnScreen([{ id: "tall", top: 10, bottom: 900 }], 0, 300)).toBe("tall");
  });

  it("counts what is left below the last seen message", () => {
    expect(unreadAfter(history, "c")).toBe(2);
    expect(unreadAfter(history, "f")).toBe(0);
    expect(unreadAfter(history, null)).toBe(4);
  });

  it("reads up to the newest incoming message seen", () => {
    expect(readUpTo(history, "b")?.id).toBe("a");
    expect(readUpTo(history, "f")?.id).toBe("f");
    expect(readUpTo(history, null)).toBeNull();
  });

  it("jump to present shows once more than a screen away", () => {
    expect(atPresent(10)).toBe(true);
    expect(atPresent(100)).toBe(false);
    expect(showJumpBar(100, 600)).toBe(false);
    expect(showJumpBar(700, 600)).toBe(true);
    expect(showJumpBar(250, 100)).toBe(true);
  });

  it("the total leaves out muted, blocked and request conversations", () => {
    const contacts = {
      a: { state: "accepted", unread: 2, blocked: false },
      b: { state: "accepted", unread: 5, blocked: false },
      c: { state: "incoming_request", unread: 1, blocked: false },
      d: { state: "accepted", unread: 7, blocked: true },
    };
    expect(totalUnread(contacts, new Set())).toBe(7);
    expect(totalUnread(contacts, new Set(["b"]))).toBe(2);
  });
});

describe("notifications", () => {
  const ctx = (over: Partial<NotifyContext> = {}): NotifyContext => ({
    me: ALICE,
    hidden: true,
    prefs: DEFAULT_NOTIFY,
    muted: new Set(),
    myStatus: "online",
    nameOf: (id) => (id === BOB ? "Bob" : "?"),
    blocked: () => false,
    ...over,
  });
  const incoming = msg({ id: "n1", seq: 1, body: "**hey** ||spoiler|| see https://example.org" });

  it("a direct message notifies while the page is hidden, with plain text", () => {
    expect(notificationFor(incoming, ctx())).toEqual({
      title: "Bob",
      body: "hey ▮▮▮ see https://example.org",
      tag: `dopus-${BOB}`,
      conversation: BOB,
      reason: "direct",
      sound: true,
    });
  });

  it("stays quiet when visible, muted, do-not-disturb, busy, disabled, blocked, or ours", () => {
    expect(notificationFor(incoming, ctx({ hidden: false }))).toBeNull();
    expect(notificationFor(incoming, ctx({ muted: new Set([BOB]) }))).toBeNull();
    expect(notificationFor(incoming, ctx({ prefs: { ...DEFAULT_NOTIFY, dnd: true } }))).toBeNull();
    expect(notificationFor(incoming, ctx({ prefs: { ...DEFAULT_NOTIFY, enabled: false } }))).toBeNull();
    expect(notificationFor(incoming, ctx({ myStatus: "busy" }))).toBeNull();
    expect(notificationFor(incoming, ctx({ blocked: () => true }))).toBeNull();
    expect(notificationFor(msg({ id: "o", seq: 2, outgoing: true, sender: ALICE }), ctx())).toBeNull();
    expect(notificationFor(msg({ id: "x", seq: 3, deleted: true, body: null }), ctx())).toBeNull();
  });

  it("sound follows the preference", () => {
    expect(notificationFor(incoming, ctx({ prefs: { ...DEFAULT_NOTIFY, sound: false } }))?.sound).toBe(false);
  });

  it("long messages are shortened", () => {
    const long = notificationFor(msg({ id: "l", seq: 4, body: "x".repeat(500) }), ctx());
    expect(long?.body.length).toBe(140);
  });

  it("title and favicon badge carry the unread total", () => {
    expect(pageTitle(0)).toBe("DiscordOpus");
    expect(pageTitle(3)).toBe("(3) DiscordOpus");
    expect(pageTitle(150)).toBe("(99+) DiscordOpus");
    expect(badgeText(0)).toBe("");
    expect(badgeText(4)).toBe("4");
    expect(badgeText(12)).toBe("9+");
  });
});

describe("layout breakpoints", () => {
  it("maps widths to layouts", () => {
    expect(layoutFor(MIN_WIDTH)).toBe("phone");
    expect(layoutFor(390)).toBe("phone");
    expect(layoutFor(699)).toBe("phone");
    expect(layoutFor(700)).toBe("narrow");
    expect(layoutFor(999)).toBe("narrow");
    expect(layoutFor(1000)).toBe("wide");
    expect(layoutFor(1920)).toBe("wide");
  });

  it("a phone shows one pane at a time", () => {
    expect(visiblePanes("phone", "list")).toEqual({ sidebar: true, main: false });
    expect(visiblePanes("phone", "main")).toEqual({ sidebar: false, main: true });
    expect(visiblePanes("wide", "list")).toEqual({ sidebar: true, main: true });
  });
});

describe("emoji", () => {
  const entries = buildEntries(
    [
      { hexcode: "1F44D", label: "thumbs up", group: 1, order: 1, tags: ["+1", "like"], unicode: "👍️" },
      { hexcode: "1F600", label: "grinning face", group: 0, order: 2, tags: ["smile"], unicode: "😀" },
      { hexcode: "1F3FB", label: "light skin tone", group: 2, order: 3, unicode: "🏻" },
      { hexcode: "1F525", label: "fire", group: 5, order: 4, tags: ["flame"], unicode: "🔥" },
    ] as never,
    { "1F44D": ["+1", "thumbsup"], "1F600": "grinning", "1F525": "fire" },
  );

  it("leaves out skin-tone components and sorts by group", () => {
    expect(entries.map((e) => e.emoji)).toEqual(["😀", "👍️", "🔥"]);
  });

  it("searches shortcodes, names and tags", () => {
    expect(searchEmoji(entries, ":fire")[0]?.emoji).toBe("🔥");
    expect(searchEmoji(entries, "thumbs")[0]?.emoji).toBe("👍️");
    expect(searchEmoji(entries, "smile")[0]?.emoji).toBe("😀");
    expect(searchEmoji(entries, "flame")[0]?.emoji).toBe("🔥");
    expect(searchEmoji(entries, "zzzz")).toEqual([]);
  });

  it("finds a :shortcode being typed and replaces it", () => {
    expect(shortcodeAt("hello :fi", 9)).toEqual({ start: 6, query: "fi" });
    expect(shortcodeAt(":thumb", 6)).toEqual({ start: 0, query: "thumb" });
    expect(shortcodeAt("time 10:30", 10)).toBeNull();
    expect(shortcodeAt("a :x", 4)).toBeNull();
    expect(shortcodeAt("see https://x", 13)).toBeNull();
    expect(insertAt("hello :fi there", 6, 9, "🔥")).toEqual({ text: "hello 🔥  there", caret: 9 });
  });
});

describe("prefs", () => {
  it("remembers drafts, the last open conversation, mutes and recent emoji per identity", () => {
    const kv = memoryStorage();
    const p = new Prefs(kv, ALICE);
    p.setDraft(BOB, "half a thought");
    p.setLastOpen(BOB);
    p.setMuted(BOB, true);
    p.useEmoji("🔥");
    p.useEmoji("👍");
    p.useEmoji("🔥");
    const again = new Prefs(kv, ALICE);
    expect(again.draft(BOB)).toBe("half a thought");
    expect(again.lastOpen()).toBe(BOB);
    expect(again.muted().has(BOB)).toBe(true);
    expect(again.recentEmoji()).toEqual(["🔥", "👍"]);
    // Another identity in the same browser sees none of it.
    expect(new Prefs(kv, BOB).draft(BOB)).toBe("");
    // A blank draft is dropped.
    p.setDraft(BOB, "   ");
    expect(p.drafts()).toEqual({});
  });

  it("survives garbage in storage", () => {
    const kv = memoryStorage();
    kv.setItem(`dopus:${ALICE}:drafts`, "{not json");
    kv.setItem(`dopus:${ALICE}:muted`, '"nope"');
    kv.setItem(`dopus:${ALICE}:notify`, '{"dnd":"yes"}');
    const p = new Prefs(kv, ALICE);
    expect(p.drafts()).toEqual({});
    expect(p.muted().size).toBe(0);
    expect(p.notify()).toEqual(DEFAULT_NOTIFY);
    expect(new Prefs(null, ALICE).lastOpen()).toBeNull();
  });
});

describe("avatar initials", () => {
  it("skip punctuation and symbols", () => {
    expect(initials("(Bob) [Smith]")).toBe("BS");
    expect(initials("@alice")).toBe("A");
    expect(initials("  émile   zola ")).toBe("ÉZ");
    expect(initials("#1 fan")).toBe("1F");
    expect(initials("🦊")).toBe("🦊");
    expect(initials("")).toBe("?");
    expect(initials("— …")).toBe("—");
  });
});

describe("search count", () => {
  it("says how many hits, with + while more may exist", async () => {
    const { resultCount } = await import("../components/SearchPanel");
    expect(resultCount(0, undefined, false)).toBe("No messages match.");
    expect(resultCount(1, undefined, false)).toBe("1 result");
    expect(resultCount(25, undefined, true)).toBe("25+ results");
    expect(resultCount(25, 240, true)).toBe("25 of 240 results");
    expect(resultCount(3, 3, false)).toBe("3 results");
  });
});

describe("avatar pictures", () => {
  it("crop to a centred square and know their weight", async () => {
    const { centreSquare, dataUrlBytes } = await import("./image");
    expect(centreSquare(400, 300)).toEqual({ sx: 50, sy: 0, side: 300 });
    expect(centreSquare(100, 180)).toEqual({ sx: 0, sy: 40, side: 100 });
    expect(dataUrlBytes("data:image/png;base64,AAAA")).toBe(3);
    expect(dataUrlBytes("data:image/png;base64,AAA=")).toBe(2);
    expect(dataUrlBytes("data:image/png;base64,AA==")).toBe(1);
  });
});
