import type {
  Contact,
  ContactPatch,
  Connection,
  Me,
  Message,
  MessagePage,
  Presence,
  ProfilePatch,
  Safety,
  SearchResults,
  Settings,
  SettingsPatch,
  Status,
  UserId,
  Verification,
} from "./types";

export const PREFIX = "/api/v1";

/** An error answered by the node (`{ error: { code, message } }`) or a transport failure (`code: "network"`). */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/** Turns any failed response body into an ApiError, whatever shape the body has. */
export function errorFromBody(status: number, body: unknown): ApiError {
  if (body && typeof body === "object" && "error" in body) {
    const e = (body as { error: unknown }).error;
    if (e && typeof e === "object") {
      const code = typeof (e as { code?: unknown }).code === "string" ? (e as { code: string }).code : "internal";
      const message =
        typeof (e as { message?: unknown }).message === "string" ? (e as { message: string }).message : `HTTP ${status}`;
      return new ApiError(status, code, message);
    }
  }
  return new ApiError(status, status === 401 ? "unauthorized" : "internal", `HTTP ${status}`);
}

/** One JSON request to the node's API; a non-2xx answer throws its `ApiError`. */
export async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
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
  if (res.status === 204) return undefined as T;
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

const enc = encodeURIComponent;

export const api = {
  status: () => request<Status>("GET", "/status"),
  createIdentity: (display_name: string, passphrase: string) =>
    request<Me>("POST", "/identity", { display_name, passphrase }),
  unlock: (passphrase: string) => request<Me>("POST", "/unlock", { passphrase }),
  me: () => request<Me>("GET", "/me"),
  setStatus: (status: Presence) => request<Me>("PUT", "/me/status", { status }),

  contacts: () => request<Contact[]>("GET", "/contacts"),
  addContact: (user_id: UserId, display_name?: string) =>
    request<Contact>("POST", "/contacts", display_name ? { user_id, display_name } : { user_id }),
  requestContact: (user_id: UserId, display_name?: string) =>
    request<Contact>("POST", `/contacts/${enc(user_id)}/request`, display_name ? { display_name } : {}),
  accept: (user_id: UserId) => request<Contact>("POST", `/contacts/${enc(user_id)}/accept`),
  decline: (user_id: UserId) => request<Contact>("POST", `/contacts/${enc(user_id)}/decline`),
  patchContact: (user_id: UserId, patch: ContactPatch) => request<Contact>("PATCH", `/contacts/${enc(user_id)}`, patch),
  removeContact: (user_id: UserId) => request<void>("DELETE", `/contacts/${enc(user_id)}`),
  safety: (user_id: UserId) => request<Safety>("GET", `/contacts/${enc(user_id)}/safety`),
  connection: (user_id: UserId) => request<Connection>("GET", `/contacts/${enc(user_id)}/connection`),
  verification: (user_id: UserId) => request<Verification>("GET", `/contacts/${enc(user_id)}/verification`),

  messages: (user_id: UserId, before?: number, limit = 50) =>
    request<MessagePage>(
      "GET",
      `/conversations/${enc(user_id)}/messages?limit=${limit}${before !== undefined ? `&before=${before}` : ""}`,
    ),
  send: (user_id: UserId, body: string, reply_to?: string | null) =>
    request<Message>("POST", `/conversations/${enc(user_id)}/messages`, reply_to ? { body, reply_to } : { body }),
  typing: (user_id: UserId, active: boolean) =>
    request<void>("POST", `/conversations/${enc(user_id)}/typing`, { active }),
  read: (user_id: UserId, up_to: string) => request<void>("POST", `/conversations/${enc(user_id)}/read`, { up_to }),
  edit: (id: string, body: string) => request<Message>("PUT", `/messages/${enc(id)}`, { body }),
  remove: (id: string) => request<Message>("DELETE", `/messages/${enc(id)}`),
  react: (id: string, emoji: string) => request<Message>("POST", `/messages/${enc(id)}/reactions`, { emoji }),
  unreact: (id: string, emoji: string) => request<Message>("DELETE", `/messages/${enc(id)}/reactions/${enc(emoji)}`),
  /** Full-text search, newest first. `before` (a `seq`, the previous answer's `next_before`) pages on. */
  search: (q: string, limit = 25, before?: number) =>
    request<SearchResults>("GET", `/search?q=${enc(q)}&limit=${limit}${before !== undefined ? `&before=${before}` : ""}`),

  settings: () => request<Settings>("GET", "/settings"),
  putSettings: (s: SettingsPatch) => request<Settings>("PUT", "/settings", s),
  /** Our own profile (name, status text, avatar); the node sends it to every accepted contact. */
  putProfile: (p: ProfilePatch) => request<Me>("PUT", "/me/profile", p),
};

/** The events WebSocket URL for the page's own origin (the cookie authenticates it). */
export function eventsUrl(loc: { protocol: string; host: string }): string {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}${PREFIX}/events`;
}
