import { useEffect, useState } from "react";
import { api } from "../api/client";
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

  return (
    <aside className="panel" aria-labelledby="details-heading">
      <header className="panel-header">
        <h2 id="details-heading">Contact details</h2>
        <button className="icon" aria-label="Close details" onClick={onClose}>
          ×
        </button>
      </header>
      <div className="panel-body">
        <div className="details-id">
          <Avatar id={id} name={contact.display_name} presence={contact.presence} size={64} />
          <h3>
            {contact.display_name} {contact.verified && <span className="pill ok">Verified</span>}
          </h3>
          <p className="muted">{presenceLabel(contact.presence)}</p>
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
        </section>

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
