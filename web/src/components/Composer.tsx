import { useEffect, useRef, useState, type KeyboardEvent } from "react";
import type { Contact, Message } from "../api/types";
import { TypingThrottle } from "../lib/typing";
import { useStore } from "../state/store";
import { Icon } from "./Icon";

/** The node refuses bodies over 16 KiB of UTF-8 (413 too_large); say so before sending. */
export const MAX_BODY_BYTES = 16 * 1024;

export function Composer({
  peer,
  replyTo,
  replyAuthor,
  onCancelReply,
  onSent,
  onEditLast,
}: {
  peer: Contact;
  replyTo: Message | null;
  replyAuthor: string;
  onCancelReply(): void;
  onSent(): void;
  onEditLast(): void;
}) {
  const { actions } = useStore();
  const [text, setText] = useState("");
  const ref = useRef<HTMLTextAreaElement>(null);
  const throttle = useRef(new TypingThrottle());
  const peerId = peer.user_id;
  const bytes = new TextEncoder().encode(text).length;
  const tooLong = bytes > MAX_BODY_BYTES;

  // Switching conversations: say we stopped typing to the previous peer and start fresh.
  useEffect(() => {
    setText("");
    ref.current?.focus();
    const t = throttle.current;
    return () => {
      if (t.stop()) actions.typing(peerId, false);
    };
  }, [peerId, actions]);

  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${Math.min(el.scrollHeight, 240)}px`;
  }, [text]);

  const send = () => {
    const body = text.trim();
    if (!body || tooLong) return;
    void actions.send(peerId, body, replyTo?.id ?? null);
    if (throttle.current.stop()) actions.typing(peerId, false);
    setText("");
    onSent();
  };

  const onKey = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      send();
    } else if (e.key === "Escape" && replyTo) {
      e.preventDefault();
      onCancelReply();
    } else if (e.key === "ArrowUp" && text === "") {
      e.preventDefault();
      onEditLast();
    }
  };

  return (
    <div className="composer-wrap">
      {replyTo && (
        <div className="reply-bar">
          <span>
            Replying to <strong>{replyAuthor}</strong>
            <span className="quote-text"> {replyTo.body}</span>
          </span>
          <button className="icon" aria-label="Cancel reply" onClick={onCancelReply}>
            ×
          </button>
        </div>
      )}
      <div className={`composer ${tooLong ? "invalid" : ""}`}>
        <textarea
          id="composer"
          ref={ref}
          rows={1}
          value={text}
          placeholder={`Message ${peer.display_name}`}
          aria-label={`Message ${peer.display_name}`}
          aria-describedby="composer-hint"
          aria-invalid={tooLong || undefined}
          onChange={(e) => {
            const v = e.target.value;
            setText(v);
            if (v.trim()) {
              if (throttle.current.keystroke(Date.now())) actions.typing(peerId, true);
            } else if (throttle.current.stop()) {
              actions.typing(peerId, false);
            }
          }}
          onBlur={() => {
            if (!text.trim() && throttle.current.stop()) actions.typing(peerId, false);
          }}
          onKeyDown={onKey}
        />
        <button className="send" aria-label="Send message" onClick={send} disabled={!text.trim() || tooLong}>
          <Icon name="send" />
        </button>
      </div>
      <p id="composer-hint" className={`hint ${tooLong ? "form-error" : "muted"}`}>
        {tooLong
          ? `Too long: ${bytes} bytes, the limit is ${MAX_BODY_BYTES}.`
          : "Enter to send · Shift+Enter for a new line · ↑ to edit your last message"}
      </p>
    </div>
  );
}
