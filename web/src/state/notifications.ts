// The effects of lib/notify.ts: browser notifications, a short sound, the tab title and a
// favicon with the unread count.
import { useEffect, useRef } from "react";
import type { ApiEvent } from "../api/types";
import { badgeText, notificationFor, pageTitle, type NotifyContext } from "../lib/notify";

/** Asks for the browser's permission, if it was never asked. Call from a user gesture. */
export async function requestNotificationPermission(): Promise<NotificationPermission | "unsupported"> {
  if (typeof Notification === "undefined") return "unsupported";
  if (Notification.permission !== "default") return Notification.permission;
  try {
    return await Notification.requestPermission();
  } catch {
    return Notification.permission;
  }
}

let audio: AudioContext | null = null;
let chimes = 0;

/** Two short soft tones, made with WebAudio (no sound file to ship). */
export function playChime(): void {
  try {
    audio ??= new AudioContext();
    const ctx = audio;
    if (ctx.state === "suspended") void ctx.resume();
    const now = ctx.currentTime;
    [880, 1320].forEach((freq, i) => {
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = "sine";
      osc.frequency.value = freq;
      const t = now + i * 0.09;
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(0.12, t + 0.01);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.18);
      osc.connect(gain).connect(ctx.destination);
      osc.start(t);
      osc.stop(t + 0.2);
    });
    chimes++;
    // Visible to the browser tests (and harmless): how many chimes this page played.
    document.documentElement.dataset.chimes = String(chimes);
  } catch {
    // No audio device or autoplay refused: the notification still shows.
  }
}

/**
 * Shows a notification (and plays the chime) for each new message event that deserves one.
 * `ctx` is read at event time, so it may change between renders without re-subscribing.
 */
export function useMessageNotifications(
  subscribe: (f: (e: ApiEvent) => void) => () => void,
  ctx: () => NotifyContext,
  open: (conversation: string) => void,
): void {
  const ctxRef = useRef(ctx);
  ctxRef.current = ctx;
  const openRef = useRef(open);
  openRef.current = open;
  useEffect(
    () =>
      subscribe((e) => {
        if (e.type !== "message") return;
        const plan = notificationFor(e.message, ctxRef.current());
        if (!plan) return;
        if (plan.sound) playChime();
        if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
        try {
          const n = new Notification(plan.title, { body: plan.body, tag: plan.tag });
          n.onclick = () => {
            window.focus();
            openRef.current(plan.conversation);
            n.close();
          };
        } catch {
          // Some platforms only allow notifications from a service worker; the title still counts.
        }
      }),
    [subscribe],
  );
}

function drawFavicon(text: string): string {
  const c = document.createElement("canvas");
  c.width = c.height = 64;
  const g = c.getContext("2d");
  if (!g) return "data:,";
  g.fillStyle = "#5865f2";
  g.beginPath();
  g.arc(32, 32, 28, 0, Math.PI * 2);
  g.fill();
  g.strokeStyle = "#fff";
  g.lineWidth = 6;
  g.beginPath();
  g.arc(32, 32, 13, 0, Math.PI * 2);
  g.stroke();
  if (text) {
    g.fillStyle = "#da373c";
    g.beginPath();
    g.arc(44, 20, 20, 0, Math.PI * 2);
    g.fill();
    g.fillStyle = "#fff";
    g.font = "bold 26px sans-serif";
    g.textAlign = "center";
    g.textBaseline = "middle";
    g.fillText(text, 44, 21);
  }
  return c.toDataURL("image/png");
}

/** Keeps the tab title and the favicon in step with the unread total. */
export function useUnreadBadge(unread: number): void {
  useEffect(() => {
    document.title = pageTitle(unread);
    let link = document.querySelector<HTMLLinkElement>('link[rel="icon"]');
    if (!link) {
      link = document.createElement("link");
      link.rel = "icon";
      document.head.appendChild(link);
    }
    link.href = drawFavicon(badgeText(unread));
    link.dataset.unread = String(unread);
  }, [unread]);
}
