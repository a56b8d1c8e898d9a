// When a new message deserves a browser notification (and a sound), decided purely from the
// event and the reader's situation, so every rule is unit-tested. Direct messages notify;
// space channels will notify only for mentions of us (`reason: "mention"`), through the same
// function, once spaces land.
import type { Message } from "../api/types";
import { plainText } from "./markdown";
import { mentionsMeLoosely } from "./mentions";
import type { NotifyPrefs } from "./prefs";

export interface NotifyContext {
  /** Our own user ID (our own messages never notify). */
  me: string;
  /** Whether the page is hidden (another tab, minimised). Visible pages show the message itself. */
  hidden: boolean;
  prefs: NotifyPrefs;
  muted: ReadonlySet<string>;
  /** Our own status: "busy" (do not disturb) silences like the global switch. */
  myStatus: string;
  /** The name to show for a conversation or sender. */
  nameOf(userId: string): string;
  /** Whether the sender is blocked (blocked contacts never notify). */
  blocked(userId: string): boolean;
}

export interface NotificationPlan {
  title: string;
  body: string;
  /** One notification per conversation: a newer one replaces the older. */
  tag: string;
  conversation: string;
  reason: "direct" | "mention";
  sound: boolean;
}

const MAX_BODY = 140;

export function notificationFor(m: Message, ctx: NotifyContext): NotificationPlan | null {
  if (m.outgoing || m.sender === ctx.me || m.deleted || m.body === null) return null;
  if (!ctx.hidden || !ctx.prefs.enabled || ctx.prefs.dnd || ctx.myStatus === "busy") return null;
  if (ctx.muted.has(m.conversation) || ctx.blocked(m.sender)) return null;
  // A channel message notifies only when it mentions us (our id or @everyone).
  const channel = m.conversation.startsWith("dchan1");
  if (channel && !mentionsMeLoosely(m.body, ctx.me)) return null;
  const text = plainText(m.body);
  return {
    title: ctx.nameOf(m.sender),
    body: text.length > MAX_BODY ? `${text.slice(0, MAX_BODY - 1)}…` : text,
    tag: `dopus-${m.conversation}`,
    conversation: m.conversation,
    reason: channel ? "mention" : "direct",
    sound: ctx.prefs.sound,
  };
}

/** The tab title: the unread total first, as chat apps do. */
export function pageTitle(unread: number, base = "DiscordOpus"): string {
  return unread > 0 ? `(${unread > 99 ? "99+" : unread}) ${base}` : base;
}

/** The favicon badge's text for an unread total ("" for none). */
export function badgeText(unread: number): string {
  return unread <= 0 ? "" : unread > 9 ? "9+" : String(unread);
}
