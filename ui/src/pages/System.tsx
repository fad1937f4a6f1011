import { api } from "../api/client";
import { Card, ErrorNote, Loading } from "../components/Common";
import { useData } from "../hooks";

export default function System() {
  const system = useData(async () => (await api.GET("/api/v1/system")).data, [], 10000);
  const ready = useData(async () => (await fetch("/readyz")).json() as Promise<{ status: string; checks: Record<string, string> }>, [], 10000);
  const s = system.data;
  return (
    <>
      <h1>System</h1>
      <ErrorNote text={system.error} />
      {!s ? <Loading /> : (
        <div className="grid2">
          <Card title="Server">
            <dl className="facts">
              <dt>Version</dt><dd>{s.version}</dd>
              <dt>Database</dt><dd>{s.database}</dd>
              <dt>Readiness</dt><dd>{ready.data ? `${ready.data.status} (${Object.entries(ready.data.checks).map(([k, v]) => `${k}: ${v}`).join(", ")})` : "…"}</dd>
              <dt>Queue depth</dt><dd>{s.queued} queued, {s.running} running</dd>
              <dt>Scheduler lag</dt><dd>{s.scheduler_lag == null ? "no schedule has fired yet"
                : `${s.scheduler_lag.toFixed(3)} s (fire due ${new Date(s.last_fire_at ?? "").toLocaleString()})`}</dd>
              <dt>Default executor</dt><dd>{s.default_executor}</dd>
              <dt>Kubernetes</dt><dd>{s.kubernetes_namespace ? `namespace ${s.kubernetes_namespace}` : "not connected (no kubernetes executor)"}</dd>
            </dl>
          </Card>
          <Card title="Executors">
            <table className="table" aria-label="Executors and capabilities">
              <thead><tr><th scope="col">Executor</th>{Object.keys(s.executors[0]?.capabilities ?? {}).map((c) => <th scope="col" key={c}>{c.replace("_", " ")}</th>)}</tr></thead>
              <tbody>{s.executors.map((e) => (
                <tr key={e.name}><td>{e.name}</td>{Object.values(e.capabilities).map((v, i) => <td key={i}>{v ? "yes" : "no"}</td>)}</tr>
              ))}</tbody>
            </table>
          </Card>
        </div>
      )}
    </>
  );
}
