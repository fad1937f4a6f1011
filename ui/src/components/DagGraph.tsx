// The stage graph, laid out by dagre (left to right), drawn as SVG. Readable at 50 stages:
// the graph keeps its natural size and the frame scrolls, so labels never shrink. Loaded on
// demand by Dag.tsx: pages render without waiting for dagre.
import dagre from "@dagrejs/dagre";
import { useMemo } from "react";

const W = 150, H = 36;

export type DagProps = {
  dag: Record<string, string[]>;
  states?: Record<string, string>;
  selected?: string;
  onSelect?: (stage: string) => void;
  label: string;
};

export function DagGraph({ dag, states, selected, onSelect, label }: DagProps) {
  // Laid out again only when the graph changes, not each time its run is read again (a new
  // object with the same stages, on every state change of a live run).
  const shape = JSON.stringify(dag);
  const layout = useMemo(() => {
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 14, ranksep: 40, marginx: 8, marginy: 8 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const id of Object.keys(dag)) g.setNode(id, { width: W, height: H });
    for (const [id, deps] of Object.entries(dag)) for (const d of deps) if (d in dag) g.setEdge(d, id);
    dagre.layout(g);
    return g;
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [shape]);
  const graph = layout.graph();
  const width = Math.max(graph.width ?? 0, W + 16), height = Math.max(graph.height ?? 0, H + 16);
  return (
    <div className="dag-frame" tabIndex={0} role="region" aria-label={`${label} (scrolls)`}>
      <svg width={width} height={height} role="group" aria-label={label}>
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
            <path d="M0,0 L10,5 L0,10 z" className="dag-arrow" />
          </marker>
        </defs>
        {layout.edges().map((e) => {
          const pts = layout.edge(e).points;
          const d = pts.map((p, i) => `${i ? "L" : "M"}${p.x},${p.y}`).join(" ");
          return <path key={`${e.v}-${e.w}`} d={d} className="dag-edge" markerEnd="url(#arrow)" />;
        })}
        {layout.nodes().map((id) => {
          const n = layout.node(id);
          const state = states?.[id] ?? "none";
          const text = id.length > 18 ? id.slice(0, 17) + "…" : id;
          return (
            <g key={id} transform={`translate(${n.x - W / 2},${n.y - H / 2})`}
               className={`dag-node state-${state}${selected === id ? " selected" : ""}`}
               role={onSelect ? "button" : undefined} tabIndex={onSelect ? 0 : undefined}
               aria-label={`stage ${id}${states ? `: ${state.replace("_", " ")}` : ""}`}
               data-stage={id} data-state={state}
               onClick={() => onSelect?.(id)}
               onKeyDown={(ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onSelect?.(id); } }}>
              <title>{`${id}${states ? ` (${state})` : ""}`}</title>
              <rect width={W} height={H} rx={6} />
              <text x={10} y={H / 2 + 4}>{text}</text>
            </g>
          );
        })}
      </svg>
    </div>
  );
}
