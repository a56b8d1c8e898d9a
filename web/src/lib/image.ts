// Avatar pictures: resized in the browser before they leave it, so a profile carries a small
// square image (the node sends it end-to-end encrypted to contacts; docs/api.md, "Planned").

/** The largest side of an avatar, in pixels. */
export const AVATAR_SIZE = 128;
/** The most an avatar data URL may weigh (the planned API refuses more). */
export const AVATAR_MAX_BYTES = 48 * 1024;

/** Where to cut a w×h image to get a centred square. */
export function centreSquare(w: number, h: number): { sx: number; sy: number; side: number } {
  const side = Math.min(w, h);
  return { sx: Math.floor((w - side) / 2), sy: Math.floor((h - side) / 2), side };
}

/** A data URL's payload size in bytes (base64 is 4 characters per 3 bytes). */
export function dataUrlBytes(url: string): number {
  const comma = url.indexOf(",");
  const b64 = comma < 0 ? "" : url.slice(comma + 1);
  const pad = b64.endsWith("==") ? 2 : b64.endsWith("=") ? 1 : 0;
  return Math.floor((b64.length * 3) / 4) - pad;
}

/** Decodes an image file, crops it square, scales it to AVATAR_SIZE and encodes WebP (or JPEG). */
export async function resizeAvatar(file: Blob): Promise<string> {
  const bitmap = await createImageBitmap(file);
  const { sx, sy, side } = centreSquare(bitmap.width, bitmap.height);
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = AVATAR_SIZE;
  const g = canvas.getContext("2d");
  if (!g) throw new Error("no canvas");
  g.imageSmoothingQuality = "high";
  g.drawImage(bitmap, sx, sy, side, side, 0, 0, AVATAR_SIZE, AVATAR_SIZE);
  bitmap.close();
  for (const q of [0.85, 0.7, 0.5]) {
    const url = canvas.toDataURL("image/webp", q);
    const usable = url.startsWith("data:image/webp") ? url : canvas.toDataURL("image/jpeg", q);
    if (dataUrlBytes(usable) <= AVATAR_MAX_BYTES) return usable;
  }
  throw new Error("the picture is still too large after resizing");
}
