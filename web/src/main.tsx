import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { StoreProvider } from "./state/store";
import { CallsProvider } from "./state/calls";
import { VoiceProvider } from "./state/voice";
import { TransfersProvider } from "./state/transfers";
import "./styles.css";

// Apply the last theme before the first paint so a light-theme user does not see a dark flash.
try {
  const saved = localStorage.getItem("dopus-theme");
  if (saved === "light" || saved === "dark") document.documentElement.dataset.theme = saved;
} catch {
  // Storage disabled: keep the default dark theme.
}

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <StoreProvider>
        <TransfersProvider>
          <CallsProvider>
            <VoiceProvider>
              <App />
            </VoiceProvider>
          </CallsProvider>
        </TransfersProvider>
      </StoreProvider>
    </StrictMode>,
  );
}
