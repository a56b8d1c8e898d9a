import { useEffect, useId, useRef, useState, type FormEvent } from "react";
import type { Settings } from "../api/types";
import { isIceUrl, isServerUrl, parseIceServers } from "../lib/format";
import { applyTheme, describeError, useStore } from "../state/store";

export function SettingsDialog({ onClose }: { onClose(): void }) {
  const { state, actions } = useStore();
  const current = state.settings;
  const dialog = useRef<HTMLDialogElement>(null);
  const [server, setServer] = useState(current?.server_url ?? "");
  const [ice, setIce] = useState((current?.ice_servers ?? []).join("\n"));
  const [receipts, setReceipts] = useState(current?.read_receipts ?? false);
  const [theme, setTheme] = useState<Settings["theme"]>(current?.theme ?? "dark");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const ids = { server: useId(), ice: useId(), receipts: useId(), theme: useId() };

  useEffect(() => {
    const d = dialog.current;
    if (d && !d.open) d.showModal();
  }, []);

  // Preview the theme while the dialog is open; cancelling restores the saved one.
  useEffect(() => applyTheme(theme), [theme]);
  const cancel = () => {
    applyTheme(current?.theme ?? "dark");
    onClose();
  };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    const servers = parseIceServers(ice);
    if (!isServerUrl(server.trim())) return setError("The server URL must start with ws:// or wss://.");
    const bad = servers.find((s) => !isIceUrl(s));
    if (bad) return setError(`Not an ICE server URL (stun:, turn:): ${bad}`);
    setBusy(true);
    setError(null);
    try {
      await actions.saveSettings({ server_url: server.trim(), ice_servers: servers, read_receipts: receipts, theme });
      onClose();
    } catch (err) {
      setError(describeError(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <dialog
      ref={dialog}
      className="dialog"
      aria-labelledby="settings-heading"
      onCancel={(e) => {
        e.preventDefault();
        cancel();
      }}
    >
      <form onSubmit={submit} noValidate>
        <h2 id="settings-heading">Settings</h2>
        <label htmlFor={ids.server}>
          Signaling server
          <input id={ids.server} value={server} onChange={(e) => setServer(e.target.value)} spellCheck={false} />
        </label>
        <label htmlFor={ids.ice}>
          ICE servers <span className="muted">(one per line)</span>
          <textarea id={ids.ice} rows={3} value={ice} onChange={(e) => setIce(e.target.value)} spellCheck={false} />
        </label>
        <label className="toggle" htmlFor={ids.receipts}>
          <input id={ids.receipts} type="checkbox" checked={receipts} onChange={(e) => setReceipts(e.target.checked)} />
          Send read receipts
        </label>
        <p className="muted small">Off by default: when on, contacts see when you have read their messages.</p>
        <label htmlFor={ids.theme}>
          Theme
          <select id={ids.theme} value={theme} onChange={(e) => setTheme(e.target.value as Settings["theme"])}>
            <option value="dark">Dark</option>
            <option value="light">Light</option>
          </select>
        </label>
        {state.version && <p className="muted small">Node version {state.version}</p>}
        {error && (
          <p className="form-error" role="alert">
            {error}
          </p>
        )}
        <div className="row end">
          <button type="button" onClick={cancel}>
            Cancel
          </button>
          <button className="primary" type="submit" disabled={busy}>
            Save
          </button>
        </div>
      </form>
    </dialog>
  );
}
