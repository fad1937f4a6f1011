// The stage graph, drawn once its code is here. Its layout (dagre: ~42 kB of script, most of a
// run page's code) loads after the page's first render instead of before it, so a run's page
// paints its title, state, attempts and logs without waiting to compile dagre and lay the graph
// out; the graph's frame holds its place meanwhile. Once loaded it is drawn at once everywhere.
import { useEffect, useState } from "react";
import type { DagGraph, DagProps } from "./DagGraph";

type Graph = typeof DagGraph;
let loaded: Graph | undefined;

export function Dag(props: DagProps) {
  const [Graph, setGraph] = useState<Graph | undefined>(() => loaded);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    if (loaded) return;
    let live = true;
    import("./DagGraph").then((module) => {
      loaded = module.DagGraph;
      if (live) setGraph(() => module.DagGraph);
    }, () => { if (live) setFailed(true); });
    return () => { live = false; };
  }, []);
  if (Graph) return <Graph {...props} />;
  return (
    <div className="dag-frame dag-waiting" role="region" aria-label={props.label} aria-busy={!failed}>
      <p className="muted">{failed ? "The graph could not be drawn: its code did not load (reload the page)." : "Drawing the graph…"}</p>
    </div>
  );
}
