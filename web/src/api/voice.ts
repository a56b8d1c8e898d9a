// The node's voice channel routes (docs/api.md, "Voice channels"): who is in each channel of a
// space, join, leave, mute and deafen, and the browser leg's offer/answer (the page's WebRTC
// connection to its own node over loopback: one m-line up, one per remote participant down).
import { request } from "./client";
import type { SpaceVoice, VoiceBrowserAnswer, VoiceState } from "./types";

const enc = encodeURIComponent;

export const voiceApi = {
  state: () => request<VoiceState>("GET", "/voice"),
  space: (spaceId: string) => request<SpaceVoice>("GET", `/spaces/${enc(spaceId)}/voice`),
  join: (channel_id: string) => request<VoiceState>("POST", "/voice/join", { channel_id }),
  leave: () => request<VoiceState>("POST", "/voice/leave"),
  set: (patch: { muted?: boolean; deafened?: boolean }) => request<VoiceState>("POST", "/voice/state", patch),
  /** Hands the page's offer (one send m-line, then the receive slots) to the node. */
  browser: (sdp: string) => request<VoiceBrowserAnswer>("POST", "/voice/browser", { sdp }),
};
