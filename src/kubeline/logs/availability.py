"""Whether a run's log can be served: one rule for the API and the CLI.

A log that is gone must say so (410 / a non-zero exit with the reason), never pass for an empty
success. Only attempts that started and ended count: a running one may not have stored a line
yet, and one whose start failed while planning may have written nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from kubeline.domain import errors, runs, states
from kubeline.logs import base


async def check(logs: base.LogBackend, run_id: str, *, attempts: Iterable[runs.Attempt],
                stage_id: str | None = None) -> base.Availability:
    """What the store says of the run's (or stage's) log; ``GoneError`` when every ended
    attempt's log is gone."""
    ran = [base.AttemptKey(stage_id=a.stage_id, attempt=a.number) for a in attempts
           if (stage_id is None or a.stage_id == stage_id) and a.started_at is not None
           and states.is_final(a.state)]
    found = await logs.availability(run_id, ran=ran)
    if ran and len(found.missing) == len(ran):
        what = f"stage {stage_id!r} of run {run_id}" if stage_id else f"run {run_id}"
        raise errors.GoneError(f"the log of {what} is gone: {found.gone_reason}")
    return found
