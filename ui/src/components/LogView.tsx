// Live logs of a run over SSE, virtualised: a worker follows and parses the stream and sends packed
// batches ~5 times a second (logFormat.ts; never in React state), arriving batches are appended
// once per animation frame, and only the rows in view are rendered, so 200,000 lines stream without
// blocking the page. Rows have one fixed height, so the rows in view follow from the scroll offset
// alone: the work per frame does not grow with the log (a general virtualiser lays out every row
// again each time the count changes: 200,000 per frame at the end of a big log). Rows are keyed by
// their place in the window, so a frame that moves the window rewrites the text of the same few
// dozen elements instead of replacing them all.
//
// While lines pour in every update rewrites all the rows drawn (the window moves by hundreds of
// lines), and each row is script, style, layout and paint on the page's main thread: only a few
// rows beyond the view are drawn (OVERSCAN), enough to hide the frame between a scroll and its
// render, since the rows in view follow from the offset alone.
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import { AnsiText } from "./Ansi";

import { type Batch, LogLines, logLine } from "./logFormat";

const ROW = 18;
const OVERSCAN = 4;  // rows drawn beyond each edge of the view (see above)
const ERROR = /error|exception|traceback|fail/i;

/** The count with its digits grouped by commas, as the rest of the UI's English text (fmtTime in
 * hooks.ts writes times out the same way). Not Intl: a page's first Intl call loads the locale
 * data, ~20-30 ms of main-thread CPU in the render that first passes 1,000 lines, which a CPU
 * profile of a 200,000-line stream showed as the log view's costliest task. */
const fmtCount = (n: number) => String(n).replace(/\B(?=(\d{3})+$)/g, ",");

export function LogView({ runId, stages, stage, onStage }: {
  runId: string; stages: { id: string; attempts: number }[]; stage: string; onStage: (s: string) => void;
}) {
  const lines = useRef(new LogLines());
  const pending = useRef<Batch[]>([]);
  const [count, setCount] = useState(0);
  const [ended, setEnded] = useState(false);
  const [attempt, setAttempt] = useState(0);
  const [query, setQuery] = useState("");
  const [follow, setFollow] = useState(true);
  const [hit, setHit] = useState(-1);
  const scroller = useRef<HTMLDivElement>(null);
  const [scrolled, setScrolled] = useState(0);
  const [height, setHeight] = useState(420);  // .log-scroll's, until measured

  useEffect(() => {
    lines.current = new LogLines(); pending.current = []; setCount(0); setEnded(false);
    const worker = new Worker(new URL("./logs.worker.ts", import.meta.url), { type: "module" });
    let frame = 0;
    const flush = () => {
      frame = 0;
      if (!pending.current.length) return;
      for (const batch of pending.current) lines.current.append(batch);
      pending.current = [];
      setCount(lines.current.length);
    };
    worker.onmessage = (e: MessageEvent<{ batch?: Batch; end?: string; error?: string }>) => {
      if (e.data.batch) {
        pending.current.push(e.data.batch);
        if (!frame) frame = requestAnimationFrame(flush);
      } else if (e.data.end !== undefined) {
        flush(); setEnded(true);
      }
    };
    worker.postMessage({ url: `/api/v1/runs/${encodeURIComponent(runId)}/logs/stream` });
    return () => { worker.terminate(); if (frame) cancelAnimationFrame(frame); };
  }, [runId]);

  // Indexes of the lines shown under a stage/attempt filter, recomputed incrementally as lines
  // arrive; without a filter row i is line i (no index to keep).
  const shown = useRef<{ key: string; upto: number; idx: number[] }>({ key: "", upto: 0, idx: [] });
  const key = `${stage}|${attempt}`;
  const filtered = !!(stage || attempt);
  const viewLength = useMemo(() => {
    if (!filtered) return count;
    const s = shown.current;
    if (s.key !== key || count < s.upto) { s.key = key; s.upto = 0; s.idx = []; }
    for (let i = s.upto; i < count; i++) {
      const l = logLine(lines.current.get(i));
      if ((!stage || l[3] === stage) && (!attempt || l[4] === attempt)) s.idx.push(i);
    }
    s.upto = count;
    return s.idx.length;
  }, [count, key, stage, attempt, filtered]);
  const view = shown.current.idx;
  const lineAt = (row: number) => lines.current.get(filtered ? view[row] : row);

  const matches = useMemo(() => {
    if (!query) return [];
    const q = query.toLowerCase(), out: number[] = [];
    for (let row = 0; row < viewLength; row++) if (logLine(lineAt(row))[2].toLowerCase().includes(q)) out.push(row);
    return out;
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [query, viewLength, key]);

  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const observer = new ResizeObserver(() => setHeight(el.clientHeight));
    observer.observe(el);
    return () => observer.disconnect();
  }, []);
  // Following: the view is the log's end, in the same render as the new lines.
  const top = follow ? Math.max(0, viewLength * ROW - height) : scrolled;
  // Written, never read back: reading scrollTop right after the rows changed forces a layout in
  // the middle of the render.
  const applied = useRef(-1);
  useLayoutEffect(() => {
    if (!follow) applied.current = -1;
    else if (scroller.current && applied.current !== top) scroller.current.scrollTop = applied.current = top;
  }, [follow, top]);
  const scrollTo = (offset: number) => {
    const el = scroller.current;
    if (el) el.scrollTop = offset;
    setScrolled(el ? el.scrollTop : offset);
  };
  // While following, the scroll offset is ours (top): only a paused view tracks the scroll events.
  const pause = () => { setScrolled(scroller.current?.scrollTop ?? 0); setFollow(false); };
  const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
  const last = Math.min(viewLength, Math.ceil((top + height) / ROW) + OVERSCAN);

  const jump = (row: number) => { setFollow(false); setHit(row); scrollTo(row * ROW - (height - ROW) / 2); };
  const jumpToError = () => {
    for (let row = 0; row < viewLength; row++) {
      const l = logLine(lineAt(row));
      if (l[1] === "stderr" || ERROR.test(l[2])) { jump(row); return; }
    }
  };
  const nextMatch = (dir: 1 | -1) => {
    if (!matches.length) return;
    const cur = matches.indexOf(hit);
    jump(matches[(cur + dir + matches.length) % matches.length]);
  };
  const current = stages.find((s) => s.id === stage);
  const download = `/api/v1/runs/${encodeURIComponent(runId)}/logs${stage ? `?stage=${encodeURIComponent(stage)}` : ""}`;

  return (
    <div className="logs">
      <div className="toolbar" role="toolbar" aria-label="Log controls">
        <label>Stage{" "}
          <select value={stage} onChange={(e) => { onStage(e.target.value); setAttempt(0); }} aria-label="Stage">
            <option value="">all stages</option>
            {stages.map((s) => <option key={s.id} value={s.id}>{s.id}</option>)}
          </select>
        </label>
        <label>Attempt{" "}
          <select value={attempt} onChange={(e) => setAttempt(Number(e.target.value))} aria-label="Attempt" disabled={!current}>
            <option value={0}>all</option>
            {current && Array.from({ length: current.attempts }, (_, i) => <option key={i} value={i + 1}>#{i + 1}</option>)}
          </select>
        </label>
        <input type="search" placeholder="Search the log" aria-label="Search the log" value={query}
               onChange={(e) => setQuery(e.target.value)}
               onKeyDown={(e) => { if (e.key === "Enter") nextMatch(e.shiftKey ? -1 : 1); }} />
        <span className="muted" aria-live="polite">{query ? `${matches.length} matches` : ""}</span>
        <button type="button" onClick={() => nextMatch(-1)} disabled={!matches.length} aria-label="Previous match">↑</button>
        <button type="button" onClick={() => nextMatch(1)} disabled={!matches.length} aria-label="Next match">↓</button>
        <button type="button" onClick={() => (follow ? pause() : setFollow(true))} aria-pressed={follow}>{follow ? "Pause" : "Follow"}</button>
        <button type="button" onClick={jumpToError}>Jump to error</button>
        <a className="button" href={download} download>Download</a>
        <span className="muted" data-testid="log-count">{fmtCount(viewLength)} lines{ended ? "" : " · live"}</span>
      </div>
      <div ref={scroller} className="log-scroll" tabIndex={0} role="log" aria-label="Log lines"
           onWheel={() => { if (follow) pause(); }} onScroll={(e) => { if (!follow) setScrolled(e.currentTarget.scrollTop); }}>
        <div style={{ height: viewLength * ROW, position: "relative" }}>
          {Array.from({ length: last - first }, (_, k) => {
            const row = first + k;
            const l = logLine(lineAt(row));
            return (
              <div key={k} className={`log-line${l[1] === "stderr" ? " stderr" : ""}${row === hit ? " hit" : ""}`}
                   style={{ transform: `translateY(${row * ROW}px)`, height: ROW }}>
                <span className="log-meta">{l[0].slice(11, 23)} {l[3]}#{l[4]}</span>
                <AnsiText text={l[2]} highlight={query} />
              </div>
            );
          })}
        </div>
      </div>
    </div>
  );
}
