import QRCode from "qrcode";
import { useEffect, useId, useState, type FormEvent } from "react";
import { ApiError } from "../api/client";
import { sortedContacts } from "../lib/state";
import { checkUserId, shortId, userIdProblem } from "../lib/userId";
import { describeError, useStore } from "../state/store";
import { requestNotificationPermission } from "../state/notifications";
import { usePrefs } from "../state/prefs";
import { Avatar } from "./Avatar";
import { Icon } from "./Icon";

export function Home({ onBack }: { onBack(): void }) {
  return (
    <div className="home">
      <header className="main-header">
        <button className="icon back-button" aria-label="Back to conversations" onClick={onBack}>
          <Icon name="back" />
        </button>
        <h1>Friends</h1>
      </header>
      <div className="home-body">
        <NotificationPrompt />
        <MyId />
        <AddContact />
        <Requests />
      </div>
    </div>
  );
}

/**
 * Browsers ask for the notification permission only from a click, so the app asks once, here,
 * while notifications are on in its own settings and the browser has not been asked yet.
 */
function NotificationPrompt() {
  const { notify, setNotify } = usePrefs();
  const [permission, setPermission] = useState(() => (typeof Notification === "undefined" ? "unsupported" : Notification.permission));
  if (!notify.enabled || permission !== "default") return null;
  return (
    <section className="card notify-card" aria-labelledby="notify-heading" data-testid="notification-prompt">
      <h2 id="notify-heading">Get notified of new messages</h2>
      <p className="muted">When this tab is in the background, your browser can show direct messages as notifications.</p>
      <div className="row">
        <button className="primary" onClick={() => void requestNotificationPermission().then((p) => setPermission(p))}>
          Turn on notifications
        </button>
        <button onClick={() => setNotify({ ...notify, enabled: false })}>Not now</button>
      </div>
    </section>
  );
}

function MyId() {
  const { state } = useStore();
  const me = state.me;
  const [qr, setQr] = useState<string | null>(null);
  const [copied, setCopied] = useState(false);

  useEffect(() => {
    if (!me) return;
    let live = true;
    QRCode.toString(me.user_id.toUpperCase(), { type: "svg", margin: 1, errorCorrectionLevel: "M" })
      .then((svg) => live && setQr(`data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`))
      .catch(() => live && setQr(null));
    return () => {
      live = false;
    };
  }, [me]);

  if (!me) return null;
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(me.user_id);
      setCopied(true);
      setTimeout(() => setCopied(false), 2000);
    } catch {
      // Clipboard refused (permissions): select the text so the user can copy it by hand.
      const el = document.getElementById("my-user-id");
      if (el) window.getSelection()?.selectAllChildren(el);
    }
  };

  return (
    <section className="card" aria-labelledby="my-id-heading">
      <h2 id="my-id-heading">Your ID</h2>
      <p className="muted">Share it with people you want to talk to. It is your public key, not a secret.</p>
      <div className="my-id">
        {qr && <img className="qr" src={qr} alt="QR code of your user ID" width={132} height={132} />}
        <div className="my-id-text">
          <code id="my-user-id" className="user-id" data-testid="my-user-id">
            {me.user_id}
          </code>
          <div className="row">
            <button onClick={copy}>{copied ? "Copied" : "Copy ID"}</button>
            <span role="status" className="sr-only">
              {copied ? "Your ID was copied to the clipboard" : ""}
            </span>
          </div>
        </div>
      </div>
    </section>
  );
}

function AddContact() {
  const { actions } = useStore();
  const [value, setValue] = useState("");
  const [name, setName] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const inputId = useId();
  const nameId = useId();
  const errId = useId();

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setDone(null);
    const check = checkUserId(value);
    if (!check.ok) {
      setError(userIdProblem(check.reason));
      return;
    }
    setError(null);
    setBusy(true);
    try {
      await actions.addContact(check.id, name.trim() || undefined);
      setDone(`Request sent to ${name.trim() || shortId(check.id)}.`);
      setValue("");
      setName("");
    } catch (err) {
      setError(
        err instanceof ApiError && err.code === "invalid_user_id"
          ? `The node refused this ID: ${err.message}`
          : describeError(err),
      );
    } finally {
      setBusy(false);
    }
  };

  return (
    <section className="card" aria-labelledby="add-heading">
      <h2 id="add-heading">Add a contact</h2>
      <form className="add-form" onSubmit={submit} noValidate>
        <label htmlFor={inputId} className="sr-only">
          Their user ID
        </label>
        <input
          id={inputId}
          name="user_id"
          placeholder="dopus1…"
          value={value}
          spellCheck={false}
          autoComplete="off"
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? errId : undefined}
          onChange={(e) => {
            setValue(e.target.value);
            setError(null);
          }}
        />
        <label htmlFor={nameId} className="sr-only">
          Name for them (optional)
        </label>
        <input
          id={nameId}
          name="display_name"
          className="name-input"
          placeholder="Name (optional)"
          value={name}
          maxLength={64}
          autoComplete="off"
          onChange={(e) => setName(e.target.value)}
        />
        <button className="primary" type="submit" disabled={busy}>
          Send request
        </button>
      </form>
      {error && (
        <p id={errId} className="form-error" role="alert">
          {error}
        </p>
      )}
      {done && (
        <p className="form-ok" role="status">
          {done}
        </p>
      )}
    </section>
  );
}

function Requests() {
  const { state, actions } = useStore();
  const { incoming, outgoing } = sortedContacts(state.contacts);
  return (
    <section className="card" aria-labelledby="requests-heading">
      <h2 id="requests-heading">Requests</h2>
      {incoming.length === 0 && outgoing.length === 0 && <p className="muted">No pending requests.</p>}
      {incoming.length > 0 && (
        <ul className="request-list" aria-label="Incoming requests">
          {incoming.map((c) => (
            <li key={c.user_id} className="request" data-testid="incoming-request">
              <Avatar id={c.user_id} name={c.display_name} />
              <span className="request-text">
                <strong>{c.display_name}</strong>
                <code className="muted">{shortId(c.user_id)}</code>
              </span>
              <button className="primary" onClick={() => void actions.accept(c.user_id)} aria-label={`Accept ${c.display_name}`}>
                Accept
              </button>
              <button className="danger-outline" onClick={() => void actions.decline(c.user_id)} aria-label={`Decline ${c.display_name}`}>
                Decline
              </button>
            </li>
          ))}
        </ul>
      )}
      {outgoing.length > 0 && (
        <ul className="request-list" aria-label="Outgoing requests">
          {outgoing.map((c) => (
            <li key={c.user_id} className="request" data-testid="outgoing-request">
              <Avatar id={c.user_id} name={c.display_name || shortId(c.user_id)} />
              <span className="request-text">
                <strong>{c.display_name || shortId(c.user_id)}</strong>
                <code className="muted">{shortId(c.user_id)}</code>
              </span>
              <span className="pill">Pending</span>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
