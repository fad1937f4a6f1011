"""The example pipelines run stage by stage the way the engine runs them (argv from
``launch.argv_for``, inputs and config rendered with ``domain.expressions``, the attempt
contract's env vars), with this virtualenv standing in for both runtimes."""

from __future__ import annotations

import collections.abc
import functools
import http.server
import json
import os
import pathlib
import subprocess
import sys
import threading
from typing import Any

import pytest
import yaml

from kubeline.components import launch
from kubeline.domain import components, dag, expressions, specs

EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "examples" / "pipelines"


def load(folder: pathlib.Path) -> specs.PipelineSpec:
    if (folder / "pipeline.yaml").exists():
        return specs.PipelineSpec.model_validate(
            yaml.safe_load((folder / "pipeline.yaml").read_text())
        )
    if (folder / "pipeline.json").exists():
        return specs.PipelineSpec.model_validate(json.loads((folder / "pipeline.json").read_text()))
    return specs.PipelineSpec()


def run_attempt(
    folder: pathlib.Path,
    work: pathlib.Path,
    *,
    spec: specs.PipelineSpec,
    stage: specs.StageSpec,
    context: dict[str, Any],
    number: int = 1,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    type_name = components.ALIASES.get(stage.type, stage.type)
    config = expressions.render(stage.config, context)
    inputs = {**context["inputs"], **expressions.render(stage.inputs, context)}
    argv = launch.argv_for(type_name, file=stage.file, config=config).argv
    argv = (sys.executable, *argv[1:]) if argv[0] == "python" else argv
    base = work / f"{stage.id}-{number}"
    base.mkdir(parents=True)
    (base / "inputs.json").write_text(json.dumps(inputs))
    (base / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBELINE_", "JUPYTER_"))}
    env.update({k: v for k, v in spec.env.items() if isinstance(v, str)})
    env.update(
        {
            "PYTHONDONTWRITEBYTECODE": "1",
            "KUBELINE_INPUTS": str(base / "inputs.json"),
            "KUBELINE_CONFIG": str(base / "config.json"),
            "KUBELINE_OUTPUTS": str(base / "outputs.json"),
            "KUBELINE_ROUTE_FILE": str(base / "route"),
            "KUBELINE_ARTIFACTS_DIR": str(base / "artifacts"),
            "KUBELINE_RUN_ID": "run-1",
            "KUBELINE_PIPELINE": folder.name,
            "KUBELINE_STAGE": stage.id,
            "KUBELINE_ATTEMPT": str(number),
        }
    )
    result = subprocess.run(
        argv, cwd=folder, env=env, capture_output=True, text=True, timeout=110, check=False
    )
    outputs_file = base / "outputs.json"
    return result, json.loads(outputs_file.read_text()) if outputs_file.exists() else {}


def run_pipeline(
    folder: pathlib.Path, work: pathlib.Path, inputs: dict[str, Any]
) -> dict[str, Any]:
    spec = load(folder)
    stages = spec.stages or [
        specs.StageSpec(
            id="main", type="notebook" if (folder / "main.ipynb").exists() else "python"
        )
    ]
    by_id = {s.id: s for s in stages}
    context: dict[str, Any] = {"inputs": inputs, "stages": {}}
    for stage_id in dag.topological_order({s.id: list(s.depends_on) for s in stages}):
        stage = by_id[stage_id]
        for number in range(1, (stage.retries or spec.retries).attempts + 2):
            result, outputs = run_attempt(
                folder, work, spec=spec, stage=stage, context=context, number=number
            )
            if result.returncode == 0:
                break
        assert result.returncode == 0, f"{stage_id}: {result.stdout}\n{result.stderr}"
        context["stages"][stage_id] = outputs
    return context["stages"]


@pytest.fixture
def data_server() -> collections.abc.Iterator[str]:
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(EXAMPLES / "multi-stage")
    )
    handler.log_message = lambda *args: None  # type: ignore[method-assign,assignment]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
def test_multi_stage(data_server: str, tmp_path: pathlib.Path) -> None:
    outputs = run_pipeline(
        EXAMPLES / "multi-stage", tmp_path, {"url": f"{data_server}/sample-data.json"}
    )
    assert outputs["clean"]["dropped"] == 2
    assert outputs["summarise"]["result"] == {
        "count": 3,
        "total": 22.75,
        "names": ["Alice", "Bob", "Dave"],
        "largest": "Alice",
        "dropped": 2,
    }
    assert "- total: 22.75" in outputs["report"]["report"]
    assert (tmp_path / "report-1" / "artifacts" / "report.md").is_file()
    assert (tmp_path / "report-1" / "artifacts" / "report.ipynb").is_file()


def test_hello_and_fastflow(tmp_path: pathlib.Path) -> None:
    assert run_pipeline(EXAMPLES / "hello", tmp_path / "a", {"name": "Ada"}) == {
        "main": {"greeting": "Hello, Ada!"}
    }
    assert run_pipeline(EXAMPLES / "fastflow-compat", tmp_path / "b", {}) == {
        "main": {"region": "eu"}
    }


def test_flaky_retry_fails_once_then_succeeds(tmp_path: pathlib.Path) -> None:
    assert run_pipeline(EXAMPLES / "flaky-retry", tmp_path, {}) == {
        "main": {"succeeded_on_attempt": 2}
    }
    assert (tmp_path / "main-1").is_dir() and (tmp_path / "main-2").is_dir()


@pytest.mark.slow
def test_notebook_params(tmp_path: pathlib.Path) -> None:
    outputs = run_pipeline(EXAMPLES / "notebook-params", tmp_path, {"name": "Ada", "repeat": 3})
    assert outputs == {"main": {"greeting": "Hello, Ada!", "count": 3}}


@pytest.mark.slow
def test_with_requirements_in_its_own_venv(tmp_path: pathlib.Path) -> None:
    """As the local executor will: a fresh venv with the requirements and only the four
    stdlib-only kubeline modules copied in (none of Kubeline's dependencies)."""
    uv = pathlib.Path(sys.executable).with_name("uv")
    folder = EXAMPLES / "with-requirements"
    venv = tmp_path / "venv"
    subprocess.run(
        [str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, timeout=110
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [
            str(uv),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(python),
            "-r",
            str(folder / "requirements.txt"),
        ],
        check=True,
        timeout=110,
    )
    site = pathlib.Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    )
    src = pathlib.Path(__file__).resolve().parents[3] / "src"
    for relative in (
        "kubeline/__init__.py",
        "kubeline/task.py",
        "kubeline/components/__init__.py",
        "kubeline/components/notebook.py",
    ):
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_text((src / relative).read_text())
    outputs_file = tmp_path / "outputs.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBELINE_", "VIRTUAL_ENV"))}
    env["KUBELINE_OUTPUTS"] = str(outputs_file)
    result = subprocess.run(
        [str(python), "-u", "main.py"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "imported from the pipeline's own virtualenv" in result.stdout
    assert json.loads(outputs_file.read_text())["six_version"]
