// The spaces half of the local API (docs/api.md, "Spaces"). Kept apart from client.ts so the
// spaces UI and the direct-message UI evolve without touching each other.
import { ApiError, errorFromBody } from "./client";
import type { Message, MessagePage, Space, SpaceInvite } from "./types";

const PREFIX = "/api/v1";
const enc = encodeURIComponent;

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  let res: Response;
  try {
    res = await fetch(PREFIX + path, {
      method,
      credentials: "same-origin",
      headers:
        body === undefined ? { Accept: "application/json" } : { "Content-Type": "application/json", Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "cannot reach the node");
  }
  const text = await res.text();
  let parsed: unknown = undefined;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
  }
  if (!res.ok) throw errorFromBody(res.status, parsed);
  return parsed as T;
}

export const spacesApi = {
  list: () => request<Space[]>("GET", "/spaces"),
  get: (id: string) => request<Space>("GET", `/spaces/${enc(id)}`),
  create: (name: string) => request<Space>("POST", "/spaces", { name }),
  invite: (id: string, max_uses?: number) =>
    request<SpaceInvite>("POST", `/spaces/${enc(id)}/invites`, max_uses ? { max_uses } : {}),
  revokeInvite: (id: string, invite: string) => request<Space>("DELETE", `/spaces/${enc(id)}/invites/${enc(invite)}`),
  read: (channel: string, up_to: string) => request<Space>("POST", `/channels/${enc(channel)}/read`, { up_to }),
  join: (invite: string) => request<Space>("POST", "/spaces/join", { invite }),
  leave: (id: string) => request<Space>("POST", `/spaces/${enc(id)}/leave`),
  createChannel: (id: string, name: string) => request<Space>("POST", `/spaces/${enc(id)}/channels`, { name }),
  messages: (channel: string, before?: number, limit = 50) =>
    request<MessagePage>(
      "GET",
      `/channels/${enc(channel)}/messages?limit=${limit}${before !== undefined ? `&before=${before}` : ""}`,
    ),
  send: (channel: string, body: string, reply_to?: string | null) =>
    request<Message>("POST", `/channels/${enc(channel)}/messages`, reply_to ? { body, reply_to } : { body }),
};
