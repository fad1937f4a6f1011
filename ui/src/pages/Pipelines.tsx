import { useState } from "react";
import { Link } from "wouter";
import { api, problemText } from "../api/client";
import { ErrorNote, StateBadge } from "../components/Common";
import { EnvBadge } from "../components/Environment";
import { fmtTime, useData } from "../hooks";
import { canOn, useSession } from "../session";

export default function Pipelines() {
  const { me } = useSession();
  const [query, setQuery] = useState("");
  const [note, setNote] = useState("");
  const pipelines = useData(async () => (await api.GET("/api/v1/pipelines")).data?.items ?? [], [], 10000);
  const stats = useData(async () => (await api.GET("/api/v1/stats", { params: { query: { days: 30 } } })).data, [], 10000);
  const schedules = useData(async () => (await api.GET("/api/v1/schedules", { params: { query: { count: 1 } } })).data ?? [], [], 15000);
  const specs = useData(async () => {
    const names = (pipelines.data ?? []).map((p) => p.name);
    const found = await Promise.all(names.map(async (name) =>
      [name, ((await api.GET("/api/v1/pipelines/{name}/spec", { params: { path: { name } } })).data ?? {}) as { tags?: string[] }] as const));
    return Object.fromEntries(found);
  }, [pipelines.data]);
  const q = query.trim().toLowerCase();
  const items = (pipelines.data ?? []).filter((p) => !q || p.name.toLowerCase().includes(q) || p.description.toLowerCase().includes(q)
    || (specs.data?.[p.name]?.tags ?? []).some((t) => t.toLowerCase().includes(q)));
  const setSchedules = async (name: string, on: boolean) => {
    setNote("");
    for (const s of (schedules.data ?? []).filter((x) => x.pipeline === name)) {
      const path = { name, schedule_id: s.id };
      const res = on ? await api.POST("/api/v1/pipelines/{name}/schedules/{schedule_id}/enable", { params: { path } })
        : await api.POST("/api/v1/pipelines/{name}/schedules/{schedule_id}/disable", { params: { path } });
      if (res.error) { setNote(problemText(res.error)); break; }
    }
    schedules.reload();
  };
  return (
    <>
      <h1>Pipelines</h1>
      <div className="filters">
        <input type="search" aria-label="Search pipelines by name, description or tag" placeholder="Search name, description, tag"
               value={query} onChange={(e) => setQuery(e.target.value)} />
        <span role="status" className="muted">{items.length} of {pipelines.data?.length ?? 0}</span>
      </div>
      <ErrorNote text={pipelines.error || note} />
      <table className="table" aria-label="Pipelines">
        <thead><tr><th scope="col">Pipeline</th><th scope="col">Status</th><th scope="col">Last runs</th><th scope="col">Environment</th><th scope="col">Next fire</th>
          <th scope="col">Tags</th><th scope="col">Schedules</th></tr></thead>
        <tbody>
          {items.map((p) => {
            const recent = stats.data?.recent[p.name] ?? [];
            const mine = (schedules.data ?? []).filter((s) => s.pipeline === p.name);
            const next = mine.flatMap((s) => s.next_fires).sort()[0];
            const anyOn = mine.some((s) => s.enabled);
            return (
              <tr key={p.name}>
                <td><Link to={`/pipelines/${p.name}`}>{p.name}</Link><div className="muted small">{p.description}</div></td>
                <td>{recent[0] ? <StateBadge state={recent[0].state} /> : <span className="muted">no runs</span>}</td>
                <td><span className="dots" role="group" aria-label={`Last runs: ${recent.map((r) => r.state).join(", ") || "none"}`}>
                  {recent.slice().reverse().map((r) => <Link key={r.id} to={`/runs/${r.id}`} className={`dot fill-${r.state}`} aria-label={`run ${r.id} ${r.state}`} />)}
                </span></td>
                <td><EnvBadge env={p.environment} /></td>
                <td>{next ? fmtTime(next) : <span className="muted">–</span>}</td>
                <td>{(specs.data?.[p.name]?.tags ?? []).map((t) => <span key={t} className="tag">{t}</span>)}</td>
                <td>{mine.length && !canOn(me, "operator", p.name, specs.data?.[p.name]?.tags ?? []) ? (anyOn ? "on" : "off") : mine.length ? (
                  <label className="switch"><input type="checkbox" checked={anyOn} onChange={() => setSchedules(p.name, !anyOn)}
                         aria-label={`Schedules of ${p.name} ${anyOn ? "enabled" : "disabled"}`} /> {anyOn ? "on" : "off"}</label>
                ) : <span className="muted">none</span>}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </>
  );
}
