// The executed notebook of a notebook stage, inline: each code cell with its status from the run's
// log (/cells) and the outputs the notebook kept (text, tables as text, PNG/JPEG images, errors).
import { useEffect, useState } from "react";
import { api, problemText, type Attempt } from "../api/client";
import { useData } from "../hooks";
import { AnsiText } from "./Ansi";
import { StateBadge } from "./Common";

type NbCell = { cell_type: string; source: string | string[]; metadata?: { tags?: string[] }; outputs?: NbOutput[] };
type NbOutput = { output_type: string; name?: string; text?: string | string[]; data?: Record<string, string | string[]>; ename?: string; evalue?: string; traceback?: string[] };

const join = (v: string | string[] | undefined) => (Array.isArray(v) ? v.join("") : v ?? "");

function Output({ out, index }: { out: NbOutput; index: number }) {
  if (out.output_type === "stream") return <pre className={`nb-out ${out.name === "stderr" ? "nb-stderr" : ""}`}>{join(out.text)}</pre>;
  if (out.output_type === "error") return <pre className="nb-out nb-error"><AnsiText text={(out.traceback ?? [`${out.ename}: ${out.evalue}`]).join("\n")} /></pre>;
  const data = out.data ?? {};
  for (const kind of ["image/png", "image/jpeg"]) {
    if (data[kind]) return <img className="nb-img" alt={`Output image of cell ${index}`} src={`data:${kind};base64,${join(data[kind]).trim()}`} />;
  }
  return data["text/plain"] ? <pre className="nb-out">{join(data["text/plain"])}</pre> : null;
}

export function Notebook({ runId, attempts, version }: { runId: string; attempts: Attempt[]; version: string }) {
  const cells = useData(async () => {
    const { data, error } = await api.GET("/api/v1/runs/{run_id}/cells", { params: { path: { run_id: runId } } });
    if (error) throw new Error(problemText(error));
    return data.items;
  }, [runId, version]);
  const items = cells.data ?? [];
  const [chosen, setChosen] = useState("");
  const key = chosen || (items.length ? `${items[items.length - 1].stage_id}#${items[items.length - 1].attempt}` : "");
  const current = items.find((i) => `${i.stage_id}#${i.attempt}` === key);
  const attempt = attempts.find((a) => current && a.stage_id === current.stage_id && a.number === current.attempt);
  const [book, setBook] = useState<{ cells: NbCell[] } | null>(null);
  const [note, setNote] = useState("");
  useEffect(() => {
    if (!attempt) return;
    let alive = true;
    api.GET("/api/v1/runs/{run_id}/attempts/{attempt_id}/notebook", { params: { path: { run_id: runId, attempt_id: attempt.id } } })
      .then(({ data, error }) => {
        if (!alive) return;
        if (error) { setBook(null); setNote(problemText(error)); return; }
        setNote(""); setBook(data.notebook as { cells: NbCell[] });
      });
    return () => { alive = false; };
  }, [runId, attempt?.id, attempt?.state, version]);
  if (!items.length) return null;
  const status = new Map((current?.cells ?? []).map((c) => [c.index, c]));
  let code = -1;
  return (
    <section className="card" aria-label="Notebook" data-testid="notebook">
      <header className="card-head">
        <h2>Notebook</h2>
        <label>Attempt{" "}
          <select value={key} onChange={(e) => setChosen(e.target.value)}>
            {items.map((i) => <option key={`${i.stage_id}#${i.attempt}`} value={`${i.stage_id}#${i.attempt}`}>{i.stage_id} #{i.attempt} ({i.attempt_state})</option>)}
          </select>
        </label>
      </header>
      {note && <p className="muted">{note}</p>}
      {!book && (current?.cells ?? []).map((c) => (
        <div key={c.index} className="nb-cell"><span className="nb-index">[{c.index}]</span> <StateBadge state={c.state} /> {c.error && <span className="error-note">{c.error}</span>}</div>
      ))}
      {book?.cells.map((cell, i) => {
        if (cell.metadata?.tags?.includes("papermill-error-cell-tag")) return null;  // papermill's HTML banner
        if (cell.cell_type !== "code") return <pre key={i} className="nb-md">{join(cell.source)}</pre>;
        const injected = cell.metadata?.tags?.includes("injected-parameters");
        const index = injected ? null : ++code;
        const st = index === null ? undefined : status.get(index);
        return (
          <div key={i} className="nb-cell" data-cell={index ?? "parameters"}>
            <div className="nb-head">
              <span className="nb-index">{index === null ? "parameters" : `[${index}]`}</span>
              {st && <StateBadge state={st.state} />}
              {st && st.tries > 1 && <span className="muted">{st.tries} tries</span>}
              {st?.duration != null && <span className="muted">{st.duration.toFixed(2)} s</span>}
            </div>
            <pre className="nb-source">{join(cell.source)}</pre>
            {(cell.outputs ?? []).map((out, j) => <Output key={j} out={out} index={index ?? 0} />)}
          </div>
        );
      })}
    </section>
  );
}
