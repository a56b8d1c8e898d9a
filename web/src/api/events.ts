// The events WebSocket with reconnect. Events are not replayed by the node, so every (re)open
// triggers `onOpen`, where the caller refetches state before applying further events.
import { backoffDelay } from "../lib/backoff";
import type { ApiEvent } from "./types";

export interface EventSocketHandlers {
  onEvent(event: ApiEvent): void;
  onOpen(): void;
  onState(state: "connecting" | "open" | "reconnecting"): void;
}

export class EventSocket {
  private ws: WebSocket | null = null;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  private readonly url: string;
  private readonly handlers: EventSocketHandlers;

  constructor(url: string, handlers: EventSocketHandlers) {
    this.url = url;
    this.handlers = handlers;
  }

  start(): void {
    this.closed = false;
    this.handlers.onState("connecting");
    this.connect();
  }

  stop(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onclose = ws.onerror = ws.onmessage = null;
      ws.close();
    }
  }

  /** Skips the remaining backoff, e.g. right after unlocking, when the node is surely up. */
  reconnectNow(): void {
    if (this.closed || this.ws) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.attempt = 0;
    this.connect();
  }

  private connect(): void {
    if (this.closed) return;
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.handlers.onState("open");
      this.handlers.onOpen();
    };
    ws.onmessage = (e: MessageEvent) => {
      if (typeof e.data !== "string") return;
      let event: unknown;
      try {
        event = JSON.parse(e.data);
      } catch {
        return; // A malformed frame is ignored rather than breaking the UI.
      }
      if (event && typeof event === "object" && typeof (event as { type?: unknown }).type === "string") {
        this.handlers.onEvent(event as ApiEvent);
      }
    };
    ws.onerror = () => {
      // onclose follows and schedules the reconnect; nothing to log (the browser already does).
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.scheduleReconnect();
    };
  }

  private scheduleReconnect(): void {
    if (this.closed) return;
    this.handlers.onState("reconnecting");
    const delay = backoffDelay(this.attempt++, Math.random());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, delay);
  }
}
