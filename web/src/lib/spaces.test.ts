import { describe, expect, it } from "vitest";
import type { Space, SpaceChannel } from "../api/types";
import {
  spaceUserName,
  can,
  channelTree,
  colorValue,
  dropChannel,
  dropRole,
  EVERYONE,
  inviteCodeFrom,
  inviteLink,
  inviteStatus,
  keyWaits,
  keyWaitText,
  memberActionBlock,
  mentionAt,
  mentionCandidates,
  moveChannel,
  nextPosition,
  outranks,
  PERMISSIONS,
  roleEditBlock,
  setTri,
  topRole,
  triOf,
} from "./spaces";

const owner = "dopus1" + "o".repeat(52);
const mod = "dopus1" + "m".repeat(52);
const bob = "dopus1" + "b".repeat(52);
const carol = "dopus1" + "c".repeat(52);
const MODS = "11".repeat(16);
const HELPERS = "22".repeat(16);

function ch(id: string, kind: SpaceChannel["kind"], position: number, parent: string | null = null): SpaceChannel {
  return { id, kind, name: id, topic: "", parent, position, can_view: true, can_send: true, overwrites: [], unread: 0, mentions: 0 };
}

function space(permissions: string[] = []): Space {
  return {
    id: "dspace1x",
    membership: "member",
    refusal: null,
    name: "Guild",
    description: "",
    share_history: false,
    owner,
    permissions,
    members: [
      { user_id: owner, owner: true, roles: [] },
      { user_id: mod, owner: false, roles: [MODS] },
      { user_id: bob, owner: false, roles: [HELPERS] },
      { user_id: carol, owner: false, roles: [] },
    ],
    former_members: [],
    roles: [
      { id: EVERYONE, name: "@everyone", color: 0, position: 0, permissions: ["view_channel", "send_messages"] },
      { id: MODS, name: "Mods", color: 0xff0000, position: 5, permissions: ["kick", "manage_roles"] },
      { id: HELPERS, name: "Helpers", color: 0, position: 2, permissions: [] },
    ],
    channels: [ch("general", "text", 0), ch("voice", "voice", 1), ch("cat", "category", 0), ch("a", "text", 0, "cat"), ch("b", "text", 1, "cat")],
    invites: [],
  };
}

describe("permissions and ranks", () => {
  it("lists every permission the node has, each with a label", () => {
    expect(PERMISSIONS).toHaveLength(15);
    expect(new Set(PERMISSIONS.map((p) => p.name)).size).toBe(15);
  });
  it("gives the owner and administrators everything", () => {
    expect(can(space(), owner, "ban")).toBe(true);
    expect(can(space(["administrator"]), mod, "ban")).toBe(true);
    expect(can(space(["kick"]), mod, "ban")).toBe(false);
  });
  it("ranks by top role, the owner above all", () => {
    const s = space(["kick"]);
    expect(topRole(s, [HELPERS, MODS])?.id).toBe(MODS);
    expect(outranks(s, mod, bob)).toBe(true);
    expect(outranks(s, bob, mod)).toBe(false);
    expect(outranks(s, mod, owner)).toBe(false);
    expect(outranks(s, owner, mod)).toBe(true);
    expect(outranks(s, bob, carol)).toBe(true);
    expect(outranks(s, mod, mod)).toBe(false);
  });
  it("says why a member action is not allowed", () => {
    const s = space(["kick"]);
    expect(memberActionBlock(s, mod, bob, "kick")).toBeNull();
    expect(memberActionBlock(s, mod, bob, "ban")).toMatch(/Ban members/);
    expect(memberActionBlock(s, mod, owner, "kick")).toMatch(/owner/);
    expect(memberActionBlock(s, mod, mod, "kick")).toMatch(/you/);
    expect(memberActionBlock(space(["kick"]), bob, mod, "kick")).toMatch(/not below/);
  });
  it("lets a role manager edit only roles below their top role", () => {
    const s = space(["manage_roles"]);
    expect(roleEditBlock(s, mod, s.roles[2]!)).toBeNull();
    expect(roleEditBlock(s, mod, s.roles[1]!)).toMatch(/not below/);
    expect(roleEditBlock(space(), bob, s.roles[2]!)).toMatch(/Manage roles/);
    expect(roleEditBlock(s, owner, s.roles[1]!)).toBeNull();
  });
});

describe("channel tree and reorder", () => {
  it("puts loose channels first, then categories with their children, by position", () => {
    const tree = channelTree(space().channels);
    expect(tree.map((g) => g.category?.id ?? null)).toEqual([null, "cat"]);
    expect(tree[0]!.channels.map((c) => c.id)).toEqual(["general", "voice"]);
    expect(tree[1]!.channels.map((c) => c.id)).toEqual(["a", "b"]);
  });
  it("treats a channel whose category is gone as loose, and ties sort by id", () => {
    const tree = channelTree([ch("z", "text", 0), ch("y", "text", 0), ch("x", "text", 0, "gone")]);
    expect(tree[0]!.channels.map((c) => c.id)).toEqual(["x", "y", "z"]);
  });
  it("lists text channels above voice ones whatever their positions", () => {
    const tree = channelTree([ch("v", "voice", 0), ch("t", "text", 5)]);
    expect(tree[0]!.channels.map((c) => c.id)).toEqual(["t", "v"]);
  });
  it("swaps with the neighbour and numbers the siblings", () => {
    const cs = space().channels;
    expect(moveChannel(cs, "b", -1)).toEqual([
      { channel: "b", parent: "cat", position: 0 },
      { channel: "a", parent: "cat", position: 1 },
    ]);
    // Text and voice move among their own kind: general has no text sibling to pass.
    expect(moveChannel(cs, "general", 1)).toBeNull();
    expect(moveChannel(cs, "voice", -1)).toBeNull();
    const more = [...cs, ch("news", "text", 2)];
    expect(moveChannel(more, "news", -1)).toEqual([
      { channel: "news", position: 0 },
      { channel: "general", position: 1 },
    ]);
    expect(moveChannel(cs, "general", -1)).toBeNull();
    expect(moveChannel(cs, "b", 1)).toBeNull();
    expect(moveChannel(cs, "cat", 1)).toBeNull();
    expect(moveChannel(cs, "nope", 1)).toBeNull();
  });
  it("appends new channels after their siblings", () => {
    const cs = space().channels;
    expect(nextPosition(cs, null, "text")).toBe(1);
    expect(nextPosition(cs, null, "voice")).toBe(2);
    expect(nextPosition(cs, "cat", "text")).toBe(2);
    expect(nextPosition(cs, null, "category")).toBe(1);
    expect(nextPosition([], null, "text")).toBe(0);
  });
});

describe("invites", () => {
  const base = { id: "i", creator: owner, max_uses: null, uses: 0, expires_at: null, revoked: false };
  it("says whether an invite still works", () => {
    expect(inviteStatus(base, 10)).toBe("active");
    expect(inviteStatus({ ...base, revoked: true }, 10)).toBe("revoked");
    expect(inviteStatus({ ...base, expires_at: 5 }, 10)).toBe("expired");
    expect(inviteStatus({ ...base, max_uses: 2, uses: 2 }, 10)).toBe("used up");
  });
  it("round-trips a code through its link, and accepts a bare code", () => {
    expect(inviteCodeFrom(inviteLink("dinvite1abc"))).toBe("dinvite1abc");
    expect(inviteCodeFrom("  dinvite1abc \n")).toBe("dinvite1abc");
    expect(inviteCodeFrom("DISCORDOPUS://JOIN/dinvite1abc")).toBe("dinvite1abc");
  });
});

describe("mention picker", () => {
  it("finds the @query at the caret only at a word start", () => {
    expect(mentionAt("hi @bo", 6)).toEqual({ start: 3, query: "bo" });
    expect(mentionAt("@", 1)).toEqual({ start: 0, query: "" });
    expect(mentionAt("mail@bob", 8)).toBeNull();
    expect(mentionAt("hi @bob there", 13)).toBeNull();
  });
  it("offers members, roles and @everyone (when allowed), prefix matches first", () => {
    const names: Record<string, string> = { [bob]: "Bob", [carol]: "Carol", [mod]: "Mo" };
    const nameOf = (id: string) => names[id] ?? id;
    const s = space();
    const all = mentionCandidates(s, owner, nameOf, "");
    expect(all.map((c) => c.label)).toEqual(expect.arrayContaining(["everyone", "Bob", "Carol", "Mo", "Mods", "Helpers"]));
    expect(all.some((c) => c.label === "@everyone")).toBe(false);
    const mo = mentionCandidates(s, owner, nameOf, "mo");
    expect(mo.map((c) => c.label)).toEqual(["Mo", "Mods"]);
    expect(mo[1]!.token).toBe(`<@&${MODS}>`);
    expect(mo[0]!.token).toBe(`<@${mod}>`);
    expect(mentionCandidates(s, bob, nameOf, "every")).toEqual([]);
    expect(mentionCandidates(s, owner, nameOf, "x", 8)).toEqual([]);
  });
});

describe("overwrites and colours", () => {
  it("reads and sets allow, deny and inherit per permission", () => {
    const o = { role: EVERYONE, allow: ["view_channel"], deny: ["send_messages"] };
    expect(triOf(o, "view_channel")).toBe("allow");
    expect(triOf(o, "send_messages")).toBe("deny");
    expect(triOf(o, "kick")).toBe("inherit");
    expect(triOf(undefined, "kick")).toBe("inherit");
    const flipped = setTri(o, "send_messages", "allow");
    expect(flipped).toEqual({ role: EVERYONE, allow: ["view_channel", "send_messages"], deny: [] });
    expect(setTri(flipped, "view_channel", "inherit").allow).toEqual(["send_messages"]);
  });
  it("parses colours", () => {
    expect(colorValue("#ff8800")).toBe(0xff8800);
    expect(colorValue("zz")).toBe(0);
  });
});

describe("waiting for keys", () => {
  it("reads placeholders defensively and words them", () => {
    const w = { id: "s:1", sender: bob, received_at: 1, state: "waiting_for_keys", reason: null, reason_text: null };
    expect(keyWaits(undefined)).toEqual([]);
    expect(keyWaits([w, null, { id: 3 }])).toEqual([w]);
    expect(keyWaitText(w as never)).toMatch(/Waiting/);
    expect(keyWaitText({ ...w, state: "withheld", reason: "history_not_shared" } as never)).toMatch(/history/);
    expect(keyWaitText({ ...w, state: "withheld", reason: "unauthorized", reason_text: "You may not read this channel." } as never)).toBe(
      "You may not read this channel.",
    );
    expect(keyWaitText({ ...w, state: "gave_up" } as never)).toMatch(/gave up/);
  });
});

describe("drag and drop", () => {
  const cs = [...space().channels, ch("news", "text", 1), ch("c", "text", 2, "cat"), ch("cat2", "category", 1), ch("d", "text", 0, "cat2")];
  it("drops a channel on a sibling, above when dragged up and below when dragged down", () => {
    expect(dropChannel(cs, "news", "general")).toEqual([
      { channel: "news", position: 0 },
      { channel: "general", position: 1 },
    ]);
    expect(dropChannel(cs, "a", "c")).toEqual([
      { channel: "b", parent: "cat", position: 0 },
      { channel: "c", parent: "cat", position: 1 },
      { channel: "a", parent: "cat", position: 2 },
    ]);
  });
  it("moves a channel onto a category's header to its end", () => {
    expect(dropChannel(cs, "general", "cat")).toEqual([{ channel: "general", parent: "cat", position: 3 }]);
    expect(dropChannel(cs, "voice", "cat2")).toEqual([{ channel: "voice", parent: "cat2", position: 0 }]);
  });
  it("moves a channel into another category, and categories among categories", () => {
    expect(dropChannel(cs, "general", "d")).toEqual([
      { channel: "general", parent: "cat2", position: 0 },
      { channel: "d", parent: "cat2", position: 1 },
    ]);
    expect(dropChannel(cs, "cat2", "cat")).toEqual([
      { channel: "cat2", position: 0 },
      { channel: "cat", position: 1 },
    ]);
  });
  it("refuses drops across kinds and onto itself", () => {
    expect(dropChannel(cs, "voice", "general")).toBeNull();
    expect(dropChannel(cs, "cat", "general")).toBeNull();
    expect(dropChannel(cs, "a", "cat")).toBeNull();
    expect(dropChannel(cs, "general", "general")).toBeNull();
  });
  it("reorders roles within the positions they held", () => {
    const roles = [
      { id: EVERYONE, name: "@everyone", color: 0, position: 0, permissions: [] },
      { id: "aa".repeat(16), name: "A", color: 0, position: 9, permissions: [] },
      { id: "bb".repeat(16), name: "B", color: 0, position: 5, permissions: [] },
      { id: "cc".repeat(16), name: "C", color: 0, position: 2, permissions: [] },
    ];
    expect(dropRole(roles, "cc".repeat(16), "bb".repeat(16))).toEqual([
      { id: "cc".repeat(16), position: 5 },
      { id: "bb".repeat(16), position: 2 },
    ]);
    expect(dropRole(roles, "aa".repeat(16), "cc".repeat(16))).toEqual([
      { id: "bb".repeat(16), position: 9 },
      { id: "cc".repeat(16), position: 5 },
      { id: "aa".repeat(16), position: 2 },
    ]);
    expect(dropRole(roles, EVERYONE, "aa".repeat(16))).toBeNull();
    expect(dropRole(roles, "aa".repeat(16), "aa".repeat(16))).toBeNull();
    const tied = roles.map((r) => (r.id === EVERYONE ? r : { ...r, position: 3 }));
    // Ties (ranked by id, highest first: C, B, A): the new order A, C, B is numbered 3, 2, 1.
    expect(dropRole(tied, "aa".repeat(16), "cc".repeat(16))).toEqual([
      { id: "cc".repeat(16), position: 2 },
      { id: "bb".repeat(16), position: 1 },
    ]);
  });
});

describe("names in a space", () => {
  const short = (id: string) => `${id.slice(0, 8)}…`;
  it("shows a contact by our name, a member by its chosen name with the fingerprint", () => {
    const s = space();
    s.members[2] = { ...s.members[2]!, display_name: "Bobby" };
    expect(spaceUserName(s, bob, "Bob (contact)", short)).toBe("Bob (contact)");
    expect(spaceUserName(s, bob, undefined, short)).toBe(`Bobby (${short(bob)})`);
    expect(spaceUserName(s, carol, undefined, short)).toBe(short(carol));
  });
  it("marks a former member as having left, under the name it had chosen", () => {
    const gone = "dopus1" + "d".repeat(52);
    const s = { ...space(), former_members: [{ user_id: gone, display_name: "Dora" }, { user_id: "dopus1" + "e".repeat(52) }] };
    expect(spaceUserName(s, gone, undefined, short)).toBe(`Dora (${short(gone)}) (left)`);
    expect(spaceUserName(s, "dopus1" + "e".repeat(52), undefined, short)).toBe(`${short("dopus1" + "e".repeat(52))} (left)`);
    expect(spaceUserName(s, gone, "Dora (contact)", short)).toBe("Dora (contact) (left)");
  });
});
