// Image previews made in the browser for a file's manifest: its size and a small thumbnail the
// receiver shows before the file arrives (the node never decodes images). The manifest allows
// 16 KiB of JPEG, PNG or WebP.

export const THUMB_MAX_PX = 160;
export const THUMB_MAX_BYTES = 16 * 1024;

export interface ImagePreview {
  width: number;
  height: number;
  /** Base64 of a JPEG, or null if none fit in THUMB_MAX_BYTES. */
  thumbnail: string | null;
}

/** The size of a thumbnail of a `w`×`h` image: the longer side `max`, never enlarged, ≥ 1. */
export function thumbSize(w: number, h: number, max = THUMB_MAX_PX): { width: number; height: number } {
  if (w <= 0 || h <= 0) return { width: 1, height: 1 };
  const scale = Math.min(1, max / Math.max(w, h));
  return { width: Math.max(1, Math.round(w * scale)), height: Math.max(1, Math.round(h * scale)) };
}

async function toBase64(blob: Blob): Promise<string> {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Decodes an image file and makes its preview; null if the browser cannot decode it. */
export async function imagePreview(file: Blob): Promise<ImagePreview | null> {
  if (typeof createImageBitmap !== "function" || typeof document === "undefined") return null;
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch {
    return null;
  }
  try {
    const { width, height } = bitmap;
    const t = thumbSize(width, height);
    const canvas = document.createElement("canvas");
    canvas.width = t.width;
    canvas.height = t.height;
    const ctx = canvas.getContext("2d");
    if (!ctx) return { width, height, thumbnail: null };
    ctx.drawImage(bitmap, 0, 0, t.width, t.height);
    let thumbnail: string | null = null;
    for (const quality of [0.7, 0.5, 0.3]) {
      const blob = await new Promise<Blob | null>((r) => canvas.toBlob(r, "image/jpeg", quality));
      if (blob && blob.size <= THUMB_MAX_BYTES) {
        thumbnail = await toBase64(blob);
        break;
      }
    }
    return { width, height, thumbnail };
  } finally {
    bitmap.close();
  }
}
