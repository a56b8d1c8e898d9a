import { contentUrl } from "../api/files";
import {
  canCancel,
  canPause,
  canResume,
  contentReady,
  formatBytes,
  formatEta,
  formatRate,
  percent,
  preparingIn,
  previewKind,
  shown,
  stateText,
  type LocalUpload,
} from "../lib/transfers";
import { useTransfers } from "../state/transfers";

/**
 * A file message: name, size, state with progress (bytes, rate, ETA), pause / resume / cancel,
 * an inline preview for images and a player for audio and video once the node can serve the
 * decrypted bytes, and "save as" (a download from the node) or "save to downloads".
 */
export function FileCard({ id, name }: { id: string; name: string }) {
  const { transfers, act, saveToDownloads } = useTransfers();
  const v = transfers.byId[id];
  const s = shown(v);
  const rec = v?.record ?? null;
  const kind = rec ? previewKind(rec.mime) : null;
  const ready = s ? contentReady(rec, s.state) : false;
  const pct = s ? percent(s.bytes, s.total) : 0;
  const moving = s && !["done", "failed", "cancelled"].includes(s.state);
  return (
    <div className="file-card" data-testid="file-card" data-state={s?.state ?? "unknown"} data-transfer-id={id}>
      <div className="file-head">
        <span className="file-icon" aria-hidden="true">
          {kind === "image" ? "🖼" : kind === "video" ? "🎞" : kind === "audio" ? "♪" : "📄"}
        </span>
        <span className="file-name" title={name}>
          {name}
        </span>
        {s && <span className="muted file-size">{formatBytes(s.total)}</span>}
      </div>
      {s && (
        <div className="file-status">
          <span data-testid="file-state">{stateText(s.state, s.reason)}</span>
          {moving && (
            <>
              <progress
                className="file-progress"
                data-testid="file-progress"
                max={100}
                value={pct}
                aria-label={`${name}: ${pct}%`}
              />
              <span className="muted file-numbers" data-testid="file-numbers">
                {pct}% · {formatBytes(s.bytes)} of {formatBytes(s.total)}
                {s.state === "transferring" && s.rate > 0 ? ` · ${formatRate(s.rate)}` : ""}
                {s.eta !== null ? ` · ${formatEta(s.eta)}` : ""}
              </span>
            </>
          )}
          <span className="file-actions">
            {canPause(s.state) && (
              <button className="small" onClick={() => void act(id, "pause")} aria-label={`Pause ${name}`}>
                Pause
              </button>
            )}
            {canResume(s.state) && (
              <button className="small" onClick={() => void act(id, "resume")} aria-label={`Resume ${name}`}>
                Resume
              </button>
            )}
            {canCancel(s.state) && (
              <button className="small" onClick={() => void act(id, "cancel")} aria-label={`Cancel ${name}`}>
                Cancel
              </button>
            )}
            {ready && (
              <a className="button-like small" href={contentUrl(id, true)} download={name} aria-label={`Save ${name} as…`}>
                Save as…
              </a>
            )}
            {ready && rec?.direction === "incoming" && (
              <button className="small" onClick={() => void saveToDownloads(id)} aria-label={`Save ${name} to downloads`}>
                {rec.saved_path ? "Saved ✓" : "Save to downloads"}
              </button>
            )}
          </span>
        </div>
      )}
      {ready && kind === "image" && (
        <a href={contentUrl(id)} target="_blank" rel="noreferrer" className="file-preview">
          <img
            src={contentUrl(id)}
            alt={name}
            loading="lazy"
            data-testid="file-preview-image"
            width={rec?.dimensions?.width}
            height={rec?.dimensions?.height}
          />
        </a>
      )}
      {!ready && rec?.thumbnail && rec.thumbnail.startsWith("data:image/") && (
        <img
          className="file-thumb"
          src={rec.thumbnail}
          alt={`${name} (preview)`}
          data-testid="file-thumbnail"
          width={rec.dimensions?.width}
          height={rec.dimensions?.height}
        />
      )}
      {ready && kind === "video" && (
        <video className="file-preview" controls preload="metadata" src={contentUrl(id)} data-testid="file-preview-video" />
      )}
      {ready && kind === "audio" && <audio controls preload="metadata" src={contentUrl(id)} data-testid="file-preview-audio" />}
    </div>
  );
}

/**
 * Files on their way to being announced in one conversation: those this browser is still
 * handing to the node, then those the node is preparing (hashing and encrypting, with progress
 * and cancel), and those whose preparing failed (with the reason, dismissable).
 */
export function UploadTray({ conversation }: { conversation: string }) {
  const { transfers, dismissUpload, act } = useTransfers();
  const mine: LocalUpload[] = transfers.uploads.filter((u) => u.conversation === conversation);
  const prepared = preparingIn(transfers, conversation);
  if (!mine.length && !prepared.length) return null;
  return (
    <ul className="upload-tray" aria-label="Files being prepared" data-testid="upload-tray">
      {mine.map((u) => {
        const pct = percent(u.sent, u.size);
        return (
          <li key={u.localId} className="file-card">
            <span className="file-name">{u.name}</span>
            {u.error ? (
              <>
                <span className="form-error" role="alert">
                  Could not send: {u.error}
                </span>
                <button className="small" onClick={() => dismissUpload(u.localId)} aria-label={`Dismiss ${u.name}`}>
                  Dismiss
                </button>
              </>
            ) : (
              <>
                <span data-testid="file-state">Preparing</span>
                <progress max={100} value={pct} aria-label={`${u.name}: preparing, ${pct}%`} />
                <span className="muted">
                  {formatBytes(u.sent)} of {formatBytes(u.size)}
                </span>
              </>
            )}
          </li>
        );
      })}
      {prepared.map((r) => {
        const s = shown(transfers.byId[r.id]);
        if (!s) return null;
        const pct = percent(s.bytes, s.total);
        return (
          <li key={r.id} className="file-card" data-testid="preparing-card" data-state={s.state}>
            <span className="file-name">{r.name}</span>
            {s.state === "preparing" ? (
              <>
                <span data-testid="file-state">Preparing</span>
                <progress max={100} value={pct} aria-label={`${r.name}: preparing, ${pct}%`} />
                <span className="muted">
                  {formatBytes(s.bytes)} of {formatBytes(s.total)}
                  {s.rate > 0 && ` · ${formatRate(s.rate)}`}
                  {s.eta !== null && ` · ${formatEta(s.eta)}`}
                </span>
                <button className="small" onClick={() => void act(r.id, "cancel")} aria-label={`Cancel ${r.name}`}>
                  Cancel
                </button>
              </>
            ) : (
              <>
                <span className="form-error" role="alert">
                  Not sent: {stateText(s.state, s.reason)}
                </span>
                <button className="small" onClick={() => dismissUpload(r.id)} aria-label={`Dismiss ${r.name}`}>
                  Dismiss
                </button>
              </>
            )}
          </li>
        );
      })}
    </ul>
  );
}
