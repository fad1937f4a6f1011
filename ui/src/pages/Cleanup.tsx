// Cleanup (retention), for admins: the plan is a dry run of what retention would remove now, per
// pipeline and kind with counts and sizes; applying it needs an explicit confirmation. A policy
// that would remove every finished run of a pipeline is refused by the server unless forced: the
// page says which pipelines and why, and forcing is a separate, named choice.
import { useLayoutEffect, useRef, useState } from "react";
import { api, problemText, type Schemas } from "../api/client";
import { Card, ErrorNote, Loading } from "../components/Common";
import { useData } from "../hooks";
import { useSession } from "../session";

type Plan = Schemas["PlanOut"];
type Item = Schemas["ItemOut"];
const KINDS: Record<string, string> = {
  run: "runs", logs: "logs", artifacts: "artifacts", log_tail: "log tails", venv: "virtualenvs", checkout: "git checkouts", audit: "audit rows",
};

export function fmtBytes(n: number | null | undefined): string {
  if (n == null) return "–";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(1)} ${units[i]}`;
}

function sum(items: Item[]): number | null {
  const known = items.filter((i) => i.bytes != null);
  return known.length ? known.reduce((a, i) => a + (i.bytes ?? 0), 0) : null;
}

function Summary({ plan }: { plan: Plan }) {
  const groups = new Map<string, Item[]>();
  for (const item of plan.items) {
    const key = `${item.pipeline || "(server)"}\u0000${item.kind}`;
    groups.set(key, [...(groups.get(key) ?? []), item]);
  }
  const rows = [...groups.entries()].sort(([a], [b]) => a.localeCompare(b));
  return (
    <table className="table" aria-label="What would go, per pipeline and kind">
      <thead><tr><th scope="col">Pipeline</th><th scope="col">Kind</th><th scope="col">Count</th><th scope="col">Size</th></tr></thead>
      <tbody>
        {rows.map(([key, items]) => {
          const [pipeline, kind] = key.split("\u0000");
          return <tr key={key} data-group={`${pipeline}/${kind}`}><td>{pipeline}</td><td>{KINDS[kind] ?? kind}</td><td>{items.length}</td><td>{fmtBytes(sum(items))}</td></tr>;
        })}
        <tr><th scope="row" colSpan={2}>Total</th><td data-testid="plan-count">{plan.items.length}</td><td data-testid="plan-size">{fmtBytes(sum(plan.items))}</td></tr>
      </tbody>
    </table>
  );
}

function Refused({ notes, title }: { notes: string[]; title: string }) {
  if (!notes.length) return null;
  return (
    <div className="failure" role="alert" data-testid="refused">
      <p>{title}</p>
      <ul>{notes.map((n) => <li key={n}>{n}</li>)}</ul>
    </div>
  );
}

export default function Cleanup() {
  const { me } = useSession();
  const [force, setForce] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<Plan | null>(null);
  const [error, setError] = useState("");
  const applyButton = useRef<HTMLButtonElement>(null);
  const keepButton = useRef<HTMLButtonElement>(null);
  const wasConfirming = useRef(false);
  // The confirmation opens on its safe choice, and keyboard users land back on the button that
  // opened it. A layout effect: the focus moves in the same task as the change, before the next
  // key press can arrive (and the HTML autofocus attribute is not applied to inserted elements).
  useLayoutEffect(() => {
    if (confirming) keepButton.current?.focus();
    else if (wasConfirming.current) applyButton.current?.focus();
    wasConfirming.current = confirming;
  }, [confirming]);
  const plan = useData(async () => {
    const { data, error } = await api.GET("/api/v1/retention/plan", { params: { query: { force } } });
    if (error) throw new Error(problemText(error));
    return data;
  }, [force]);
  const apply = async () => {
    setBusy(true); setError("");
    const { data, error } = await api.POST("/api/v1/retention/apply", { params: { query: { force } } });
    setBusy(false); setConfirming(false);
    if (error) { setError(problemText(error)); return; }
    setResult(data); setForce(false); plan.reload();
  };
  const p = plan.data;
  const admin = me?.role === "admin";
  return (
    <>
      <h1>Cleanup</h1>
      <p className="muted">Retention removes finished runs, their logs and artifacts by each pipeline's <code>retention</code> (over KUBELINE_RETENTION), cuts oversized logs to their tail, and prunes unused virtualenvs and git checkouts. It runs on a schedule; this is what it would remove now. Running runs are never touched.</p>
      {plan.error && <ErrorNote text={plan.error} />}
      {result && <Card title="Last cleanup">
        <p role="status" data-testid="applied">Removed {result.items.length} item{result.items.length === 1 ? "" : "s"} ({fmtBytes(sum(result.items))}).</p>
        <Refused notes={result.refused} title="The server refused to clean these pipelines (their policy would delete every finished run):" />
      </Card>}
      {!p && !plan.error && <Loading />}
      {p && <Card title={force ? "Plan, forced" : "Plan (dry run)"}>
        <Refused notes={p.refused} title="Refused without force: these pipelines' policies would delete every finished run, the newest included. Fix the policy (keep some with max_runs), or force below." />
        {p.items.length ? <Summary plan={p} /> : <p className="muted" data-testid="nothing">Nothing to remove now.</p>}
        {admin && <div>
          {(p.refused.length > 0 || force) && <label><input type="checkbox" checked={force} onChange={(e) => { setForce(e.target.checked); setConfirming(false); }} />{" "}
            Force: also delete every finished run of the refused pipelines</label>}
          {!confirming && p.items.length > 0 && <p><button type="button" ref={applyButton} className="danger" onClick={() => setConfirming(true)}>Apply cleanup…</button></p>}
          {confirming && <div role="group" aria-label="Confirm cleanup" className="card">
            <p><strong>Delete {p.items.length} item{p.items.length === 1 ? "" : "s"} ({fmtBytes(sum(p.items))}) now?</strong> This cannot be undone{force ? ", and includes every finished run of the pipelines listed above" : ""}.</p>
            <button type="button" className="danger" disabled={busy} onClick={() => void apply()}>Delete {p.items.length} item{p.items.length === 1 ? "" : "s"}</button>{" "}
            <button type="button" ref={keepButton} onClick={() => setConfirming(false)}>Keep everything</button>
          </div>}
        </div>}
        <ErrorNote text={error} />
      </Card>}
      {p && p.items.length > 0 && <Card title="Items">
        <table className="table" aria-label="Items that would go">
          <thead><tr><th scope="col">Kind</th><th scope="col">Pipeline</th><th scope="col">Target</th><th scope="col">Why</th><th scope="col">Size</th></tr></thead>
          <tbody>{p.items.slice(0, 500).map((i) => (
            <tr key={`${i.kind}:${i.target}`}><td>{KINDS[i.kind] ?? i.kind}</td><td>{i.pipeline || "–"}</td><td className="mono small">{i.target}</td><td>{i.reason}</td><td>{fmtBytes(i.bytes)}</td></tr>
          ))}</tbody>
        </table>
        {p.items.length > 500 && <p className="muted">The first 500 of {p.items.length} items are listed.</p>}
      </Card>}
    </>
  );
}
