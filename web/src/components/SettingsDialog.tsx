import { useEffect, useId, useRef, useState, type FormEvent } from "react";
import { ApiError } from "../api/client";
import type { Settings } from "../api/types";
import { isIceUrl, isServerUrl, parseIceServers } from "../lib/format";
import { resizeAvatar } from "../lib/image";
import { requestNotificationPermission } from "../state/notifications";
import { usePrefs } from "../state/prefs";
import { useTransfers } from "../state/transfers";
import { applyTheme, describeError, useStore } from "../state/store";
import { Avatar } from "./Avatar";

/** True when the node answered that it does not know an endpoint (a planned one). */
function unsupported(e: unknown): boolean {
  return e instanceof ApiError && (e.status === 404 || e.status === 405);
}

/**
 * Our profile: display name, status text and picture (`PUT /me/profile`, sent end to end encrypted
 * to every accepted contact).
 */
function ProfileSection() {
  const { state, actions } = useStore();
  const me = state.me;
  const [name, setName] = useState(me?.display_name ?? "");
  const [status, setStatus] = useState(me?.profile?.status_text ?? "");
  const [avatar, setAvatar] = useState<string | null | undefined>(undefined);
  const [note, setNote] = useState<{ text: string; error: boolean } | null>(null);
  const ids = { name: useId(), status: useId(), file: useId() };
  if (!me) return null;
  const shown = avatar === undefined ? (me.profile?.avatar ?? null) : avatar;

  const save = async () => {
    setNote(null);
    try {
      await actions.saveProfile({
        display_name: name.trim() !== me.display_name ? name.trim() : undefined,
        status_text: status.trim() !== (me.profile?.status_text ?? "") ? status.trim() : undefined,
        avatar: avatar === undefined ? undefined : (avatar ?? ""),
      });
      setNote({ text: "Profile saved; your contacts receive it end-to-end encrypted.", error: false });
    } catch (e) {
      setNote({
        text: unsupported(e) ? "Your node cannot change profiles yet (it needs a newer version)." : describeError(e),
        error: !unsupported(e),
      });
    }
  };

  return (
    <fieldset className="settings-group" data-testid="profile-settings">
      <legend>Profile</legend>
      <div className="row">
        <Avatar id={me.user_id} name={name || me.display_name} size={56} image={shown} />
        <label htmlFor={ids.file} className="button-like">
          Choose picture
          <input
            id={ids.file}
            type="file"
            accept="image/png,image/jpeg,image/webp,image/gif"
            className="sr-only"
            onChange={(e) => {
              const f = e.target.files?.[0];
              if (!f) return;
              resizeAvatar(f).then(setAvatar, (err: unknown) =>
                setNote({ text: `That picture cannot be used: ${err instanceof Error ? err.message : "unknown error"}.`, error: true }),
              );
            }}
          />
        </label>
        {shown && (
          <button type="button" onClick={() => setAvatar(null)}>
            Remove picture
          </button>
        )}
      </div>
      <label htmlFor={ids.name}>
        Display name
        <input id={ids.name} value={name} maxLength={64} onChange={(e) => setName(e.target.value)} />
      </label>
      <label htmlFor={ids.status}>
        Status text
        <input id={ids.status} value={status} maxLength={128} placeholder="What are you up to?" onChange={(e) => setStatus(e.target.value)} />
      </label>
      <div className="row end">
        <button type="button" onClick={() => void save()}>
          Update profile
        </button>
      </div>
      {note && (
        <p className={note.error ? "form-error" : "muted small"} role="status">
          {note.text}
        </p>
      )}
    </fieldset>
  );
}

/** Where "Save to downloads" puts received files (a folder on the node's machine; kept in this browser). */
function FilesSection() {
  const { downloadsDir, setDownloadsDir } = useTransfers();
  const id = useId();
  return (
    <fieldset className="settings-group" data-testid="file-settings">
      <legend>Files</legend>
      <label htmlFor={id}>
        Downloads folder <span className="muted">(an absolute path on the computer your node runs on)</span>
        <input
          id={id}
          value={downloadsDir}
          placeholder="/home/you/Downloads"
          spellCheck={false}
          onChange={(e) => setDownloadsDir(e.target.value.trim())}
        />
      </label>
      <p className="muted small">
        Received files stay encrypted in your node until you save them. "Save as…" on a file downloads it through this browser
        instead.
      </p>
    </fieldset>
  );
}

/** Notifications live in this browser (per identity), not on the node. */
function NotificationSection() {
  const { notify, setNotify } = usePrefs();
  const [permission, setPermission] = useState<string>(typeof Notification === "undefined" ? "unsupported" : Notification.permission);
  const ids = { enabled: useId(), sound: useId(), dnd: useId() };
  return (
    <fieldset className="settings-group" data-testid="notification-settings">
      <legend>Notifications</legend>
      <label className="toggle" htmlFor={ids.enabled}>
        <input
          id={ids.enabled}
          type="checkbox"
          checked={notify.enabled}
          onChange={(e) => {
            setNotify({ ...notify, enabled: e.target.checked });
            if (e.target.checked) void requestNotificationPermission().then((p) => setPermission(p));
          }}
        />
        Desktop notifications for direct messages while this tab is hidden
      </label>
      {notify.enabled && permission !== "granted" && (
        <p className="muted small">
          {permission === "denied"
            ? "The browser blocks notifications for this page; allow them in the site settings."
            : permission === "unsupported"
              ? "This browser has no notifications."
              : (
                  <button type="button" className="link" onClick={() => void requestNotificationPermission().then((p) => setPermission(p))}>
                    Allow notifications in this browser
                  </button>
                )}
        </p>
      )}
      <label className="toggle" htmlFor={ids.sound}>
        <input id={ids.sound} type="checkbox" checked={notify.sound} onChange={(e) => setNotify({ ...notify, sound: e.target.checked })} />
        Play a sound
      </label>
      <label className="toggle" htmlFor={ids.dnd}>
        <input id={ids.dnd} type="checkbox" checked={notify.dnd} onChange={(e) => setNotify({ ...notify, dnd: e.target.checked })} />
        Do not disturb (no notifications or sounds from anyone)
      </label>
      <p className="muted small">Mute a single conversation with the bell in its header. The "Do not disturb" status silences notifications too.</p>
    </fieldset>
  );
}

export function SettingsDialog({ onClose }: { onClose(): void }) {
  const { state, actions } = useStore();
  const current = state.settings;
  const dialog = useRef<HTMLDialogElement>(null);
  const [server, setServer] = useState(current?.server_url ?? "");
  const [ice, setIce] = useState((current?.ice_servers ?? []).join("\n"));
  const [receipts, setReceipts] = useState(current?.read_receipts ?? false);
  const [theme, setTheme] = useState<Settings["theme"]>(current?.theme ?? "dark");
  // Link previews are fetched by the sender's node (docs/api.md, "Link previews"); off by default.
  const [previews, setPreviews] = useState(current?.link_previews ?? false);
  // Relay-only (issue 18): contacts never learn our IP address; `--relay-only` forces it on.
  const [relayOnly, setRelayOnly] = useState(current?.relay_only ?? false);
  const relayForced = current?.relay_only_forced ?? false;
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const ids = { server: useId(), ice: useId(), receipts: useId(), theme: useId(), previews: useId(), relay: useId() };

  useEffect(() => {
    const d = dialog.current;
    // Focus goes back to what opened the dialog when it closes (Escape, Cancel or Save).
    const opener = document.activeElement;
    if (d && !d.open) d.showModal();
    return () => {
      if (opener instanceof HTMLElement && opener.isConnected) opener.focus();
    };
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
      await actions.saveSettings({
        server_url: server.trim(),
        ice_servers: servers,
        read_receipts: receipts,
        theme,
        // Sent only when turned on, so a node without the setting is not asked about it.
        ...(previews || current?.link_previews !== undefined ? { link_previews: previews } : {}),
        ...(relayForced ? {} : { relay_only: relayOnly }),
      });
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
        <ProfileSection />
        <NotificationSection />
        <FilesSection />
        <label htmlFor={ids.server}>
          Signaling server
          <input id={ids.server} value={server} onChange={(e) => setServer(e.target.value)} spellCheck={false} />
        </label>
        <label htmlFor={ids.ice}>
          ICE servers <span className="muted">(one per line)</span>
          <textarea id={ids.ice} rows={3} value={ice} onChange={(e) => setIce(e.target.value)} spellCheck={false} />
        </label>
        <label className="toggle" htmlFor={ids.relay}>
          <input
            id={ids.relay}
            type="checkbox"
            checked={relayOnly || relayForced}
            disabled={relayForced}
            onChange={(e) => setRelayOnly(e.target.checked)}
          />
          Hide my IP address from contacts (relay only)
        </label>
        <p className="muted small">
          {relayForced
            ? "On for this run: the node was started with --relay-only."
            : "Off by default. When on, connections to contacts go through the server's relay, so they never learn your IP address; calls and files may be slower. Turning it on closes today's direct connections."}
        </p>
        <label className="toggle" htmlFor={ids.receipts}>
          <input id={ids.receipts} type="checkbox" checked={receipts} onChange={(e) => setReceipts(e.target.checked)} />
          Send read receipts
        </label>
        <p className="muted small">Off by default: when on, contacts see when you have read their messages.</p>
        <label className="toggle" htmlFor={ids.previews}>
          <input id={ids.previews} type="checkbox" checked={previews} onChange={(e) => setPreviews(e.target.checked)} />
          Link previews for links I send
        </label>
        <p className="muted small">
          Off by default. When on, your node fetches the title and picture of a link you send and sends them inside the
          encrypted message; the people you write to never fetch anything.
          {current && current.link_previews === undefined && " Your node does not support this yet."}
        </p>
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
