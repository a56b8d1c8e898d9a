import { useCallback, useEffect, useRef, useState } from "react";
import "./sas.css";

/** What `GET /api/v1/contacts/{id}/verification` answers (docs/api.md, "Verification"). */
export interface VerificationView {
  state: "none" | "waiting" | "compare" | "confirmed" | "verified" | "cancelled";
  txn?: string;
  emoji?: { symbol: string; name: string }[] | null;
  decimals?: number[] | null;
  cancel_code?: string | null;
  cancelled_by_us?: boolean | null;
}

/** States in which the other side may still move the verification on (so we keep looking). */
export function isActive(v: VerificationView | null): boolean {
  return v !== null && (v.state === "waiting" || v.state === "compare" || v.state === "confirmed");
}

/** Accepts only the documented shape; anything else reads as "no verification". */
export function normalizeVerification(raw: unknown): VerificationView {
  if (!raw || typeof raw !== "object") return { state: "none" };
  const r = raw as Record<string, unknown>;
  const states = ["none", "waiting", "compare", "confirmed", "verified", "cancelled"];
  const state = typeof r.state === "string" && states.includes(r.state) ? (r.state as VerificationView["state"]) : "none";
  const emoji = Array.isArray(r.emoji)
    ? r.emoji
        .filter((e): e is { symbol: string; name: string } => !!e && typeof e === "object" && typeof (e as { symbol?: unknown }).symbol === "string" && typeof (e as { name?: unknown }).name === "string")
        .slice(0, 7)
    : null;
  return {
    state,
    txn: typeof r.txn === "string" ? r.txn : undefined,
    emoji,
    decimals: Array.isArray(r.decimals) ? r.decimals.filter((d): d is number => typeof d === "number") : null,
    cancel_code: typeof r.cancel_code === "string" ? r.cancel_code : null,
    cancelled_by_us: typeof r.cancelled_by_us === "boolean" ? r.cancelled_by_us : null,
  };
}

async function call(method: string, path: string): Promise<VerificationView> {
  const res = await fetch(`/api/v1${path}`, { method, credentials: "same-origin", headers: { Accept: "application/json" } });
  const text = await res.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!res.ok) {
    const msg =
      body && typeof body === "object" && "error" in body ? String((body as { error: { message?: unknown } }).error?.message ?? "") : "";
    throw new Error(msg || `HTTP ${res.status}`);
  }
  return normalizeVerification(body);
}

/**
 * SAS emoji verification with one contact: start, compare seven emoji with them (in person or on a
 * call), then confirm or report a mismatch. While a verification runs the panel polls the node once
 * a second, so it follows the other side without extra event plumbing.
 */
export function SasVerification({ userId, name }: { userId: string; name: string }) {
  const [view, setView] = useState<VerificationView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const alive = useRef(true);
  const base = `/contacts/${encodeURIComponent(userId)}/verification`;

  const refresh = useCallback(async () => {
    try {
      const v = await call("GET", base);
      if (alive.current) setView(v);
    } catch {
      /* the node may be restarting; the next poll retries */
    }
  }, [base]);

  useEffect(() => {
    alive.current = true;
    void refresh();
    return () => {
      alive.current = false;
    };
  }, [refresh]);

  useEffect(() => {
    if (!isActive(view)) return;
    const t = window.setInterval(() => void refresh(), 1000);
    return () => window.clearInterval(t);
  }, [view, refresh]);

  const act = async (suffix: string, method = "POST") => {
    setBusy(true);
    setError(null);
    try {
      const v = await call(method, base + suffix);
      if (alive.current) setView(v);
    } catch (e) {
      if (alive.current) setError(e instanceof Error ? e.message : String(e));
    } finally {
      if (alive.current) setBusy(false);
    }
  };

  const state = view?.state ?? "none";
  return (
    <div className="sas" aria-live="polite" data-testid="sas">
      <h4>Emoji verification</h4>
      {error && <p className="form-error">{error}</p>}
      {(state === "none" || state === "cancelled" || state === "verified") && (
        <>
          {state === "verified" && <p>✅ Verified: {name}&apos;s device keys match what you hold.</p>}
          {state === "cancelled" && (
            <p className="muted">
              Verification stopped{view?.cancelled_by_us ? "" : ` by ${name}`}
              {view?.cancel_code ? ` (${view.cancel_code})` : ""}.
            </p>
          )}
          <button type="button" className="btn" disabled={busy} onClick={() => void act("")}>
            {state === "none" ? "Verify with emoji" : "Verify again"}
          </button>
        </>
      )}
      {state === "waiting" && <p className="muted">Waiting for {name} to answer…</p>}
      {(state === "compare" || state === "confirmed") && view?.emoji && (
        <>
          <p>Check that {name} sees the same emoji, in the same order:</p>
          <ol className="sas-emoji" aria-label="Verification emoji">
            {view.emoji.map((e, i) => (
              <li key={i}>
                <span aria-hidden="true" className="sas-symbol">
                  {e.symbol}
                </span>
                <span className="sas-name">{e.name}</span>
              </li>
            ))}
          </ol>
          {view.decimals && view.decimals.length === 3 && <p className="muted small">Numbers: {view.decimals.join(" ")}</p>}
          {state === "compare" ? (
            <div className="sas-actions">
              <button type="button" className="btn primary" disabled={busy} onClick={() => void act("/confirm")}>
                They match
              </button>
              <button type="button" className="btn danger" disabled={busy} onClick={() => void act("/cancel")}>
                They don&apos;t match
              </button>
            </div>
          ) : (
            <p className="muted">Waiting for {name} to confirm…</p>
          )}
        </>
      )}
    </div>
  );
}
