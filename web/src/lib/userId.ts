// Client-side check of a DiscordOpus user ID, so a typo is caught before a round trip.
// The node stays the authority (it answers `invalid_user_id`); this mirrors dopus-types' user_id.rs:
// HRP `dopus`, separator `1`, 32 key bytes in bech32's 5-bit alphabet, a bech32m checksum: 64 chars.

const CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const BECH32M_CONST = 0x2bc830a3;
export const USER_ID_HRP = "dopus";
export const USER_ID_LENGTH = 64;

function polymod(values: number[]): number {
  const gen = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
  let chk = 1;
  for (const v of values) {
    const b = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) {
      if ((b >>> i) & 1) chk ^= gen[i]!;
    }
  }
  return chk >>> 0;
}

function hrpExpand(hrp: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < hrp.length; i++) out.push(hrp.charCodeAt(i) >> 5);
  out.push(0);
  for (let i = 0; i < hrp.length; i++) out.push(hrp.charCodeAt(i) & 31);
  return out;
}

/** Decodes any bech32m string; null when it is not one (bad characters, mixed case, bad checksum). */
export function decodeBech32m(input: string): { hrp: string; data: number[] } | null {
  if (input.length < 8 || input.length > 90) return null;
  if (input !== input.toLowerCase() && input !== input.toUpperCase()) return null;
  const s = input.toLowerCase();
  const pos = s.lastIndexOf("1");
  if (pos < 1 || pos + 7 > s.length) return null;
  const hrp = s.slice(0, pos);
  for (let i = 0; i < hrp.length; i++) {
    const c = hrp.charCodeAt(i);
    if (c < 33 || c > 126) return null;
  }
  const data: number[] = [];
  for (const ch of s.slice(pos + 1)) {
    const v = CHARSET.indexOf(ch);
    if (v < 0) return null;
    data.push(v);
  }
  if (polymod([...hrpExpand(hrp), ...data]) !== BECH32M_CONST) return null;
  return { hrp, data: data.slice(0, -6) };
}

export type UserIdCheck =
  | { ok: true; id: string }
  | { ok: false; reason: "empty" | "prefix" | "length" | "characters" | "checksum" };

/** Checks a pasted or typed ID; trims whitespace and accepts either letter case as the node does. */
export function checkUserId(raw: string): UserIdCheck {
  const trimmed = raw.trim();
  if (!trimmed) return { ok: false, reason: "empty" };
  const lower = trimmed.toLowerCase();
  if (!lower.startsWith(USER_ID_HRP + "1")) return { ok: false, reason: "prefix" };
  if (lower.length !== USER_ID_LENGTH) return { ok: false, reason: "length" };
  for (const ch of lower.slice(USER_ID_HRP.length + 1)) {
    if (!CHARSET.includes(ch)) return { ok: false, reason: "characters" };
  }
  // Mixed case is not strict bech32, but people retype IDs and the node accepts any case.
  const decoded = decodeBech32m(lower);
  if (!decoded || decoded.hrp !== USER_ID_HRP) return { ok: false, reason: "checksum" };
  return { ok: true, id: lower };
}

export function userIdProblem(reason: Exclude<UserIdCheck, { ok: true }>["reason"]): string {
  switch (reason) {
    case "empty":
      return "Enter a user ID.";
    case "prefix":
      return "A user ID starts with dopus1.";
    case "length":
      return `A user ID is ${USER_ID_LENGTH} characters long.`;
    case "characters":
      return "This ID contains characters that never appear in user IDs (b, i, o, 1 after the prefix).";
    case "checksum":
      return "This user ID has a typo: its checksum does not match.";
  }
}

/** Builds a valid ID from 32 bytes; used by tests to make realistic IDs. */
export function encodeUserId(bytes: Uint8Array): string {
  const data: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      data.push((acc >> bits) & 31);
    }
  }
  if (bits > 0) data.push((acc << (5 - bits)) & 31);
  const values = [...hrpExpand(USER_ID_HRP), ...data, 0, 0, 0, 0, 0, 0];
  const mod = polymod(values) ^ BECH32M_CONST;
  const checksum: number[] = [];
  for (let i = 0; i < 6; i++) checksum.push((mod >>> (5 * (5 - i))) & 31);
  return USER_ID_HRP + "1" + [...data, ...checksum].map((v) => CHARSET[v]).join("");
}

/** `dopus1abcd…wxyz`, for places too narrow for the whole ID (mirrors UserId::short). */
export function shortId(id: string): string {
  return id.length > 16 ? `${id.slice(0, 10)}…${id.slice(-4)}` : id;
}
