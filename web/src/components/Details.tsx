import { useEffect, useState, type FormEvent } from "react";
import { api, ApiError } from "../api/client";
import type { Connection, Contact, Safety } from "../api/types";
import { formatRtt, MODE_TEXT, safetyGroups } from "../lib/format";
import { describeError, useStore } from "../state/store";
import { Avatar, presenceLabel } from "./Avatar";
import { SasVerification } from "./SasVerification";

const CANDIDATE_TEXT: Record<string, string> = {
  host: "host (local network)",
  srflx: "server reflexive (through NAT)",
  prflx: "peer reflexive",
  relay: "relay (TURN)",
};

/** Rename, block and remove: what a user does with a contact (`DELETE /contacts/{id}` removes). */
function ManageContact({ contact }: { contact: Contact }) {
  const { actions } = useStore();
  const [name, setName] = useState(contact.display_name);
  const [confirm, setConfirm] = useState<"block" | "remove" | null>(null);
  const [note, setNote] = useState<string | null>(null);
  useEffect(() => setName(contact.display_name), [contact.display_name]);

  const rename = async (e: FormEvent) => {
    e.preventDefault();
    const n = name.trim();
    if (!n || n === contact.display_name) return;
    if (await actions.patchContact(contact.user_id, { display_name: n })) setNote(`Renamed to ${n}.`);
  };
  const remove = async () => {
    setConfirm(null);
    try {
      await actions.removeContact(contact.user_id);
    } catch (e) {
      setNote(
        e instanceof ApiError && (e.status === 404 || e.status === 405)
          ? "Your node cannot remove contacts yet (it needs a newer version). You can block them meanwhile."
          : describeError(e),
      );
    }
  };

  return (
    <section aria-labelledby="manage-heading" className="panel-section" data-testid="manage-contact">
      <h3 id="manage-heading">Contact</h3>
      <form className="row" onSubmit={rename}>
        <label className="sr-only" htmlFor="rename-input">
          Name for {contact.display_name}
        </label>
        <input id="rename-input" value={name} maxLength={64} onChange={(e) => setName(e.target.value)} />
        <button type="submit" disabled={!name.trim() || name.trim() === contact.display_name}>
          Rename
        </button>
      </form>
      <div className="row wrap">
        {contact.blocked ? (
          <button onClick={() => void actions.patchContact(contact.user_id, { blocked: false })}>Unblock</button>
        ) : (
          <button className="danger-outline" onClick={() => setConfirm("block")}>
            Block
          </button>
        )}
        <button className="danger-outline" onClick={() => setConfirm("remove")}>
          Remove contact
        </button>
      </div>
      {confirm === "block" && (
        <div className="confirm" role="alertdialog" aria-label="Block contact">
          <span>Block {contact.display_name}? Their messages and presence stop reaching you.</span>
          <button
            className="danger"
            autoFocus
            onClick={() => {
              setConfirm(null);
              void actions.patchContact(contact.user_id, { blocked: true });
            }}
          >
            Block
          </button>
          <button onClick={() => setConfirm(null)}>Cancel</button>
        </div>
      )}
      {confirm === "remove" && (
        <div className="confirm" role="alertdialog" aria-label="Remove contact">
          <span>Remove {contact.display_name} from your contacts? Your history with them stays on this device.</span>
          <button className="danger" autoFocus onClick={() => void remove()}>
            Remove
          </button>
          <button onClick={() => setConfirm(null)}>Cancel</button>
        </div>
      )}
      {note && (
        <p className="muted small" role="status">
          {note}
        </p>
      )}
    </section>
  );
}

export function Details({ contact, onClose }: { contact: Contact; onClose(): void }) {
  const { actions } = useStore();
  const [safety, setSafety] = useState<Safety | null>(null);
  const [safetyError, setSafetyError] = useState<string | null>(null);
  const [connection, setConnection] = useState<Connection>(contact.connection);
  // The switch flips at once; the node's answer (or a failure) then settles it.
  const [verifiedPending, setVerifiedPending] = useState<boolean | null>(null);
  const id = contact.user_id;

  useEffect(() => {
    let live = true;
    setSafety(null);
    setSafetyError(null);
    api.safety(id).then(
      (s) => live && setSafety(s),
      (e) => live && setSafetyError(describeError(e)),
    );
    return () => {
      live = false;
    };
  }, [id]);

  // The contact record's connection may be a summary (a contact update carries no candidate or RTT
  // details), so every change is followed by a fetch of the full diagnostics.
  useEffect(() => {
    let live = true;
    setConnection((old) => ({ ...old, ...contact.connection }));
    api.connection(id).then(
      (c) => live && setConnection(c),
      () => undefined,
    );
    return () => {
      live = false;
    };
  }, [id, contact.connection]);

  const groups = safety ? safetyGroups(safety.safety_number) : [];
  const close = () => {
    onClose();
    document.querySelector<HTMLElement>('button[aria-label="Contact details"]')?.focus();
  };

  return (
    <aside
      className="panel"
      aria-labelledby="details-heading"
      onKeyDown={(e) => {
        if (e.key === "Escape" && !e.defaultPrevented) {
          e.preventDefault();
          close();
        }
      }}
    >
      <header className="panel-header">
        <h2 id="details-heading">Contact details</h2>
        <button className="icon" aria-label="Close details" onClick={close}>
          ×
        </button>
      </header>
      <div className="panel-body">
        <div className="details-id">
          <Avatar id={id} name={contact.display_name} presence={contact.presence} size={64} image={contact.profile?.avatar} />
          <h3>
            {contact.display_name} {contact.verified && <span className="pill ok">Verified</span>}
            {contact.blocked && <span className="pill">Blocked</span>}
          </h3>
          <p className="muted">{presenceLabel(contact.presence)}</p>
          {contact.profile?.status_text && <p className="profile-status">{contact.profile.status_text}</p>}
          <code className="user-id small">{id}</code>
        </div>

        <section aria-labelledby="conn-heading" className="panel-section" data-testid="connection-panel">
          <h3 id="conn-heading">Connection</h3>
          <dl className="kv">
            <dt>Path</dt>
            <dd data-testid="connection-mode">{MODE_TEXT[connection.mode] ?? connection.mode}</dd>
            <dt>State</dt>
            <dd>{connection.state ?? "–"}</dd>
            <dt>Local candidate</dt>
            <dd>{connection.local_candidate ? (CANDIDATE_TEXT[connection.local_candidate] ?? connection.local_candidate) : "–"}</dd>
            <dt>Remote candidate</dt>
            <dd>{connection.remote_candidate ? (CANDIDATE_TEXT[connection.remote_candidate] ?? connection.remote_candidate) : "–"}</dd>
            <dt>Round trip</dt>
            <dd>{connection.rtt_ms != null ? formatRtt(connection.rtt_ms) : "–"}</dd>
            {connection.reason && (
              <>
                <dt>Why</dt>
                <dd>{connection.reason}</dd>
              </>
            )}
          </dl>
          {connection.mode === "relayed" && (
            <p className="muted small">
              Relayed means no direct peer-to-peer path is open right now: messages go through the signaling server, still
              end-to-end encrypted, so it only ever sees ciphertext. A contact who is invisible keeps no direct connection
              open, so their messages are relayed too.
            </p>
          )}
        </section>

        <ManageContact contact={contact} />

        <section aria-labelledby="safety-heading" className="panel-section">
          <h3 id="safety-heading">Safety number</h3>
          <p className="muted">
            Compare these digits with {contact.display_name} in person or over a call. If they match, nobody is
            intercepting your conversation.
          </p>
          {safetyError && <p className="form-error">{safetyError}</p>}
          {safety && (
            <div className="safety" role="group" aria-label="Safety number" data-testid="safety-number">
              {groups.map((g, i) => (
                <span key={i}>{g}</span>
              ))}
            </div>
          )}
          <label className="toggle">
            <input
              type="checkbox"
              checked={verifiedPending ?? contact.verified}
              onChange={(e) => {
                const v = e.target.checked;
                setVerifiedPending(v);
                void actions.setVerified(id, v).finally(() => setVerifiedPending(null));
              }}
            />
            Mark {contact.display_name} as verified
          </label>
          <SasVerification key={id} userId={id} name={contact.display_name} />
        </section>
      </div>
    </aside>
  );
}
