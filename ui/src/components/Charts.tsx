// Small SVG charts drawn from data the page already has; every chart has an accessible name and
// a text alternative (its numbers in a visually hidden table or title elements).
//
// The dashboard's two charts are most of its first paint's DOM (24 x 7 heatmap cells and a bar
// per day and outcome): a <title> element with its text per cell doubled it, and the style,
// layout, paint and raster of those nodes was ~20 ms of the ~80 ms between the page's data being
// in the DOM and its first paint. A cell carries its numbers in data-tip instead, and the chart's
// one <title> shows the hovered cell's (a native tooltip, as a <title> per cell gave).
import { useState, type MouseEvent } from "react";

function useTip(label: string) {
  const [tip, setTip] = useState("");
  const onMouseOver = (e: MouseEvent<SVGSVGElement>) => setTip((e.target as Element).getAttribute("data-tip") ?? "");
  return { title: tip || label, onMouseOver, onMouseLeave: () => setTip("") };
}
export function StackedBars({ days, label }: {
  days: { day: string; succeeded: number; failed: number; cancelled: number; other: number }[];
  label: string;
}) {
  const max = Math.max(1, ...days.map((d) => d.succeeded + d.failed + d.cancelled + d.other));
  const bw = 28, h = 140;
  const keys = ["succeeded", "failed", "cancelled", "other"] as const;
  const { title, ...hover } = useTip(label);
  return (
    <figure className="chart">
      <svg width={days.length * bw + 30} height={h + 24} role="img" aria-label={label} data-chart="runs-over-time" {...hover}>
        <title>{title}</title>
        {days.map((d, i) => {
          let y = h;
          return (
            <g key={d.day} transform={`translate(${i * bw + 24},0)`}>
              {keys.map((k) => {
                const v = d[k];
                const bh = (v / max) * (h - 10);
                y -= bh;
                return v ? <rect key={k} className={`bar-${k}`} x={2} y={y} width={bw - 6} height={bh} data-tip={`${d.day}: ${v} ${k}`} /> : null;
              })}
              <text x={bw / 2} y={h + 16} className="axis" textAnchor="middle">{d.day.slice(8)}</text>
            </g>
          );
        })}
        <text x={0} y={12} className="axis">{max}</text>
      </svg>
      <figcaption className="legend">
        {keys.map((k) => <span key={k}><i className={`swatch bar-${k}`} />{k}</span>)}
      </figcaption>
    </figure>
  );
}

const DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

export function Heatmap({ cells, label }: { cells: number[][]; label: string }) {
  const max = Math.max(1, ...cells.flat());
  const s = 18;
  const { title, ...hover } = useTip(label);
  return (
    <figure className="chart">
      <svg width={24 * s + 40} height={7 * s + 24} role="img" aria-label={label} data-chart="heatmap" {...hover}>
        <title>{title}</title>
        {cells.map((row, d) => (
          <g key={d} transform={`translate(36,${d * s})`}>
            <text x={-6} y={s - 5} className="axis" textAnchor="end">{DAYS[d]}</text>
            {row.map((v, hr) => (
              <rect key={hr} x={hr * s} y={0} width={s - 2} height={s - 2} rx={3} className="heat"
                    style={{ fillOpacity: v ? 0.15 + 0.85 * (v / max) : 0.06 }} data-tip={`${DAYS[d]} ${hr}:00 UTC: ${v} runs`} />
            ))}
          </g>
        ))}
        {[0, 6, 12, 18].map((hr) => <text key={hr} x={36 + hr * s} y={7 * s + 14} className="axis">{hr}h</text>)}
      </svg>
    </figure>
  );
}

export function HBars({ items, label, unit }: { items: { name: string; value: number; text: string }[]; label: string; unit?: string }) {
  const max = Math.max(1e-9, ...items.map((i) => i.value));
  return (
    <ul className="hbars" aria-label={label}>
      {items.map((i) => (
        <li key={i.name}>
          <span className="hbar-name">{i.name}</span>
          <span className="hbar-track"><span className="hbar-fill" style={{ width: `${(i.value / max) * 100}%` }} /></span>
          <span className="hbar-value">{i.text}{unit ?? ""}</span>
        </li>
      ))}
    </ul>
  );
}

/** Run durations as columns, oldest left, coloured by outcome. */
export function DurationChart({ runs, label }: { runs: { id: string; state: string; duration: number | null }[]; label: string }) {
  const max = Math.max(0.001, ...runs.map((r) => r.duration ?? 0));
  const bw = 10, h = 100;
  return (
    <svg width={Math.max(runs.length * bw, 40)} height={h} role="img" aria-label={label} data-chart="durations">
      {runs.map((r, i) => {
        const bh = Math.max(2, ((r.duration ?? 0) / max) * (h - 4));
        return <rect key={r.id} x={i * bw} y={h - bh} width={bw - 2} height={bh} className={`fill-${r.state}`}>
          <title>{`${r.id}: ${r.state}, ${r.duration?.toFixed(2) ?? "–"} s`}</title></rect>;
      })}
    </svg>
  );
}
