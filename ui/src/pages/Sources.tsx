// Git repositories pipelines are synced from: the commit served, the last sync's outcome with
// every problem, when the next sync is due; "Sync now" for operators; for SSH sources the deploy
// key's public half (the private key stays a stored secret the API never returns).
import { useState } from "react";
import { api, problemText, type Schemas } from "../api/client";
import { CopyButton } from "../components/Copy";
import { Card, ErrorNote, Loading } from "../components/Common";
import { fmtTime, useData } from "../hooks";
import { can, useSession } from "../session";

type Source = Schemas["SyncOut"];

const STATUS: Record<string, [string, string]> = {
  ok: ["ok", "succeeded"], invalid: ["invalid commit", "failed"], unreachable: ["unreachable", "failed"],
  branch_missing: ["branch missing", "failed"], never_synced: ["never synced", "none"],
};

export function SourceStatus({ status }: { status: string }) {
  const [label, style] = STATUS[status] ?? [status, "none"];
  return <span className={`badge state-${style}`} data-testid="source-status">{label}</span>;
}

function Commit({ sha }: { sha: string | null | undefined }) {
  return sha ? <code className="mono" title={sha}>{sha}</code> : <span className="muted">none</span>;
}

function DeployKey({ source, admin }: { source: Source; admin: boolean }) {
  const key = useData(async () => {
    const { data, error, response } = await api.GET("/api/v1/git/{name}/deploy-key", { params: { path: { name: source.name } } });
    if (response.status === 404) return null;
    if (error) throw new Error(problemText(error));
    return data;
  }, [source.name]);
  const [note, setNote] = useState("");
  const generate = async () => {
    if (key.data && !window.confirm(`Replace the deploy key of ${source.name}? The repository must then be given the new public key.`)) return;
    setNote("");
    const { error } = await api.POST("/api/v1/git/{name}/deploy-key", { params: { path: { name: source.name } } });
    if (error) setNote(problemText(error)); else key.reload();
  };
  return (
    <section aria-label={`Deploy key of ${source.name}`}>
      <h3 className="small">Deploy key</h3>
      {key.error && <ErrorNote text={key.error} />}
      {key.data === undefined && !key.error && <Loading />}
      {key.data === null && <p className="muted">No deploy key yet (secret {source.deploy_key_secret}).{admin ? " Generate one, then add its public key to the repository as a read-only deploy key." : " An admin generates one."}</p>}
      {key.data && <>
        <pre className="code" tabIndex={0} aria-label={`Public deploy key of ${source.name}`} data-testid="deploy-key">{key.data.public_key}</pre>
        <p className="muted small">Add it to the repository as a read-only deploy key. The private key is the stored secret {key.data.secret}; it is never shown.</p>
        <CopyButton text={key.data.public_key} label={`Copy public key of ${source.name}`} />
      </>}
      {admin && <p><button type="button" onClick={() => void generate()}>{key.data ? "Replace deploy key" : "Generate deploy key"}</button></p>}
      <ErrorNote text={note} />
    </section>
  );
}

function SourceCard({ source, operator, admin, onSynced }: { source: Source; operator: boolean; admin: boolean; onSynced: () => void }) {
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState("");
  const sync = async () => {
    setBusy(true); setNote("");
    const { data, error } = await api.POST("/api/v1/git/{name}/sync", { params: { path: { name: source.name } } });
    setBusy(false);
    if (error) { setNote(problemText(error)); return; }
    setNote(`Sync of ${source.name} done at ${fmtTime(new Date().toISOString())}: ${(STATUS[data.status] ?? [data.status])[0]}.`);
    onSynced();
  };
  const behind = source.seen_commit && source.seen_commit !== source.good_commit;
  return (
    <Card title={`Source ${source.name}`} actions={operator ? (
      <button type="button" onClick={() => void sync()} disabled={busy} aria-busy={busy} aria-label={`Sync now: ${source.name}`}>Sync now</button>) : undefined}>
      <dl className="facts" data-source={source.name}>
        <dt>Status</dt><dd><SourceStatus status={source.status} /> {source.message}</dd>
        <dt>URL</dt><dd className="mono" data-testid="source-url">{source.url}</dd>
        <dt>Branch</dt><dd className="mono">{source.branch}</dd>
        <dt>Sub-folder</dt><dd className="mono">{source.subdir || "(repository root)"}</dd>
        <dt>Serving</dt><dd data-testid="source-commit"><Commit sha={source.good_commit} /></dd>
        {behind && <><dt>Branch head</dt><dd><Commit sha={source.seen_commit} /> (not served)</dd></>}
        {source.served_here !== source.good_commit && <><dt>This server</dt><dd><Commit sha={source.served_here} /> (switches to the agreed commit shortly)</dd></>}
        <dt>Last sync</dt><dd>{fmtTime(source.last_sync_at)}</dd>
        <dt>Served commit changed</dt><dd>{fmtTime(source.synced_at)}</dd>
        <dt>Next sync</dt><dd>{source.interval ? `${fmtTime(source.next_sync_at)} (every ${source.interval} s)` : "on demand or by push webhook only"}</dd>
        <dt>Push webhook</dt><dd>{source.webhook ? <code className="mono">POST /api/v1/git/{source.name}/webhook</code> : "not enabled (set webhook_secret)"}</dd>
        <dt>Credentials</dt><dd>{source.ssh ? "SSH deploy key" : "a token, if any, is kept out of the URL and never shown"}</dd>
      </dl>
      {source.problems.length > 0 && (
        <div role="alert">
          <h3 className="small">Problems of the last sync ({source.problems.length})</h3>
          <ul aria-label={`Problems of ${source.name}`} className="error-note">
            {source.problems.map((p, i) => <li key={i} className="mono small">{p}</li>)}
          </ul>
        </div>
      )}
      <p role="status" className="muted">{note}</p>
      {source.ssh && <DeployKey source={source} admin={admin} />}
    </Card>
  );
}

export default function Sources() {
  const { me } = useSession();
  const list = useData(async () => {
    const { data, error } = await api.GET("/api/v1/git");
    if (error) throw new Error(problemText(error));
    return data.items;
  }, [], 10000);
  const operator = can(me, "operator") && !me?.scope?.length;  // the route is global: scoped tokens are refused
  return (
    <>
      <h1>Sources</h1>
      <p className="muted">Git repositories pipelines are synced from. A commit is served only when every pipeline in it is valid; otherwise the last good commit stays and the problems are listed.</p>
      <ErrorNote text={list.error} />
      {!list.data && !list.error && <Loading />}
      {list.data && !list.data.length && <p className="muted" data-testid="no-sources">No git repositories are configured: pipelines come from the pipelines folder. Set KUBELINE_GIT_REPOS to sync them from git (docs/git-sync.md).</p>}
      {(list.data ?? []).map((s) => <SourceCard key={s.name} source={s} operator={operator} admin={me?.role === "admin"} onSynced={list.reload} />)}
    </>
  );
}
