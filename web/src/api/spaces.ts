// The spaces half of the local API (docs/api.md, "Spaces"). Kept apart from client.ts so the
// spaces UI and the direct-message UI evolve without touching each other.
import { request } from "./client";
import type { ChannelOverwrite, Message, MessagePage, SearchResults, Space, SpaceChannelKind, SpaceInvite } from "./types";
import type { ChannelPlace } from "../lib/spaces";

const enc = encodeURIComponent;

export const spacesApi = {
  list: () => request<Space[]>("GET", "/spaces"),
  get: (id: string) => request<Space>("GET", `/spaces/${enc(id)}`),
  create: (name: string) => request<Space>("POST", "/spaces", { name }),
  invite: (id: string, opts: { max_uses?: number | null; expires_in_ms?: number | null } = {}) =>
    request<SpaceInvite>("POST", `/spaces/${enc(id)}/invites`, {
      ...(opts.max_uses ? { max_uses: opts.max_uses } : {}),
      ...(opts.expires_in_ms ? { expires_in_ms: opts.expires_in_ms } : {}),
    }),
  update: (id: string, patch: { name?: string; description?: string; share_history?: boolean }) =>
    request<Space>("PATCH", `/spaces/${enc(id)}`, patch),
  transfer: (id: string, user_id: string) => request<Space>("POST", `/spaces/${enc(id)}/transfer`, { user_id }),
  kick: (id: string, user: string) => request<Space>("POST", `/spaces/${enc(id)}/members/${enc(user)}/kick`),
  ban: (id: string, user: string) => request<Space>("POST", `/spaces/${enc(id)}/members/${enc(user)}/ban`),
  unban: (id: string, user: string) => request<Space>("DELETE", `/spaces/${enc(id)}/bans/${enc(user)}`),
  assignRole: (id: string, user: string, role: string) =>
    request<Space>("PUT", `/spaces/${enc(id)}/members/${enc(user)}/roles/${enc(role)}`),
  revokeRole: (id: string, user: string, role: string) =>
    request<Space>("DELETE", `/spaces/${enc(id)}/members/${enc(user)}/roles/${enc(role)}`),
  createRole: (id: string, role: { name: string; color: number; position: number; permissions: string[] }) =>
    request<Space>("POST", `/spaces/${enc(id)}/roles`, role),
  updateRole: (id: string, role: string, patch: { name?: string; color?: number; position?: number; permissions?: string[] }) =>
    request<Space>("PATCH", `/spaces/${enc(id)}/roles/${enc(role)}`, patch),
  deleteRole: (id: string, role: string) => request<Space>("DELETE", `/spaces/${enc(id)}/roles/${enc(role)}`),
  updateChannel: (id: string, channel: string, patch: { name?: string; topic?: string; overwrites?: ChannelOverwrite[] }) =>
    request<Space>("PATCH", `/spaces/${enc(id)}/channels/${enc(channel)}`, patch),
  deleteChannel: (id: string, channel: string) => request<Space>("DELETE", `/spaces/${enc(id)}/channels/${enc(channel)}`),
  reorderChannels: (id: string, positions: ChannelPlace[]) => request<Space>("PUT", `/spaces/${enc(id)}/channels`, { positions }),
  revokeInvite: (id: string, invite: string) => request<Space>("DELETE", `/spaces/${enc(id)}/invites/${enc(invite)}`),
  /** Messages of one space's channels (docs/api.md, `GET /spaces/{id}/search`). */
  search: (id: string, q: string, limit = 25) =>
    request<SearchResults>("GET", `/spaces/${enc(id)}/search?q=${enc(q)}&limit=${limit}`),
  typing: (channel: string, active: boolean) => request<void>("POST", `/channels/${enc(channel)}/typing`, { active }),
  read: (channel: string, up_to: string) => request<Space>("POST", `/channels/${enc(channel)}/read`, { up_to }),
  join: (invite: string) => request<Space>("POST", "/spaces/join", { invite }),
  leave: (id: string) => request<Space>("POST", `/spaces/${enc(id)}/leave`),
  createChannel: (
    id: string,
    channel: { name: string; kind: SpaceChannelKind; topic?: string; parent?: string | null; position?: number },
  ) => request<Space>("POST", `/spaces/${enc(id)}/channels`, channel),
  messages: (channel: string, before?: number, limit = 50) =>
    request<MessagePage>(
      "GET",
      `/channels/${enc(channel)}/messages?limit=${limit}${before !== undefined ? `&before=${before}` : ""}`,
    ),
  send: (channel: string, body: string, reply_to?: string | null) =>
    request<Message>("POST", `/channels/${enc(channel)}/messages`, reply_to ? { body, reply_to } : { body }),
};
