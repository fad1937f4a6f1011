"""``/api/v1/runs/{id}/cells``: per-cell status of a run's notebook stages; and the executed notebook.

The status is rebuilt from each attempt's stored log (``domain.cells`` owns the line format the
notebook runner writes), so it is the same for every executor and survives the attempt's process
or pod. The executed notebook (outputs included) is the file the runner writes into the
attempt's artifacts folder as it goes (``components.notebook``), so it is there even for a cell
that failed or an attempt that was killed; executors that keep no artifacts folder on this
server (Kubernetes) have none to show, and the answer says so.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from typing import Any

import fastapi

from kubeline.api import access, deps, schemas
from kubeline.auth import roles
from kubeline.domain import cells, components, errors, runs, states

router = fastapi.APIRouter(prefix="/runs", tags=["runs"])


@router.get("/{run_id}/cells", response_model=schemas.RunCellsOut, responses=deps.problem_responses(404),
            dependencies=[access.requires(roles.Role.viewer, pipeline=access.run_path())])
async def get_run_cells(run_id: str, kl: deps.KL) -> schemas.RunCellsOut:
    """Every code cell of every notebook stage attempt: state, tries, duration, last error.

    Cells are indexed as ``cells`` in pipeline.json: the *i*-th code cell, markdown not counted."""
    run = await kl.store.get_run(run_id)
    notebooks = {s.id for s in run.spec.stages if components.ALIASES.get(s.type, s.type) == "notebook"}
    attempts = [a for a in await kl.store.list_attempts(run_id) if a.stage_id in notebooks]
    items = []
    for attempt in sorted(attempts, key=lambda a: (a.stage_id, a.number)):
        texts = [line.text async for line in kl.logs.iter_lines(attempt.run_id, stage_id=attempt.stage_id,
                                                                attempt=attempt.number) if line.stream == "stdout"]
        found = await asyncio.to_thread(_cells_of, texts, attempt)
        items.append(schemas.AttemptCellsOut(
            stage_id=attempt.stage_id, attempt=attempt.number, attempt_state=attempt.state,
            cells=[schemas.CellOut(index=c.index, state=c.state, tries=c.tries, duration=c.duration,
                                   error=c.error) for c in found]))
    return schemas.RunCellsOut(items=items)


def _cells_of(texts: list[str], attempt: runs.Attempt) -> list[cells.CellStatus]:
    return cells.parse(texts, finished=attempt.state in states.FINAL_ATTEMPT)


MAX_NOTEBOOK_BYTES = 32 * 1024 * 1024


@router.get("/{run_id}/attempts/{attempt_id}/notebook", response_model=schemas.NotebookOut,
            responses=deps.problem_responses(404, 413),
            dependencies=[access.requires(roles.Role.viewer, pipeline=access.run_path())])
async def get_executed_notebook(run_id: str, attempt_id: str, kl: deps.KL) -> schemas.NotebookOut:
    """The executed notebook of a notebook stage's attempt (nbformat 4 JSON with its outputs)."""
    attempt = await kl.store.get_attempt(attempt_id)
    if attempt.run_id != run_id:
        raise errors.NotFoundError(f"attempt {attempt_id!r} not found in run {run_id!r}")
    run = await kl.store.get_run(run_id)
    stage = next((s for s in run.spec.stages if s.id == attempt.stage_id), None)
    if stage is None or components.ALIASES.get(stage.type, stage.type) != "notebook":
        raise errors.NotFoundError(f"stage {attempt.stage_id!r} of run {run_id} is not a notebook stage")
    folder = attempt.handle.get("artifacts_dir")
    if not folder:
        raise errors.NotFoundError(
            f"the {attempt.executor} executor keeps no executed notebook on this server for attempt "
            f"#{attempt.number} of {attempt.stage_id} (its per-cell status is at /runs/{run_id}/cells)")
    name = pathlib.PurePath(stage.file or "main.ipynb").name
    path = await asyncio.to_thread(_find_notebook, pathlib.Path(folder), name)
    if path is None:
        raise errors.NotFoundError(f"attempt #{attempt.number} of {attempt.stage_id} left no executed notebook "
                                   "(it ended before the notebook started, or retention removed its artifacts)")
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise fastapi.HTTPException(413, f"the executed notebook is {size} bytes, over {MAX_NOTEBOOK_BYTES}; "
                                         f"read it in the attempt's artifacts folder {folder}")
    notebook = await asyncio.to_thread(_read, path)
    return schemas.NotebookOut(stage_id=attempt.stage_id, attempt=attempt.number, name=path.name, notebook=notebook)


def _find_notebook(folder: pathlib.Path, name: str) -> pathlib.Path | None:
    stem, suffix = name.rsplit(".", 1) if "." in name else (name, "ipynb")
    for candidate in (folder / name, folder / f"{stem}.output.{suffix}"):
        if candidate.is_file():
            return candidate
    return None


def _read(path: pathlib.Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise errors.NotFoundError(f"the executed notebook {path.name} cannot be read: {exc}") from None
    if not isinstance(found, dict):
        raise errors.NotFoundError(f"the executed notebook {path.name} is not a notebook (not a JSON object)")
    return found
