import { describe, expect, it } from "vitest";
import { mentionsMe, mentionsMeLoosely, showMentions, userToken } from "./mentions";

const me = "dopus1" + "q".repeat(52);
const other = "dopus1" + "p".repeat(52);
const role = "ab".repeat(16);

describe("mentions", () => {
  const ctx = { me, myRoles: [role], senderMayMentionEveryone: false };
  it("finds us by id and by role, never in our own messages", () => {
    expect(mentionsMe(`hi ${userToken(me)}`, other, ctx)).toBe(true);
    expect(mentionsMe(`hi <@&${role}>`, other, ctx)).toBe(true);
    expect(mentionsMe(`hi ${userToken(other)}`, other, ctx)).toBe(false);
    expect(mentionsMe(`hi ${userToken(me)}`, me, ctx)).toBe(false);
  });
  it("honours @everyone only from senders allowed to use it", () => {
    expect(mentionsMe("@everyone look", other, ctx)).toBe(false);
    expect(mentionsMe("@everyone look", other, { ...ctx, senderMayMentionEveryone: true })).toBe(true);
    expect(mentionsMe("@everyones", other, { ...ctx, senderMayMentionEveryone: true })).toBe(false);
    expect(mentionsMeLoosely("@everyone", me)).toBe(true);
  });
  it("shows tokens as names", () => {
    expect(showMentions(`hi ${userToken(me)} <@&${role}>`, () => "bob", () => "mods")).toBe("hi @bob @mods");
  });
});
