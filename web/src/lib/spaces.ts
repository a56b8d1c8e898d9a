// Pure logic of the spaces UI (docs/spaces.md, docs/ui.md "Spaces view"): permission names and
// labels, who may do what (the node decides; the UI only hides or disables with a reason),
// ranks, the channel tree and its reorder, invite status, and the composer's @mention picker.
import type { Space, SpaceChannel, SpaceInviteInfo, SpaceRole } from "../api/types";

/** The `@everyone` role's id. */
export const EVERYONE = "0".repeat(32);

/** Every permission the node knows (dopus-proto `Permissions::NAMES`), with words for the UI. */
export const PERMISSIONS: readonly { name: string; label: string; help: string }[] = [
  { name: "view_channel", label: "View channels", help: "Read text channels and see voice channels." },
  { name: "send_messages", label: "Send messages", help: "Post in text channels." },
  { name: "manage_messages", label: "Manage messages", help: "Delete other members' messages." },
  { name: "mention_everyone", label: "Mention @everyone", help: "Notify every member with @everyone." },
  { name: "connect", label: "Connect", help: "Join voice channels." },
  { name: "speak", label: "Speak", help: "Talk in voice channels." },
  { name: "video", label: "Video", help: "Turn on the camera in voice channels." },
  { name: "stream", label: "Share screen", help: "Stream a screen in voice channels." },
  { name: "create_invite", label: "Create invites", help: "Make invite codes and admit people who use them." },
  { name: "kick", label: "Kick members", help: "Remove members ranked below you (they may come back with an invite)." },
  { name: "ban", label: "Ban members", help: "Remove members ranked below you and refuse them until unbanned." },
  { name: "manage_roles", label: "Manage roles", help: "Create, edit and hand out roles below your own." },
  { name: "manage_channels", label: "Manage channels", help: "Create, rename, reorder and delete channels, and set their overwrites." },
  { name: "manage_space", label: "Manage space", help: "Change the space's name, description and history sharing; revoke any invite." },
  { name: "administrator", label: "Administrator", help: "Every permission, in every channel. Give with care." },
];

/**
 * How a space shows a user who is not us: a contact by our name for them; otherwise a member, or
 * a former member, by the name they chose in the space with their fingerprint (a chosen name can
 * be anyone's). Someone who left (or was removed) is marked "(left)": their earlier messages
 * stay in shared history.
 */
export function spaceUserName(space: Space | null | undefined, id: string, contactName: string | undefined, short: (id: string) => string): string {
  const member = space?.members.find((m) => m.user_id === id);
  const former = member ? undefined : space?.former_members.find((m) => m.user_id === id);
  const chosen = member?.display_name ?? former?.display_name;
  const base = contactName ? contactName : chosen ? `${chosen} (${short(id)})` : short(id);
  return former ? `${base} (left)` : base;
}

export function permissionLabel(name: string): string {
  return PERMISSIONS.find((p) => p.name === name)?.label ?? name;
}

/** Whether we hold `perm` space-wide (the owner and administrators hold everything). */
export function can(space: Space, me: string, perm: string): boolean {
  return space.owner === me || space.permissions.includes("administrator") || space.permissions.includes(perm);
}

/** A member's top role (highest position; ties by id, as the node ranks them). */
export function topRole(space: Space, roles: readonly string[]): SpaceRole | undefined {
  let best: SpaceRole | undefined;
  for (const id of roles) {
    const r = space.roles.find((x) => x.id === id);
    if (!r) continue;
    if (!best || r.position > best.position || (r.position === best.position && r.id > best.id)) best = r;
  }
  return best;
}

/** A member's rank as `[owner, position, role id]`; compare with `compareRank`. */
function rank(space: Space, user: string): [number, number, string] {
  if (space.owner === user) return [1, Number.MAX_SAFE_INTEGER, ""];
  const m = space.members.find((x) => x.user_id === user);
  if (!m) return [-1, -1, ""];
  const r = topRole(space, m.roles);
  return [0, r?.position ?? 0, r?.id ?? EVERYONE];
}

function compareRank(a: [number, number, string], b: [number, number, string]): number {
  return a[0] - b[0] || a[1] - b[1] || (a[2] < b[2] ? -1 : a[2] > b[2] ? 1 : 0);
}

/** Whether `me` outranks `other` (docs/spaces.md: nobody acts on a member not below them). */
export function outranks(space: Space, me: string, other: string): boolean {
  if (me === other) return false;
  return compareRank(rank(space, me), rank(space, other)) > 0;
}

/** The position of our own top role (the owner: above everything). Roles we manage sit below it. */
export function myTopPosition(space: Space, me: string): number {
  return rank(space, me)[1];
}

/** Why we may not act on a member with `perm`, or null when we may. */
export function memberActionBlock(space: Space, me: string, target: string, perm: string): string | null {
  if (target === me) return "That is you.";
  if (space.owner === target) return "Nobody acts on the owner.";
  if (!can(space, me, perm)) return `You need the “${permissionLabel(perm)}” permission.`;
  if (!outranks(space, me, target)) return "Their top role is not below yours.";
  return null;
}

/** Why we may not edit `role`, or null when we may. */
export function roleEditBlock(space: Space, me: string, role: SpaceRole): string | null {
  if (!can(space, me, "manage_roles")) return "You need the “Manage roles” permission.";
  if (space.owner !== me && role.position >= myTopPosition(space, me)) return "This role is not below your top role.";
  return null;
}

/** A channel list entry: a top-level channel or a category with its children. */
export interface ChannelGroup {
  category: SpaceChannel | null;
  channels: SpaceChannel[];
}

/** Voice channels sit below text channels in their group, as in Discord. */
const kindRank = (c: SpaceChannel) => (c.kind === "voice" ? 1 : 0);
const byPlace = (a: SpaceChannel, b: SpaceChannel) =>
  kindRank(a) - kindRank(b) || a.position - b.position || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/**
 * The channel list as Discord shows it: channels without a category first, then each category
 * with its channels; in a group text channels before voice ones, each by position (ties by id,
 * as the node orders them).
 */
export function channelTree(channels: readonly SpaceChannel[]): ChannelGroup[] {
  const categories = channels.filter((c) => c.kind === "category").sort(byPlace);
  const ids = new Set(categories.map((c) => c.id));
  const loose = channels.filter((c) => c.kind !== "category" && (!c.parent || !ids.has(c.parent))).sort(byPlace);
  const groups: ChannelGroup[] = [{ category: null, channels: loose }];
  for (const cat of categories) {
    groups.push({ category: cat, channels: channels.filter((c) => c.kind !== "category" && c.parent === cat.id).sort(byPlace) });
  }
  return groups;
}

/** One entry of `PUT /spaces/{id}/channels`. */
export interface ChannelPlace {
  channel: string;
  parent?: string;
  position: number;
}

/**
 * Moves a channel one step up or down among its siblings of the same kind (text among text,
 * voice among voice, a category among categories) and numbers them 0, 1, 2… so the order is
 * explicit. Null when it cannot move that way.
 */
export function moveChannel(channels: readonly SpaceChannel[], id: string, step: -1 | 1): ChannelPlace[] | null {
  const ch = channels.find((c) => c.id === id);
  if (!ch) return null;
  const tree = channelTree(channels);
  const siblings =
    ch.kind === "category"
      ? tree.filter((g) => g.category).map((g) => g.category!)
      : (tree.find((g) => g.channels.some((c) => c.id === id))?.channels ?? []).filter((c) => kindRank(c) === kindRank(ch));
  const at = siblings.findIndex((c) => c.id === id);
  const to = at + step;
  if (at < 0 || to < 0 || to >= siblings.length) return null;
  const order = siblings.slice();
  [order[at], order[to]] = [order[to]!, order[at]!];
  return order.map((c, position) => (c.parent && c.kind !== "category" ? { channel: c.id, parent: c.parent, position } : { channel: c.id, position }));
}

/**
 * Drops channel `dragged` on channel `target` (a drag in the channel list): it takes the
 * target's place, and the target's group (its category, or the top level) is numbered 0, 1, 2…
 * A channel dragged onto a channel of another category moves into that category, and onto a
 * category's header to the end of that category; categories move among categories. Text and
 * voice keep to their own kind. Null when nothing would change or the drop makes no sense (onto
 * itself, a category onto a channel, across kinds).
 */
export function dropChannel(channels: readonly SpaceChannel[], dragged: string, target: string): ChannelPlace[] | null {
  const from = channels.find((c) => c.id === dragged);
  const to = channels.find((c) => c.id === target);
  if (!from || !to || from.id === to.id) return null;
  if (from.kind !== "category" && to.kind === "category") {
    if (from.parent === to.id) return null;
    return [{ channel: from.id, parent: to.id, position: nextPosition(channels, to.id, from.kind) }];
  }
  if ((from.kind === "category") !== (to.kind === "category")) return null;
  const tree = channelTree(channels);
  let group: SpaceChannel[];
  if (from.kind === "category") {
    group = tree.filter((g) => g.category).map((g) => g.category!);
  } else {
    if (kindRank(from) !== kindRank(to)) return null;
    group = (tree.find((g) => g.channels.some((c) => c.id === to.id))?.channels ?? []).filter((c) => kindRank(c) === kindRank(to));
  }
  const parent = from.kind === "category" ? null : (tree.find((g) => g.channels.some((c) => c.id === to.id))?.category?.id ?? null);
  const order = group.filter((c) => c.id !== from.id);
  const at = order.findIndex((c) => c.id === to.id);
  const fromAt = group.findIndex((c) => c.id === from.id);
  // Dragging down puts it below the target, dragging up above it (as list UIs do).
  order.splice(fromAt >= 0 && fromAt <= at ? at + 1 : at, 0, from);
  const places = order.map((c, position) => (parent ? { channel: c.id, parent, position } : { channel: c.id, position }));
  const unchanged = places.every((p) => {
    const c = channels.find((x) => x.id === p.channel)!;
    return c.position === p.position && (c.kind === "category" || (c.parent ?? null) === parent);
  });
  return unchanged ? null : places;
}

/**
 * Drops role `dragged` on role `target` in the highest-first list: the roles between them shift
 * and take the positions the span already used (so a moderator's drag stays below their own
 * top role), or 1, 2, 3… when positions tie. Returns only the roles whose position changes;
 * `@everyone` never moves. Null when nothing would change.
 */
export function dropRole(roles: readonly SpaceRole[], dragged: string, target: string): { id: string; position: number }[] | null {
  if (dragged === target || dragged === EVERYONE || target === EVERYONE) return null;
  const sorted = roles.filter((r) => r.id !== EVERYONE).sort((a, b) => b.position - a.position || (a.id < b.id ? 1 : -1));
  const fromAt = sorted.findIndex((r) => r.id === dragged);
  const toAt = sorted.findIndex((r) => r.id === target);
  if (fromAt < 0 || toAt < 0) return null;
  const order = sorted.slice();
  const [moved] = order.splice(fromAt, 1);
  order.splice(toAt, 0, moved!);
  const lo = Math.min(fromAt, toAt);
  const hi = Math.max(fromAt, toAt);
  const span = sorted.slice(lo, hi + 1).map((r) => r.position);
  const distinct = new Set(span).size === span.length;
  const changes: { id: string; position: number }[] = [];
  order.forEach((r, i) => {
    const position = distinct ? (i >= lo && i <= hi ? span[i - lo]! : r.position) : order.length - i;
    if (position !== r.position) changes.push({ id: r.id, position });
  });
  return changes.length ? changes : null;
}

/** The next free position at the end of a group (new channels go last). */
export function nextPosition(channels: readonly SpaceChannel[], parent: string | null, kind: SpaceChannel["kind"]): number {
  const rank = kind === "voice" ? 1 : 0;
  const siblings = channels.filter((c) =>
    kind === "category" ? c.kind === "category" : c.kind !== "category" && (c.parent ?? null) === parent && kindRank(c) === rank,
  );
  return siblings.reduce((n, c) => Math.max(n, c.position + 1), 0);
}

/** An invite's state in words ("active", "expired", …) at `now`. */
export function inviteStatus(i: SpaceInviteInfo, now: number): "active" | "revoked" | "expired" | "used up" {
  if (i.revoked) return "revoked";
  if (i.expires_at !== null && i.expires_at < now) return "expired";
  if (i.max_uses !== null && i.uses >= i.max_uses) return "used up";
  return "active";
}

/** Expiry choices of the invite dialog, as Discord offers them (milliseconds; null: never). */
export const EXPIRY_CHOICES: readonly { label: string; ms: number | null }[] = [
  { label: "30 minutes", ms: 30 * 60_000 },
  { label: "1 hour", ms: 3_600_000 },
  { label: "1 day", ms: 86_400_000 },
  { label: "7 days", ms: 7 * 86_400_000 },
  { label: "Never", ms: null },
];

/** The link form of an invite code, which the join box also accepts. */
export const INVITE_LINK_PREFIX = "discordopus://join/";

export function inviteLink(code: string): string {
  return `${INVITE_LINK_PREFIX}${code}`;
}

/** The invite code in what was pasted: a bare code or a link, with spaces around trimmed. */
export function inviteCodeFrom(text: string): string {
  const t = text.trim();
  return t.toLowerCase().startsWith(INVITE_LINK_PREFIX) ? t.slice(INVITE_LINK_PREFIX.length).trim() : t;
}

/** `#rrggbb` of a role colour (0: none). */
export function colorText(c: number): string | undefined {
  return c ? `#${c.toString(16).padStart(6, "0")}` : undefined;
}

/** The role colour from an `<input type=color>` value; 0 stays "no colour". */
export function colorValue(text: string): number {
  const m = /^#?([0-9a-f]{6})$/i.exec(text.trim());
  return m ? parseInt(m[1]!, 16) : 0;
}

/** The `@query` being typed at `caret`, if any: `@` at a word start, then name characters. */
export function mentionAt(text: string, caret: number): { start: number; query: string } | null {
  const before = text.slice(0, caret);
  const m = /(^|\s)@([^\s@<>]{0,32})$/.exec(before);
  if (!m) return null;
  return { start: caret - m[2]!.length - 1, query: m[2]! };
}

export interface Mentionable {
  kind: "user" | "role" | "everyone";
  id: string;
  label: string;
  /** What goes into the text. */
  token: string;
}

/**
 * What the picker offers for `query`: members (by name, then id), roles, and @everyone when we
 * may mention everyone; names that start with the query first, at most `limit`.
 */
export function mentionCandidates(
  space: Space,
  me: string,
  nameOf: (id: string) => string,
  query: string,
  limit = 8,
): Mentionable[] {
  const q = query.toLowerCase();
  const all: Mentionable[] = [];
  if (can(space, me, "mention_everyone")) all.push({ kind: "everyone", id: "everyone", label: "everyone", token: "@everyone" });
  for (const m of space.members) {
    if (m.user_id === me) continue;
    all.push({ kind: "user", id: m.user_id, label: nameOf(m.user_id), token: `<@${m.user_id}>` });
  }
  for (const r of space.roles) {
    if (r.id === EVERYONE) continue;
    all.push({ kind: "role", id: r.id, label: r.name, token: `<@&${r.id}>` });
  }
  const score = (c: Mentionable): number => {
    const l = c.label.toLowerCase();
    if (!q) return 1;
    if (l.startsWith(q)) return 0;
    if (l.includes(q) || (c.kind === "user" && c.id.includes(q))) return 1;
    return -1;
  };
  return all
    .map((c) => ({ c, s: score(c) }))
    .filter((x) => x.s >= 0)
    .sort((a, b) => a.s - b.s || a.c.label.localeCompare(b.c.label))
    .slice(0, limit)
    .map((x) => x.c);
}

/** The permissions of an overwrite row as a per-permission state: allow, deny or inherit. */
export type Tri = "allow" | "deny" | "inherit";

export function triOf(o: { allow: readonly string[]; deny: readonly string[] } | undefined, perm: string): Tri {
  if (!o) return "inherit";
  if (o.deny.includes(perm)) return "deny";
  if (o.allow.includes(perm)) return "allow";
  return "inherit";
}

/** An overwrite with one permission set to `tri`. */
export function setTri<T extends { allow: string[]; deny: string[] }>(o: T, perm: string, tri: Tri): T {
  const allow = o.allow.filter((p) => p !== perm);
  const deny = o.deny.filter((p) => p !== perm);
  if (tri === "allow") allow.push(perm);
  if (tri === "deny") deny.push(perm);
  return { ...o, allow, deny };
}

/**
 * A channel message the node holds but cannot read yet (docs/api.md, "Waiting for keys"): the
 * agreed `WaitingMessage` of `ChannelPage.waiting` and the `channel_waiting` event. Kept here
 * until the node's generated types carry it; every field is read defensively.
 */
export interface KeyWait {
  id: string;
  sender: string;
  received_at: number;
  state: "waiting_for_keys" | "withheld" | "gave_up";
  reason: null | "unauthorized" | "unavailable" | "history_not_shared";
  reason_text: string | null;
}

/** The placeholders in an API answer or event, if it carries any (older nodes send none). */
export function keyWaits(value: unknown): KeyWait[] {
  if (!Array.isArray(value)) return [];
  return value.filter(
    (w): w is KeyWait =>
      typeof w === "object" && w !== null && typeof (w as KeyWait).id === "string" && typeof (w as KeyWait).state === "string",
  );
}

/** What a placeholder says, in words. */
export function keyWaitText(w: KeyWait): string {
  switch (w.state) {
    case "waiting_for_keys":
      return "Waiting for this message's key from its sender or another member…";
    case "withheld":
      return w.reason_text ?? (w.reason === "history_not_shared" ? "This space does not share history from before you joined." : "The key was withheld.");
    default:
      return w.reason_text ?? "Nobody online had this message's key; the node gave up asking.";
  }
}
