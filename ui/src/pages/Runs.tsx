import { useState } from "react";
import { Link, useSearchParams } from "wouter";
import { api, FINAL, problemText, type Run } from "../api/client";
import { ErrorNote, StateBadge } from "../components/Common";
import { fmtDuration, fmtTime, useData } from "../hooks";
import { canOn, canSomewhere, usePipelineTags, useSession } from "../session";

const STATES = ["queued", "running", "succeeded", "failed", "cancelled", "timed_out"] as const;
const TRIGGERS = ["manual", "api", "schedule", "webhook", "downstream", "retry", "kubernetes"];
const RANGES: Record<string, number> = { "": 0, "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };

export default function Runs() {
  const { me } = useSession();
  const [params, setParams] = useSearchParams();
  const pipeline = params.get("pipeline") ?? "", state = params.get("state") ?? "", trigger = params.get("trigger") ?? "";
  const range = params.get("range") ?? "";
  const [cursors, setCursors] = useState<string[]>([]);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [note, setNote] = useState("");
  const cursor = cursors[cursors.length - 1];
  const pipelines = useData(async () => (await api.GET("/api/v1/pipelines")).data?.items ?? [], []);
  const runs = useData(async () => {
    const { data, error } = await api.GET("/api/v1/runs", { params: { query: {
      pipeline: pipeline || undefined, state: state ? [state as Run["state"]] : undefined,
      trigger: (trigger || undefined) as never, limit: 50, cursor } } });
    if (error) throw new Error(problemText(error));
    return data;
  }, [pipeline, state, trigger, cursor], 5000);
  const since = RANGES[range] ? Date.now() - RANGES[range] * 1000 : 0;
  const items = (runs.data?.items ?? []).filter((r) => !since || new Date(r.created_at).getTime() >= since);
  const set = (k: string, v: string) => { const p = new URLSearchParams(params); if (v) p.set(k, v); else p.delete(k); setParams(p); setCursors([]); };
  const tags = usePipelineTags(me, items.map((r) => r.pipeline));
  const mayCancel = (r: Run) => canOn(me, "operator", r.pipeline, tags[r.pipeline] ?? []);
  const operator = canSomewhere(me, "operator");
  const cancellable = items.filter((r) => selected.has(r.id) && !FINAL.has(r.state) && mayCancel(r));
  const bulkCancel = async () => {
    const results = await Promise.all(cancellable.map((r) => api.POST("/api/v1/runs/{run_id}/cancel", { params: { path: { run_id: r.id } } })));
    const failed = results.filter((r) => r.error).length;
    setNote(`${results.length - failed} cancelled${failed ? `, ${failed} refused` : ""}`);
    setSelected(new Set()); runs.reload();
  };
  const toggle = (id: string) => { const s = new Set(selected); if (s.has(id)) s.delete(id); else s.add(id); setSelected(s); };
  return (
    <>
      <h1>Runs</h1>
      <form className="filters" aria-label="Filter runs" onSubmit={(e) => e.preventDefault()}>
        <label>Pipeline <select value={pipeline} onChange={(e) => set("pipeline", e.target.value)}>
          <option value="">all</option>{pipelines.data?.map((p) => <option key={p.name}>{p.name}</option>)}</select></label>
        <label>State <select value={state} onChange={(e) => set("state", e.target.value)}>
          <option value="">all</option>{STATES.map((s) => <option key={s} value={s}>{s.replace("_", " ")}</option>)}</select></label>
        <label>Trigger <select value={trigger} onChange={(e) => set("trigger", e.target.value)}>
          <option value="">all</option>{TRIGGERS.map((t) => <option key={t}>{t}</option>)}</select></label>
        <label>Created <select value={range} onChange={(e) => set("range", e.target.value)}>
          <option value="">any time</option>{Object.keys(RANGES).filter(Boolean).map((r) => <option key={r} value={r}>last {r}</option>)}</select></label>
        {operator && <button type="button" disabled={!cancellable.length} onClick={bulkCancel}>Cancel selected ({cancellable.length})</button>}
        <span role="status" className="muted">{note}</span>
      </form>
      <ErrorNote text={runs.error} />
      <table className="table" aria-label="Runs">
        <thead><tr>{operator && <th scope="col"><span className="sr-only">Select</span></th>}<th scope="col">Run</th><th scope="col">Pipeline</th><th scope="col">State</th>
          <th scope="col">Trigger</th><th scope="col">Created</th><th scope="col">Duration</th></tr></thead>
        <tbody>
          {items.map((r) => (
            <tr key={r.id}>
              {operator && <td>{mayCancel(r) && <input type="checkbox" aria-label={`Select run ${r.id}`} checked={selected.has(r.id)} onChange={() => toggle(r.id)} disabled={FINAL.has(r.state)} />}</td>}
              <td><Link to={`/runs/${r.id}`} className="mono">{r.id}</Link></td>
              <td><Link to={`/pipelines/${r.pipeline}`}>{r.pipeline}</Link></td>
              <td><StateBadge state={r.state} /></td>
              <td>{r.triggered_by.kind}</td>
              <td>{fmtTime(r.created_at)}</td>
              <td>{fmtDuration(r.duration)}</td>
            </tr>
          ))}
          {!items.length && <tr><td colSpan={operator ? 7 : 6} className="muted">No runs match.</td></tr>}
        </tbody>
      </table>
      <nav className="pager" aria-label="Pages">
        <button type="button" disabled={!cursors.length} onClick={() => setCursors(cursors.slice(0, -1))}>Newer</button>
        <button type="button" disabled={!runs.data?.next} onClick={() => runs.data?.next && setCursors([...cursors, runs.data.next])}>Older</button>
      </nav>
    </>
  );
}
