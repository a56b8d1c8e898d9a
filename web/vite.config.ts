import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// The node serves dist/ at `/` and the API under `/api/v1`, so the UI only ever uses relative URLs.
// `npm run dev` proxies the API to a running node (DOPUS_API, e.g. http://127.0.0.1:41234). The node
// refuses foreign Host and Origin headers, so the proxy presents the node's own origin.
const api = process.env.DOPUS_API ?? "http://127.0.0.1:8080";

export default defineConfig({
  base: "/",
  plugins: [react()],
  build: {
    outDir: "dist",
    assetsDir: "assets",
    sourcemap: false,
    // The emoji data (emojibase, ~570 kB) is a lazy chunk loaded when a picker opens or a ':' is
    // typed; it is the only chunk above the default 500 kB warning.
    chunkSizeWarningLimit: 600,
  },
  server: {
    host: "127.0.0.1",
    proxy: {
      "/api": {
        target: api,
        ws: true,
        changeOrigin: true,
        configure: (proxy) => {
          proxy.on("proxyReq", (req) => req.setHeader("origin", api));
          proxy.on("proxyReqWs", (req) => req.setHeader("origin", api));
        },
      },
    },
  },
  test: {
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
    environment: "node",
  },
});
