import { useState, type FormEvent } from "react";
import { useSearchParams } from "wouter";
import { api, problemText } from "../api/client";
import { ErrorNote, Loading } from "../components/Common";
import { fmtTime, useData } from "../hooks";
import { useSession } from "../session";

const FIELDS = ["actor", "action", "target", "since", "until"] as const;
type Field = (typeof FIELDS)[number];

/** A datetime-local value (the browser's local time) as ISO 8601 UTC, which the API wants. */
function iso(local: string): string | undefined {
  if (!local) return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

function Detail({ value }: { value: Record<string, unknown> }) {
  const text = Object.entries(value).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ");
  return text ? <span className="mono small detail">{text}</span> : <span className="muted">–</span>;
}

export default function Audit() {
  const { me } = useSession();
  const [params, setParams] = useSearchParams();
  const applied = Object.fromEntries(FIELDS.map((f) => [f, params.get(f) ?? ""])) as Record<Field, string>;
  const [draft, setDraft] = useState(applied);
  const [cursors, setCursors] = useState<number[]>([]);
  const cursor = cursors[cursors.length - 1];
  const page = useData(async () => {
    const { data, error } = await api.GET("/api/v1/audit", { params: { query: {
      actor: applied.actor || undefined, action: applied.action || undefined, target: applied.target || undefined,
      since: iso(applied.since), until: iso(applied.until), before_id: cursor, limit: 50 } } });
    if (error) throw new Error(problemText(error));
    return data;
  }, [...FIELDS.map((f) => applied[f]), cursor]);
  const apply = (e: FormEvent) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const f of FIELDS) if (draft[f]) next.set(f, draft[f]);
    setParams(next); setCursors([]);
  };
  const clear = () => { setDraft(Object.fromEntries(FIELDS.map((f) => [f, ""])) as Record<Field, string>); setParams(new URLSearchParams()); setCursors([]); };
  if (me?.role !== "admin") return <><h1>Audit log</h1><p>Only admins read the audit log.</p></>;
  const set = (f: Field) => (e: React.ChangeEvent<HTMLInputElement>) => setDraft({ ...draft, [f]: e.target.value });
  return (
    <>
      <h1>Audit log</h1>
      <form className="filters" aria-label="Filter the audit log" onSubmit={apply}>
        <label>Actor <input value={draft.actor} onChange={set("actor")} placeholder="user:alice" /></label>
        <label>Action <input value={draft.action} onChange={set("action")} placeholder="login" /></label>
        <label>Target starts with <input value={draft.target} onChange={set("target")} placeholder="POST /api/v1/runs" /></label>
        <label>From <input type="datetime-local" value={draft.since} onChange={set("since")} /></label>
        <label>Until <input type="datetime-local" value={draft.until} onChange={set("until")} /></label>
        <button type="submit">Apply</button>
        <button type="button" onClick={clear}>Clear</button>
      </form>
      <ErrorNote text={page.error} />
      {!page.data ? <Loading /> : (
        <table className="table" aria-label="Audit log">
          <thead><tr><th scope="col">When</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Target</th>
            <th scope="col">Outcome</th><th scope="col">From</th><th scope="col">Detail</th></tr></thead>
          <tbody>
            {page.data.items.map((e) => (
              <tr key={e.id} data-audit={e.id}>
                <td>{fmtTime(e.at)}</td><td className="mono">{e.actor}</td><td>{e.action}</td>
                <td className="mono small">{e.target}</td>
                <td><span className={`badge ${e.outcome < 400 ? "state-succeeded" : "state-failed"}`}>{e.outcome}</span></td>
                <td className="mono small">{e.ip}</td><td><Detail value={e.detail} /></td>
              </tr>
            ))}
            {!page.data.items.length && <tr><td colSpan={7} className="muted">No entries match.</td></tr>}
          </tbody>
        </table>
      )}
      <nav className="pager" aria-label="Pages">
        <button type="button" disabled={!cursors.length} onClick={() => setCursors(cursors.slice(0, -1))}>Newer</button>
        <button type="button" disabled={!page.data?.next} onClick={() => page.data?.next && setCursors([...cursors, page.data.next])}>Older</button>
      </nav>
    </>
  );
}
