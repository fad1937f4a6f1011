"""What the commands show: the columns of runs, stages, attempts and pipelines (for ``output``), problems."""

from __future__ import annotations

import datetime as dt
import json

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kubeline.api import schemas
from kubeline.cli import output
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


def _when(at: dt.datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S}" if at else ""


def _trigger(run: schemas.RunOut) -> str:
    return run.triggered_by.kind + (f":{run.triggered_by.detail}" if run.triggered_by.detail else "")


def _stage_detail(stage: schemas.StageOut) -> str:
    if stage.state is states.StageState.RETRYING and stage.retry_at:
        return f"retry at {stage.retry_at:%H:%M:%S} · {stage.error}"
    return stage.error


RUN_COLUMNS = (
    output.Column(header="RUN", value=lambda r: r.id, key=True),
    output.Column(header="PIPELINE", value=lambda r: r.pipeline),
    output.Column(header="STATE", value=lambda r: state_text(r.state.value)),
    output.Column(header="TRIGGER", value=_trigger),
    output.Column(header="CREATED", value=lambda r: _when(r.created_at)),
    output.Column(header="DURATION", value=lambda r: duration(r.started_at, r.finished_at)),
    output.Column(header="STARTED", value=lambda r: _when(r.started_at), wide=True),
    output.Column(header="FINISHED", value=lambda r: _when(r.finished_at), wide=True),
    output.Column(header="INPUTS", value=lambda r: json.dumps(r.inputs) if r.inputs else "", wide=True, flex=True),
    output.Column(header="PARENT", value=lambda r: r.parent_run_id or "", key=True, wide=True),
    output.Column(header="ERROR", value=lambda r: r.error, flex=True),
)
STAGE_COLUMNS = (
    output.Column(header="STAGE", value=lambda s: s.stage_id, key=True),
    output.Column(header="STATE", value=lambda s: state_text(s.state.value)),
    output.Column(header="ATTEMPTS", value=lambda s: str(s.attempts)),
    output.Column(header="DURATION", value=lambda s: duration(s.started_at, s.finished_at)),
    output.Column(header="STARTED", value=lambda s: _when(s.started_at), wide=True),
    output.Column(header="FINISHED", value=lambda s: _when(s.finished_at), wide=True),
    output.Column(header="OUTPUTS", value=lambda s: json.dumps(s.outputs) if s.outputs else "", wide=True, flex=True),
    output.Column(header="DETAIL", value=_stage_detail, flex=True),
)
PIPELINE_COLUMNS = (
    output.Column(header="PIPELINE", value=lambda p: p["name"], key=True),
    output.Column(header="STAGES", value=lambda p: str(len(p["stages"]))),
    output.Column(header="SCHEDULES", value=lambda p: p["schedule_text"]),
    output.Column(header="ENABLED", value=lambda p: "yes" if p["enabled"] else "no"),
    output.Column(header="LAST RUN", value=lambda p: (p["last_run"] or {}).get("id", ""), key=True),
    output.Column(header="STATE", value=lambda p: state_text((p["last_run"] or {}).get("state", ""))),
    output.Column(header="ENVIRONMENT", value=lambda p: (p.get("environment") or {}).get("state", "")),
    output.Column(header="SOURCE", value=lambda p: p["source"], wide=True),
    output.Column(header="DESCRIPTION", value=lambda p: p["description"], wide=True, flex=True),
)


def stage_table(run: schemas.RunOut, *, fmt: output.Format = output.Format.TABLE) -> Table:
    """A run's stages, titled with the run (its id whole)."""
    return output.table(run.stages or [], columns=STAGE_COLUMNS, fmt=fmt,
                        title=f"{run.pipeline} · run {run.id} · {run.state.value}")


def show_run(run: schemas.RunOut, *, fmt: output.Format, to: Console) -> None:
    """``kubeline status`` for people: the stage table, then outputs and the error."""
    output.print_table(stage_table(run, fmt=fmt), to=to)
    if fmt is output.Format.WIDE and run.attempts:
        output.print_table(output.table(run.attempts, columns=ATTEMPT_COLUMNS, fmt=fmt, title="attempts"), to=to)
    if run.outputs:
        to.print_json(json.dumps(run.outputs, default=str))
    if run.error:
        to.print(Text(run.error, style="red"))


ATTEMPT_COLUMNS = (
    output.Column(header="ATTEMPT", value=lambda a: a.id, key=True),
    output.Column(header="STAGE", value=lambda a: f"{a.stage_id}#{a.number}"),
    output.Column(header="EXECUTOR", value=lambda a: a.executor),
    output.Column(header="STATE", value=lambda a: state_text(a.state.value)),
    output.Column(header="EXIT", value=lambda a: "" if a.exit_code is None else str(a.exit_code)),
    output.Column(header="DURATION", value=lambda a: duration(a.started_at, a.finished_at)),
    output.Column(header="ERROR", value=lambda a: a.error, flex=True),
)


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
