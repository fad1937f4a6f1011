import { useState, type FormEvent } from "react";
import { api, problemText, type Schemas } from "../api/client";
import { Card, ErrorNote, Loading } from "../components/Common";
import { CopyButton } from "../components/Copy";
import { fmtTime, useData } from "../hooks";
import { rolesUpTo, useSession, type RoleName } from "../session";

type Token = Schemas["TokenOut"];
const EXPIRIES: [string, string][] = [["7", "7 days"], ["30", "30 days"], ["90", "90 days"], ["365", "1 year"], ["", "never"]];

function tokenState(t: Token): string {
  if (t.revoked_at) return "revoked";
  if (t.expires_at && new Date(t.expires_at).getTime() < Date.now()) return "expired";
  return "active";
}

function CreateToken({ onDone }: { onDone: () => void }) {
  const { me } = useSession();
  const mine = (me?.role ?? "viewer") as RoleName;
  const [name, setName] = useState("");
  const [role, setRole] = useState<RoleName>("viewer");
  const [kind, setKind] = useState<"personal" | "service">("personal");
  const [pipelines, setPipelines] = useState("");
  const [days, setDays] = useState("90");
  const [error, setError] = useState("");
  const [made, setMade] = useState<Schemas["TokenCreated"] | null>(null);
  const submit = async (e: FormEvent) => {
    e.preventDefault(); setError(""); setMade(null);
    const scope = pipelines.split(",").map((s) => s.trim()).filter(Boolean);
    const { data, error: failed } = await api.POST("/api/v1/tokens", { body: {
      name, role, kind, pipelines: scope.length ? scope : null, expires_in_days: days ? Number(days) : null } });
    if (failed) { setError(problemText(failed, "could not make the token")); return; }
    setMade(data); setName(""); setPipelines(""); onDone();
  };
  return (
    <Card title="New token">
      <form onSubmit={submit} className="form" aria-label="New token">
        <label>Name <input value={name} onChange={(e) => setName(e.target.value)} required maxLength={128} placeholder="ci deploys" autoComplete="off" /></label>
        <label>Role <select value={role} onChange={(e) => setRole(e.target.value as RoleName)}>
          {rolesUpTo(mine).map((r) => <option key={r} value={r}>{r}</option>)}</select></label>
        {me?.role === "admin" && (
          <label>Kind <select value={kind} onChange={(e) => setKind(e.target.value as "personal" | "service")}>
            <option value="personal">personal (yours)</option><option value="service">service (no owner)</option></select></label>
        )}
        <label>Pipelines (optional) <span className="muted small">names or tag:TAG, comma separated; empty for all</span>
          <input value={pipelines} onChange={(e) => setPipelines(e.target.value)} placeholder="etl, tag:nightly" autoComplete="off" /></label>
        <label>Expires after <select value={days} onChange={(e) => setDays(e.target.value)}>
          {EXPIRIES.map(([v, label]) => <option key={label} value={v}>{label}</option>)}</select></label>
        <button type="submit">Create token</button>
      </form>
      <ErrorNote text={error} />
      {made && (
        <div role="status" className="once">
          <p>Token <strong>{made.token.name}</strong> created. Copy it now: it is shown only this once (the server keeps only its digest).</p>
          <div className="copy-row"><code className="mono secret" data-testid="token-secret">{made.secret}</code>
            <CopyButton text={made.secret} label="Copy token" /></div>
          <p className="muted small">Use it as <code>KUBELINE_TOKEN</code> or an <code>Authorization: Bearer</code> header.</p>
        </div>
      )}
    </Card>
  );
}

export default function Tokens() {
  const { me } = useSession();
  const [error, setError] = useState("");
  const [showOld, setShowOld] = useState(false);
  const tokens = useData(async () => {
    const { data, error: failed } = await api.GET("/api/v1/tokens");
    if (failed) throw new Error(problemText(failed));
    return data;
  }, []);
  const revoke = async (t: Token) => {
    if (!window.confirm(`Revoke token ${t.name}? Whatever uses it stops working at once.`)) return;
    setError("");
    const { error: failed } = await api.DELETE("/api/v1/tokens/{token_id}", { params: { path: { token_id: t.id } } });
    if (failed) setError(problemText(failed)); else tokens.reload();
  };
  const all = tokens.data ?? [];
  const shown = showOld ? all : all.filter((t) => tokenState(t) === "active");
  const admin = me?.role === "admin";
  return (
    <>
      <h1>API tokens</h1>
      <p className="muted">{admin ? "Every token of every user, and service tokens." : "Your personal tokens."} A token acts with its role, never above its owner's, and only on its pipelines when limited.</p>
      <div className="split">
        <CreateToken onDone={tokens.reload} />
        <Card title="Tokens" actions={<label className="small"><input type="checkbox" checked={showOld} onChange={(e) => setShowOld(e.target.checked)} /> show revoked and expired</label>}>
          <ErrorNote text={error || tokens.error} />
          {!tokens.data ? <Loading /> : (
            <table className="table" aria-label="Tokens">
              <thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Pipelines</th>{admin && <th scope="col">Owner</th>}
                <th scope="col">Expires</th><th scope="col">Last used</th><th scope="col">State</th><th scope="col"><span className="sr-only">Actions</span></th></tr></thead>
              <tbody>
                {shown.map((t) => (
                  <tr key={t.id} data-token={t.name}>
                    <td><strong>{t.name}</strong><div className="muted small">{t.kind} · created {fmtTime(t.created_at)}</div></td>
                    <td>{t.role}</td>
                    <td>{t.pipelines ? t.pipelines.join(", ") : <span className="muted">all</span>}</td>
                    {admin && <td>{t.kind === "service" ? <span className="muted">service</span> : t.created_by}</td>}
                    <td>{t.expires_at ? fmtTime(t.expires_at) : "never"}</td>
                    <td>{t.last_used_at ? fmtTime(t.last_used_at) : <span className="muted">never</span>}</td>
                    <td>{tokenState(t)}</td>
                    <td>{tokenState(t) === "active" && (
                      <button type="button" className="danger" onClick={() => void revoke(t)} aria-label={`Revoke token ${t.name}`}>Revoke</button>)}</td>
                  </tr>
                ))}
                {!shown.length && <tr><td colSpan={admin ? 8 : 7} className="muted">No tokens.</td></tr>}
              </tbody>
            </table>
          )}
        </Card>
      </div>
    </>
  );
}
