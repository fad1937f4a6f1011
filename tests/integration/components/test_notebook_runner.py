"""The notebook runner executed as the executor does: ``python -m kubeline.components.notebook``.

It runs in this virtualenv (papermill + ipykernel are installed here as in a notebook stage's).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
from typing import Any

import nbformat
import pytest

from kubeline.domain import cells


def write_notebook(path: pathlib.Path, *sources: str, parameters: str = "") -> None:
    cells: list[Any] = [nbformat.v4.new_markdown_cell("# A test notebook")]
    if parameters:
        cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    cells.extend(nbformat.v4.new_code_cell(source) for source in sources)
    notebook = nbformat.v4.new_notebook()  # no kernelspec metadata: the runner picks its own
    notebook.cells = cells
    nbformat.write(notebook, path)


def run_notebook(
    folder: pathlib.Path, name: str = "main.ipynb", *, config: object = None, inputs: object = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    (folder / "config.json").write_text(json.dumps(config or {}))
    (folder / "inputs.json").write_text(json.dumps(inputs or {}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBELINE_", "JUPYTER_"))}
    env.update(
        {
            "KUBELINE_CONFIG": str(folder / "config.json"),
            "KUBELINE_INPUTS": str(folder / "inputs.json"),
            "KUBELINE_OUTPUTS": str(folder / "outputs.json"),
            "KUBELINE_ARTIFACTS_DIR": str(folder / "artifacts"),
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "kubeline.components.notebook", name],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    outputs_file = folder / "outputs.json"
    return result, json.loads(outputs_file.read_text()) if outputs_file.exists() else {}


@pytest.mark.slow
def test_parameters_progress_outputs_and_artifact(tmp_path: pathlib.Path) -> None:
    (tmp_path / "helper.py").write_text("VALUE = 'from the pipeline folder'\n")
    write_notebook(
        tmp_path / "main.ipynb",
        "print(f'hello {name} x{times} {flag}')",
        "import helper\nfrom kubeline import task\n"
        "task.set_outputs({'greeting': f'hello {name}', 'times': times, 'helper': helper.VALUE})",
        parameters="name = 'world'\ntimes = 1\nflag = 'default'",
    )
    result, outputs = run_notebook(
        tmp_path,
        config={"parameters": {"name": "config", "flag": "set"}},
        inputs={"name": "input", "times": 3},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert outputs == {"greeting": "hello input", "times": 3, "helper": "from the pipeline folder"}
    lines = result.stdout.splitlines()
    assert (
        "hello input x3 set" in lines
    )  # inputs win over config parameters; the cell output is logged
    progress = [line for line in lines if line.startswith(("cell ", "parameters cell"))]
    assert progress[0] == "cell 1/3 (cells[0]) started"
    assert re.fullmatch(r"cell 1/3 \(cells\[0\]\) done in \d+\.\ds", progress[1])
    assert "parameters cell (injected) started" in progress
    assert [p.split(" done in ")[0] for p in progress if " done in " in p] == [
        "cell 1/3 (cells[0])",
        "parameters cell (injected)",
        "cell 2/3 (cells[1])",
        "cell 3/3 (cells[2])",
    ]
    assert [(c.index, c.state, c.tries) for c in cells.parse(lines, finished=True)] == [
        (0, "succeeded", 1), (1, "succeeded", 1), (2, "succeeded", 1)]
    assert "Executing" not in result.stderr  # no tqdm progress bar
    executed = nbformat.read(tmp_path / "artifacts" / "main.ipynb", as_version=4)
    assert any("hello input x3 set" in str(cell.get("outputs")) for cell in executed.cells)
    assert result.stderr == ""  # no kernel or papermill noise in the attempt's log


@pytest.mark.slow
def test_failing_cell_exits_1_naming_the_cell_and_keeps_the_notebook(
    tmp_path: pathlib.Path,
) -> None:
    write_notebook(
        tmp_path / "main.ipynb",
        "x = 1",
        "print('before the error')\nraise ValueError('bad row 7')",
        "print('never')",
    )
    result, _ = run_notebook(tmp_path)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error == (
        "error: main.ipynb failed in cell 2/3 (cells[1]): ValueError: bad row 7"
        f" (executed notebook: {tmp_path / 'artifacts' / 'main.ipynb'})"
    )
    assert "cell 2/3 (cells[1]) failed in" in result.stdout
    assert "cell 3/3" not in result.stdout
    status = cells.parse(result.stdout.splitlines(), finished=True)
    assert [(c.state, c.error) for c in status] == [
        ("succeeded", ""), ("failed", "ValueError: bad row 7"), ("skipped", "")]
    executed = nbformat.read(tmp_path / "artifacts" / "main.ipynb", as_version=4)
    assert executed.metadata.papermill["exception"] is True
    assert "bad row 7" in json.dumps(executed.cells[-2].get("outputs"))


@pytest.mark.slow
def test_per_cell_retries_rerun_the_cell_in_the_same_kernel(tmp_path: pathlib.Path) -> None:
    write_notebook(
        tmp_path / "main.ipynb",
        "tries = 0",
        "tries += 1\nif tries < 3:\n    raise ConnectionError(f'try {tries}')",
        "from kubeline import task\ntask.set_output('tries', tries)",
    )
    policies = {"1": {"retries": 2, "delay_seconds": 0.1}}  # the mapping form: code cell 1
    result, outputs = run_notebook(tmp_path, config={"cells": policies})
    assert result.returncode == 0, result.stdout + result.stderr
    assert outputs == {"tries": 3}
    assert "cell 2/3 (cells[1]) failed in" in result.stdout
    assert "ConnectionError: try 1; retrying in 0.1s" in result.stdout
    assert "cell 2/3 (cells[1]) started (retry 2/2)" in result.stdout
    status = cells.parse(result.stdout.splitlines(), finished=True)
    assert [(c.state, c.tries) for c in status] == [("succeeded", 1), ("succeeded", 3), ("succeeded", 1)]
    executed = nbformat.read(tmp_path / "artifacts" / "main.ipynb", as_version=4)
    assert "ConnectionError" not in json.dumps([c.get("outputs") for c in executed.cells])


def test_bad_invocations_fail_clearly(tmp_path: pathlib.Path) -> None:
    result, _ = run_notebook(tmp_path, "missing.ipynb")
    assert result.returncode == 1 and "error: notebook missing.ipynb not found in" in result.stderr
    write_notebook(tmp_path / "main.ipynb", "1")
    result, _ = run_notebook(tmp_path, config={"cells": {"two": {"retries": 1}}})
    assert result.returncode == 1
    assert "config.cells['two']" in result.stderr
    result, _ = run_notebook(tmp_path, config={"cells": [{"retries": -1}]})
    assert result.returncode == 1 and "config.cells['0']" in result.stderr
    result, _ = run_notebook(tmp_path, config={"parameters": [1]})
    assert "config.parameters must be an object" in result.stderr
    (tmp_path / "broken.ipynb").write_text("{not a notebook")
    result, _ = run_notebook(tmp_path, "broken.ipynb")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: broken.ipynb could not run:")


@pytest.mark.slow
def test_fastflow_cells_list_counts_code_cells_only_and_metadata_overrides(tmp_path: pathlib.Path) -> None:
    """Fast-Flow's form: cells[i] is the i-th code cell; markdown between them is not counted,
    and a cell's metadata ``fastflow`` overrides its entry (here: more retries than the list)."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Intro"),
        nbformat.v4.new_code_cell("a = 0\nb = 0"),
        nbformat.v4.new_markdown_cell("## Flaky part"),
        nbformat.v4.new_code_cell("a += 1\nif a < 2:\n    raise ConnectionError(f'a={a}')"),
        nbformat.v4.new_markdown_cell("## Flakier part"),
        nbformat.v4.new_code_cell("b += 1\nif b < 3:\n    raise TimeoutError(f'b={b}')",
                                  metadata={"fastflow": {"retries": 2, "delay_seconds": 0}}),
        nbformat.v4.new_code_cell("from kubeline import task\ntask.set_outputs({'a': a, 'b': b})"),
    ]
    nbformat.write(notebook, tmp_path / "main.ipynb")
    policies = [{"retries": 0}, {"retries": 1, "delay_seconds": 0.1}, {"retries": 0}]
    result, outputs = run_notebook(tmp_path, config={"cells": policies})
    assert result.returncode == 0, result.stdout + result.stderr
    assert outputs == {"a": 2, "b": 3}
    assert "cell 2/4 (cells[1]) failed in" in result.stdout
    assert "ConnectionError: a=1; retrying in 0.1s" in result.stdout
    assert "cell 3/4 (cells[2]) started (retry 2/2)" in result.stdout
    status = cells.parse(result.stdout.splitlines(), finished=True)
    assert [(c.index, c.state, c.tries) for c in status] == [
        (0, "succeeded", 1), (1, "succeeded", 2), (2, "succeeded", 3), (3, "succeeded", 1)]
