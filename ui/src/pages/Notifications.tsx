// Notifications: the rules in effect (the server's global ones and each pipeline's) and the recent
// deliveries with their state, attempts and last error. The server masks every secret before it
// answers: webhook URLs arrive as their host only, stored secrets by name, SMTP's password as "set".
// Admins can send a test message through one rule and see at once how it went.
import { useState } from "react";
import { Link } from "wouter";
import { api, problemText, type Schemas } from "../api/client";
import { Card, ErrorNote, Loading } from "../components/Common";
import { fmtTime, useData } from "../hooks";
import { useSession } from "../session";

type Rule = Schemas["RuleOut"];
const DELIVERY: Record<string, string> = { sent: "succeeded", failed: "failed", pending: "queued", sending: "running", suppressed: "skipped" };

function TestButton({ pipeline, index, rule }: { pipeline: string | null; index: number; rule: Rule }) {
  const [busy, setBusy] = useState(false);
  const [note, setNote] = useState<{ ok: boolean; text: string } | null>(null);
  const send = async () => {
    setBusy(true); setNote(null);
    const { data, error } = await api.POST("/api/v1/notifications/rules/test", { body: { pipeline, index } });
    setBusy(false);
    if (error) setNote({ ok: false, text: problemText(error) });
    else setNote(data.sent ? { ok: true, text: "sent" } : { ok: false, text: data.error });
  };
  return (
    <>
      <button type="button" disabled={busy} onClick={() => void send()}
              aria-label={`Send test: ${pipeline ?? "global"} rule ${index + 1} (${rule.channel})`}>Send test</button>{" "}
      <span role="status" className={`small ${note && !note.ok ? "error-note" : "muted"}`}>{note?.text ?? ""}</span>
    </>
  );
}

function RulesTable({ rules, label, pipeline, admin }: { rules: Rule[]; label: string; pipeline: string | null; admin: boolean }) {
  return (
    <table className="table" aria-label={label}>
      <thead><tr><th scope="col">Channel</th><th scope="col">On</th><th scope="col">Target</th><th scope="col">Signed with</th>
        {admin && <th scope="col">Test</th>}</tr></thead>
      <tbody>{rules.map((r, i) => (
        <tr key={i}><td>{r.channel}</td><td>{r.on.join(", ")}</td><td className="mono">{r.target}</td>
          <td className="mono">{r.signed_with ? `secret ${r.signed_with}` : "–"}</td>
          {admin && <td><TestButton pipeline={pipeline} index={i} rule={r} /></td>}</tr>
      ))}</tbody>
    </table>
  );
}

function Rules() {
  const { me } = useSession();
  const admin = me?.role === "admin";
  const rules = useData(async () => {
    const { data, error } = await api.GET("/api/v1/notifications/rules");
    if (error) throw new Error(problemText(error));
    return data;
  }, []);
  if (rules.error) return <ErrorNote text={rules.error} />;
  const r = rules.data;
  if (!r) return <Loading />;
  const none = !r.global_rules.length && !r.pipelines.length;
  return (
    <>
      {none && <p className="muted" data-testid="no-rules">No notification rules: add <code>notifications:</code> to a pipeline's spec, or set KUBELINE_NOTIFICATIONS for every pipeline (docs/notifications.md).</p>}
      {r.global_rules.length > 0 && <>
        <h3 className="small">Every pipeline (KUBELINE_NOTIFICATIONS)</h3>
        <RulesTable rules={r.global_rules} label="Global notification rules" pipeline={null} admin={admin} />
      </>}
      {r.pipelines.map((p) => (
        <section key={p.pipeline} aria-label={`Rules of ${p.pipeline}`}>
          <h3 className="small"><Link to={`/pipelines/${p.pipeline}`}>{p.pipeline}</Link>
            <span className="muted"> · {p.expected_duration != null ? `slow after ${p.expected_duration} s` : "no expected duration (no slow notice)"} · at most {p.rate_limit} per channel per hour</span></h3>
          <RulesTable rules={p.rules} label={`Notification rules of ${p.pipeline}`} pipeline={p.pipeline} admin={admin} />
        </section>
      ))}
      <p className="muted small" data-testid="smtp">Email: {r.email
        ? `SMTP ${r.email.host}:${r.email.port}${r.email.starttls ? " with STARTTLS" : ""}, from ${r.email.sender}, ${r.email.login ? "with a login (password set, never shown)" : "without a login"}`
        : "no SMTP server (set KUBELINE_SMTP_HOST): email rules cannot be delivered"}.</p>
    </>
  );
}

function Deliveries() {
  const list = useData(async () => {
    const { data, error } = await api.GET("/api/v1/notifications", { params: { query: { limit: 100 } } });
    if (error) throw new Error(problemText(error));
    return data.items;
  }, [], 10000);
  if (list.error) return <ErrorNote text={list.error} />;
  if (!list.data) return <Loading />;
  if (!list.data.length) return <p className="muted" data-testid="no-deliveries">No notifications sent yet.</p>;
  return (
    <table className="table" aria-label="Deliveries">
      <thead><tr><th scope="col">Created</th><th scope="col">Run</th><th scope="col">Event</th><th scope="col">Channel and target</th>
        <th scope="col">State</th><th scope="col">Attempts</th><th scope="col">Sent or next try</th><th scope="col">Last error</th></tr></thead>
      <tbody>{list.data.map((d) => (
        <tr key={d.id} data-delivery={d.id}>
          <td>{fmtTime(d.created_at)}</td>
          <td><Link to={`/pipelines/${d.pipeline}`}>{d.pipeline}</Link><br /><Link className="mono small" to={`/runs/${d.run_id}`}>{d.run_id}</Link></td>
          <td>{d.event}</td>
          <td>{d.channel}<br /><span className="mono small">{d.target}</span></td>
          <td><span className={`badge state-${DELIVERY[d.state] ?? "none"}`}>{d.state}</span></td>
          <td>{d.attempts}</td>
          <td>{d.sent_at ? fmtTime(d.sent_at) : d.state === "pending" ? `next ${fmtTime(d.next_at)}` : "–"}</td>
          <td className="error-note small">{d.last_error}</td>
        </tr>
      ))}</tbody>
    </table>
  );
}

export default function Notifications() {
  return (
    <>
      <h1>Notifications</h1>
      <p className="muted">Runs notify on failure, success, recovery (the first success after a failure) and slow runs. A failed delivery is retried with backoff; it never holds up a run.</p>
      <Card title="Rules in effect"><Rules /></Card>
      <Card title="Recent deliveries"><Deliveries /></Card>
    </>
  );
}
