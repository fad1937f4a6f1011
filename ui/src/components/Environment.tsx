import { api, problemText, type Schemas } from "../api/client";
import { useData } from "../hooks";
import { ErrorNote, Loading } from "./Common";

type Summary = Schemas["EnvironmentSummary"];
const LABEL: Record<string, string> = {
  ready: "ready", building: "building", pending: "queued", failed: "failed", missing: "not built", none: "none",
};
const STYLE: Record<string, string> = {
  ready: "succeeded", building: "running", pending: "queued", failed: "failed", missing: "none", none: "none",
};

/** A pipeline's environment state: ready / building / failed: <reason>. */
export function EnvBadge({ env }: { env: Summary | null | undefined }) {
  if (!env) return <span className="muted">–</span>;
  return (
    <span data-testid="env-state" title={env.reason ?? undefined}>
      <span className={`badge state-${STYLE[env.state] ?? "none"}`}>{LABEL[env.state] ?? env.state}</span>
      {env.state === "failed" && env.reason ? <span className="env-reason small">{env.reason}</span> : null}
    </span>
  );
}

/** Its venvs, with the installed packages and versions of each built one (the dependency view). */
export function EnvironmentView({ name }: { name: string }) {
  const env = useData(async () => {
    const { data, error } = await api.GET("/api/v1/pipelines/{name}/environment", { params: { path: { name } } });
    if (error) throw new Error(problemText(error));
    return data;
  }, [name], 5000);
  if (env.error) return <ErrorNote text={env.error} />;
  const e = env.data;
  if (!e) return <Loading />;
  if (!e.venvs.length) return <p className="muted">No stage runs in a virtualenv on this server.</p>;
  return (
    <>
      <p><EnvBadge env={e} /></p>
      {e.venvs.map((v) => (
        <section key={v.stages.join(",")} aria-label={`Environment of stages ${v.stages.join(", ")}`}>
          <h3 className="small">
            Stages {v.stages.join(", ")} · {v.python ? `Python ${v.python}` : `python_version ${v.python_version}`} · {v.requirements ?? "no requirements"}
            {v.extra_packages.length ? ` + ${v.extra_packages.join(", ")}` : ""}
          </h3>
          {(v.packages ?? []).length ? (
            <table className="table" aria-label={`Packages of stages ${v.stages.join(", ")}`}>
              <thead><tr><th scope="col">Package</th><th scope="col">Version</th></tr></thead>
              <tbody>{(v.packages ?? []).map((p) => <tr key={p.name}><td>{p.name}</td><td className="mono">{p.version}</td></tr>)}</tbody>
            </table>
          ) : <p className="muted">{v.state === "ready" ? "No packages installed." : `Packages are listed once it is built (${LABEL[v.state] ?? v.state}).`}</p>}
        </section>
      ))}
    </>
  );
}
