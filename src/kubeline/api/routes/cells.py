"""``/api/v1/runs/{id}/cells``: per-cell status of a run's notebook stages.

Rebuilt from each attempt's stored log (``domain.cells`` owns the line format the notebook runner
writes), so it is the same for every executor and survives the attempt's process or pod.
"""

from __future__ import annotations

import asyncio

import fastapi

from kubeline.api import deps, schemas
from kubeline.domain import cells, components, runs, states

router = fastapi.APIRouter(prefix="/runs", tags=["runs"])


@router.get("/{run_id}/cells", response_model=schemas.RunCellsOut, responses=deps.problem_responses(404))
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
