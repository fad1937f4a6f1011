import { useState, type FormEvent } from "react";
import { api, problemText, type Schemas } from "../api/client";
import { Card, ErrorNote, Loading } from "../components/Common";
import { CopyButton } from "../components/Copy";
import { fmtTime, useData } from "../hooks";
import { rolesUpTo, useSession, type RoleName } from "../session";

type User = Schemas["UserOut"];
type Grant = Schemas["GrantIO"];
const ROLES = rolesUpTo("admin");

/** "etl=operator, tag:finance=admin" -> grants; a bad entry is named so the admin can fix it. */
export function parseGrants(text: string): Grant[] {
  return text.split(/[,\n]/).map((s) => s.trim()).filter(Boolean).map((entry) => {
    const [target, role] = entry.split("=").map((s) => s.trim());
    if (!target || !ROLES.includes(role as RoleName)) {
      throw new Error(`grant "${entry}": write PIPELINE=ROLE or tag:TAG=ROLE, ROLE one of ${ROLES.join(", ")}`);
    }
    return { target, role: role as RoleName };
  });
}

const grantText = (grants: Grant[] | undefined) => (grants ?? []).map((g) => `${g.target}=${g.role}`).join(", ");

function RoleSelect({ value, onChange, label }: { value: RoleName; onChange: (role: RoleName) => void; label: string }) {
  return (
    <select value={value} onChange={(e) => onChange(e.target.value as RoleName)} aria-label={label}>
      {ROLES.map((r) => <option key={r} value={r}>{r}</option>)}
    </select>
  );
}

function CreateUser({ onDone }: { onDone: () => void }) {
  const [username, setUsername] = useState("");
  const [email, setEmail] = useState("");
  const [role, setRole] = useState<RoleName>("viewer");
  const [grants, setGrants] = useState("");
  const [error, setError] = useState("");
  const [made, setMade] = useState<Schemas["UserCreated"] | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault(); setError(""); setMade(null);
    let parsed: Grant[];
    try { parsed = parseGrants(grants); } catch (exc) { setError((exc as Error).message); return; }
    const { data, error: failed } = await api.POST("/api/v1/users", { body: { username, role, email: email || null, grants: parsed } });
    if (failed) { setError(problemText(failed, "could not create the user")); return; }
    setMade(data); setUsername(""); setEmail(""); setGrants(""); setRole("viewer"); onDone();
  };
  return (
    <Card title="Create a user">
      <form onSubmit={submit} className="form" aria-label="Create a user">
        <label>Username <input value={username} onChange={(e) => setUsername(e.target.value)} required autoComplete="off" /></label>
        <label>Email (optional) <input type="email" value={email} onChange={(e) => setEmail(e.target.value)} autoComplete="off" /></label>
        <label>Role <RoleSelect value={role} onChange={setRole} label="Role" /></label>
        <label>Grants (optional) <span className="muted small">PIPELINE=ROLE or tag:TAG=ROLE, comma separated</span>
          <input value={grants} onChange={(e) => setGrants(e.target.value)} placeholder="etl=operator, tag:finance=operator" autoComplete="off" /></label>
        <button type="submit">Create user</button>
      </form>
      <ErrorNote text={error} />
      {made && (
        <div role="status" className="once">
          <p>User <strong>{made.user.username}</strong> created with the {made.user.role} role.</p>
          {made.one_time_password && <>
            <p>One-time password (shown once; it must be changed at first login):</p>
            <div className="copy-row"><code className="mono secret" data-testid="one-time-password">{made.one_time_password}</code>
              <CopyButton text={made.one_time_password} label="Copy password" /></div>
          </>}
        </div>
      )}
    </Card>
  );
}

function UserRow({ user, self, onChange }: { user: User; self: boolean; onChange: () => void }) {
  const [error, setError] = useState("");
  const [editing, setEditing] = useState(false);
  const [grants, setGrants] = useState(grantText(user.grants));
  const patch = async (body: Schemas["UserPatch"]) => {
    setError("");
    const { error: failed } = await api.PATCH("/api/v1/users/{user_id}", { params: { path: { user_id: user.id } }, body });
    if (failed) setError(problemText(failed)); else onChange();
  };
  const saveGrants = async (e: FormEvent) => {
    e.preventDefault(); setError("");
    let parsed: Grant[];
    try { parsed = parseGrants(grants); } catch (exc) { setError((exc as Error).message); return; }
    const { error: failed } = await api.PUT("/api/v1/users/{user_id}/grants", { params: { path: { user_id: user.id } }, body: parsed });
    if (failed) setError(problemText(failed)); else { setEditing(false); onChange(); }
  };
  const remove = async () => {
    if (!window.confirm(`Delete user ${user.username}? Their sessions and tokens stop working.`)) return;
    setError("");
    const { error: failed } = await api.DELETE("/api/v1/users/{user_id}", { params: { path: { user_id: user.id } } });
    if (failed) setError(problemText(failed)); else onChange();
  };
  return (
    <tr data-user={user.username}>
      <td><strong>{user.username}</strong>{self && <span className="muted small"> (you)</span>}<div className="muted small">{user.email ?? ""}</div></td>
      <td><RoleSelect value={user.role} onChange={(role) => void patch({ role })} label={`Role of ${user.username}`} /></td>
      <td>{editing ? (
        <form onSubmit={saveGrants} className="inline-form" aria-label={`Grants of ${user.username}`}>
          <input value={grants} onChange={(e) => setGrants(e.target.value)} aria-label={`Grants of ${user.username} (PIPELINE=ROLE, comma separated)`} />
          <button type="submit">Save</button> <button type="button" onClick={() => setEditing(false)}>Cancel</button>
        </form>
      ) : (
        <>{grantText(user.grants) || <span className="muted">none</span>}{" "}
          <button type="button" className="link" onClick={() => { setGrants(grantText(user.grants)); setEditing(true); }}
                  aria-label={`Edit grants of ${user.username}`}>edit</button></>
      )}</td>
      <td>{user.provider ?? "password"}</td>
      <td>{user.disabled ? <span className="badge state-failed">disabled</span> : <span className="badge state-succeeded">active</span>}
        {user.must_change_password && <div className="muted small">must change password</div>}</td>
      <td>{fmtTime(user.last_login_at)}</td>
      <td className="row-actions">
        <button type="button" onClick={() => void patch({ disabled: !user.disabled })}>{user.disabled ? "Enable" : "Disable"}<span className="sr-only"> {user.username}</span></button>
        {!self && <button type="button" className="danger" onClick={() => void remove()}>Delete<span className="sr-only"> {user.username}</span></button>}
        <ErrorNote text={error} />
      </td>
    </tr>
  );
}

function Invitations() {
  const list = useData(async () => {
    const { data, error } = await api.GET("/api/v1/invitations");
    if (error) throw new Error(problemText(error));
    return data;
  }, []);
  const [role, setRole] = useState<RoleName>("viewer");
  const [email, setEmail] = useState("");
  const [hours, setHours] = useState("72");
  const [error, setError] = useState("");
  const [made, setMade] = useState<Schemas["InvitationCreated"] | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault(); setError(""); setMade(null);
    const { data, error: failed } = await api.POST("/api/v1/invitations", { body: { role, email: email || null, expires_in_hours: Number(hours) } });
    if (failed) { setError(problemText(failed, "could not make the invitation")); return; }
    setMade(data); setEmail(""); list.reload();
  };
  const revoke = async (id: string) => {
    setError("");
    const { error: failed } = await api.DELETE("/api/v1/invitations/{invitation_id}", { params: { path: { invitation_id: id } } });
    if (failed) setError(problemText(failed)); else list.reload();
  };
  const now = Date.now();
  return (
    <Card title="Invitations">
      <form onSubmit={submit} className="filters" aria-label="Invite someone">
        <label>Role <RoleSelect value={role} onChange={setRole} label="Invitation role" /></label>
        <label>Email (optional) <input type="email" value={email} onChange={(e) => setEmail(e.target.value)} autoComplete="off" /></label>
        <label>Expires after <select value={hours} onChange={(e) => setHours(e.target.value)}>
          <option value="24">1 day</option><option value="72">3 days</option><option value="168">7 days</option><option value="720">30 days</option></select></label>
        <button type="submit">Create invitation link</button>
      </form>
      <ErrorNote text={error || list.error} />
      {made && (
        <div role="status" className="once">
          <p>Invitation link for the {made.invitation.role} role, valid until {fmtTime(made.invitation.expires_at)}; shown once, works once:</p>
          <div className="copy-row"><code className="mono secret" data-testid="invitation-link">{made.link}</code><CopyButton text={made.link} label="Copy link" /></div>
        </div>
      )}
      {!list.data ? <Loading /> : (
        <table className="table" aria-label="Invitations">
          <thead><tr><th scope="col">Role</th><th scope="col">Email</th><th scope="col">Created</th><th scope="col">Expires</th><th scope="col">State</th><th scope="col"><span className="sr-only">Actions</span></th></tr></thead>
          <tbody>
            {list.data.map((i) => {
              const state = i.used_at ? `used by ${i.used_by ?? "?"}` : new Date(i.expires_at).getTime() < now ? "expired" : "open";
              return (
                <tr key={i.id} data-invitation={i.id}>
                  <td>{i.role}</td><td>{i.email ?? <span className="muted">any</span>}</td>
                  <td>{fmtTime(i.created_at)} <span className="muted small">by {i.created_by}</span></td>
                  <td>{fmtTime(i.expires_at)}</td><td>{state}</td>
                  <td>{!i.used_at && <button type="button" className="danger" onClick={() => void revoke(i.id)}
                                              aria-label={`Revoke invitation ${i.id}`}>Revoke</button>}</td>
                </tr>
              );
            })}
            {!list.data.length && <tr><td colSpan={6} className="muted">No invitations.</td></tr>}
          </tbody>
        </table>
      )}
    </Card>
  );
}

function JoinRequests({ onDecided }: { onDecided: () => void }) {
  const list = useData(async () => {
    const { data, error } = await api.GET("/api/v1/join-requests", { params: { query: { state: "pending" } } });
    if (error) throw new Error(problemText(error));
    return data;
  }, [], 15000);
  const [roles, setRoles] = useState<Record<string, RoleName>>({});
  const [error, setError] = useState("");
  const decide = async (id: string, approve: boolean) => {
    setError("");
    const path = { request_id: id };
    const res = approve
      ? await api.POST("/api/v1/join-requests/{request_id}/approve", { params: { path }, body: { role: roles[id] ?? "viewer" } })
      : await api.POST("/api/v1/join-requests/{request_id}/reject", { params: { path } });
    if (res.error) setError(problemText(res.error)); else { list.reload(); onDecided(); }
  };
  return (
    <Card title="Join requests">
      <ErrorNote text={error || list.error} />
      {!list.data ? <Loading /> : (
        <table className="table" aria-label="Join requests">
          <thead><tr><th scope="col">Who</th><th scope="col">Provider</th><th scope="col">Asked</th><th scope="col">Role</th><th scope="col"><span className="sr-only">Decision</span></th></tr></thead>
          <tbody>
            {list.data.map((j) => (
              <tr key={j.id}>
                <td><strong>{j.username}</strong><div className="muted small">{j.email ?? ""}</div></td>
                <td>{j.provider}</td><td>{fmtTime(j.created_at)}</td>
                <td><RoleSelect value={roles[j.id] ?? "viewer"} onChange={(r) => setRoles({ ...roles, [j.id]: r })} label={`Role for ${j.username}`} /></td>
                <td className="row-actions">
                  <button type="button" onClick={() => void decide(j.id, true)}>Approve<span className="sr-only"> {j.username}</span></button>
                  <button type="button" className="danger" onClick={() => void decide(j.id, false)}>Reject<span className="sr-only"> {j.username}</span></button>
                </td>
              </tr>
            ))}
            {!list.data.length && <tr><td colSpan={5} className="muted">No pending requests.</td></tr>}
          </tbody>
        </table>
      )}
    </Card>
  );
}

export default function Users() {
  const { me } = useSession();
  const users = useData(async () => {
    const { data, error } = await api.GET("/api/v1/users");
    if (error) throw new Error(problemText(error));
    return data;
  }, []);
  if (me?.role !== "admin") return <><h1>Users</h1><p>Only admins manage users.</p></>;
  return (
    <>
      <h1>Users</h1>
      <p className="muted">Roles: viewer reads everything but secret values; operator also runs, cancels and retries runs and switches schedules; admin also manages secrets, users and tokens. Grants raise the role on some pipelines.</p>
      <ErrorNote text={users.error} />
      <Card title="Users and roles">
        {!users.data ? <Loading /> : (
          <table className="table" aria-label="Users">
            <thead><tr><th scope="col">User</th><th scope="col">Role</th><th scope="col">Grants</th><th scope="col">Login</th><th scope="col">State</th><th scope="col">Last login</th><th scope="col"><span className="sr-only">Actions</span></th></tr></thead>
            <tbody>{users.data.map((u) => <UserRow key={u.id} user={u} self={u.id === me.user?.id} onChange={users.reload} />)}</tbody>
          </table>
        )}
      </Card>
      <div className="grid2">
        <CreateUser onDone={users.reload} />
        <JoinRequests onDecided={users.reload} />
      </div>
      <Invitations />
    </>
  );
}
