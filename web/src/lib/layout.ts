// The layout breakpoints, one place for CSS and logic (styles.css uses the same widths).
//
//  - wide   (≥ 1000 px): sidebar, conversation, and a side panel beside them;
//  - narrow (700–999 px): sidebar and conversation; panels slide over the conversation;
//  - phone  (< 700 px, down to 320 px): one pane at a time, list or conversation, with a back
//    button; panels cover the screen; touch targets are at least 44 px.

export type LayoutMode = "wide" | "narrow" | "phone";

/** The side panel beside (or over) the conversation: the contact's details or search. */
export type Panel = { kind: "details" } | { kind: "search"; query: string } | null;

export const PHONE_MAX = 699;
export const NARROW_MAX = 999;
/** The smallest width the UI is designed for (iPhone SE 1st gen); nothing scrolls sideways from here up. */
export const MIN_WIDTH = 320;
/** The smallest touch target on phones (WCAG 2.5.5, Apple's HIG). */
export const TOUCH_TARGET = 44;

export function layoutFor(width: number): LayoutMode {
  if (width <= PHONE_MAX) return "phone";
  if (width <= NARROW_MAX) return "narrow";
  return "wide";
}

/** On a phone one pane shows: the conversation list, or the open conversation (or home). */
export type PhonePane = "list" | "main";

/** Which panes are on screen for a layout and, on phones, the pane the user navigated to. */
export function visiblePanes(mode: LayoutMode, pane: PhonePane): { sidebar: boolean; main: boolean } {
  if (mode !== "phone") return { sidebar: true, main: true };
  return { sidebar: pane === "list", main: pane === "main" };
}
