// File transfers for the whole UI: the reducer of lib/transfers.ts fed by `GET /transfers` and
// the live `transfer` / `transfer_progress` events, and the actions (send files, pause, resume,
// cancel, save into the downloads folder). The downloads folder is remembered in this browser.
import { createContext, useContext, useEffect, useMemo, useReducer, useRef, useState, type ReactNode } from "react";
import { filesApi, uploadFile } from "../api/files";
import type { TransferAction } from "../api/types";
import { browserStorage } from "../lib/prefs";
import { imagePreview } from "../lib/thumbnail";
import { initialTransfers, previewKind, transfersReducer, type TransfersState } from "../lib/transfers";
import { describeError, useStore } from "./store";

export interface TransfersValue {
  transfers: TransfersState;
  /** Hands files to the node to send to `target`, a contact's user id or a space channel's id
   * (the UI's "preparing" phase shows meanwhile, then the node's). */
  sendFiles(target: string, files: { file: Blob; name: string }[]): void;
  act(id: string, action: TransferAction): Promise<void>;
  /** Decrypts a received file into the downloads folder; answers where it went. */
  saveToDownloads(id: string): Promise<string | null>;
  /** Forgets a failed upload, or a transfer whose preparing failed (by its id). */
  dismissUpload(localId: string): void;
  downloadsDir: string;
  setDownloadsDir(dir: string): void;
}

/** Exported for component tests, which provide a fixed value. */
export const TransfersContext = createContext<TransfersValue | null>(null);
const Ctx = TransfersContext;

export function useTransfers(): TransfersValue {
  const v = useContext(Ctx);
  if (!v) throw new Error("useTransfers outside TransfersProvider");
  return v;
}

const DIR_KEY = "dopus:downloads-dir";

export function TransfersProvider({ children }: { children: ReactNode }) {
  const { state, subscribe, actions } = useStore();
  const [transfers, dispatch] = useReducer(transfersReducer, initialTransfers);
  const [downloadsDir, setDir] = useState(() => browserStorage()?.getItem(DIR_KEY) ?? "");
  const counter = useRef(0);
  const ready = state.node === "ready";
  const socketOpen = state.socket === "open";

  // The list on start and after every (re)connect of the events socket (events are not replayed).
  useEffect(() => {
    if (!ready || !socketOpen) return;
    let live = true;
    filesApi
      .transfers()
      .then((l) => live && dispatch({ type: "list", transfers: l.transfers }))
      .catch(() => undefined);
    return () => {
      live = false;
    };
  }, [ready, socketOpen]);

  useEffect(
    () =>
      subscribe((e) => {
        if (e.type === "transfer") dispatch({ type: "record", transfer: e.transfer });
        else if (e.type === "transfer_progress") dispatch({ type: "progress", progress: e.progress });
        else if (e.type === "message" && e.message.kind === "file") {
          // A file message arrived: its transfer record exists now.
          filesApi
            .transfers()
            .then((l) => dispatch({ type: "list", transfers: l.transfers }))
            .catch(() => undefined);
        }
      }),
    [subscribe],
  );

  const value = useMemo<TransfersValue>(
    () => ({
      transfers,
      sendFiles(target, files) {
        for (const { file, name } of files) {
          const localId = `upload-${Date.now()}-${counter.current++}`;
          dispatch({
            type: "upload_start",
            upload: { localId, conversation: target, name, size: file.size, sent: 0, error: null },
          });
          const preview = previewKind(file.type) === "image" ? imagePreview(file).catch(() => null) : Promise.resolve(null);
          preview
            .then((p) => uploadFile(target, file, name, (sent) => dispatch({ type: "upload_progress", localId, sent }), p))
            .then((transfer) => dispatch({ type: "upload_done", localId, transfer }))
            .catch((e: unknown) => dispatch({ type: "upload_failed", localId, error: describeError(e) }));
        }
      },
      async act(id, action) {
        try {
          dispatch({ type: "record", transfer: await filesApi.action(id, action) });
        } catch (e) {
          actions.notify(describeError(e));
        }
      },
      async saveToDownloads(id) {
        if (!downloadsDir) {
          actions.notify("Choose a downloads folder in Settings first.", "info");
          return null;
        }
        try {
          const t = await filesApi.save(id, downloadsDir);
          dispatch({ type: "record", transfer: t });
          actions.notify(`Saved to ${t.saved_path ?? downloadsDir}`, "info");
          return t.saved_path;
        } catch (e) {
          actions.notify(describeError(e));
          return null;
        }
      },
      dismissUpload(localId) {
        dispatch({ type: "upload_dismiss", localId });
        // A transfer whose preparing failed on the node is dismissed the same way.
        dispatch({ type: "forget", id: localId });
      },
      downloadsDir,
      setDownloadsDir(dir) {
        setDir(dir);
        try {
          if (dir) browserStorage()?.setItem(DIR_KEY, dir);
          else browserStorage()?.removeItem(DIR_KEY);
        } catch {
          // Storage disabled: remembered for this page only.
        }
      },
    }),
    [transfers, downloadsDir, actions],
  );
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}
