// CPU and memory of each attempt, as its executor reports them (local: CPU time and peak memory
// from the process's usage; Kubernetes: metrics.k8s.io). Shown only when some attempt has numbers.
import { api, type Attempt } from "../api/client";
import { useData } from "../hooks";
import { HBars } from "./Charts";

const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;

export function Resources({ runId, attempts, version }: { runId: string; attempts: Attempt[]; version: string }) {
  const found = useData(async () => {
    const all = await Promise.all(attempts.map(async (a) => {
      const { data } = await api.GET("/api/v1/runs/{run_id}/attempts/{attempt_id}", { params: { path: { run_id: runId, attempt_id: a.id } } });
      return data?.resources?.available ? { name: `${a.stage_id} #${a.number}`, r: data.resources } : null;
    }));
    return all.filter((x): x is NonNullable<typeof x> => x !== null);
  }, [runId, attempts.length, version]);
  const items = found.data ?? [];
  if (!items.length) return null;
  const memory = items.filter((i) => (i.r.peak_memory_bytes ?? i.r.memory_bytes) != null)
    .map((i) => { const v = (i.r.peak_memory_bytes ?? i.r.memory_bytes)!; return { name: i.name, value: v, text: mib(v) }; });
  const cpu = items.filter((i) => i.r.cpu_seconds != null || i.r.cpu_cores != null)
    .map((i) => i.r.cpu_seconds != null ? { name: i.name, value: i.r.cpu_seconds, text: `${i.r.cpu_seconds.toFixed(2)} s` }
      : { name: i.name, value: i.r.cpu_cores!, text: `${i.r.cpu_cores!.toFixed(3)} cores` });
  return (
    <section className="card" aria-label="CPU and memory" data-testid="resources">
      <header className="card-head"><h2>CPU and memory</h2></header>
      <div className="grid2">
        <div><h3 className="small">Memory (peak, or now while running)</h3><HBars items={memory} label="Memory per attempt" /></div>
        <div><h3 className="small">CPU (time used, or cores now)</h3><HBars items={cpu} label="CPU per attempt" /></div>
      </div>
    </section>
  );
}
