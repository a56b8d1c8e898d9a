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

/**
 * Up to two initials from a display name: the first letter or digit of the first and last word,
 * skipping punctuation and symbols ("(Bob) [Smith]" is "BS", "@alice" is "A"). A name with no
 * letter at all (only emoji) shows its first character; an empty one shows "?".
 */
export function initials(name: string): string {
  const words = name.trim().split(/\s+/).filter(Boolean);
  const firstLetter = (w: string) => /[\p{L}\p{N}]/u.exec(w)?.[0];
  const letters = words.map(firstLetter).filter((c): c is string => c !== undefined);
  if (letters.length === 0) {
    const seg = new Intl.Segmenter(undefined, { granularity: "grapheme" });
    const first = seg.segment(name.trim())[Symbol.iterator]().next();
    return first.done ? "?" : first.value.segment;
  }
  const pick = letters.length > 1 ? letters[0]! + letters[letters.length - 1]! : letters[0]!;
  return pick.toUpperCase();
}

/**
 * A round avatar: the person's picture when their profile carries one (a data: URL that came
 * end-to-end encrypted with the profile; nothing is ever fetched), else their initials on a
 * colour of their own.
 */
export function Avatar({
  id,
  name,
  presence,
  size = 32,
  image,
}: {
  id: string;
  name: string;
  presence?: Presence;
  size?: number;
  image?: string | null;
}) {
  const src = image && /^data:image\/(png|jpeg|webp|gif);base64,/.test(image) ? image : null;
  return (
    <span className="avatar" style={{ width: size, height: size, background: `hsl(${hue(id)} 55% 45%)`, fontSize: size * 0.4 }} aria-hidden="true">
      {src ? <img className="avatar-img" src={src} alt="" width={size} height={size} /> : initials(name)}
      {presence && <PresenceDot presence={presence} />}
    </span>
  );
}

export function PresenceDot({ presence }: { presence: Presence }) {
  return <span className={`presence-dot presence-${presence}`} aria-hidden="true" />;
}
