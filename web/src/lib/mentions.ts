// @mentions in channel messages (docs/spaces.md): a message's text carries `<@dopus1…>` for a
// member, `<@&` + 32 hex digits + `>` for a role, and `@everyone`. The node counts unread
// mentions per channel; the UI highlights the messages and shows the tokens as names.

const USER = /<@(dopus1[0-9a-z]{20,100})>/g;
const ROLE = /<@&([0-9a-f]{32})>/g;
const EVERYONE = /@everyone(?![0-9A-Za-z])/;

export interface MentionContext {
  me: string;
  /** The roles we hold in the space (ids). */
  myRoles: readonly string[];
  /** Whether this sender may mention everyone (the node decides the badge counts the same way). */
  senderMayMentionEveryone: boolean;
}

/** Whether `body`, written by `sender`, mentions us. Our own messages never do. */
export function mentionsMe(body: string | null, sender: string, ctx: MentionContext): boolean {
  if (!body || sender === ctx.me || !body.includes("@")) return false;
  for (const m of body.matchAll(USER)) if (m[1] === ctx.me) return true;
  for (const m of body.matchAll(ROLE)) if (m[1] && ctx.myRoles.includes(m[1])) return true;
  return ctx.senderMayMentionEveryone && EVERYONE.test(body);
}

/** A looser check for notifications outside the spaces view: our id or `@everyone`. */
export function mentionsMeLoosely(body: string | null, me: string): boolean {
  if (!body || !body.includes("@")) return false;
  for (const m of body.matchAll(USER)) if (m[1] === me) return true;
  return EVERYONE.test(body);
}

/** The text with mention tokens shown as `@name` (unknown ids shortened). */
export function showMentions(
  body: string,
  userName: (id: string) => string,
  roleName: (id: string) => string | undefined,
): string {
  return body
    .replace(USER, (_, id: string) => `@${userName(id)}`)
    .replace(ROLE, (t: string, id: string) => {
      const name = roleName(id);
      return name ? `@${name}` : t;
    });
}

/** The token that mentions a member, to insert in the composer. */
export function userToken(id: string): string {
  return `<@${id}>`;
}
