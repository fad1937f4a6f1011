"""Results -> docs/benchmarks.md: the "Performance" section (pasted into the README by hand)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compare import report


def _headline(data: Mapping[str, Any]) -> str:
    lines = []
    for name, title in data["workloads"].items():
        rows = {r["engine"]: r for r in data["results"] if r["workload"] == name and "summary" in r}
        if not rows:
            continue
        parts = [f"{r['label']} {report.seconds(r['summary']['wall']['median'])}"
                 for r in sorted(rows.values(), key=lambda r: r["summary"]["wall"]["median"])]
        lines.append(f"- {title}: " + ", ".join(parts) + ".")
    return "\n".join(lines)


def _notes(data: Mapping[str, Any]) -> str:
    notes = []
    for r in data["results"]:
        if r["engine"] == "kubeline-local-warm" and "executors_used" in r and "local-warm" not in r["executors_used"]:
            notes.append(f"- `{r['workload']}` on Kubeline (local-warm): no warm executor was configured in this "
                         f"build (configured: {', '.join(r.get('executors_configured', []))}); the engine fell "
                         "back to `local`, so this row measures the plain subprocess executor.")
        if "error" in r:
            done = f"{r['summary']['runs']} runs measured, then" if "summary" in r else "not measured:"
            notes.append(f"- `{r['workload']}` on {r['label']}: {done} {r['error']}.")
    engines = {r["engine"]: r["label"] for r in data["results"]}
    for name, title in data["workloads"].items():
        missing = sorted(label for engine, label in engines.items()
                         if not any(r["engine"] == engine and r["workload"] == name for r in data["results"]))
        if missing:
            notes.append(f"- {title}: not run on {', '.join(missing)} in this benchmark (time).")
    return "\n".join(notes)


def _load(data: Mapping[str, Any]) -> str:
    load = data["machine"].get("load_average")
    if not load:
        return ""
    return (f"- Load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end of the last invocation on "
            f"{data['machine']['cores']} cores (the benchmark's own processes count: one engine runs at a time).")


def _invocations(data: Mapping[str, Any]) -> str:
    """Which invocation measured which engine, when the page merges several."""
    by_stamp: dict[str, list[str]] = {}
    for row in data["results"]:
        label = row.get("label", row["engine"])
        engines = by_stamp.setdefault(row.get("stamp") or "an earlier invocation", [])
        if label not in engines:
            engines.append(label)
    if len(by_stamp) < 2:
        return ""
    parts = "; ".join(f"{', '.join(engines)} at {stamp}" for stamp, engines in sorted(by_stamp.items()))
    return (f"- Measured in {len(by_stamp)} invocations on the same machine, one engine at a time: {parts} "
            "(UTC; raw figures in results/<stamp>.json).")


def render(data: Mapping[str, Any]) -> str:
    table = report.table(data["results"], workloads=data["workloads"])
    m = data["machine"]
    return f"""## Performance

Kubeline next to Apache Airflow 3.3.2 and Prefect 3.8.8 on the same machine, one engine at a time
(see the notes for the invocations): {m['summary']}, {m['os']}. Every engine on its embedded
default (SQLite) with its default executor, bound to 127.0.0.1, and every run made through the
engine's scheduler: {data['warmup']} warm-up + {data['runs']} measured runs per workload unless the
*runs* column says fewer (p95 is nearest-rank: with 5 runs or fewer it is the slowest run).

{_headline(data)}

{table}

![run wall time per engine and workload](benchmarks.png)

**Columns.** *Run wall*: the run's start to its end as the engine records it (Airflow `dag_run.start_date ->
end_date`, Prefect flow run `start_time -> end_time`, Kubeline `run.started_at -> finished_at`).
*Trigger→end*: from the run being queued (Airflow `queued_at`, Prefect `expected_start_time`, Kubeline
`created_at`) to its end. Per task, from each engine's own timestamps: *assignment* = queued -> started
(Airflow `task_instance.queued_dttm -> start_date`; Prefect task-run Pending -> Running state;
Kubeline attempt `created_at -> started_at`), *execution* = started -> ended, *transition* = the last
upstream's end -> this task queued (roots have none). Execution includes whatever each engine
counts inside a task: for Kubeline `local` the interpreter start of the attempt process, for Airflow
the task runner after its process is up, for Prefect only the task function and its state calls. A
transition shown as ~0 means the next task was queued in the same transaction that ended the upstream.

**Isolation.** Airflow runs every task instance in its own supervised process (LocalExecutor).
Prefect runs each flow run in a fresh process started by the runner, and the tasks inside it as
function calls (the chains) or on its default thread pool (the fan-out): tasks share one
interpreter. Kubeline runs every stage attempt in its own process: `local` starts a new interpreter
per attempt, `local-warm` forks a pre-started interpreter per attempt.

**How each engine is driven.** Airflow: `airflow standalone` (api-server, scheduler, dag-processor,
triggerer; LocalExecutor), one DAG file per workload, runs made with `airflow dags trigger`.
Prefect: `prefect server start` plus a process serving one deployment per workload (`prefect.serve`,
runner poll interval lowered from 10 s to 1 s); runs made with the REST API
`POST /deployments/{{id}}/create_flow_run`: this is Prefect's scheduler path (server -> runner -> flow-run
process) rather than calling `flow()` in-process against the ephemeral API. Kubeline: the engine's
dispatcher loop (`Engine.serve`, what `kubeline server` runs) on SQLite; runs submitted to the queue,
and their end awaited as the API's wait does (woken once by the run's driver: the harness shares the
engine's process and does not poll it).
The Airflow and Prefect installs come from PyPI only (Airflow's constraints file is on GitHub, not
reachable from the benchmark machine); exact versions in `bench/compare/results/freeze-*.txt`.
Prefect 3.8.8's server does not start with the FastAPI it declares (`Body() got an unexpected keyword
argument 'min_items'`), so its venv overrides `fastapi<0.116` and `starlette<0.47`.

**Notes on this run.**
{_notes(data)}
{_invocations(data)}
{_load(data)}

**Reproduce.** `.venv/bin/python bench/compare/run.py` (all engines, all workloads, 1 + 5 runs; the
peers' virtualenvs are made once under `~/.cache/kubeline/bench`). Narrow it with
`--engines kubeline-local,kubeline-local-warm,prefect,airflow`, `--workloads a,b,c` and `--runs N`;
results merge into `bench/compare/results/latest.json`, raw per-run figures in
`bench/compare/results/<stamp>.json`. The last invocation that wrote this page took
{data['wall_seconds'] / 60:.0f} min.
"""
