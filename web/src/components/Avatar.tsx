import type { Presence } from "../api/types";

const PRESENCE_LABEL: Record<Presence, string> = {
  online: "Online",
  away: "Away",
  busy: "Do not disturb",
  invisible: "Invisible",
  offline: "Offline",
};

export function presenceLabel(p: Presence): string {
  return PRESENCE_LABEL[p];
}

/** A stable hue per user, so a person keeps their colour across sessions without storing one. */
function hue(id: string): number {
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
  return h % 360;
}

export function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) return "?";
  const first = [...parts[0]!][0] ?? "?";
  const second = parts.length > 1 ? ([...parts[parts.length - 1]!][0] ?? "") : "";
  return (first + second).toUpperCase();
}

export function Avatar({ id, name, presence, size = 32 }: { id: string; name: string; presence?: Presence; size?: number }) {
  return (
    <span className="avatar" style={{ width: size, height: size, background: `hsl(${hue(id)} 55% 45%)`, fontSize: size * 0.4 }} aria-hidden="true">
      {initials(name)}
      {presence && <PresenceDot presence={presence} />}
    </span>
  );
}

export function PresenceDot({ presence }: { presence: Presence }) {
  return <span className={`presence-dot presence-${presence}`} aria-hidden="true" />;
}
