// The node's call routes (docs/api.md, "Calls"): ring, pick up, decline, hang up, and the
// browser leg's offer/answer (the page's WebRTC connection to its own node, over loopback).
import { ApiError, errorFromBody } from "./client";
import type { BrowserAnswer, Call, Calls } from "./types";

const PREFIX = "/api/v1";
const enc = encodeURIComponent;

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(PREFIX + path, {
      method,
      credentials: "same-origin",
      headers: body === undefined ? { Accept: "application/json" } : { "Content-Type": "application/json", Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "cannot reach the node");
  }
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (!res.ok) throw errorFromBody(res.status, parsed);
  return parsed as T;
}

export const callsApi = {
  list: () => call<Calls>("GET", "/calls"),
  get: (id: string) => call<Call>("GET", `/calls/${enc(id)}`),
  start: (user_id: string) => call<Call>("POST", "/calls", { user_id }),
  accept: (id: string) => call<Call>("POST", `/calls/${enc(id)}/accept`, {}),
  decline: (id: string) => call<Call>("POST", `/calls/${enc(id)}/decline`),
  hangup: (id: string) => call<Call>("POST", `/calls/${enc(id)}/hangup`),
  /** Hands the page's offer to the node; the answer closes the loopback leg's negotiation. */
  browser: (id: string, sdp: string) => call<BrowserAnswer>("POST", `/calls/${enc(id)}/browser`, { sdp }),
};
