import { useEffect, useId, useLayoutEffect, useRef, useState, type KeyboardEvent } from "react";
import type { Message } from "../api/types";
import { insertAt, loadEmoji, searchEmoji, shortcodeAt, type EmojiEntry } from "../lib/emoji";
import { plainText } from "../lib/markdown";
import { mentionAt, type Mentionable } from "../lib/spaces";
import { pastedName } from "../lib/transfers";
import { TypingThrottle } from "../lib/typing";
import { usePrefs } from "../state/prefs";
import { EmojiPicker } from "./EmojiPicker";
import { Icon } from "./Icon";

/** A pasted screenshot comes as "image.png": give it a name that says when. */
function pastedOrOwnName(f: File, now: Date): string {
  return !f.name || f.name === "image.png" ? pastedName(f.type || "image/png", now) : f.name;
}

/** The node refuses bodies over 16 KiB of UTF-8 (413 too_large); say so before sending. */
export const MAX_BODY_BYTES = 16 * 1024;
const SUGGESTIONS = 8;

/**
 * The message box of any conversation (a direct conversation today, a space channel later):
 * Enter sends, Shift+Enter adds a line, ↑ in an empty box edits the last own message, `:name`
 * suggests emoji, and the unsent text is kept per conversation across reloads.
 */
export function Composer({
  conversationId,
  label,
  replyTo,
  replyAuthor,
  onCancelReply,
  onSent,
  onEditLast,
  send,
  typing,
  onFiles,
  mentionables,
}: {
  conversationId: string;
  /** "Message Bob", "Message #general". */
  label: string;
  replyTo: Message | null;
  replyAuthor: string;
  onCancelReply(): void;
  onSent(): void;
  onEditLast(): void;
  send(body: string, replyTo: string | null): void;
  typing(active: boolean): void;
  /** Files chosen with the attach button or pasted (images); no attach button without it. */
  onFiles?(files: { file: Blob; name: string }[]): void;
  /** Space channels: who `@` may mention (members, roles, @everyone); no picker without it. */
  mentionables?(query: string): Mentionable[];
}) {
  const { prefs, usedEmoji } = usePrefs();
  const [text, setText] = useState(() => prefs.draft(conversationId));
  const [picker, setPicker] = useState(false);
  const [suggest, setSuggest] = useState<{ start: number; items: EmojiEntry[]; index: number } | null>(null);
  const [mention, setMention] = useState<{ start: number; items: Mentionable[]; index: number } | null>(null);
  const ref = useRef<HTMLTextAreaElement>(null);
  const throttle = useRef(new TypingThrottle());
  const typingRef = useRef(typing);
  typingRef.current = typing;
  const listId = useId();
  const fileInput = useRef<HTMLInputElement>(null);
  /**
   * Where the caret goes once an insertion from the keyboard (a mention, a `:name` emoji) is
   * rendered: set in the same commit, so a key typed right after lands after the insertion (a
   * frame later it could already have been typed, and the caret would jump back over it).
   */
  const caretAfterRender = useRef<number | null>(null);
  useLayoutEffect(() => {
    const at = caretAfterRender.current;
    if (at === null) return;
    caretAfterRender.current = null;
    ref.current?.setSelectionRange(at, at);
  });
  const bytes = new TextEncoder().encode(text).length;
  const tooLong = bytes > MAX_BODY_BYTES;

  // Switching conversations: load that conversation's draft, stop typing to the previous one.
  useEffect(() => {
    setText(prefs.draft(conversationId));
    setSuggest(null);
    setMention(null);
    ref.current?.focus();
    const t = throttle.current;
    return () => {
      if (t.stop()) typingRef.current(false);
    };
  }, [conversationId, prefs]);

  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight, 240)}px`;
  }, [text]);

  const update = (v: string, caret: number) => {
    setText(v);
    prefs.setDraft(conversationId, v);
    if (v.trim()) {
      if (throttle.current.keystroke(Date.now())) typing(true);
    } else if (throttle.current.stop()) {
      typing(false);
    }
    const at = mentionables ? mentionAt(v, caret) : null;
    const people = at && mentionables ? mentionables(at.query) : [];
    setMention(at && people.length ? { start: at.start, items: people, index: 0 } : null);
    const sc = shortcodeAt(v, caret);
    if (!sc) {
      setSuggest(null);
      return;
    }
    void loadEmoji().then((all) => {
      // Only if the box still holds the same query.
      const el = ref.current;
      if (!el || shortcodeAt(el.value, el.selectionStart)?.query !== sc.query) return;
      const items = searchEmoji(all, sc.query, SUGGESTIONS);
      setSuggest(items.length ? { start: sc.start, items, index: 0 } : null);
    });
  };

  const insertEmoji = (emoji: string, start?: number) => {
    const el = ref.current;
    const caret = el?.selectionStart ?? text.length;
    const from = start ?? el?.selectionStart ?? text.length;
    const to = start !== undefined ? caret : (el?.selectionEnd ?? text.length);
    const next = start !== undefined ? insertAt(text, from, to, emoji) : { text: text.slice(0, from) + emoji + text.slice(to), caret: from + emoji.length };
    usedEmoji(emoji);
    setSuggest(null);
    setText(next.text);
    prefs.setDraft(conversationId, next.text);
    if (start !== undefined) {
      // From the suggestions: the box has focus; place the caret as the text renders.
      caretAfterRender.current = next.caret;
      return;
    }
    // From the picker: focus comes back to the box after it closes.
    requestAnimationFrame(() => {
      el?.focus();
      el?.setSelectionRange(next.caret, next.caret);
    });
  };

  /** Replaces the `@query` at the caret with the mention's token. */
  const insertMention = (item: Mentionable, start: number) => {
    const el = ref.current;
    const caret = el?.selectionStart ?? text.length;
    const next = insertAt(text, start, caret, item.token);
    setMention(null);
    setText(next.text);
    prefs.setDraft(conversationId, next.text);
    caretAfterRender.current = next.caret;
  };

  const doSend = () => {
    const body = text.trim();
    if (!body || tooLong) return;
    send(body, replyTo?.id ?? null);
    if (throttle.current.stop()) typing(false);
    setText("");
    setSuggest(null);
    setMention(null);
    prefs.setDraft(conversationId, "");
    onSent();
  };

  const onKey = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (mention) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const n = mention.items.length;
        setMention({ ...mention, index: (mention.index + (e.key === "ArrowDown" ? 1 : n - 1)) % n });
        return;
      }
      if ((e.key === "Enter" || e.key === "Tab") && !e.shiftKey) {
        e.preventDefault();
        const item = mention.items[mention.index];
        if (item) insertMention(item, mention.start);
        return;
      }
      if (e.key === "Escape") {
        e.preventDefault();
        setMention(null);
        return;
      }
    }
    if (suggest) {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        e.preventDefault();
        const n = suggest.items.length;
        setSuggest({ ...suggest, index: (suggest.index + (e.key === "ArrowDown" ? 1 : n - 1)) % n });
        return;
      }
      if ((e.key === "Enter" || e.key === "Tab") && !e.shiftKey) {
        e.preventDefault();
        const item = suggest.items[suggest.index];
        if (item) insertEmoji(item.emoji, suggest.start);
        return;
      }
      if (e.key === "Escape") {
        e.preventDefault();
        setSuggest(null);
        return;
      }
    }
    if (e.key === "Tab" && e.shiftKey) {
      // The message list is one Tab stop (roving tabindex): Shift+Tab lands on its current
      // message, not on whatever link or button the newest message happens to contain.
      const stop = document.querySelector<HTMLElement>('.message-list [data-testid="message"][tabindex="0"]');
      if (stop) {
        e.preventDefault();
        stop.focus();
      }
      return;
    }
    if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      doSend();
    } else if (e.key === "Escape" && replyTo) {
      e.preventDefault();
      onCancelReply();
    } else if (e.key === "ArrowUp" && text === "") {
      e.preventDefault();
      onEditLast();
    }
  };

  const active = suggest?.items[suggest.index];
  const mentionList = `${listId}-mentions`;

  return (
    <div className="composer-wrap">
      {replyTo && (
        <div className="reply-bar">
          <span className="reply-bar-text">
            Replying to <strong>{replyAuthor}</strong>
            <span className="quote-text"> {replyTo.body ? plainText(replyTo.body) : ""}</span>
          </span>
          <button className="icon" aria-label="Cancel reply" onClick={onCancelReply}>
            ×
          </button>
        </div>
      )}
      {mention && (
        <ul className="emoji-suggest mention-suggest" id={mentionList} role="listbox" aria-label="Mention suggestions" data-testid="mention-suggest">
          {mention.items.map((item, i) => (
            <li
              key={`${item.kind}-${item.id}`}
              id={`${mentionList}-${i}`}
              role="option"
              aria-selected={i === mention.index}
              className={i === mention.index ? "active" : ""}
              onMouseDown={(e) => {
                e.preventDefault();
                insertMention(item, mention.start);
              }}
            >
              @{item.label}
              <span className="muted small"> {item.kind === "user" ? "member" : item.kind === "role" ? "role" : "notifies everyone here"}</span>
            </li>
          ))}
        </ul>
      )}
      {suggest && (
        <ul className="emoji-suggest" id={listId} role="listbox" aria-label="Emoji suggestions" data-testid="emoji-suggest">
          {suggest.items.map((item, i) => (
            <li
              key={item.emoji}
              id={`${listId}-${i}`}
              role="option"
              aria-selected={i === suggest.index}
              className={i === suggest.index ? "active" : ""}
              onMouseDown={(e) => {
                e.preventDefault();
                insertEmoji(item.emoji, suggest.start);
              }}
            >
              <span className="emoji-suggest-glyph" aria-hidden="true">
                {item.emoji}
              </span>{" "}
              :{item.shortcodes[0] ?? item.label.replace(/\s+/g, "_")}:
            </li>
          ))}
        </ul>
      )}
      <div className={`composer ${tooLong ? "invalid" : ""}`}>
        <textarea
          id="composer"
          ref={ref}
          rows={1}
          value={text}
          placeholder={label}
          aria-label={label}
          aria-describedby="composer-hint"
          aria-invalid={tooLong || undefined}
          aria-autocomplete="list"
          aria-expanded={suggest || mention ? true : undefined}
          aria-controls={mention ? mentionList : suggest ? listId : undefined}
          aria-activedescendant={
            mention ? `${mentionList}-${mention.index}` : suggest && active ? `${listId}-${suggest.index}` : undefined
          }
          onChange={(e) => update(e.target.value, e.target.selectionStart)}
          onBlur={() => {
            if (!text.trim() && throttle.current.stop()) typing(false);
          }}
          onKeyDown={onKey}
          onPaste={(e) => {
            if (!onFiles) return;
            const files = Array.from(e.clipboardData?.files ?? []);
            if (!files.length) return;
            e.preventDefault();
            const now = new Date();
            onFiles(files.map((f) => ({ file: f, name: pastedOrOwnName(f, now) })));
          }}
        />
        <div className="composer-tools">
          {onFiles && (
            <>
              <button
                type="button"
                className="icon"
                aria-label="Attach files"
                title="Attach files"
                onClick={() => fileInput.current?.click()}
                data-testid="attach"
              >
                <Icon name="attach" />
              </button>
              <input
                ref={fileInput}
                type="file"
                multiple
                hidden
                data-testid="attach-input"
                onChange={(e) => {
                  const files = Array.from(e.target.files ?? []);
                  e.target.value = "";
                  if (files.length) onFiles(files.map((f) => ({ file: f, name: f.name })));
                }}
              />
            </>
          )}
          <button
            type="button"
            className="icon"
            aria-label="Emoji"
            title="Emoji"
            aria-expanded={picker}
            onClick={() => setPicker((v) => !v)}
          >
            <Icon name="smile" />
          </button>
          {picker && (
            <EmojiPicker
              mode="insert"
              onPick={(emoji) => {
                setPicker(false);
                insertEmoji(emoji);
              }}
              onClose={() => {
                setPicker(false);
                ref.current?.focus();
              }}
            />
          )}
        </div>
        <button className="send" aria-label="Send message" onClick={doSend} disabled={!text.trim() || tooLong}>
          <Icon name="send" />
        </button>
      </div>
      <p id="composer-hint" className={`hint ${tooLong ? "form-error" : "muted"}`}>
        {tooLong
          ? `Too long: ${bytes} bytes, the limit is ${MAX_BODY_BYTES}.`
          : "Enter to send · Shift+Enter for a new line · ↑ to edit your last message · :name for emoji · **bold** *italic* ||spoiler||"}
      </p>
    </div>
  );
}
