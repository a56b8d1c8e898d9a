// Search in one space (docs/api.md, `GET /spaces/{id}/search`): the node searches the
// decrypted text of that space's channels; a hit opens its channel at the message.
import { useEffect, useRef, useState } from "react";
import { ApiError } from "../api/client";
import { spacesApi } from "../api/spaces";
import type { SearchResult, Space } from "../api/types";
import { snippetParts } from "../lib/format";
import { showMentions } from "../lib/mentions";
import { describeError } from "../state/store";

const DELAY_MS = 250;

export function SpaceSearch({
  space,
  nameOf,
  onPick,
  onClose,
}: {
  space: Space;
  nameOf(id: string): string;
  onPick(channel: string, message: string): void;
  onClose(): void;
}) {
  const [q, setQ] = useState("");
  const [results, setResults] = useState<SearchResult[] | null>(null);
  const [total, setTotal] = useState(0);
  const [error, setError] = useState<string | null>(null);
  const input = useRef<HTMLInputElement>(null);
  useEffect(() => input.current?.focus(), []);

  useEffect(() => {
    const query = q.trim();
    if (!query) {
      setResults(null);
      setError(null);
      return;
    }
    let live = true;
    const t = setTimeout(() => {
      spacesApi.search(space.id, query).then(
        (r) => {
          if (!live) return;
          setResults(r.results);
          setTotal(r.total ?? r.results.length);
          setError(null);
        },
        (e) => {
          if (!live) return;
          setResults(null);
          // A node older than the route answers "no such endpoint".
          setError(e instanceof ApiError && e.status === 404 && /endpoint/.test(e.message) ? "This node cannot search spaces yet." : describeError(e));
        },
      );
    }, DELAY_MS);
    return () => {
      live = false;
      clearTimeout(t);
    };
  }, [q, space.id]);

  const channelName = (id: string) => space.channels.find((c) => c.id === id)?.name ?? "deleted channel";
  const roleName = (id: string) => space.roles.find((r) => r.id === id)?.name;

  return (
    <section className="space-search" aria-label={`Search ${space.name}`} data-testid="space-search">
      <div className="row">
        <input
          ref={input}
          type="search"
          value={q}
          onChange={(e) => setQ(e.target.value)}
          onKeyDown={(e) => e.key === "Escape" && onClose()}
          placeholder={`Search ${space.name}`}
          aria-label="Search this space"
        />
        <button onClick={onClose} aria-label="Close search">
          ×
        </button>
      </div>
      {error && (
        <p className="form-error small" role="alert">
          {error}
        </p>
      )}
      {results && (
        <>
          <p className="muted small" role="status">
            {results.length === 0 ? "No messages match." : total > results.length ? `${results.length} of ${total} results` : `${total} result${total === 1 ? "" : "s"}`}
          </p>
          <ul className="space-search-results">
            {results.map((r) => (
              <li key={r.message.id}>
                <button className="space-search-hit" onClick={() => onPick(r.message.conversation, r.message.id)}>
                  <span className="muted small">
                    #{channelName(r.message.conversation)} · {nameOf(r.message.sender)} · {new Date(r.message.sent_at).toLocaleString()}
                  </span>
                  <span>
                    {r.highlighted
                      ? snippetParts(showMentions(r.highlighted, nameOf, roleName)).map((p, i) => (p.match ? <mark key={i}>{p.text}</mark> : <span key={i}>{p.text}</span>))
                      : showMentions(r.snippet, nameOf, roleName)}
                  </span>
                </button>
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}
