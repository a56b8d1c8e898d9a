import { useEffect, useRef, useState } from "react";
import { api } from "../api/client";
import type { SearchResult } from "../api/types";
import { snippetParts } from "../lib/format";
import { describeError, useStore } from "../state/store";

/** Debounce so a search is not sent per keystroke. */
const SEARCH_DELAY_MS = 250;

export function SearchPanel({ initial, onClose, onPick }: { initial: string; onClose(): void; onPick(id: string): void }) {
  const { state, actions } = useStore();
  const [q, setQ] = useState(initial);
  const [results, setResults] = useState<SearchResult[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const input = useRef<HTMLInputElement>(null);

  useEffect(() => input.current?.focus(), []);

  useEffect(() => {
    const query = q.trim();
    if (!query) {
      setResults(null);
      return;
    }
    let live = true;
    const t = setTimeout(() => {
      api.search(query).then(
        (r) => {
          if (!live) return;
          setResults(r.results);
          setError(null);
        },
        (e) => live && setError(describeError(e)),
      );
    }, SEARCH_DELAY_MS);
    return () => {
      live = false;
      clearTimeout(t);
    };
  }, [q]);

  const nameOf = (conversation: string, outgoing: boolean) =>
    outgoing ? "You" : (state.contacts[conversation]?.display_name ?? "Unknown");

  return (
    <aside className="panel" aria-labelledby="search-heading" onKeyDown={(e) => e.key === "Escape" && onClose()}>
      <header className="panel-header">
        <h2 id="search-heading">Search</h2>
        <button className="icon" aria-label="Close search" onClick={onClose}>
          ×
        </button>
      </header>
      <div className="panel-body">
        <input
          ref={input}
          type="search"
          className="search-input"
          aria-label="Search all messages"
          placeholder="Search all messages"
          value={q}
          onChange={(e) => setQ(e.target.value)}
        />
        {error && <p className="form-error">{error}</p>}
        {results && (
          <p className="muted small" role="status">
            {results.length === 0 ? "No messages match." : `${results.length} result${results.length === 1 ? "" : "s"}`}
          </p>
        )}
        <ul className="search-results">
          {results?.map((r) => (
            <li key={r.message.id}>
              <button
                className="search-result"
                onClick={() => {
                  actions.open(r.message.conversation);
                  onPick(r.message.id);
                }}
              >
                <span className="search-meta">
                  <strong>{nameOf(r.message.conversation, r.message.outgoing)}</strong>
                  {!r.message.outgoing ? "" : ` → ${state.contacts[r.message.conversation]?.display_name ?? ""}`}
                  <time className="muted">{new Date(r.message.sent_at).toLocaleString()}</time>
                </span>
                <span className="snippet">
                  {r.highlighted
                    ? snippetParts(r.highlighted).map((p, i) => (p.match ? <mark key={i}>{p.text}</mark> : <span key={i}>{p.text}</span>))
                    : r.snippet}
                </span>
              </button>
            </li>
          ))}
        </ul>
      </div>
    </aside>
  );
}
