"""Retention against a real server and store: by count and age, refused when it would delete
everything (unless forced), never a running run, log tails behind a marker, old venvs and git
checkouts pruned; a dry run lists exactly what apply removes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest

from kubeline import settings as settings_
from kubeline import testing
from kubeline.domain import errors, runs
from kubeline.storage.sql import store as sql_store

pytestmark = pytest.mark.slow


def _pipelines(root: pathlib.Path) -> None:
    specs = {
        "keep2": "retention: {max_runs: 2}\nstages: [{id: a, type: shell, command: 'echo hi'}]\n",
        "wipe": "retention: {max_age_days: 0.00001}\nstages: [{id: a, type: shell, command: 'echo bye'}]\n",
        "busy": "retention: {max_runs: 0}\nstages: [{id: a, type: shell, command: 'echo started; sleep 60'}]\n",
        "chatty": "stages: [{id: a, type: shell, command: 'for i in $(seq 1 600); do echo \"line $i of output\"; done'}]\n",
    }
    for name, text in specs.items():
        (root / name).mkdir(parents=True)
        (root / name / "pipeline.yaml").write_text(textwrap.dedent(text))


def test_plan_apply_refusal_running_runs_and_log_caps(tmp_path: pathlib.Path, database_url: str) -> None:
    _pipelines(tmp_path / "pipelines")
    home = tmp_path / "home"
    old_venv = home / "venvs" / ("0" * 32)
    (old_venv / "bin").mkdir(parents=True)
    (old_venv / ".kubeline-ready").write_text("k")
    os.utime(old_venv / ".kubeline-ready", (time.time() - 40 * 86400,) * 2)
    settings = settings_.Settings(home=home, database_url=database_url, pipelines_dir=tmp_path / "pipelines",
                                  log_max_bytes=4096, retention={"logs_max_age_days": 30})
    with testing.ServerThread(settings) as server, server.client(timeout=60) as api, server.http(timeout=60) as http:
        asyncio.run(_audit_rows(database_url, ages_days=[400, 366, 10]))
        kept = [api.wait(api.create_run("keep2").id, timeout=60).id for _ in range(4)]
        wiped = api.wait(api.create_run("wipe").id, timeout=60).id
        busy = api.create_run("busy").id
        chatty = api.wait(api.create_run("chatty").id, timeout=60).id
        deadline = time.monotonic() + 30
        while api.run(busy).state.value != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # 'wipe' is now older than its max_age_days

        plan = http.get("/api/v1/retention/plan").json()
        assert not plan["applied"]
        by_kind: dict[str, list[str]] = {}
        for item in plan["items"]:
            by_kind.setdefault(item["kind"], []).append(item["target"])
        assert sorted(by_kind["run"]) == sorted(kept[:2])  # the two oldest of keep2; busy is running
        assert busy not in json.dumps(plan["items"])
        assert [r for r in plan["refused"] if r.startswith("wipe: the policy would delete all 1 finished runs")]
        assert by_kind["log_tail"] == [str(home / "logs" / chatty / "a" / "1.log")]
        assert by_kind["venv"] == [str(old_venv)]
        audit = [i for i in plan["items"] if i["kind"] == "audit"]
        assert len(audit) == 1 and audit[0]["reason"].startswith("2 audit row(s) older than 365 days"), audit
        sizes = {i["target"]: i["bytes"] for i in plan["items"]}
        assert all(sizes[r] > 0 for r in kept[:2]), plan  # their log files
        assert sizes[str(home / "logs" / chatty / "a" / "1.log")] > 4000  # ~10 kB of output over the 4 kB cap
        assert sizes[str(old_venv)] == 1 and audit[0]["bytes"] is None

        applied = http.post("/api/v1/retention/apply").json()
        assert applied["applied"] and sorted(i["target"] for i in applied["items"] if i["kind"] == "run") \
            == sorted(kept[:2])
        assert [r.id for r in api.runs(pipeline="keep2").items] == kept[:1:-1]
        assert api.run(wiped).state.value == "succeeded"  # refused without force
        assert api.run(busy).state.value == "running"
        assert not old_venv.exists()
        lines = api.logs(chatty).splitlines()
        assert "log truncated:" in lines[0] and "the tail follows" in lines[0]
        assert lines[-1].endswith("line 600 of output")
        assert (home / "logs" / chatty / "a" / "1.log").stat().st_size < 4096 + 300
        assert not (home / "logs" / kept[0]).exists()
        left = http.get("/api/v1/audit", params={"actor": "old-admin"}).json()["items"]
        assert [e["action"] for e in left if e["actor"] == "old-admin"] == ["test.recent"]  # the 2 old rows went

        forced = http.post("/api/v1/retention/apply", params={"force": "true"}).json()
        assert [i["target"] for i in forced["items"] if i["kind"] == "run"] == [wiped]
        with pytest.raises(errors.NotFoundError):
            api.run(wiped)
        api.cancel(busy)


async def _audit_rows(url: str, *, ages_days: list[int]) -> None:
    store = await sql_store.SqlStore.open(url)
    try:
        for age in ages_days:
            await store.accounts.append_audit(at=runs.utcnow() - dt.timedelta(days=age), actor="old-admin",
                                              action="test.old" if age > 365 else "test.recent", target="x",
                                              outcome=200, ip="127.0.0.1", detail={})
    finally:
        await store.close()


def test_cli_dry_run_and_bad_policy(tmp_path: pathlib.Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELINE_")}
    env.update(KUBELINE_HOME=str(tmp_path / "home"))
    kubeline = pathlib.Path(sys.executable).with_name("kubeline")
    done = subprocess.run([str(kubeline), "retention", "plan"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "0 item(s) would remove" in done.stdout
    env["KUBELINE_RETENTION"] = json.dumps({"max_runs": -1})
    bad = subprocess.run([str(kubeline), "retention", "apply"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "KUBELINE_RETENTION" in bad.stdout + bad.stderr
    assert "max_runs" in bad.stdout + bad.stderr


def _finished_runs(url: str, pipeline: str, count: int) -> list[str]:
    """``count`` finished runs of ``pipeline`` in the database at ``url``, oldest first."""
    from kubeline.domain import specs, states

    async def seed() -> list[str]:
        store = await sql_store.SqlStore.open(url)
        made = []
        try:
            spec = specs.PipelineSpec.model_validate({"stages": [{"id": "a", "type": "shell", "command": "true"}]})
            for _ in range(count):
                run = runs.Run(id=runs.new_id(), pipeline=pipeline, spec=spec)
                await store.create_run(run, [runs.StageRun(run_id=run.id, stage_id="a")])
                await store.transition_run(run.id, states.RunState.RUNNING)
                await store.transition_run(run.id, states.RunState.SUCCEEDED)
                made.append(run.id)
                await asyncio.sleep(0.002)  # ids order by the millisecond
        finally:
            await store.close()
        return made
    return asyncio.run(seed())


def test_cli_plan_output_formats(tmp_path: pathlib.Path) -> None:
    """``retention plan|apply -o table|wide|json|yaml``: JSON/YAML are the API's PlanOut object."""
    import yaml

    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELINE_")}
    url = f"sqlite+aiosqlite:///{tmp_path / 'kubeline.db'}"
    env.update(KUBELINE_HOME=str(tmp_path / "home"), KUBELINE_DATABASE_URL=url,
               KUBELINE_RETENTION=json.dumps({"max_runs": 1}))
    made = _finished_runs(url, "keep1", 3)
    kubeline = pathlib.Path(sys.executable).with_name("kubeline")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(kubeline), "retention", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    as_json = cli("plan", "-o", "json")
    assert as_json.returncode == 0, as_json.stderr
    plan = json.loads(as_json.stdout)
    assert plan["applied"] is False and plan["refused"] == []
    runs_gone = [i for i in plan["items"] if i["kind"] == "run"]
    assert sorted(i["target"] for i in runs_gone) == sorted(made[:2])
    assert set(runs_gone[0]) == {"kind", "target", "pipeline", "reason", "bytes"}
    assert runs_gone[0]["pipeline"] == "keep1" and "max_runs" in runs_gone[0]["reason"]
    assert yaml.safe_load(cli("plan", "-o", "yaml").stdout) == plan
    table = cli("plan")
    assert table.returncode == 0 and "TARGET" in table.stdout and "BYTES" not in table.stdout
    assert all(run_id in table.stdout for run_id in made[:2]) and made[2] not in table.stdout
    assert f"{len(plan['items'])} item(s) would remove" in table.stdout
    assert "BYTES" in cli("plan", "-o", "wide").stdout
    bad = cli("plan", "-o", "xml")
    assert bad.returncode == 2 and "xml" in bad.stderr
    applied = json.loads(cli("apply", "-o", "json").stdout)
    assert applied["applied"] is True and sorted(i["target"] for i in applied["items"] if i["kind"] == "run") \
        == sorted(made[:2])
    assert json.loads(cli("plan", "-o", "json").stdout)["items"] == [
        i for i in plan["items"] if i["kind"] not in ("run", "logs", "artifacts")]
