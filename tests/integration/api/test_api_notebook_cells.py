"""A Fast-Flow notebook folder, unmodified, run by a real server: ``cells`` as a list indexed by
code cell, and the per-cell status of the run from ``GET /api/v1/runs/{id}/cells``."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator

import nbformat
import pytest

from kubeline import settings as settings_
from kubeline import testing
from kubeline.domain import errors

pytestmark = pytest.mark.slow


def _fastflow_notebook_folder(root: pathlib.Path) -> None:
    folder = root / "nb"
    folder.mkdir(parents=True)
    book = nbformat.v4.new_notebook()
    book.cells = [
        nbformat.v4.new_markdown_cell("# Markdown is not counted"),
        nbformat.v4.new_code_cell("import os\ntries = 0"),
        nbformat.v4.new_markdown_cell("## flaky"),
        nbformat.v4.new_code_cell("tries += 1\nif tries < 2:\n    raise ConnectionError('first try')"),
        nbformat.v4.new_code_cell("raise ValueError(os.environ['WHY'])"),
        nbformat.v4.new_code_cell("print('never')"),
    ]
    nbformat.write(book, folder / "main.ipynb")
    (folder / "pipeline.json").write_text(json.dumps({
        "type": "notebook", "default_env": {"WHY": "bad row 7"}, "webhook_key": "", "max_instances": 0,
        "cells": [{"retries": 0}, {"retries": 1, "delay_seconds": 0}, {"retries": 0}],
        "restart_on_crash": True,
    }))


@pytest.fixture
def nb_server(tmp_path: pathlib.Path, database_url: str) -> Iterator[testing.ServerThread]:
    _fastflow_notebook_folder(tmp_path / "pipelines")
    settings = settings_.Settings(home=tmp_path / "home", database_url=database_url,
                                  pipelines_dir=tmp_path / "pipelines",
                                  uv_cache_dir=pathlib.Path("/tmp/kubeline-test-venvs/uv-cache"))
    with testing.ServerThread(settings) as running:
        yield running


def test_cells_of_a_fastflow_notebook_run(nb_server: testing.ServerThread) -> None:
    with nb_server.client(timeout=60) as api:
        pipeline = api.pipeline("nb")
        assert [(n.location, "not acted on" in n.message) for n in pipeline.notices or []] == [
            ("restart_on_crash", True)]
        run = api.wait(api.create_run("nb").id, timeout=300)
        assert run.state.value == "failed", api.logs(run.id)
        [attempt] = api.cells(run.id)
        assert (attempt.stage_id, attempt.attempt, attempt.attempt_state.value) == ("main", 1, "failed")
        assert [(c.index, c.state, c.tries, c.error) for c in attempt.cells] == [
            (0, "succeeded", 1, ""),
            (1, "succeeded", 2, "ConnectionError: first try"),  # the last failure, retried
            (2, "failed", 1, "ValueError: bad row 7"),
            (3, "skipped", 0, ""),
        ]
        attempt_id = api.attempts(run.id)[0].id
        executed = api.notebook(run.id, attempt_id)
        assert (executed.stage_id, executed.attempt, executed.name) == ("main", 1, "main.ipynb")
        code = [c for c in executed.notebook["cells"] if c["cell_type"] == "code"
                and "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
        assert "".join(code[2]["source"]) == "raise ValueError(os.environ['WHY'])"  # nbformat: str or lines
        errors_shown = [o for o in code[2]["outputs"] if o["output_type"] == "error"]
        assert errors_shown and errors_shown[0]["evalue"] == "bad row 7"  # the failing cell's own output
        with pytest.raises(errors.NotFoundError, match="not found in run"):
            api.notebook("no-such-run", attempt_id)
        assert api.cells(api.create_run("nb").id) is not None  # a queued run: no attempts yet, no error
        with pytest.raises(errors.NotFoundError):
            api.cells("no-such-run")
