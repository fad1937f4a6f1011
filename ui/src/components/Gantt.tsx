// Attempts on a time line: one row per stage, one bar per attempt (retries side by side).
import type { Attempt } from "../api/client";

export function Gantt({ attempts, stages }: { attempts: Attempt[]; stages: string[] }) {
  if (!attempts.length) return <p className="muted">No attempts yet.</p>;
  const t = (s: string | null | undefined) => (s ? new Date(s).getTime() : Date.now());
  const start = Math.min(...attempts.map((a) => t(a.started_at ?? a.created_at)));
  const end = Math.max(...attempts.map((a) => t(a.finished_at)), start + 1000);
  const width = 640, row = 24, left = 140;
  const x = (ms: number) => left + ((ms - start) / (end - start)) * (width - left - 10);
  return (
    <svg width="100%" viewBox={`0 0 ${width} ${stages.length * row + 22}`} style={{ maxWidth: width }} role="img" aria-label="Attempts timeline" data-chart="gantt">
      {stages.map((s, i) => (
        <g key={s} transform={`translate(0,${i * row})`}>
          <text x={0} y={16} className="axis">{s.length > 18 ? s.slice(0, 17) + "…" : s}</text>
          {attempts.filter((a) => a.stage_id === s).map((a) => {
            const x0 = x(t(a.started_at ?? a.created_at)), x1 = Math.max(x(t(a.finished_at)), x0 + 3);
            return (
              <rect key={a.id} x={x0} y={4} width={x1 - x0} height={row - 8} rx={3} className={`fill-${a.state}`}>
                <title>{`${s} attempt #${a.number}: ${a.state}${a.error ? ` (${a.error})` : ""}`}</title>
              </rect>
            );
          })}
        </g>
      ))}
      <text x={left} y={stages.length * row + 16} className="axis">0 s</text>
      <text x={width - 10} y={stages.length * row + 16} className="axis" textAnchor="end">{((end - start) / 1000).toFixed(1)} s</text>
    </svg>
  );
}
