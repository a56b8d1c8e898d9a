import { describe, expect, it } from "vitest";
import type { Call } from "../api/types";
import { currentCall, endLabel, figures, formatDuration, liveDuration, pathLabel, phaseOf, sampleOf } from "./calls";

function call(p: Partial<Call>): Call {
  return {
    id: "dcall1x",
    user_id: "dopus1peer",
    outgoing: true,
    state: "ringing",
    created_at: 1000,
    answered_at: null,
    ended_at: null,
    end: null,
    ended_by_me: false,
    duration_ms: null,
    refused: null,
    connection: { mode: "direct", state: "connected", local_candidate: "host", remote_candidate: "srflx", rtt_ms: 12, reason: null, traffic: null },
    media: null,
    ...p,
  } as Call;
}

describe("call phases", () => {
  it("maps state and direction", () => {
    expect(phaseOf(call({}))).toBe("outgoing");
    expect(phaseOf(call({ outgoing: false }))).toBe("incoming");
    expect(phaseOf(call({ state: "active" }))).toBe("active");
    expect(phaseOf(call({ state: "ended" }))).toBe("ended");
  });
  it("picks the newest call that is not over", () => {
    const a = call({ id: "a", created_at: 1 });
    const b = call({ id: "b", created_at: 5, state: "ended" });
    const c = call({ id: "c", created_at: 3, state: "active" });
    expect(currentCall([a, b, c])?.id).toBe("c");
    expect(currentCall([b])).toBeNull();
  });
});

describe("durations", () => {
  it("formats minutes and hours", () => {
    expect(formatDuration(0)).toBe("0:00");
    expect(formatDuration(65_400)).toBe("1:05");
    expect(formatDuration(3_725_000)).toBe("1:02:05");
    expect(formatDuration(-5)).toBe("0:00");
  });
  it("moves the node's figure on by the time since it was read", () => {
    expect(liveDuration(call({ duration_ms: 10_000 }), 1_000, 3_500)).toBe(12_500);
    expect(liveDuration(call({ duration_ms: null }), 1_000, 500)).toBe(0);
  });
});

describe("leg figures", () => {
  const report = (inBytes: number, outBytes: number, packets: number, concealed: number, total: number) => [
    { type: "inbound-rtp", kind: "audio", packetsReceived: packets, bytesReceived: inBytes, concealedSamples: concealed, totalSamplesReceived: total, audioLevel: 0.2, jitter: 0.004 },
    { type: "outbound-rtp", kind: "audio", bytesSent: outBytes },
    { type: "inbound-rtp", kind: "video", packetsReceived: 999, bytesReceived: 999999 },
    { type: "candidate-pair", currentRoundTripTime: 0.001 },
  ];
  it("reads audio counters only", () => {
    const s = sampleOf(report(1000, 2000, 50, 10, 48000), 0);
    expect(s).toMatchObject({ inPackets: 50, inBytes: 1000, outBytes: 2000, concealed: 10, samples: 48000, audioLevel: 0.2 });
    expect(s.jitterMs).toBeCloseTo(4);
  });
  it("computes rates and concealment between samples", () => {
    const a = sampleOf(report(0, 0, 0, 0, 0), 0);
    const b = sampleOf(report(4000, 8000, 50, 480, 48000), 1000);
    const f = figures(a, b);
    expect(f.inKbps).toBeCloseTo(32);
    expect(f.outKbps).toBeCloseTo(64);
    expect(f.concealedPct).toBeCloseTo(1);
    expect(figures(null, b).inKbps).toBe(0);
    expect(figures(null, a).concealedPct).toBeNull();
  });
  it("tolerates junk values", () => {
    const s = sampleOf([{ type: "inbound-rtp", kind: "audio", packetsReceived: "x", bytesReceived: NaN }], 0);
    expect(s.inPackets).toBe(0);
    expect(s.inBytes).toBe(0);
  });
});

describe("labels", () => {
  it("describes the path and the end", () => {
    expect(pathLabel(call({}))).toBe("Direct · host ↔ srflx");
    expect(pathLabel(call({ connection: { ...call({}).connection, mode: "relayed", local_candidate: null } }))).toBe("Relayed (TURN)");
    expect(endLabel(call({ end: "no_answer" }))).toBe("No answer");
    expect(endLabel(call({ end: "declined", outgoing: false }))).toBe("Declined");
  });
});
