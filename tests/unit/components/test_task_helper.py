"""kubeline.task, exercised as user scripts use it: in a child process with the env vars set."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

SRC = pathlib.Path(__file__).resolve().parents[3] / "src"


def run_script(
    code: str, *, cwd: pathlib.Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KUBELINE_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        check=False,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def stage_env(tmp_path: pathlib.Path) -> dict[str, str]:
    (tmp_path / "inputs.json").write_text(json.dumps({"day": "2024-01-02", "n": 3}))
    (tmp_path / "config.json").write_text(json.dumps({"mode": "fast"}))
    return {
        "KUBELINE_INPUTS": str(tmp_path / "inputs.json"),
        "KUBELINE_CONFIG": str(tmp_path / "config.json"),
        "KUBELINE_OUTPUTS": str(tmp_path / "out" / "outputs.json"),
        "KUBELINE_ROUTE_FILE": str(tmp_path / "route"),
        "KUBELINE_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "KUBELINE_RUN_ID": "run-123",
        "KUBELINE_PIPELINE": "sales",
        "KUBELINE_STAGE": "load",
        "KUBELINE_ATTEMPT": "2",
    }


def test_reads_inputs_config_and_context(tmp_path: pathlib.Path, stage_env: dict[str, str]) -> None:
    result = run_script(
        """
        import json
        from kubeline import task
        print(json.dumps({
            "inputs": task.inputs(), "day": task.input("day"),
            "missing": task.input("x", default=7),
            "config": task.config(), "run": task.run_id(), "pipeline": task.pipeline(),
            "stage": task.stage(), "attempt": task.attempt(), "in": task.in_kubeline(),
            "artifacts": str(task.artifacts_dir()),
        }))
        """,
        cwd=tmp_path,
        env=stage_env,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {
        "inputs": {"day": "2024-01-02", "n": 3},
        "day": "2024-01-02",
        "missing": 7,
        "config": {"mode": "fast"},
        "run": "run-123",
        "pipeline": "sales",
        "stage": "load",
        "attempt": 2,
        "in": True,
        "artifacts": stage_env["KUBELINE_ARTIFACTS_DIR"],
    }
    assert pathlib.Path(stage_env["KUBELINE_ARTIFACTS_DIR"]).is_dir()
    assert result.stderr == ""


def test_outputs_merge_across_calls_and_processes(
    tmp_path: pathlib.Path, stage_env: dict[str, str]
) -> None:
    first = run_script(
        """
        from kubeline import task
        task.set_output("rows", 42)
        task.set_outputs({"items": ("a", "b"), "meta": {"ok": True, "none": None}})
        task.set_output("rows", 43)
        """,
        cwd=tmp_path,
        env=stage_env,
    )
    assert first.returncode == 0, first.stderr
    second = run_script(
        "from kubeline import task; task.set_output('more', 1.5); print(task.outputs())",
        cwd=tmp_path,
        env=stage_env,
    )
    assert second.returncode == 0, second.stderr
    written = json.loads(pathlib.Path(stage_env["KUBELINE_OUTPUTS"]).read_text())
    assert written == {
        "rows": 43,
        "items": ["a", "b"],
        "meta": {"ok": True, "none": None},
        "more": 1.5,
    }
    leftovers = {p.name for p in pathlib.Path(stage_env["KUBELINE_OUTPUTS"]).parent.iterdir()}
    assert leftovers <= {"outputs.json", ".outputs.json.lock"}  # no half-written temp files


def test_set_route(tmp_path: pathlib.Path, stage_env: dict[str, str]) -> None:
    result = run_script(
        "from kubeline import task; task.set_route('big')", cwd=tmp_path, env=stage_env
    )
    assert result.returncode == 0, result.stderr
    assert pathlib.Path(stage_env["KUBELINE_ROUTE_FILE"]).read_text() == "big"


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (
            "task.set_output('when', object())",
            "TypeError: kubeline.task: output 'when' is not JSON",
        ),
        ("task.set_outputs({'a': 1, 'b': {1, 2}})", "output 'b' is not JSON-serialisable"),
        (
            "task.set_output('ratio', float('nan'))",
            "ValueError: kubeline.task: output 'ratio' contains NaN",
        ),
        (
            "task.set_outputs({1: 'x'})",
            "TypeError: kubeline.task: output names are non-empty strings",
        ),
        ("task.set_outputs(['a'])", "takes a mapping of name -> value, not list"),
        ("task.set_route('')", "a route is a non-empty one-line string"),
        ("task.input('nope')", "input 'nope' was not given (inputs: day, n)"),
    ],
)
def test_bad_calls_name_the_problem(
    tmp_path: pathlib.Path, stage_env: dict[str, str], call: str, error: str
) -> None:
    result = run_script(f"from kubeline import task\n{call}", cwd=tmp_path, env=stage_env)
    assert result.returncode == 1
    assert error in result.stderr
    assert not pathlib.Path(stage_env["KUBELINE_OUTPUTS"]).exists()  # nothing half-recorded


def test_broken_env_files_are_reported(tmp_path: pathlib.Path, stage_env: dict[str, str]) -> None:
    pathlib.Path(stage_env["KUBELINE_INPUTS"]).write_text("[1, 2]")
    result = run_script("from kubeline import task; task.inputs()", cwd=tmp_path, env=stage_env)
    assert "holds a list, not an object" in result.stderr
    pathlib.Path(stage_env["KUBELINE_INPUTS"]).write_text("{oops")
    result = run_script("from kubeline import task; task.inputs()", cwd=tmp_path, env=stage_env)
    assert "is not JSON" in result.stderr
    missing = {**stage_env, "KUBELINE_CONFIG": str(tmp_path / "absent.json")}
    result = run_script("from kubeline import task; task.config()", cwd=tmp_path, env=missing)
    assert "cannot read the stage config" in result.stderr
    bad_attempt = {**stage_env, "KUBELINE_ATTEMPT": "two"}
    result = run_script("from kubeline import task; task.attempt()", cwd=tmp_path, env=bad_attempt)
    assert "KUBELINE_ATTEMPT='two' is not a number" in result.stderr


def test_outside_kubeline_works_with_one_warning(tmp_path: pathlib.Path) -> None:
    result = run_script(
        """
        import json
        from kubeline import task
        task.set_output("a", 1)
        task.set_output("b", [1])
        task.set_route("x")
        first, second = task.artifacts_dir(), task.artifacts_dir()
        assert first == second and first.is_dir()
        print(json.dumps({"inputs": task.inputs(), "config": task.config(),
                          "outputs": task.outputs(),
                          "run": task.run_id(), "stage": task.stage(), "attempt": task.attempt(),
                          "pipeline": task.pipeline(), "in": task.in_kubeline(),
                          "default": task.input("day", default="today")}))
        """,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "inputs": {},
        "config": {},
        "outputs": {"a": 1, "b": [1]},
        "run": "local",
        "stage": "main",
        "attempt": 1,
        "pipeline": tmp_path.name,
        "in": False,
        "default": "today",
    }
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 3  # outputs, route and artifacts: each once
    assert all(w.startswith("kubeline.task: KUBELINE_") for w in warnings)
    assert "KUBELINE_OUTPUTS is not set" in warnings[0]


def test_venv_modules_import_only_the_stdlib(tmp_path: pathlib.Path) -> None:
    """The four modules copied into pipeline virtualenvs must import without any dependency."""
    for relative in (
        "kubeline/__init__.py",
        "kubeline/task.py",
        "kubeline/components/__init__.py",
        "kubeline/components/notebook.py",
    ):
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((SRC / relative).read_text())
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r});"
        "import kubeline.task, kubeline.components.notebook;"
        "stdlib = set(sys.stdlib_module_names);"
        "extra = sorted({m.split('.')[0] for m in sys.modules}"
        " - stdlib - {'kubeline', '__main__'});"
        "print(extra)"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-I", "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
