import { useEffect, useRef, useState } from "react";
import { api } from "../api/client";
import type { SearchResult } from "../api/types";
import { snippetParts } from "../lib/format";
import { describeError, useStore } from "../state/store";

/** Debounce so a search is not sent per keystroke. */
const SEARCH_DELAY_MS = 250;
/** Hits per page, and the most today's node answers in one call (docs/api.md: limit 1..100). */
const PAGE = 25;
const NODE_MAX_LIMIT = 100;

/** "25 results", "100+ results", "3 of 240 results" (the node counts every match). */
export function resultCount(shown: number, total: number | undefined, more: boolean): string {
  if (shown === 0) return "No messages match.";
  const noun = (n: number) => `result${n === 1 ? "" : "s"}`;
  if (total !== undefined && total > shown) return `${shown} of ${total} ${noun(total)}`;
  if (total !== undefined) return `${total} ${noun(total)}`;
  return more ? `${shown}+ ${noun(shown)}` : `${shown} ${noun(shown)}`;
}

export function SearchPanel({
  initial,
  onClose,
  onPick,
}: {
  initial: string;
  onClose(): void;
  onPick(conversation: string, id: string): void;
}) {
  const { state } = useStore();
  const [q, setQ] = useState(initial);
  const [results, setResults] = useState<SearchResult[] | null>(null);
  const [total, setTotal] = useState<number | undefined>(undefined);
  const [next, setNext] = useState<{ limit: number; before?: number } | null>(null);
  const [loadingMore, setLoadingMore] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const input = useRef<HTMLInputElement>(null);
  /** Focus goes back where it was when the panel closes (Escape or ×). */
  const returnTo = useRef<Element | null>(typeof document !== "undefined" ? document.activeElement : null);

  useEffect(() => input.current?.focus(), []);

  const close = () => {
    onClose();
    const back = returnTo.current;
    if (back instanceof HTMLElement && back.isConnected) back.focus();
    else document.getElementById("composer")?.focus();
  };

  /** What to ask for after an answer: the node's cursor if it sends one, else a bigger limit. */
  const afterAnswer = (got: number, limit: number, nextBefore: number | undefined): { limit: number; before?: number } | null => {
    if (nextBefore !== undefined) return { limit: PAGE, before: nextBefore };
    if (got >= limit && limit < NODE_MAX_LIMIT) return { limit: Math.min(NODE_MAX_LIMIT, limit + PAGE) };
    return null;
  };

  useEffect(() => {
    const query = q.trim();
    if (!query) {
      setResults(null);
      setNext(null);
      return;
    }
    let live = true;
    const t = setTimeout(() => {
      api.search(query, PAGE).then(
        (r) => {
          if (!live) return;
          setResults(r.results);
          setTotal(r.total);
          setNext(afterAnswer(r.results.length, PAGE, r.next_before));
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

  const more = async () => {
    if (!next || !results) return;
    setLoadingMore(true);
    try {
      const r = await api.search(q.trim(), next.limit, next.before);
      if (next.before !== undefined) {
        const seen = new Set(results.map((x) => x.message.id));
        setResults([...results, ...r.results.filter((x) => !seen.has(x.message.id))]);
      } else {
        setResults(r.results);
      }
      setTotal(r.total);
      setNext(afterAnswer(r.results.length, next.limit, r.next_before));
    } catch (e) {
      setError(describeError(e));
    } finally {
      setLoadingMore(false);
    }
  };

  const nameOf = (conversation: string, outgoing: boolean) =>
    outgoing ? "You" : (state.contacts[conversation]?.display_name ?? "Unknown");

  return (
    <aside
      className="panel"
      aria-labelledby="search-heading"
      onKeyDown={(e) => {
        if (e.key === "Escape") {
          e.preventDefault();
          close();
        }
      }}
    >
      <header className="panel-header">
        <h2 id="search-heading">Search</h2>
        <button className="icon" aria-label="Close search" onClick={close}>
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
          <p className="muted small" role="status" data-testid="search-count">
            {resultCount(results.length, total, next !== null)}
          </p>
        )}
        <ul className="search-results">
          {results?.map((r) => (
            <li key={r.message.id}>
              <button className="search-result" onClick={() => onPick(r.message.conversation, r.message.id)}>
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
        {next && results && results.length > 0 && (
          <button onClick={() => void more()} disabled={loadingMore} data-testid="search-more">
            {loadingMore ? "Loading…" : "Show more results"}
          </button>
        )}
        {!next && results && results.length >= NODE_MAX_LIMIT && total === undefined && (
          <p className="muted small">
            Showing the newest {NODE_MAX_LIMIT}. Narrow the search to find older messages (paging further needs a newer node).
          </p>
        )}
      </div>
    </aside>
  );
}
