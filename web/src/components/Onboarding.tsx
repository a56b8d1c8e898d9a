import { useId, useState, type FormEvent } from "react";
import { ApiError } from "../api/client";
import { describeError, useStore } from "../state/store";

/** Minimum passphrase length; the node derives the storage key from it, so short ones are refused here. */
export const MIN_PASSPHRASE = 8;

export function Onboarding({ mode }: { mode: "create" | "unlock" }) {
  const { actions, state } = useStore();
  const [name, setName] = useState("");
  const [pass, setPass] = useState("");
  const [confirm, setConfirm] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const ids = { name: useId(), pass: useId(), confirm: useId(), err: useId() };

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setError(null);
    if (mode === "create") {
      if (!name.trim()) return setError("Choose a display name.");
      if (pass.length < MIN_PASSPHRASE) return setError(`Use a passphrase of at least ${MIN_PASSPHRASE} characters.`);
      if (pass !== confirm) return setError("The two passphrases differ.");
    } else if (!pass) {
      return setError("Enter your passphrase.");
    }
    setBusy(true);
    try {
      if (mode === "create") await actions.createIdentity(name.trim(), pass);
      else await actions.unlock(pass);
    } catch (err) {
      setError(
        err instanceof ApiError && err.code === "wrong_passphrase"
          ? "Wrong passphrase. Try again."
          : describeError(err),
      );
      setPass("");
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="onboarding">
      <form className="card onboarding-card" onSubmit={submit} aria-describedby={error ? ids.err : undefined} noValidate>
        <div className="logo" aria-hidden="true">◎</div>
        <h1>{mode === "create" ? "Welcome to DiscordOpus" : "Welcome back"}</h1>
        <p className="muted">
          {mode === "create"
            ? "Your identity is a key pair made on this device. Your passphrase encrypts everything stored here; it cannot be recovered."
            : `Unlock ${state.displayName || "your identity"} with your passphrase.`}
        </p>
        {mode === "create" && (
          <label htmlFor={ids.name}>
            Display name
            <input
              id={ids.name}
              name="display_name"
              autoComplete="nickname"
              value={name}
              maxLength={64}
              onChange={(e) => setName(e.target.value)}
              autoFocus
              required
            />
          </label>
        )}
        <label htmlFor={ids.pass}>
          Passphrase
          <input
            id={ids.pass}
            name="passphrase"
            type="password"
            autoComplete={mode === "create" ? "new-password" : "current-password"}
            value={pass}
            onChange={(e) => setPass(e.target.value)}
            autoFocus={mode === "unlock"}
            required
          />
        </label>
        {mode === "create" && (
          <label htmlFor={ids.confirm}>
            Confirm passphrase
            <input
              id={ids.confirm}
              name="confirm"
              type="password"
              autoComplete="new-password"
              value={confirm}
              onChange={(e) => setConfirm(e.target.value)}
              required
            />
          </label>
        )}
        {error && (
          <p id={ids.err} className="form-error" role="alert">
            {error}
          </p>
        )}
        <button className="primary" type="submit" disabled={busy}>
          {busy ? "Please wait…" : mode === "create" ? "Create identity" : "Unlock"}
        </button>
      </form>
    </main>
  );
}
