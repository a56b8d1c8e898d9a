// The node's call routes (docs/api.md, "Calls"): ring, pick up, decline, hang up, and the
// browser leg's offer/answer (the page's WebRTC connection to its own node, over loopback).
import { request } from "./client";
import type { BrowserAnswer, Call, Calls } from "./types";

const enc = encodeURIComponent;

export const callsApi = {
  list: () => request<Calls>("GET", "/calls"),
  get: (id: string) => request<Call>("GET", `/calls/${enc(id)}`),
  start: (user_id: string) => request<Call>("POST", "/calls", { user_id }),
  accept: (id: string) => request<Call>("POST", `/calls/${enc(id)}/accept`, {}),
  decline: (id: string) => request<Call>("POST", `/calls/${enc(id)}/decline`),
  hangup: (id: string) => request<Call>("POST", `/calls/${enc(id)}/hangup`),
  /** Hands the page's offer to the node; the answer closes the loopback leg's negotiation. */
  browser: (id: string, sdp: string) => request<BrowserAnswer>("POST", `/calls/${enc(id)}/browser`, { sdp }),
};
