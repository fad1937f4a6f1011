"""Prefect 3: ``prefect server start`` (SQLite) plus a process serving one deployment per workload.

Why a served deployment and not ``flow()`` against the ephemeral server: the run then goes through
Prefect's scheduler path (created via the API, picked up by the runner, executed in a fresh flow-run
process), which is what a production Prefect does. Tasks run in that process (direct calls for the
chains, the default thread-pool task runner for the fan-out): no isolation between tasks.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import time
from typing import Any

from compare import procs, stats, workloads

ISOLATION = "flow run in a subprocess; tasks in-process (calls / threads)"


class PrefectEngine:
    name = "prefect"
    label = "Prefect 3.8.8"
    isolation = ISOLATION

    def __init__(self, *, venv: pathlib.Path, work: pathlib.Path, chosen: list[workloads.Workload]) -> None:
        self.venv, self.work, self.chosen = venv, work, chosen
        self.home = work / "prefect-home"
        self.port = procs.free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.groups: list[procs.Group] = []
        self.deployments: dict[str, str] = {}

    def env(self) -> dict[str, str]:
        return {**os.environ, "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(self.port),
                "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # default 10 s would dominate trigger->start
                "PREFECT_LOGGING_LEVEL": "WARNING", "DO_NOT_TRACK": "1"}

    def __enter__(self) -> PrefectEngine:
        self.home.mkdir(parents=True, exist_ok=True)
        bin_ = self.venv / "bin"
        server = procs.Group([str(bin_ / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
                              str(self.port)], env=self.env(), log=self.work / "prefect-server.log", cwd=self.work)
        self.groups.append(server)
        procs.wait_for(lambda: procs.http_json(f"{self.api}/health", timeout=5) is True, timeout=180,
                       what="prefect server health", group=server)
        flows = self.work / "prefect_flows.py"
        flows.write_text(workloads.prefect_flows_source(self.chosen))
        runner = procs.Group([str(bin_ / "python"), str(flows)], env=self.env(), log=self.work / "prefect-serve.log",
                             cwd=self.work)
        self.groups.append(runner)
        for w in self.chosen:
            found = procs.wait_for(
                lambda w=w: procs.http_json(f"{self.api}/deployments/name/{w.dag_id}/bench", timeout=5),
                timeout=120, what=f"prefect deployment {w.dag_id}", group=runner)
            self.deployments[w.name] = found["id"]
        return self

    def __exit__(self, *exc: object) -> None:
        for group in reversed(self.groups):
            group.stop()

    def run(self, workload: workloads.Workload, *, timeout: float) -> stats.RunTiming:
        began = time.monotonic()
        flow_run = procs.http_json(f"{self.api}/deployments/{self.deployments[workload.name]}/create_flow_run",
                                   method="POST", body={})
        url = f"{self.api}/flow_runs/{flow_run['id']}"

        def final() -> dict[str, Any] | None:
            found: dict[str, Any] = procs.http_json(url, timeout=10)
            return found if found["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

        done = procs.wait_for(final, timeout=timeout, what=f"prefect run of {workload.name}", group=self.groups[0],
                              every=0.05)
        observed = time.monotonic() - began
        tasks = procs.wait_for(lambda: self._task_timings(flow_run["id"], workload), timeout=60,
                               what="prefect task run states")
        return stats.RunTiming(queued=_ts(done["expected_start_time"]), started=_ts(done["start_time"]),
                               ended=_ts(done["end_time"]), observed=observed,
                               split=stats.split(tasks, workload.tasks),
                               state="succeeded" if done["state"]["type"] == "COMPLETED" else done["state"]["type"])

    def _task_timings(self, flow_run_id: str, workload: workloads.Workload) -> dict[str, stats.TaskTiming] | None:
        """Pending / Running / Completed state timestamps of each task run, from Prefect's own database."""
        with contextlib.closing(sqlite3.connect(f"file:{self.home / 'prefect.db'}?mode=ro", uri=True,
                                                timeout=10)) as db:
            rows = db.execute(
                "SELECT tr.name, s.type, s.timestamp FROM task_run tr JOIN task_run_state s ON s.task_run_id = tr.id"
                " WHERE tr.flow_run_id = ?", (flow_run_id.replace("-", ""),)).fetchall()
            if not rows:
                rows = db.execute(
                    "SELECT tr.name, s.type, s.timestamp FROM task_run tr JOIN task_run_state s"
                    " ON s.task_run_id = tr.id WHERE tr.flow_run_id = ?", (flow_run_id,)).fetchall()
        seen: dict[str, dict[str, float]] = {}
        for name, kind, stamp in rows:
            moment = stats.parse_ts(stamp)
            if moment is not None:
                seen.setdefault(name.rsplit("-", 1)[0], {}).setdefault(kind, moment)
        if len(seen) < len(workload.tasks) or any("COMPLETED" not in s for s in seen.values()):
            return None
        return {task_id: stats.TaskTiming(task_id=task_id, queued=s.get("PENDING", s["RUNNING"]),
                                          started=s["RUNNING"], ended=s["COMPLETED"]) for task_id, s in seen.items()}


def _ts(value: str | None) -> float:
    moment = stats.parse_ts(value)
    if moment is None:
        raise RuntimeError("prefect returned a run without start/end time")
    return moment
