import { useState } from "react";
import { Link, useLocation, useParams } from "wouter";
import { api, problemText, type Pipeline } from "../api/client";
import { DurationChart } from "../components/Charts";
import { Card, ErrorNote, Loading, StateBadge } from "../components/Common";
import { Dag } from "../components/Dag";
import { EnvBadge, EnvironmentView } from "../components/Environment";
import { Yaml } from "../components/Yaml";
import { fmtDuration, fmtTime, useData } from "../hooks";
import { canOn, roleOn, useSession } from "../session";

type Spec = { stages?: { id: string; depends_on?: string[]; dependsOn?: string[] }[]; triggers?: { webhook?: { enabled?: boolean; key?: string | null; secret?: string | null } | null }; tags?: string[] };

function TriggerForm({ pipeline }: { pipeline: Pipeline }) {
  const [, navigate] = useLocation();
  const [values, setValues] = useState<Record<string, string>>(() => Object.fromEntries(
    Object.entries(pipeline.inputs).map(([k, v]) => [k, v.default == null ? "" : typeof v.default === "string" ? v.default : JSON.stringify(v.default)])));
  const [error, setError] = useState("");
  const submit = async (e: React.FormEvent) => {
    e.preventDefault(); setError("");
    const inputs: Record<string, unknown> = {};
    for (const [k, spec] of Object.entries(pipeline.inputs)) {
      const raw = values[k];
      if (raw === "" && !spec.required) continue;
      if (spec.type === "string") inputs[k] = raw;
      else if (spec.type === "boolean") inputs[k] = raw === "true";
      else {
        try { inputs[k] = JSON.parse(raw); } catch { setError(`${k}: not a valid ${spec.type}`); return; }
      }
    }
    const { data, error } = await api.POST("/api/v1/runs", { body: { pipeline: pipeline.name, inputs } });
    if (error) setError(problemText(error)); else navigate(`/runs/${data.id}`);
  };
  return (
    <form onSubmit={submit} className="form" aria-label={`Run ${pipeline.name}`}>
      {Object.entries(pipeline.inputs).map(([k, spec]) => (
        <label key={k}>{k} <span className="muted small">{spec.type}{spec.required ? ", required" : ""}{spec.description ? ` — ${spec.description}` : ""}</span>
          {spec.type === "boolean" ? (
            <select value={values[k]} onChange={(e) => setValues({ ...values, [k]: e.target.value })} name={k}>
              <option value="true">true</option><option value="false">false</option></select>
          ) : (
            <input name={k} value={values[k]} required={spec.required} inputMode={spec.type === "integer" || spec.type === "number" ? "decimal" : undefined}
                   onChange={(e) => setValues({ ...values, [k]: e.target.value })} />
          )}
        </label>
      ))}
      {!Object.keys(pipeline.inputs).length && <p className="muted">This pipeline declares no inputs.</p>}
      <button type="submit">Run now</button>
      <ErrorNote text={error} />
    </form>
  );
}

function Webhook({ name, spec }: { name: string; spec: Spec }) {
  const hook = spec.triggers?.webhook;
  const [copied, setCopied] = useState(false);
  if (!hook || hook.enabled === false) return <p className="muted">No webhook (add <code>triggers: {"{webhook: {enabled: true}}"}</code> to the spec).</p>;
  const url = `${window.location.origin}/api/v1/hooks/${name}/${hook.key || "default"}`;
  const curl = hook.secret
    ? `body='{}'\nsig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$${hook.secret}" | cut -d' ' -f2)\n` +
      `curl -X POST '${url}' -H 'Content-Type: application/json' \\\n  -H "X-Kubeline-Timestamp: $(date +%s)" -H "X-Kubeline-Signature: sha256=$sig" -d "$body"`
    : `curl -X POST '${url}' -H 'Content-Type: application/json' -d '{}'`;
  return (
    <>
      <div className="copy-row"><code className="mono" data-testid="webhook-url">{url}</code>
        <button type="button" onClick={async () => { await navigator.clipboard?.writeText(url); setCopied(true); }}>Copy URL</button>
        <span role="status" className="muted">{copied ? "copied" : ""}</span></div>
      <p className="muted small">{hook.secret ? `Signed with the stored secret ${hook.secret} (HMAC-SHA256 of the body):` : "Unsigned (set triggers.webhook.secret to require signatures):"}</p>
      <pre className="code" tabIndex={0} aria-label="curl example">{curl}</pre>
    </>
  );
}

export default function PipelineDetail() {
  const { name = "" } = useParams();
  const { me } = useSession();
  const pipeline = useData(async () => {
    const { data, error } = await api.GET("/api/v1/pipelines/{name}", { params: { path: { name } } });
    if (error) throw new Error(problemText(error));
    return data;
  }, [name], 10000);  // the environment state in the title line follows a build
  const spec = useData(async () => (await api.GET("/api/v1/pipelines/{name}/spec", { params: { path: { name } } })).data as Spec | undefined, [name]);
  const schedules = useData(async () => (await api.GET("/api/v1/pipelines/{name}/schedules", { params: { path: { name }, query: { count: 3 } } })).data ?? [], [name], 30000);
  const runs = useData(async () => (await api.GET("/api/v1/runs", { params: { query: { pipeline: name, limit: 50 } } })).data?.items ?? [], [name], 5000);
  if (pipeline.error) return <><h1>{name}</h1><ErrorNote text={pipeline.error} /></>;
  const p = pipeline.data;
  if (!p) return <Loading />;
  const dag = Object.fromEntries((spec.data?.stages ?? []).map((s) => [s.id, s.depends_on ?? s.dependsOn ?? []]));
  return (
    <>
      <div className="title-row"><h1>{p.name}</h1>{(spec.data?.tags ?? []).map((t) => <span key={t} className="tag">{t}</span>)}</div>
      <p className="muted">{p.description || "No description."} · source {p.source} · {p.stages.length} stages · updated {fmtTime(p.updated_at)} · environment <EnvBadge env={p.environment} /></p>
      <div className="grid2">
        {canOn(me, "operator", p.name, spec.data?.tags ?? []) ? <Card title="Run this pipeline"><TriggerForm pipeline={p} /></Card>
          : <Card title="Run this pipeline"><p className="muted" data-testid="no-run-rights">You have the {roleOn(me, p.name, spec.data?.tags ?? []) ?? "no"} role on {p.name}: operators start its runs.</p></Card>}
        <Card title="Stages"><Dag dag={dag} label={`Stage graph of ${p.name}`} /></Card>
        <Card title="Schedules">
          {schedules.data?.length ? (
            <table className="table" aria-label="Schedules"><thead><tr><th scope="col">Schedule</th><th scope="col">When</th><th scope="col">Next fires</th><th scope="col">Enabled</th></tr></thead>
              <tbody>{schedules.data.map((s) => (
                <tr key={s.id}><td>{s.id}</td><td className="mono">{s.cron ?? (s.interval ? `every ${s.interval} s` : s.at)} {s.timezone}</td>
                  <td>{s.next_fires.map((f) => <div key={f}>{fmtTime(f)}</div>)}</td><td>{s.enabled ? "yes" : "no"}</td></tr>
              ))}</tbody></table>
          ) : <p className="muted">No schedules.</p>}
        </Card>
        <Card title="Webhook">{spec.data && <Webhook name={p.name} spec={spec.data} />}</Card>
      </div>
      <Card title="Run history">
        <DurationChart runs={(runs.data ?? []).slice().reverse()} label="Durations of the last runs, oldest first" />
        <table className="table" aria-label="Run history">
          <thead><tr><th scope="col">Run</th><th scope="col">State</th><th scope="col">Created</th><th scope="col">Duration</th></tr></thead>
          <tbody>{(runs.data ?? []).slice(0, 20).map((r) => (
            <tr key={r.id}><td><Link className="mono" to={`/runs/${r.id}`}>{r.id}</Link></td><td><StateBadge state={r.state} /></td>
              <td>{fmtTime(r.created_at)}</td><td>{fmtDuration(r.duration)}</td></tr>
          ))}</tbody>
        </table>
      </Card>
      <Card title="Environment and dependencies"><EnvironmentView name={p.name} /></Card>
      <Card title="Spec">{spec.data ? <Yaml data={spec.data} label={`Spec of ${p.name} as YAML`} /> : <Loading />}</Card>
    </>
  );
}
