import { Link } from "react-router-dom";
import { api, type Stats } from "../api/client";
import { HBars, Heatmap, StackedBars } from "../components/Charts";
import { Card, ErrorNote, Loading, StateBadge } from "../components/Common";
import { fmtDuration, fmtTime, useData } from "../hooks";

export function Dashboard() {
  const stats = useData(async () => {
    const early = takeStatsPrefetch();
    const found = early ? await early : undefined;
    return found ?? (await api.GET("/api/v1/stats", { params: { query: { days: 14 } } })).data;
  }, [], 10000);
  const running = useData(async () => (await api.GET("/api/v1/runs", { params: { query: { state: ["running"], limit: 10 } } })).data, [], 5000);
  const schedules = useData(async () => (await api.GET("/api/v1/schedules", { params: { query: { count: 1 } } })).data, [], 30000);
  const s = stats.data;
  const fires = (schedules.data ?? []).filter((x) => x.next_fires.length)
    .sort((a, b) => a.next_fires[0].localeCompare(b.next_fires[0])).slice(0, 8);
  return (
    <>
      <h1>Dashboard</h1>
      <ErrorNote text={stats.error} />
      {!s ? <Loading /> : (
        <>
          <div className="tiles" data-testid="tiles">
            <div className="tile"><span className="tile-n">{s.total}</span><span>runs in 14 days</span></div>
            <div className="tile"><span className="tile-n">{s.failure_rate == null ? "–" : `${(s.failure_rate * 100).toFixed(1)}%`}</span><span>failure rate</span></div>
            <div className="tile"><span className="tile-n">{s.running}</span><span>running now</span></div>
            <div className="tile"><span className="tile-n">{s.queued}</span><span>queue depth</span></div>
          </div>
          <div className="grid2">
            <Card title="Runs over time"><StackedBars days={s.days} label="Runs per day, succeeded and failed stacked" /></Card>
            <Card title="When runs start (UTC)"><Heatmap cells={s.heatmap} label="Runs by weekday and hour" /></Card>
            <Card title="Running now">
              {running.data?.items.length ? (
                <ul className="plain">{running.data.items.map((r) => (
                  <li key={r.id}><Link to={`/runs/${r.id}`}>{r.pipeline}</Link> <StateBadge state={r.state} /> <span className="muted">{fmtDuration(r.duration)}</span></li>
                ))}</ul>
              ) : <p className="muted">Nothing is running.</p>}
            </Card>
            <Card title="Next scheduled fires">
              {fires.length ? (
                <ul className="plain">{fires.map((f) => (
                  <li key={f.key}><Link to={`/pipelines/${f.pipeline}`}>{f.pipeline}</Link> <span className="muted">{f.id}</span> {fmtTime(f.next_fires[0])}</li>
                ))}</ul>
              ) : <p className="muted">No enabled schedules.</p>}
            </Card>
            <Card title="Slowest pipelines">
              {s.slowest.length ? <HBars label="Mean run duration by pipeline" items={s.slowest.map((x) => ({
                name: x.pipeline, value: x.mean_seconds, text: `${fmtDuration(x.mean_seconds)} (${x.runs} runs)` }))} />
                : <p className="muted">No finished runs yet.</p>}
            </Card>
          </div>
        </>
      )}
    </>
  );
}

/** The stats request index.html started before the bundle loaded (once: later loads fetch anew). */
function takeStatsPrefetch(): Promise<Stats | undefined> | undefined {
  const holder = window as unknown as { __statsPrefetch?: Promise<Stats | undefined> };
  const early = holder.__statsPrefetch;
  holder.__statsPrefetch = undefined;
  return early;
}
