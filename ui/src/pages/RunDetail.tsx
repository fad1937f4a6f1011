import { useCallback, useRef, useState } from "react";
import { Link, useLocation, useParams } from "wouter";
import { api, earlyData, FINAL, problemText, type Run } from "../api/client";
import { Card, ErrorNote, Loading, StateBadge } from "../components/Common";
import { Dag } from "../components/Dag";
import { Gantt } from "../components/Gantt";
import { JsonTree } from "../components/JsonTree";
import { LogView } from "../components/LogView";
import { Notebook } from "../components/Notebook";
import { Resources } from "../components/Resources";
import { fmtDuration, fmtTime, useData, useEvents } from "../hooks";
import { canOn, usePipelineTags, useSession } from "../session";

/** The failure in words: the run's error, else the first failed stage's attempt error. */
function failureReason(run: Run): string {
  if (!["failed", "timed_out", "cancelled"].includes(run.state)) return "";
  const failed = (run.attempts ?? []).filter((a) => a.state === "failed" || a.state === "timed_out");
  const last = failed[failed.length - 1];
  const stage = run.stages?.find((s) => s.state === "failed" || s.state === "timed_out");
  const parts = [run.error];
  if (stage && !(stage.error && run.error.includes(stage.error))) {
    parts.push(`stage ${stage.stage_id} ${stage.state.replace("_", " ")}${stage.error ? `: ${stage.error}` : ""}`);
  }
  if (last && !stage?.error && !run.error) {
    parts.push(`attempt #${last.number} of ${last.stage_id}: ${last.error || last.failure || `exit code ${last.exit_code}`}`);
  }
  return parts.filter(Boolean).join(" — ") || `the run ${run.state.replace("_", " ")}`;
}

/** The commit the run ran, and the git source (name, branch) it was synced from. */
function GitCommit({ sha, source }: { sha: string; source: string | null | undefined }) {
  const sync = useData(async () => source
    ? (await api.GET("/api/v1/git/{name}", { params: { path: { name: source } } })).data ?? null : null, [source]);
  return (
    <p className="muted" data-testid="git-commit">Commit <code className="mono">{sha}</code>
      {source && <> from source <Link to="/sources">{source}</Link>{sync.data ? <> (branch <span className="mono">{sync.data.branch}</span>{sync.data.subdir ? <>, folder <span className="mono">{sync.data.subdir}</span></> : null})</> : null}</>}</p>
  );
}

export default function RunDetail() {
  const { id = "" } = useParams();
  const [, navigate] = useLocation();
  const { me } = useSession();
  const [stage, setStage] = useState("");
  const [note, setNote] = useState("");
  const run = useData(async () => {
    const { data, error } = await api.GET("/api/v1/runs/{run_id}", { params: { path: { run_id: id } } });
    if (error) throw new Error(problemText(error));
    return data;
  }, [id], 0, earlyData(`/api/v1/runs/${id}`));  // inside index.html when the app opened here
  const timer = useRef(0);
  const refresh = useCallback(() => {
    if (!timer.current) timer.current = window.setTimeout(() => { timer.current = 0; run.reload(); }, 250);
  }, [run]);
  const r = run.data;
  useEvents(r ? `/api/v1/runs/${encodeURIComponent(id)}/events/stream` : null, { change: refresh, end: refresh });
  const tags = usePipelineTags(me, r ? [r.pipeline] : []);

  const act = async (kind: "cancel" | "retry" | "rerun") => {
    setNote("");
    const res = kind === "cancel" ? await api.POST("/api/v1/runs/{run_id}/cancel", { params: { path: { run_id: id } } })
      : kind === "retry" ? await api.POST("/api/v1/runs/{run_id}/retry", { params: { path: { run_id: id } } })
      : await api.POST("/api/v1/runs", { body: { pipeline: r!.pipeline, inputs: r!.inputs } });
    if (res.error) { setNote(problemText(res.error)); return; }
    if (kind === "cancel") run.reload(); else navigate(`/runs/${res.data!.id}`);
  };
  if (run.error) return <><h1>Run {id}</h1><ErrorNote text={run.error} /></>;
  if (!r) return <Loading />;
  const version = `${r.state}:${(r.attempts ?? []).map((a) => a.state).join(",")}`;
  const states = Object.fromEntries((r.stages ?? []).map((s) => [s.stage_id, s.state]));
  const reason = failureReason(r);
  const stageList = (r.stages ?? []).map((s) => ({ id: s.stage_id, attempts: s.attempts }));
  return (
    <>
      <div className="title-row">
        <h1><Link to={`/pipelines/${r.pipeline}`}>{r.pipeline}</Link> <span className="mono small">{r.id}</span></h1>
        <StateBadge state={r.state} />
        {canOn(me, "operator", r.pipeline, tags[r.pipeline] ?? []) && <div className="actions">
          {!FINAL.has(r.state) && <button type="button" className="danger" onClick={() => act("cancel")}>Cancel run</button>}
          {["failed", "cancelled", "timed_out"].includes(r.state) && <button type="button" onClick={() => act("retry")}>Retry from failed stage</button>}
          {FINAL.has(r.state) && <button type="button" onClick={() => act("rerun")}>Re-run with same inputs</button>}
        </div>}
      </div>
      {reason && <p className="failure" role="alert" data-testid="failure">{reason}</p>}
      <ErrorNote text={note} />
      <p className="muted">Triggered by {r.triggered_by.kind}{r.triggered_by.detail ? ` (${r.triggered_by.detail})` : ""} · created {fmtTime(r.created_at)} · duration {fmtDuration(r.duration)}
        {r.parent_run_id && <> · retry of <Link to={`/runs/${r.parent_run_id}`}>{r.parent_run_id}</Link></>}</p>
      {r.git_commit && <GitCommit sha={r.git_commit} source={r.git_source} />}
      <div className="grid2">
        <Card title="Stages">
          <Dag dag={r.dag ?? {}} states={states} selected={stage} onSelect={(s) => setStage(s === stage ? "" : s)} label="Stage graph, coloured by state" />
        </Card>
        <Card title="Attempts"><Gantt attempts={r.attempts ?? []} stages={Object.keys(r.dag ?? {})} /></Card>
      </div>
      <Card title="Logs"><LogView runId={r.id} stages={stageList} stage={stage} onStage={setStage} /></Card>
      <Notebook runId={r.id} attempts={r.attempts ?? []} version={version} />
      <Resources runId={r.id} attempts={r.attempts ?? []} version={version} />
      <div className="grid2">
        <Card title="Inputs"><JsonTree value={r.inputs} /></Card>
        <Card title="Outputs">
          {(r.stages ?? []).filter((s) => Object.keys(s.outputs).length).map((s) => <JsonTree key={s.stage_id} name={s.stage_id} value={s.outputs} />)}
          {!(r.stages ?? []).some((s) => Object.keys(s.outputs).length) && <p className="muted">No outputs.</p>}
        </Card>
      </div>
    </>
  );
}
