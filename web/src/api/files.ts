// The node's file routes (docs/api.md, "Files"). Uploads go through XMLHttpRequest: fetch()
// cannot report upload progress.
import { ApiError, errorFromBody, PREFIX, request } from "./client";
import type { ImagePreview } from "../lib/thumbnail";
import { uploadPath } from "../lib/transfers";
import type { Transfer, TransferAction, Transfers } from "./types";

const enc = encodeURIComponent;

export const filesApi = {
  transfers: () => request<Transfers>("GET", "/transfers"),
  action: (id: string, action: TransferAction) => request<Transfer>("POST", `/transfers/${enc(id)}/${action}`),
  save: (id: string, dir: string) => request<Transfer>("POST", `/transfers/${enc(id)}/save`, { dir }),
};

/** The decrypted content of a transfer, for <img>, <video>, <audio>, or a "save as" link. */
export function contentUrl(id: string, download = false): string {
  return `${PREFIX}/transfers/${enc(id)}/content${download ? "?download=1" : ""}`;
}

/** Hands a file to the node to send to `target` (a contact's user id or a space channel's id);
 * `onProgress(sentBytes)` as the node takes it. The node answers with the transfer in state
 * `preparing` and hashes and encrypts it in the background. */
export function uploadFile(
  target: string,
  file: Blob,
  name: string,
  onProgress: (sent: number) => void,
  preview: ImagePreview | null = null,
): Promise<Transfer> {
  const mime = file.type ? `&mime=${enc(file.type)}` : "";
  const dims = preview ? `&width=${preview.width}&height=${preview.height}` : "";
  const url = `${PREFIX}${uploadPath(target)}?name=${enc(name)}${mime}${dims}`;
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.withCredentials = true;
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    if (preview?.thumbnail) xhr.setRequestHeader("X-Dopus-Thumbnail", preview.thumbnail);
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onerror = () => reject(new ApiError(0, "network", "cannot reach the node"));
    xhr.onload = () => {
      let parsed: unknown;
      try {
        parsed = xhr.responseText ? JSON.parse(xhr.responseText) : undefined;
      } catch {
        parsed = undefined;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(parsed as Transfer);
      else reject(errorFromBody(xhr.status, parsed));
    };
    xhr.send(file);
  });
}
