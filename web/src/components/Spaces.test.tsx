import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import type { KeyWait } from "../lib/spaces";
import { WaitingForKeys } from "./Spaces";

const wait = (over: Partial<KeyWait> = {}): KeyWait => ({
  id: "sess:1",
  sender: "dopus1bob",
  received_at: 1_700_000_000_000,
  state: "waiting_for_keys",
  reason: null,
  reason_text: null,
  ...over,
});

describe("WaitingForKeys", () => {
  it("shows nothing when no message waits", () => {
    expect(renderToStaticMarkup(<WaitingForKeys waits={[]} nameOf={(id) => id} />)).toBe("");
  });
  it("counts the messages waiting and names their senders", () => {
    const html = renderToStaticMarkup(
      <WaitingForKeys waits={[wait(), wait({ id: "sess:2" })]} nameOf={() => "Bob"} />,
    );
    expect(html).toContain("2 messages waiting for keys");
    expect(html).toContain("Bob");
    expect(html).toContain('data-state="waiting_for_keys"');
  });
  it("says why a key will not come", () => {
    const html = renderToStaticMarkup(
      <WaitingForKeys
        waits={[wait({ state: "withheld", reason: "history_not_shared", reason_text: "This space does not share earlier history." })]}
        nameOf={() => "Bob"}
      />,
    );
    expect(html).toContain("1 message that cannot be read");
    expect(html).toContain("This space does not share earlier history.");
  });
});
