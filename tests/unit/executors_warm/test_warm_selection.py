"""Which stages the warm executor gets: the planner's rule, the composition root's default, and
the executor's own eligibility check (everything else starts cold)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from kubeline import bootstrap, settings
from kubeline.domain import runs, specs
from kubeline.engine import planner
from kubeline.executors import base, local_warm


def run_of(spec: dict[str, Any]) -> runs.Run:
    return runs.Run(id="r", pipeline="p", spec=specs.PipelineSpec.model_validate(spec))


def chosen(spec: dict[str, Any], *, default: str = "local-warm", stage: str = "s") -> str:
    run = run_of(spec)
    return planner.effective(run, planner.stage_of(run, stage), default_executor=default).executor


PY = {"id": "s", "type": "python", "file": "main.py"}


def test_python_stage_without_requirements_runs_warm_by_default() -> None:
    assert chosen({"stages": [PY]}) == "local-warm"
    assert chosen({"stages": [{**PY, "type": "script"}]}) == "local-warm"  # an alias of python


@pytest.mark.parametrize("spec", [
    {"requirements": "requirements.txt", "stages": [PY]},
    {"stages": [{**PY, "requirements": "req.txt"}]},
    {"stages": [{"id": "s", "type": "notebook", "file": "main.ipynb"}]},
    {"stages": [{"id": "s", "type": "shell", "command": "echo hi"}]},
    {"stages": [{"id": "s", "type": "http_request", "config": {"url": "http://127.0.0.1/"}}]},
])
def test_other_stages_run_cold(spec: dict[str, Any]) -> None:
    assert chosen(spec) == "local"


def test_explicit_local_warm_on_an_unfit_stage_falls_back_to_local() -> None:
    assert chosen({"executor": "local-warm", "requirements": "r.txt", "stages": [PY]}) == "local"
    assert chosen({"stages": [{"id": "s", "type": "shell", "command": "true",
                               "executor": "local-warm"}]}) == "local"
    assert chosen({"executor": "local-warm", "stages": [PY]}, default="local") == "local-warm"


def test_an_explicit_executor_wins_over_the_rule() -> None:
    assert chosen({"executor": "local", "stages": [PY]}) == "local"
    assert chosen({"stages": [{**PY, "executor": "local"}]}) == "local"
    assert chosen({"executor": "docker", "stages": [PY]}) == "docker"
    assert chosen({"executor": "local", "stages": [{**PY, "executor": "kubernetes"}]}) == "kubernetes"


def test_an_engine_whose_default_is_local_keeps_local() -> None:
    assert chosen({"stages": [PY]}, default="local") == "local"
    assert chosen({"stages": [PY]}, default="kubernetes") == "kubernetes"


def test_composition_root_default(tmp_path: pathlib.Path) -> None:
    assert bootstrap.default_executor(settings.Settings(home=tmp_path)) == "local-warm"
    assert bootstrap.default_executor(settings.Settings(home=tmp_path, executor="kubernetes")) == "kubernetes"
    assert bootstrap.default_executor(settings.Settings(home=tmp_path, executor="local-warm")) == "local-warm"


def test_composition_root_registers_both_local_executors(tmp_path: pathlib.Path) -> None:
    found = bootstrap.executors_for(settings.Settings(home=tmp_path))
    assert found["local"].name == "local" and found["local-warm"].name == "local-warm"


def spec_of(**kwargs: Any) -> base.AttemptSpec:
    values: dict[str, Any] = {
        "attempt_id": "a", "run_id": "r", "pipeline": "p", "stage_id": "s", "number": 1,
        "stage_type": "python", "folder": None, "argv": ("python", "-u", "main.py", "x"),
        "runtime": base.Runtime.PIPELINE, "python_version": "3.11", "requirements": None}
    values.update(kwargs)
    return base.AttemptSpec(**values)


@pytest.fixture
def executor(tmp_path: pathlib.Path) -> local_warm.WarmExecutor:
    return local_warm.WarmExecutor(work_dir=tmp_path / "w", artifacts_dir=tmp_path / "a",
                                   venvs=None)  # type: ignore[arg-type]


def test_warm_argv_of_a_script(executor: local_warm.WarmExecutor) -> None:
    assert executor.warm_argv(spec_of()) == ["main.py", "x"]
    assert executor.warm_argv(spec_of(argv=("python", "main.py"))) == ["main.py"]
    assert executor.warm_argv(spec_of(env={"PYTHONPATH": "lib", "PLAIN": "1"})) == ["main.py", "x"]


@pytest.mark.parametrize("changes", [
    {"argv": ("python", "-m", "kubeline.components.notebook", "main.ipynb")},
    {"argv": ("python", "-c", "print(1)")},
    {"argv": ("python", "-u")},
    {"argv": ("sh", "-c", "echo hi"), "stage_type": "shell"},
    {"stage_type": "notebook"},
    {"runtime": base.Runtime.KUBELINE},
    {"requirements": pathlib.Path("requirements.txt")},
    {"extra_packages": ("papermill",)},
    {"env": {"PYTHONHASHSEED": "0"}},
    {"env": {"PYTHONWARNINGS": "error"}},
])
def test_unfit_attempts_start_cold(executor: local_warm.WarmExecutor, changes: dict[str, Any]) -> None:
    assert executor.warm_argv(spec_of(**changes)) is None
