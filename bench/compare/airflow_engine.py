"""Apache Airflow 3: ``airflow standalone`` (api-server, scheduler, dag-processor, triggerer) on SQLite
with its default LocalExecutor; runs made by ``airflow dags trigger``; timings read from the metadata
database (``dag_run`` queued_at/start_date/end_date, ``task_instance`` queued_dttm/start_date/end_date).
Every task instance runs in its own supervised process.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sqlite3
import subprocess
import time
import uuid

from compare import procs, stats, workloads

ISOLATION = "process per task (supervisor + task process)"


class AirflowEngine:
    name = "airflow"
    label = "Apache Airflow 3.3.2"
    isolation = ISOLATION

    def __init__(self, *, venv: pathlib.Path, work: pathlib.Path, chosen: list[workloads.Workload]) -> None:
        self.venv, self.work, self.chosen = venv, work, chosen
        self.home = work / "airflow-home"
        self.dags = work / "airflow-dags"
        self.port = procs.free_port()
        self.group: procs.Group | None = None

    def env(self) -> dict[str, str]:
        bin_ = str(self.venv / "bin")
        return {**os.environ, "PATH": f"{bin_}:{os.environ.get('PATH', '')}", "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(procs.free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(procs.free_port()),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10", "AIRFLOW__WEBSERVER__EXPOSE_CONFIG": "False"}

    def __enter__(self) -> AirflowEngine:
        self.home.mkdir(parents=True, exist_ok=True)
        self.dags.mkdir(parents=True, exist_ok=True)
        for w in self.chosen:
            (self.dags / f"{w.dag_id}.py").write_text(workloads.airflow_dag_source(w))
        self.group = procs.Group([str(self.venv / "bin" / "airflow"), "standalone"], env=self.env(),
                                 log=self.work / "airflow-standalone.log", cwd=self.work)
        wanted = {w.dag_id for w in self.chosen}

        def parsed() -> bool:
            rows = self._query("SELECT dag_id FROM dag WHERE is_paused = 0")
            return wanted <= {r[0] for r in rows}

        procs.wait_for(parsed, timeout=300, what="airflow: DAGs parsed and unpaused", group=self.group, every=2)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.group is not None:
            self.group.stop(grace=20)

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True,
                                                timeout=10)) as db:
            return db.execute(sql, args).fetchall()

    def run(self, workload: workloads.Workload, *, timeout: float) -> stats.RunTiming:
        run_id = f"bench-{uuid.uuid4().hex[:10]}"
        began = time.monotonic()
        subprocess.run([str(self.venv / "bin" / "airflow"), "dags", "trigger", workload.dag_id, "--run-id", run_id],
                       env=self.env(), cwd=self.work, check=True, capture_output=True, timeout=120)
        sql = "SELECT state, queued_at, start_date, end_date FROM dag_run WHERE dag_id = ? AND run_id = ?"

        def final() -> tuple[object, ...] | None:
            rows = self._query(sql, (workload.dag_id, run_id))
            return rows[0] if rows and rows[0][0] in {"success", "failed"} else None

        assert self.group is not None
        state, queued, started, ended = procs.wait_for(final, timeout=timeout, what=f"airflow run {run_id}",
                                                       group=self.group, every=0.1)
        observed = time.monotonic() - began
        tasks = {}
        for task_id, q, s, e in self._query(
                "SELECT task_id, queued_dttm, start_date, end_date FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (workload.dag_id, run_id)):
            times = [stats.parse_ts(str(v)) if v else None for v in (q, s, e)]
            if None not in times:
                tq, ts, te = (float(t) for t in times if t is not None)
                tasks[str(task_id)] = stats.TaskTiming(task_id=str(task_id), queued=tq, started=ts, ended=te)
        return stats.RunTiming(queued=_ts(queued), started=_ts(started), ended=_ts(ended), observed=observed,
                               split=stats.split(tasks, workload.tasks),
                               state="succeeded" if state == "success" else str(state))


def _ts(value: object) -> float:
    moment = stats.parse_ts(str(value)) if value else None
    if moment is None:
        raise RuntimeError("airflow returned a dag run without queued/start/end time")
    return moment
