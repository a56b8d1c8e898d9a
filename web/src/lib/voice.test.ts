import { describe, expect, it } from "vitest";
import type { SpaceVoice, VoiceChannel, VoiceParticipant } from "../api/types";
import {
  DEFAULT_PTT,
  SPEAKING_HOLD_MS,
  SpeakingTracker,
  applySpaceVoice,
  channelOf,
  clampVolume,
  isLoud,
  isPttEvent,
  joinedAndLeft,
  keyLabel,
  micOpen,
  others,
  parsePtt,
  permissionProblem,
  sameSet,
  usersByMid,
  elementVolume,
  parseVolumes,
} from "./voice";

function p(user: string, extra: Partial<VoiceParticipant> = {}): VoiceParticipant {
  return {
    user_id: user,
    device_id: "d",
    me: false,
    muted: false,
    deafened: false,
    may_speak: true,
    speaking: false,
    joined_at: 1,
    expires_at: null,
    in_mesh: true,
    ...extra,
  };
}

function channel(id: string, participants: VoiceParticipant[], extra: Partial<VoiceChannel> = {}): VoiceChannel {
  return { channel_id: id, name: "General", can_connect: true, can_speak: true, participants, ...extra };
}

describe("the roster", () => {
  it("replaces one space's channels and finds a channel", () => {
    const a: SpaceVoice = { space_id: "s1", channels: [channel("c1", [p("u1")])] };
    const b: SpaceVoice = { space_id: "s2", channels: [channel("c2", [])] };
    let r = applySpaceVoice(applySpaceVoice({}, a), b);
    expect(channelOf(r, "s1", "c1")?.participants.map((x) => x.user_id)).toEqual(["u1"]);
    r = applySpaceVoice(r, { space_id: "s1", channels: [channel("c1", [p("u1"), p("u2")])] });
    expect(channelOf(r, "s1", "c1")?.participants).toHaveLength(2);
    expect(channelOf(r, "s2", "c2")?.participants).toHaveLength(0);
    expect(channelOf(r, "s3", "c1")).toBeNull();
    expect(channelOf(r, "s1", "nope")).toBeNull();
  });

  it("lists the others without us", () => {
    expect(others(channel("c", [p("me", { me: true }), p("u2")])).map((x) => x.user_id)).toEqual(["u2"]);
    expect(others(null)).toEqual([]);
  });

  it("says who joined and who left", () => {
    expect(joinedAndLeft(["a", "b"], ["b", "c"])).toEqual({ joined: ["c"], left: ["a"] });
    expect(joinedAndLeft([], [])).toEqual({ joined: [], left: [] });
    expect(joinedAndLeft(["a"], ["a"])).toEqual({ joined: [], left: [] });
  });
});

describe("slots and speaking", () => {
  it("maps m-lines to the users they carry", () => {
    const m = usersByMid([
      { mid: "1", user_id: "u1" },
      { mid: "2", user_id: null },
      { mid: "3", user_id: "u3" },
    ]);
    expect([...m.entries()]).toEqual([
      ["1", "u1"],
      ["3", "u3"],
    ]);
  });

  it("counts a level as loud from about -45 dBov", () => {
    expect(isLoud(0)).toBe(false);
    expect(isLoud(0.001)).toBe(false); // -60 dBov
    expect(isLoud(0.01)).toBe(true); // -40 dBov
    expect(isLoud(1)).toBe(true);
    expect(isLoud(Number.NaN)).toBe(false);
    expect(isLoud(null)).toBe(false);
  });

  it("keeps a speaker speaking for the hold, then lets go", () => {
    const t = new SpeakingTracker();
    t.note("u1", 0.2, 1000);
    t.note("u2", 0.0001, 1000);
    expect([...t.speaking(1000)]).toEqual(["u1"]);
    expect([...t.speaking(1000 + SPEAKING_HOLD_MS)]).toEqual(["u1"]);
    expect(t.speaking(1001 + SPEAKING_HOLD_MS).size).toBe(0);
    t.note("u1", 0.5, 2000);
    t.forget("u1");
    expect(t.speaking(2000).size).toBe(0);
    expect(sameSet(new Set(["a", "b"]), new Set(["b", "a"]))).toBe(true);
    expect(sameSet(new Set(["a"]), new Set(["b"]))).toBe(false);
  });
});

describe("volume", () => {
  it("clamps to 0..100 % and gives the element volume", () => {
    expect(clampVolume(250)).toBe(100);
    expect(clampVolume(-3)).toBe(0);
    expect(clampVolume("abc")).toBe(100);
    expect(clampVolume(55.4)).toBe(55);
    expect(elementVolume(50)).toBe(0.5);
    expect(elementVolume(100)).toBe(1);
  });

  it("reads stored volumes defensively", () => {
    const u = "dopus1qqqqqqqqqqqqqqqq";
    expect(parseVolumes(JSON.stringify({ [u]: 40, "not-a-user": 10, [u + "x"]: "loud" }))).toEqual({ [u]: 40 });
    expect(parseVolumes("[1,2]")).toEqual({});
    expect(parseVolumes("nope")).toEqual({});
    expect(parseVolumes(null)).toEqual({});
  });
});

describe("push to talk", () => {
  it("reads stored settings defensively", () => {
    expect(parsePtt(null)).toEqual(DEFAULT_PTT);
    expect(parsePtt("{not json")).toEqual(DEFAULT_PTT);
    expect(parsePtt(JSON.stringify({ enabled: true, key: "Space" }))).toEqual({ enabled: true, key: "Space" });
    expect(parsePtt(JSON.stringify({ enabled: "yes", key: "<script>" }))).toEqual({ enabled: false, key: DEFAULT_PTT.key });
  });

  it("names keys", () => {
    expect(keyLabel("KeyV")).toBe("V");
    expect(keyLabel("Digit3")).toBe("3");
    expect(keyLabel("ControlLeft")).toBe("Left Ctrl");
    expect(keyLabel("Space")).toBe("Space");
    expect(keyLabel("F5")).toBe("F5");
  });

  it("takes the key only when enabled and not typing", () => {
    const on = { enabled: true, key: "KeyV" };
    expect(isPttEvent("KeyV", on, { tagName: "DIV" })).toBe(true);
    expect(isPttEvent("KeyV", on, null)).toBe(true);
    expect(isPttEvent("KeyB", on, { tagName: "DIV" })).toBe(false);
    expect(isPttEvent("KeyV", on, { tagName: "textarea" })).toBe(false);
    expect(isPttEvent("KeyV", on, { tagName: "DIV", isContentEditable: true })).toBe(false);
    expect(isPttEvent("KeyV", { ...on, enabled: false }, { tagName: "DIV" })).toBe(false);
  });

  it("opens the microphone only while unmuted and, with push to talk, while the key is held", () => {
    expect(micOpen(false, DEFAULT_PTT, false)).toBe(true);
    expect(micOpen(true, DEFAULT_PTT, true)).toBe(false);
    const on = { enabled: true, key: "KeyV" };
    expect(micOpen(false, on, false)).toBe(false);
    expect(micOpen(false, on, true)).toBe(true);
    expect(micOpen(true, on, true)).toBe(false);
  });
});

describe("permissions", () => {
  it("explains a missing connect or speak", () => {
    expect(permissionProblem(channel("c", [], { can_connect: false }), "connect")).toMatch(/Connect permission/);
    expect(permissionProblem(channel("c", [], { can_speak: false }), "connect")).toBeNull();
    expect(permissionProblem(channel("c", [], { can_speak: false }), "speak")).toMatch(/Speak permission/);
    expect(permissionProblem(channel("c", []), "speak")).toBeNull();
    expect(permissionProblem(null, "speak")).toBeNull();
  });
});
