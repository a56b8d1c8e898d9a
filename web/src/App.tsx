import { Main } from "./components/Main";
import { Onboarding } from "./components/Onboarding";
import { useStore } from "./state/store";

export function App() {
  const { state } = useStore();
  switch (state.node) {
    case "unknown":
      return (
        <div className="splash" role="status" aria-live="polite">
          <div className="logo" aria-hidden="true">◎</div>
          <p>Connecting to your node…</p>
          {state.notices.length > 0 && <p className="form-error">{state.notices[state.notices.length - 1]!.text}</p>}
        </div>
      );
    case "unauthorized":
      return (
        <div className="splash" role="alert">
          <div className="logo" aria-hidden="true">◎</div>
          <h1>This page needs its launch link</h1>
          <p>
            Open the address that <code>discordopus</code> printed when it started (it ends in <code>?token=…</code>). A new
            token is made on every launch.
          </p>
          <p>
            If this tab worked a moment ago: the node restarted, or another node's link was opened in this browser
            (browsers share one sign-in cookie across ports, so give each identity its own browser profile or private window).
          </p>
        </div>
      );
    case "no_identity":
      return <Onboarding mode="create" />;
    case "locked":
      return <Onboarding mode="unlock" />;
    case "ready":
      return <Main />;
  }
}
