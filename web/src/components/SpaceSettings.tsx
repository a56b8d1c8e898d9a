// A space's settings page (docs/ui.md, "Space settings"): overview (name, description, history
// sharing, leaving), invites (expiry, max uses, code, link and a QR code drawn locally), members
// (roles, kick, ban, unban), roles (name, colour, permissions, order, delete) and per-channel
// permission overwrites. Every change is an op the node signs and sends; the node's answer (the
// space as resolved after it) replaces what is shown, and a refusal is shown as the node words it.
import QRCode from "qrcode";
import { useEffect, useMemo, useRef, useState } from "react";
import { spacesApi } from "../api/spaces";
import type { ChannelOverwrite, Space, SpaceRole } from "../api/types";
import {
  can,
  colorText,
  colorValue,
  dropRole,
  EVERYONE,
  EXPIRY_CHOICES,
  inviteLink,
  inviteStatus,
  memberActionBlock,
  myTopPosition,
  outranks,
  PERMISSIONS,
  roleEditBlock,
  setTri,
  triOf,
  type Tri,
} from "../lib/spaces";
import { describeError, useStore } from "../state/store";

/** What a dragged role carries. */
const ROLE_DRAG = "application/x-dopus-role";

type Tab = "overview" | "invites" | "members" | "roles" | "channels";
const TABS: { id: Tab; label: string }[] = [
  { id: "overview", label: "Overview" },
  { id: "invites", label: "Invites" },
  { id: "members", label: "Members" },
  { id: "roles", label: "Roles" },
  { id: "channels", label: "Channels" },
];

interface Props {
  space: Space;
  me: string;
  nameOf(id: string): string;
  tab: Tab;
  setTab(t: Tab): void;
  onChange(s: Space): void;
  onClose(): void;
}

/** Runs a change and shows the node's refusal, if any; the answer updates the space. */
function useRun(onChange: (s: Space) => void) {
  const { actions } = useStore();
  return async (f: () => Promise<Space>, done?: string): Promise<boolean> => {
    try {
      onChange(await f());
      if (done) actions.notify(done, "info");
      return true;
    } catch (e) {
      actions.notify(describeError(e), "error");
      return false;
    }
  };
}

export function SpaceSettings(p: Props) {
  return (
    <div className="space-settings" role="region" aria-label="Space settings" data-testid="space-settings">
      <header className="space-settings-head">
        <h1>{p.space.name} · Settings</h1>
        <button onClick={p.onClose} aria-label="Close settings">
          Close
        </button>
      </header>
      <div role="tablist" aria-label="Settings sections" className="space-settings-tabs">
        {TABS.map((t) => (
          <button key={t.id} role="tab" aria-selected={p.tab === t.id} className={p.tab === t.id ? "active" : ""} onClick={() => p.setTab(t.id)}>
            {t.label}
          </button>
        ))}
      </div>
      <div role="tabpanel" className="space-settings-body">
        {p.tab === "overview" && <Overview {...p} />}
        {p.tab === "invites" && <Invites {...p} />}
        {p.tab === "members" && <Members {...p} />}
        {p.tab === "roles" && <Roles {...p} />}
        {p.tab === "channels" && <Overwrites {...p} />}
      </div>
    </div>
  );
}

function Overview({ space, me, nameOf, onChange }: Props) {
  const run = useRun(onChange);
  const [name, setName] = useState(space.name);
  const [description, setDescription] = useState(space.description);
  const [heir, setHeir] = useState("");
  const may = can(space, me, "manage_space");
  const why = may ? undefined : "You need the “Manage space” permission.";
  return (
    <>
      <form
        className="settings-form"
        onSubmit={(e) => {
          e.preventDefault();
          void run(() => spacesApi.update(space.id, { name: name.trim(), description }), "Space saved.");
        }}
      >
        <label>
          Space name
          <input value={name} onChange={(e) => setName(e.target.value)} maxLength={100} disabled={!may} title={why} aria-label="Space name" />
        </label>
        <label>
          Description
          <textarea value={description} onChange={(e) => setDescription(e.target.value)} rows={3} disabled={!may} title={why} aria-label="Space description" />
        </label>
        <button type="submit" className="primary" disabled={!may || !name.trim()} title={why}>
          Save
        </button>
        {!may && <p className="muted small">{why}</p>}
      </form>
      <label className="toggle">
        <input
          type="checkbox"
          checked={space.share_history}
          disabled={!may}
          title={why}
          aria-label="Share earlier history with new members"
          onChange={(e) => void run(() => spacesApi.update(space.id, { share_history: e.target.checked }))}
        />{" "}
        Share earlier history with new members (the member who admits them sends the keys of what they can read)
      </label>
      <p className="muted small">Owner: {space.owner ? nameOf(space.owner) : "none"}</p>
      {space.owner === me && (
        <form
          className="settings-form row"
          onSubmit={(e) => {
            e.preventDefault();
            if (heir) void run(() => spacesApi.transfer(space.id, heir), "Ownership handed over.");
          }}
        >
          <label>
            Transfer ownership to
            <select value={heir} onChange={(e) => setHeir(e.target.value)} aria-label="New owner">
              <option value="">Pick a member</option>
              {space.members
                .filter((m) => m.user_id !== me)
                .map((m) => (
                  <option key={m.user_id} value={m.user_id}>
                    {nameOf(m.user_id)}
                  </option>
                ))}
            </select>
          </label>
          <button type="submit" className="danger" disabled={!heir}>
            Transfer
          </button>
        </form>
      )}
      <button
        className="danger"
        disabled={space.owner === me}
        title={space.owner === me ? "The owner must hand the space over before leaving." : undefined}
        onClick={() => void run(() => spacesApi.leave(space.id), "You left the space.")}
      >
        Leave space
      </button>
      {space.owner === me && <p className="muted small">The owner must hand the space over before leaving.</p>}
    </>
  );
}

function Invites({ space, me, nameOf, onChange }: Props) {
  const { actions } = useStore();
  const run = useRun(onChange);
  const [expiry, setExpiry] = useState(String(EXPIRY_CHOICES.findIndex((c) => c.label === "7 days")));
  const [maxUses, setMaxUses] = useState("");
  const [made, setMade] = useState<{ code: string; id: string } | null>(null);
  const [qr, setQr] = useState<string | null>(null);
  const mayCreate = can(space, me, "create_invite");
  const link = made ? inviteLink(made.code) : "";

  useEffect(() => {
    let live = true;
    setQr(null);
    if (!link) return;
    // Drawn here: the code never leaves the page for a QR service.
    QRCode.toString(link, { type: "svg", margin: 1, errorCorrectionLevel: "M" })
      .then((svg) => live && setQr(`data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`))
      .catch(() => live && setQr(null));
    return () => {
      live = false;
    };
  }, [link]);

  const createInvite = async () => {
    const uses = maxUses.trim() ? Number(maxUses) : null;
    if (uses !== null && (!Number.isInteger(uses) || uses < 1 || uses > 1_000_000)) {
      actions.notify("Max uses must be a whole number from 1, or empty for no limit.", "error");
      return;
    }
    try {
      const inv = await spacesApi.invite(space.id, { max_uses: uses, expires_in_ms: EXPIRY_CHOICES[Number(expiry)]?.ms ?? null });
      setMade({ code: inv.code, id: inv.invite_id });
      onChange(await spacesApi.get(space.id));
    } catch (e) {
      actions.notify(describeError(e), "error");
    }
  };

  const copy = async (text: string, what: string) => {
    try {
      await navigator.clipboard.writeText(text);
      actions.notify(`${what} copied.`, "info");
    } catch {
      actions.notify(`Could not copy; select the ${what.toLowerCase()} and copy it by hand.`, "error");
    }
  };

  const now = Date.now();
  return (
    <>
      <form
        className="settings-form row"
        onSubmit={(e) => {
          e.preventDefault();
          void createInvite();
        }}
      >
        <label>
          Expires after
          <select value={expiry} onChange={(e) => setExpiry(e.target.value)} aria-label="Expires after">
            {EXPIRY_CHOICES.map((c, i) => (
              <option key={c.label} value={i}>
                {c.label}
              </option>
            ))}
          </select>
        </label>
        <label>
          Max uses
          <input value={maxUses} onChange={(e) => setMaxUses(e.target.value)} inputMode="numeric" placeholder="No limit" aria-label="Max uses" size={8} />
        </label>
        <button type="submit" className="primary" disabled={!mayCreate} title={mayCreate ? undefined : "You need the “Create invites” permission."}>
          Create invite
        </button>
      </form>
      {!mayCreate && <p className="muted small">You need the “Create invites” permission to invite people.</p>}
      {made && (
        <div className="invite-made" data-testid="invite-made">
          <label>
            Invite code
            <input readOnly value={made.code} aria-label="Invite code" onFocus={(e) => e.currentTarget.select()} />
          </label>
          <div className="row">
            <button onClick={() => void copy(made.code, "Code")}>Copy code</button>
            <button onClick={() => void copy(link, "Link")}>Copy link</button>
          </div>
          {qr && <img className="invite-qr" src={qr} alt="QR code of the invite link" width={180} height={180} data-testid="invite-qr" />}
          <p className="muted small">
            Whoever holds this code may ask to join until it expires, is used up or revoked. Their request is answered by an online member who may
            admit them; the code itself carries no name or message of the space.
          </p>
        </div>
      )}
      <h2 className="small">Invites</h2>
      <table className="settings-table" data-testid="invite-list">
        <thead>
          <tr>
            <th>Invite</th>
            <th>By</th>
            <th>Uses</th>
            <th>Expires</th>
            <th>State</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {space.invites.map((i) => {
            const st = inviteStatus(i, now);
            const mayRevoke = i.creator === me || can(space, me, "manage_space");
            return (
              <tr key={i.id}>
                <td title={i.id}>{i.id.slice(0, 8)}</td>
                <td>{nameOf(i.creator)}</td>
                <td>
                  {i.uses}
                  {i.max_uses !== null ? `/${i.max_uses}` : ""}
                </td>
                <td>{i.expires_at === null ? "never" : new Date(i.expires_at).toLocaleString()}</td>
                <td>{st}</td>
                <td>
                  {st !== "revoked" && (
                    <button
                      className="link"
                      disabled={!mayRevoke}
                      title={mayRevoke ? undefined : "Only its creator and members with “Manage space” may revoke it."}
                      aria-label={`Revoke invite ${i.id.slice(0, 8)}`}
                      onClick={() => void run(() => spacesApi.revokeInvite(space.id, i.id), "Invite revoked.")}
                    >
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </>
  );
}

function Members({ space, me, nameOf, onChange }: Props) {
  const run = useRun(onChange);
  const [confirm, setConfirm] = useState<{ user: string; action: "kick" | "ban" } | null>(null);
  const [unban, setUnban] = useState("");
  const roles = space.roles.filter((r) => r.id !== EVERYONE).sort((a, b) => b.position - a.position);
  return (
    <>
      <ul className="settings-members" data-testid="settings-members">
        {space.members.map((m) => {
          const kick = memberActionBlock(space, me, m.user_id, "kick");
          const ban = memberActionBlock(space, me, m.user_id, "ban");
          return (
            <li key={m.user_id} className="settings-member" data-user={m.user_id}>
              <strong>{nameOf(m.user_id)}</strong>
              {m.owner && <span className="muted small"> owner</span>}
              <span className="member-roles">
                {roles.map((r) => {
                  const has = m.roles.includes(r.id);
                  const block =
                    roleEditBlock(space, me, r) ??
                    (space.owner !== me && !outranks(space, me, m.user_id) ? "Their top role is not below yours." : null);
                  return (
                    <label key={r.id} className="role-chip" style={{ borderColor: colorText(r.color) }} title={block ?? undefined}>
                      <input
                        type="checkbox"
                        checked={has}
                        disabled={!!block}
                        aria-label={`${r.name} role for ${nameOf(m.user_id)}`}
                        onChange={() =>
                          void run(() => (has ? spacesApi.revokeRole(space.id, m.user_id, r.id) : spacesApi.assignRole(space.id, m.user_id, r.id)))
                        }
                      />{" "}
                      {r.name}
                    </label>
                  );
                })}
              </span>
              {m.user_id !== me &&
                (confirm?.user === m.user_id ? (
                  <span role="alertdialog" aria-label={`${confirm.action} ${nameOf(m.user_id)}`}>
                    {confirm.action === "kick" ? "Kick" : "Ban"} {nameOf(m.user_id)}?{" "}
                    <button
                      className="danger"
                      onClick={() => {
                        const a = confirm.action;
                        setConfirm(null);
                        void run(
                          () => (a === "kick" ? spacesApi.kick(space.id, m.user_id) : spacesApi.ban(space.id, m.user_id)),
                          a === "kick" ? "Member kicked." : "Member banned.",
                        );
                      }}
                    >
                      Yes, {confirm.action}
                    </button>
                    <button onClick={() => setConfirm(null)}>No</button>
                  </span>
                ) : (
                  <span className="member-actions">
                    <button disabled={!!kick} title={kick ?? undefined} aria-label={`Kick ${nameOf(m.user_id)}`} onClick={() => setConfirm({ user: m.user_id, action: "kick" })}>
                      Kick
                    </button>
                    <button
                      className="danger"
                      disabled={!!ban}
                      title={ban ?? undefined}
                      aria-label={`Ban ${nameOf(m.user_id)}`}
                      onClick={() => setConfirm({ user: m.user_id, action: "ban" })}
                    >
                      Ban
                    </button>
                  </span>
                ))}
            </li>
          );
        })}
      </ul>
      {can(space, me, "ban") && (
        <form
          className="settings-form row"
          onSubmit={(e) => {
            e.preventDefault();
            const u = unban.trim();
            if (u) void run(() => spacesApi.unban(space.id, u), "Unbanned.").then((ok) => ok && setUnban(""));
          }}
        >
          <label>
            Unban a user ID
            <input value={unban} onChange={(e) => setUnban(e.target.value)} placeholder="dopus1…" aria-label="User ID to unban" />
          </label>
          <button type="submit">Unban</button>
        </form>
      )}
    </>
  );
}

function Roles({ space, me, onChange }: Props) {
  const run = useRun(onChange);
  const sorted = useMemo(() => space.roles.slice().sort((a, b) => b.position - a.position || (a.id < b.id ? 1 : -1)), [space.roles]);
  const [open, setOpen] = useState<string | null>(null);
  const [newName, setNewName] = useState("");
  const mayManage = can(space, me, "manage_roles");
  const top = myTopPosition(space, me);

  const createRole = async () => {
    const name = newName.trim();
    if (!name) return;
    const highest = space.roles.reduce((n, r) => Math.max(n, r.position), 0);
    const position = space.owner === me ? highest + 1 : Math.max(1, top - 1);
    if (await run(() => spacesApi.createRole(space.id, { name, color: 0, position, permissions: ["view_channel", "send_messages"] }), `Role ${name} created.`)) {
      setNewName("");
    }
  };

  /** Swaps a role with its neighbour above (-1) or below (+1) in the list. */
  const move = async (r: SpaceRole, step: -1 | 1) => {
    const at = sorted.findIndex((x) => x.id === r.id);
    const other = sorted[at + step];
    if (!other || other.id === EVERYONE) return;
    if (other.position === r.position) {
      await run(() => spacesApi.updateRole(space.id, r.id, { position: Math.max(1, r.position - step) }));
      return;
    }
    // The lower one moves first, so neither passes above our own top role on the way.
    const [first, second] = step === -1 ? [other, r] : [r, other];
    if (await run(() => spacesApi.updateRole(space.id, first.id, { position: first === r ? other.position : r.position }))) {
      await run(() => spacesApi.updateRole(space.id, second.id, { position: second === r ? other.position : r.position }));
    }
  };

  /** A drag in the list: the roles between take the positions the span held, one op each. */
  const dropOn = async (dragged: string, target: string) => {
    const changes = dropRole(space.roles, dragged, target);
    if (!changes) return;
    for (const c of changes) {
      if (!(await run(() => spacesApi.updateRole(space.id, c.id, { position: c.position })))) return;
    }
  };

  return (
    <>
      <form
        className="settings-form row"
        onSubmit={(e) => {
          e.preventDefault();
          void createRole();
        }}
      >
        <label>
          New role
          <input value={newName} onChange={(e) => setNewName(e.target.value)} maxLength={100} aria-label="New role name" disabled={!mayManage} />
        </label>
        <button type="submit" className="primary" disabled={!mayManage || !newName.trim()} title={mayManage ? undefined : "You need the “Manage roles” permission."}>
          Create role
        </button>
      </form>
      {!mayManage && <p className="muted small">You need the “Manage roles” permission to change roles.</p>}
      <p className="muted small">
        Roles higher in the list outrank lower ones; drag a role (or use ↑/↓) to reorder. Members act only on members and roles below their own top
        role.
      </p>
      <ol className="settings-roles" data-testid="role-list">
        {sorted.map((r, i) => {
          const block = roleEditBlock(space, me, r);
          return (
            <li
              key={r.id}
              className="settings-role"
              data-role={r.id}
              draggable={!block && r.id !== EVERYONE}
              onDragStart={(e) => {
                e.dataTransfer.setData(ROLE_DRAG, r.id);
                e.dataTransfer.effectAllowed = "move";
              }}
              onDragOver={(e) => {
                if (!block && r.id !== EVERYONE && e.dataTransfer.types.includes(ROLE_DRAG)) e.preventDefault();
              }}
              onDrop={(e) => {
                const dragged = e.dataTransfer.getData(ROLE_DRAG);
                if (!dragged) return;
                e.preventDefault();
                void dropOn(dragged, r.id);
              }}
            >
              <div className="row">
                <span className="role-dot" style={{ background: colorText(r.color) ?? "#80848e" }} aria-hidden="true" />
                <button className="link" aria-expanded={open === r.id} onClick={() => setOpen(open === r.id ? null : r.id)}>
                  {r.id === EVERYONE ? "@everyone" : r.name}
                </button>
                <span className="muted small">
                  {r.permissions.length} permission{r.permissions.length === 1 ? "" : "s"} · {space.members.filter((m) => m.roles.includes(r.id)).length} members
                </span>
                {r.id !== EVERYONE && (
                  <>
                    <button className="icon small" aria-label={`Move role ${r.name} up`} disabled={!!block || i === 0} title={block ?? "Move up"} onClick={() => void move(r, -1)}>
                      ↑
                    </button>
                    <button
                      className="icon small"
                      aria-label={`Move role ${r.name} down`}
                      disabled={!!block || sorted[i + 1]?.id === EVERYONE}
                      title={block ?? "Move down"}
                      onClick={() => void move(r, 1)}
                    >
                      ↓
                    </button>
                  </>
                )}
              </div>
              {open === r.id && <RoleEditor key={`${r.id}-${r.name}-${r.color}-${r.permissions.join()}`} space={space} role={r} block={block} run={run} />}
            </li>
          );
        })}
      </ol>
    </>
  );
}

function RoleEditor({
  space,
  role,
  block,
  run,
}: {
  space: Space;
  role: SpaceRole;
  block: string | null;
  run: (f: () => Promise<Space>, done?: string) => Promise<boolean>;
}) {
  const [name, setName] = useState(role.name);
  const [color, setColor] = useState(colorText(role.color) ?? "#000000");
  const [perms, setPerms] = useState(new Set(role.permissions));
  const [confirm, setConfirm] = useState(false);
  const everyone = role.id === EVERYONE;
  const disabled = !!block;
  return (
    <form
      className="role-editor"
      aria-label={`Edit role ${role.name}`}
      onSubmit={(e) => {
        e.preventDefault();
        const permissions = PERMISSIONS.map((p) => p.name).filter((n) => perms.has(n));
        void run(
          () =>
            spacesApi.updateRole(space.id, role.id, {
              ...(everyone ? {} : { name: name.trim(), color: colorValue(color) }),
              permissions,
            }),
          "Role saved.",
        );
      }}
    >
      {block && <p className="muted small">{block}</p>}
      {!everyone && (
        <div className="row">
          <label>
            Name
            <input value={name} onChange={(e) => setName(e.target.value)} maxLength={100} disabled={disabled} aria-label="Role name" />
          </label>
          <label>
            Colour
            <input type="color" value={color} onChange={(e) => setColor(e.target.value)} disabled={disabled} aria-label="Role colour" />
          </label>
        </div>
      )}
      <fieldset disabled={disabled}>
        <legend>Permissions</legend>
        {PERMISSIONS.map((p) => (
          <label key={p.name} className="perm" title={p.help}>
            <input
              type="checkbox"
              checked={perms.has(p.name)}
              onChange={(e) => {
                const next = new Set(perms);
                if (e.target.checked) next.add(p.name);
                else next.delete(p.name);
                setPerms(next);
              }}
              aria-label={p.label}
            />{" "}
            <strong>{p.label}</strong> <span className="muted small">{p.help}</span>
          </label>
        ))}
      </fieldset>
      <div className="row">
        <button type="submit" className="primary" disabled={disabled || (!everyone && !name.trim())}>
          Save role
        </button>
        {!everyone &&
          (confirm ? (
            <span role="alertdialog" aria-label="Delete role">
              Delete {role.name}? Its members lose what it grants.{" "}
              <button type="button" className="danger" onClick={() => void run(() => spacesApi.deleteRole(space.id, role.id), "Role deleted.")}>
                Delete
              </button>
              <button type="button" onClick={() => setConfirm(false)}>
                Keep
              </button>
            </span>
          ) : (
            <button type="button" className="danger" disabled={disabled} onClick={() => setConfirm(true)}>
              Delete role
            </button>
          ))}
      </div>
    </form>
  );
}

/** Per-channel overwrites: for each role or member listed, each permission allowed, denied or inherited. */
function Overwrites({ space, me, nameOf, onChange }: Props) {
  const run = useRun(onChange);
  const channels = space.channels.filter((c) => c.kind !== "category");
  const [channelId, setChannelId] = useState(channels[0]?.id ?? "");
  const ch = space.channels.find((c) => c.id === channelId);
  const [rows, setRows] = useState<ChannelOverwrite[]>(ch?.overwrites ?? []);
  const [add, setAdd] = useState("");
  const may = can(space, me, "manage_channels");
  // Reset the rows only when the channel or its saved overwrites change, not on every space
  // event (a new message elsewhere must not drop unsaved edits).
  const saved = ch ? `${ch.id}:${JSON.stringify(ch.overwrites)}` : "";
  const savedRef = useRef(ch);
  savedRef.current = ch;
  useEffect(() => {
    const c = savedRef.current;
    setRows(c?.overwrites.map((o) => ({ ...o, allow: [...o.allow], deny: [...o.deny] })) ?? []);
  }, [saved]);

  const targetName = (o: ChannelOverwrite) =>
    o.role ? (o.role === EVERYONE ? "@everyone" : (space.roles.find((r) => r.id === o.role)?.name ?? "deleted role")) : nameOf(o.user_id ?? "");
  const key = (o: ChannelOverwrite) => (o.role ? `r:${o.role}` : `u:${o.user_id}`);
  const taken = new Set(rows.map(key));
  const choices = [
    ...space.roles.map((r) => ({ k: `r:${r.id}`, label: r.id === EVERYONE ? "@everyone" : `Role ${r.name}` })),
    ...space.members.map((m) => ({ k: `u:${m.user_id}`, label: `Member ${nameOf(m.user_id)}` })),
  ].filter((c) => !taken.has(c.k));

  if (!ch) return <p className="muted">No channels.</p>;
  return (
    <>
      <label>
        Channel
        <select value={channelId} onChange={(e) => setChannelId(e.target.value)} aria-label="Channel to edit">
          {channels.map((c) => (
            <option key={c.id} value={c.id}>
              {c.kind === "text" ? "#" : "🔊"} {c.name}
            </option>
          ))}
        </select>
      </label>
      {!may && <p className="muted small">You need the “Manage channels” permission to change who may do what here.</p>}
      <p className="muted small">A denial for a role or member beats what their roles grant in this channel; a member's own entry beats role entries.</p>
      <table className="settings-table overwrites" data-testid="overwrites">
        <thead>
          <tr>
            <th>Who</th>
            {PERMISSIONS.map((p) => (
              <th key={p.name} title={p.help}>
                {p.label}
              </th>
            ))}
            <th />
          </tr>
        </thead>
        <tbody>
          {rows.map((o, i) => (
            <tr key={key(o)}>
              <th scope="row">{targetName(o)}</th>
              {PERMISSIONS.map((p) => (
                <td key={p.name}>
                  <select
                    value={triOf(o, p.name)}
                    disabled={!may}
                    aria-label={`${p.label} for ${targetName(o)}`}
                    onChange={(e) => setRows(rows.map((x, j) => (j === i ? setTri(x, p.name, e.target.value as Tri) : x)))}
                  >
                    <option value="inherit">–</option>
                    <option value="allow">allow</option>
                    <option value="deny">deny</option>
                  </select>
                </td>
              ))}
              <td>
                <button className="link" disabled={!may} onClick={() => setRows(rows.filter((_, j) => j !== i))} aria-label={`Remove the entry of ${targetName(o)}`}>
                  Remove
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <div className="row">
        <select value={add} onChange={(e) => setAdd(e.target.value)} aria-label="Add an entry for" disabled={!may}>
          <option value="">Add a role or member…</option>
          {choices.map((c) => (
            <option key={c.k} value={c.k}>
              {c.label}
            </option>
          ))}
        </select>
        <button
          disabled={!may || !add}
          onClick={() => {
            const id = add.slice(2);
            setRows([...rows, add.startsWith("r:") ? { role: id, allow: [], deny: [] } : { user_id: id, allow: [], deny: [] }]);
            setAdd("");
          }}
        >
          Add
        </button>
        <button
          className="primary"
          disabled={!may}
          onClick={() =>
            void run(
              () =>
                spacesApi.updateChannel(space.id, ch.id, {
                  overwrites: rows.map((o) => (o.role ? { role: o.role, allow: o.allow, deny: o.deny } : { user_id: o.user_id, allow: o.allow, deny: o.deny })),
                }),
              "Channel permissions saved.",
            )
          }
        >
          Save permissions
        </button>
      </div>
    </>
  );
}
