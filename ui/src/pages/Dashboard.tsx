import { Link } from "wouter";
import { api, earlyData } from "../api/client";
import { HBars, Heatmap, StackedBars } from "../components/Charts";
import { Card, ErrorNote, Loading, StateBadge } from "../components/Common";
import { fmtDuration, fmtTime, useData } from "../hooks";

const TILES = ["runs in 14 days", "failure rate", "running now", "queue depth"];

// When the browser opens here its first render has the three answers (inside index.html: the
// server's kubeline/ui/first.py, which asks for these exact URLs). Otherwise the page's frame
// (tiles, cards) shows at once and each part fills in when its call answers, so the slowest call
// (the aggregates) holds back only what it draws.
export function Dashboard() {
  const stats = useData(async () => (await api.GET("/api/v1/stats", { params: { query: { days: 14, recent: 0 } } })).data,
    [], 10000, earlyData("/api/v1/stats?days=14&recent=0"));
  const running = useData(async () => (await api.GET("/api/v1/runs", { params: { query: { state: ["running"], limit: 10 } } })).data, [], 5000,
    earlyData("/api/v1/runs?state=running&limit=10"));
  const schedules = useData(async () => (await api.GET("/api/v1/schedules", { params: { query: { count: 1 } } })).data, [], 30000,
    earlyData("/api/v1/schedules?count=1"));
  const s = stats.data;
  const fires = (schedules.data ?? []).filter((x) => x.next_fires.length)
    .sort((a, b) => a.next_fires[0].localeCompare(b.next_fires[0])).slice(0, 8);
  const numbers = s && [s.total, s.failure_rate == null ? "–" : `${(s.failure_rate * 100).toFixed(1)}%`, s.running, s.queued];
  return (
    <>
      <h1>Dashboard</h1>
      <ErrorNote text={stats.error} />
      <div className="tiles" data-testid={numbers ? "tiles" : undefined} aria-busy={!numbers}>
        {TILES.map((label, i) => (
          <div className="tile" key={label}><span className="tile-n">{numbers ? numbers[i] : "…"}</span><span>{label}</span></div>
        ))}
      </div>
      <div className="grid2">
        <Card title="Runs over time">{s ? <StackedBars days={s.days} label="Runs per day, succeeded and failed stacked" /> : <Loading />}</Card>
        <Card title="When runs start (UTC)">{s ? <Heatmap cells={s.heatmap} label="Runs by weekday and hour" /> : <Loading />}</Card>
        <Card title="Running now">
          {!running.data ? <Loading /> : running.data.items.length ? (
            <ul className="plain">{running.data.items.map((r) => (
              <li key={r.id}><Link to={`/runs/${r.id}`}>{r.pipeline}</Link> <StateBadge state={r.state} /> <span className="muted">{fmtDuration(r.duration)}</span></li>
            ))}</ul>
          ) : <p className="muted">Nothing is running.</p>}
        </Card>
        <Card title="Next scheduled fires">
          {!schedules.data ? <Loading /> : fires.length ? (
            <ul className="plain">{fires.map((f) => (
              <li key={f.key}><Link to={`/pipelines/${f.pipeline}`}>{f.pipeline}</Link> <span className="muted">{f.id}</span> {fmtTime(f.next_fires[0])}</li>
            ))}</ul>
          ) : <p className="muted">No enabled schedules.</p>}
        </Card>
        <Card title="Slowest pipelines">
          {!s ? <Loading /> : s.slowest.length ? <HBars label="Mean run duration by pipeline" items={s.slowest.map((x) => ({
            name: x.pipeline, value: x.mean_seconds, text: `${fmtDuration(x.mean_seconds)} (${x.runs} runs)` }))} />
            : <p className="muted">No finished runs yet.</p>}
        </Card>
      </div>
    </>
  );
}
