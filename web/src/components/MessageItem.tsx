import { memo, useEffect, useRef, useState, type KeyboardEvent } from "react";
import type { LinkPreview, Message } from "../api/types";
import { plainText } from "../lib/markdown";
import { deliveryLabel } from "../lib/messages";
import { usePrefs } from "../state/prefs";
import { useStore } from "../state/store";
import { Avatar } from "./Avatar";
import { EmojiPicker } from "./EmojiPicker";
import { FileCard } from "./FileCard";
import { Icon } from "./Icon";
import { RichText } from "./RichText";

function time(ts: number): string {
  return new Date(ts).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}
function fullTime(ts: number): string {
  return new Date(ts).toLocaleString();
}

const STATE_ICON: Record<Message["state"], string> = {
  pending: "◷",
  sent: "✓",
  delivered: "✓✓",
  read: "✓✓",
  failed: "!",
};

interface Props {
  message: Message;
  first: boolean;
  author: string;
  /** The author's avatar image (a data: URL from their profile), if they sent one. */
  avatar?: string | null;
  meId: string;
  replied: Message | undefined;
  repliedAuthor(m: Message): string;
  editing: boolean;
  highlighted: boolean;
  /** The one message in the list reachable with Tab (roving tabindex; arrows move between messages). */
  tabStop: boolean;
  onReply(m: Message): void;
  onEdit(m: Message): void;
  /** `cancelled`: Escape or Cancel; focus goes back to the message. */
  onEditDone(m: Message, cancelled: boolean): void;
  /** Scrolls to (and if needed pages back to) another message: reply quotes use it. */
  onJump(id: string): void;
  /** Opens the profile card of a user (clicked name or avatar). */
  onProfile(userId: string, anchor: HTMLElement): void;
  /** Space channels: we may delete others' messages too (manage messages). */
  canModerate?: boolean;
  /** Space channels: the text as shown (mention tokens as `@name`). */
  display?(body: string): string;
  /** Space channels: the message mentions us (highlighted). */
  mentionsMe?: boolean;
}

export const MessageItem = memo(function MessageItem(p: Props) {
  const { actions } = useStore();
  const { usedEmoji } = usePrefs();
  const m = p.message;
  const reactButton = useRef<HTMLButtonElement>(null);
  const [picker, setPicker] = useState(false);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const local = m.id.startsWith("local-");
  const canAct = !m.deleted && !local;
  const mayDelete = m.outgoing || !!p.canModerate;

  // A node's own entry (a call that ended, was missed or declined): a line with no author.
  if (m.kind === "system") {
    return (
      <div
        id={`msg-${m.id}`}
        className={`message system-entry ${p.highlighted ? "highlight" : ""}`}
        tabIndex={p.tabStop ? 0 : -1}
        aria-label={`${m.body ?? ""}, ${fullTime(m.sent_at)}`}
        data-testid="message"
        data-message-id={m.id}
        data-kind="system"
      >
        <Icon name="phone" size={16} />
        <span className="body" data-testid="message-body">
          {m.body}
        </span>
        <time dateTime={new Date(m.sent_at).toISOString()} title={fullTime(m.sent_at)}>
          {time(m.sent_at)}
        </time>
      </div>
    );
  }

  // A div: the list's row (an <li> placed by the virtualiser) holds it with its separators.
  return (
    <div
      id={`msg-${m.id}`}
      className={`message ${p.first ? "first" : "cont"} ${p.highlighted ? "highlight" : ""} ${m.outgoing ? "outgoing" : ""} ${p.mentionsMe ? "mentions-me" : ""}`}
      data-mention={p.mentionsMe ? "true" : undefined}
      tabIndex={p.tabStop ? 0 : -1}
      aria-label={`${p.author}, ${fullTime(m.sent_at)}`}
      aria-keyshortcuts={canAct ? (m.outgoing ? "R E Delete" : mayDelete ? "R Delete" : "R") : undefined}
      onKeyDown={(e) => {
        // Shortcuts apply only when the message itself has focus, not its buttons or edit box.
        if (e.target !== e.currentTarget || !canAct || p.editing) return;
        const k = e.key.toLowerCase();
        if (k === "r") {
          e.preventDefault();
          p.onReply(m);
        } else if (k === "e" && m.outgoing) {
          e.preventDefault();
          p.onEdit(m);
        } else if ((e.key === "Delete" || e.key === "Backspace") && mayDelete) {
          e.preventDefault();
          setConfirmDelete(true);
        }
      }}
      data-testid="message"
      data-message-id={m.id}
      data-state={m.state}
    >
      {p.first ? (
        <button className="avatar-button" aria-label={`Profile of ${p.author}`} tabIndex={-1} onClick={(e) => p.onProfile(m.sender, e.currentTarget)}>
          <Avatar id={m.sender} name={p.author} size={36} image={p.avatar} />
        </button>
      ) : (
        <time className="gutter-time" dateTime={new Date(m.sent_at).toISOString()} aria-hidden="true">
          {time(m.sent_at)}
        </time>
      )}
      <div className="message-main">
        {p.first && (
          <div className="message-head">
            <button className="author link-like" onClick={(e) => p.onProfile(m.sender, e.currentTarget)}>
              {p.author}
            </button>
            <time dateTime={new Date(m.sent_at).toISOString()} title={fullTime(m.sent_at)}>
              {time(m.sent_at)}
            </time>
          </div>
        )}
        {m.reply_to && (
          <button
            className="reply-quote"
            onClick={() => m.reply_to && p.onJump(m.reply_to)}
            title="Jump to the message this replies to"
            data-testid="reply-quote"
          >
            <span className="sr-only">In reply to </span>
            {p.replied ? (
              <>
                <span className="author">{p.repliedAuthor(p.replied)}</span>{" "}
                <span className="quote-text">{p.replied.deleted ? "Message deleted" : plainText(p.display ? p.display(p.replied.body ?? "") : (p.replied.body ?? ""))}</span>
              </>
            ) : (
              <span className="muted">an earlier message</span>
            )}
          </button>
        )}
        {p.editing ? (
          <EditBox message={m} onDone={(cancelled) => p.onEditDone(m, cancelled)} />
        ) : m.deleted ? (
          <p className="body deleted" data-testid="message-body">
            This message was deleted.
          </p>
        ) : (
          <div className="body" data-testid="message-body">
            {m.kind === "file" ? (
              <FileCard id={m.id} name={m.body ?? "file"} />
            ) : (
              <RichText text={p.display ? p.display(m.body ?? "") : (m.body ?? "")} />
            )}
            {m.edited_at !== null && (
              <span className="edited" title={`Edited ${fullTime(m.edited_at)}`}>
                {" "}
                (edited)
              </span>
            )}
          </div>
        )}
        {m.preview && !m.deleted && <PreviewCard preview={m.preview} />}
        {m.outgoing && (
          <span className={`delivery delivery-${m.state}`} title={deliveryLabel(m.state)} data-testid="delivery">
            <span aria-hidden="true">{STATE_ICON[m.state]}</span>
            <span className="sr-only">{deliveryLabel(m.state)}</span>
          </span>
        )}
        {local && m.state === "failed" && (
          <div className="confirm" role="group" aria-label="Message not sent">
            <span className="form-error">Not sent.</span>
            <button onClick={() => void actions.retry(m)}>Retry</button>
            <button onClick={() => actions.discard(m.id)}>Discard</button>
          </div>
        )}
        {m.reactions.length > 0 && !m.deleted && (
          <div className="reactions" role="group" aria-label="Reactions">
            {m.reactions.map((r) => (
              <button
                key={r.emoji}
                className={`reaction ${r.mine ? "mine" : ""}`}
                aria-pressed={r.mine}
                aria-label={`${r.emoji} ${r.count}${r.mine ? ", including you" : ""}. ${r.mine ? "Remove" : "Add"} reaction`}
                onClick={() => void actions.toggleReaction(m, r.emoji)}
                data-testid="reaction"
              >
                <span aria-hidden="true">{r.emoji}</span> <span aria-hidden="true">{r.count}</span>
              </button>
            ))}
          </div>
        )}
        {confirmDelete && (
          <div className="confirm" role="alertdialog" aria-label="Delete message">
            <span>Delete this message for everyone?</span>
            <button
              className="danger"
              autoFocus
              onClick={() => {
                setConfirmDelete(false);
                void actions.remove(m.id);
              }}
            >
              Delete
            </button>
            <button onClick={() => setConfirmDelete(false)}>Cancel</button>
          </div>
        )}
      </div>
      {canAct && !p.editing && (
        <div className="message-actions" role="toolbar" aria-label="Message actions">
          <button
            ref={reactButton}
            className="icon"
            aria-label="Add reaction"
            title="Add reaction"
            aria-expanded={picker}
            onClick={() => setPicker((v) => !v)}
          >
            <Icon name="smile" size={18} />
          </button>
          <button className="icon" aria-label="Reply" title="Reply" onClick={() => p.onReply(m)}>
            <Icon name="reply" size={18} />
          </button>
          {m.outgoing && (
            <button className="icon" aria-label="Edit" title="Edit" onClick={() => p.onEdit(m)}>
              <Icon name="edit" size={18} />
            </button>
          )}
          {mayDelete && (
            <button className="icon danger-text" aria-label="Delete" title={m.outgoing ? "Delete" : "Delete (you manage messages here)"} onClick={() => setConfirmDelete(true)}>
              <Icon name="trash" size={18} />
            </button>
          )}
          {picker && (
            <EmojiPicker
              onPick={(emoji) => {
                setPicker(false);
                usedEmoji(emoji);
                const mine = m.reactions.some((r) => r.emoji === emoji && r.mine);
                if (!mine) void actions.toggleReaction(m, emoji);
                reactButton.current?.focus();
              }}
              onClose={() => {
                setPicker(false);
                reactButton.current?.focus();
              }}
            />
          )}
        </div>
      )}
    </div>
  );
});

/**
 * A link preview the sender's node fetched and sent inside the encrypted message.
 * Its image is a data: URL carried in the message; nothing is fetched here.
 */
function PreviewCard({ preview }: { preview: LinkPreview }) {
  const image = preview.image?.startsWith("data:image/") ? preview.image : null;
  let host = preview.url;
  try {
    host = new URL(preview.url).host;
  } catch {
    // keep the raw text
  }
  return (
    <div className="preview-card" data-testid="link-preview">
      <div className="preview-text">
        <span className="preview-host muted small">{host}</span>
        {preview.title && <strong className="preview-title">{preview.title}</strong>}
        {preview.description && <span className="preview-desc small">{preview.description}</span>}
      </div>
      {image && <img className="preview-image" src={image} alt="" width={80} height={80} />}
    </div>
  );
}

function EditBox({ message, onDone }: { message: Message; onDone(cancelled: boolean): void }) {
  const { actions } = useStore();
  const [text, setText] = useState(message.body ?? "");
  const ref = useRef<HTMLTextAreaElement>(null);
  useEffect(() => {
    const el = ref.current;
    if (el) {
      // Opened with ↑ from the message box, the edited message may be far up: bring it into view.
      el.scrollIntoView({ block: "nearest" });
      el.focus({ preventScroll: true });
      el.setSelectionRange(el.value.length, el.value.length);
    }
  }, []);
  const save = () => {
    const body = text.trim();
    if (body && body !== message.body) void actions.edit(message.id, body);
    onDone(false);
  };
  const onKey = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault();
      save();
    } else if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      onDone(true);
    }
  };
  return (
    <div className="edit-box">
      <textarea
        ref={ref}
        aria-label="Edit message"
        value={text}
        rows={Math.min(8, text.split("\n").length)}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={onKey}
      />
      <p className="hint muted">
        Escape to <button className="link" onClick={() => onDone(true)}>cancel</button> · Enter to{" "}
        <button className="link" onClick={save}>save</button>
      </p>
    </div>
  );
}
