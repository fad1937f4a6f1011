"""Rich renderings shared by the commands: stage tables, run lists, problems, log lines."""

from __future__ import annotations

import datetime as dt

from rich.table import Table
from rich.text import Text

from kubeline.domain import errors, runs, states

STYLE = {
    "succeeded": "green", "failed": "red", "timed_out": "red", "cancelled": "yellow",
    "running": "cyan", "pending": "blue", "retrying": "magenta", "queued": "blue",
    "waiting": "dim", "skipped": "dim",
}
EXIT_CODES = {
    states.RunState.SUCCEEDED: 0,
    states.RunState.FAILED: 1,
    states.RunState.TIMED_OUT: 124,
    states.RunState.CANCELLED: 130,
}


def state_text(state: str) -> Text:
    return Text(state, style=STYLE.get(state, ""))


def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None:
        return ""
    seconds = ((end or runs.utcnow()) - start).total_seconds()
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}m"


def stage_table(run: runs.Run, stage_runs: list[runs.StageRun]) -> Table:
    table = Table(title=f"{run.pipeline} · run {run.id} · {run.state.value}", title_justify="left")
    for column in ("stage", "state", "attempts", "duration", "detail"):
        table.add_column(column)
    for stage in stage_runs:
        detail = stage.error
        if stage.state is states.StageState.RETRYING and stage.retry_at:
            detail = f"retry at {stage.retry_at:%H:%M:%S} · {stage.error}"
        table.add_row(stage.stage_id, state_text(stage.state.value), str(stage.attempts),
                      duration(stage.started_at, stage.finished_at), detail[:120])
    return table


def runs_table(items: list[runs.Run]) -> Table:
    table = Table()
    for column in ("run", "pipeline", "state", "trigger", "created", "duration", "error"):
        table.add_column(column)
    for run in items:
        table.add_row(run.id, run.pipeline, state_text(run.state.value), str(run.triggered_by),
                      f"{run.created_at:%Y-%m-%d %H:%M:%S}", duration(run.started_at, run.finished_at),
                      run.error[:80])
    return table


def problems_table(problems: list[errors.Problem], *, notices: bool = False) -> Table:
    """Problems in red; ``notices`` (settings read but not acted on) in yellow, titled as such."""
    title = f"{len(problems)} notice(s): read but not acted on" if notices else f"{len(problems)} problem(s)"
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in ("file", "field", "notice" if notices else "problem", "hint"):
        table.add_column(column, overflow="fold")
    for problem in problems:
        table.add_row(problem.file, problem.location,
                      Text(problem.message, style="yellow" if notices else "red"), problem.hint)
    return table
