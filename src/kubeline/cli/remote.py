"""The CLI commands through a server's API, used when ``KUBELINE_URL`` is set.

``kubeline run NAME`` then queues the run on the server, shows its state changes (or, with
``--follow``, its log lines) live over SSE, and exits with the run's outcome like the local run.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from kubeline import client as client_
from kubeline.api import schemas
from kubeline.cli import render
from kubeline.domain import states

out = Console()
err = Console(stderr=True)


def run(url: str, *, target: str, inputs: dict[str, Any], follow: bool) -> int:
    """Run ``target`` (a pipeline name known to the server) and wait; the exit code of its outcome."""
    with client_.Client(url) as api:
        created = api.create_run(target, inputs)
        err.print(f"run [bold]{created.id}[/bold] of {created.pipeline} queued on {url}")
        try:
            if follow:
                for line in api.follow_logs(created.id):
                    _print_line(line)
            else:
                for event in api.follow_events(created.id):
                    what = f"stage {event.entity_id}" if event.entity == "stage" else event.entity
                    reason = f" ({event.reason})" if event.reason else ""
                    err.print(f"{event.at:%H:%M:%S} {what} {event.to_state}{reason}", highlight=False, markup=False)
        except KeyboardInterrupt:
            api.cancel(created.id)
            err.print("cancel requested")
        final = api.wait(created.id)
        out.print(stage_table(final))
        if final.outputs:
            out.print_json(json.dumps(final.outputs, default=str))
        if final.error:
            err.print(f"[red]{final.state.value}:[/red] {final.error}")
        return render.EXIT_CODES.get(final.state, 1)


def runs(url: str, *, pipeline: str | None, state: list[states.RunState], limit: int) -> None:
    with client_.Client(url) as api:
        page = api.runs(pipeline=pipeline, state=[s.value for s in state] or None, limit=limit)
    table = Table()
    for column in ("run", "pipeline", "state", "trigger", "created", "duration", "error"):
        table.add_column(column)
    for item in page.items:
        trigger = item.triggered_by.kind + (f":{item.triggered_by.detail}" if item.triggered_by.detail else "")
        table.add_row(item.id, item.pipeline, render.state_text(item.state.value), trigger,
                      f"{item.created_at:%Y-%m-%d %H:%M:%S}", render.duration(item.started_at, item.finished_at),
                      item.error[:80])
    out.print(table)


def status(url: str, *, run_id: str) -> None:
    with client_.Client(url) as api:
        item = api.run(run_id)
    out.print(stage_table(item))
    if item.outputs:
        out.print_json(json.dumps(item.outputs, default=str))
    if item.error:
        out.print(f"[red]{item.error}[/red]")


def logs(url: str, *, run_id: str, stage: str | None, follow: bool) -> None:
    with client_.Client(url) as api:
        if follow:
            for line in api.follow_logs(run_id, stage=stage):
                _print_line(line)
        else:
            out.print(api.logs(run_id, stage=stage), end="", highlight=False, markup=False)


def cancel(url: str, *, run_id: str) -> None:
    with client_.Client(url) as api:
        item = api.cancel(run_id)
    out.print(f"run {run_id}: cancel requested ({item.state.value})")


def stage_table(run_: schemas.RunOut) -> Table:
    table = Table(title=f"{run_.pipeline} · run {run_.id} · {run_.state.value}", title_justify="left")
    for column in ("stage", "state", "attempts", "duration", "detail"):
        table.add_column(column)
    for stage in run_.stages or []:
        table.add_row(stage.stage_id, render.state_text(stage.state.value), str(stage.attempts),
                      render.duration(stage.started_at, stage.finished_at), stage.error[:120])
    return table


def _print_line(line: schemas.LogLineOut) -> None:
    style = {"stderr": "red", "system": "dim"}.get(line.stream, "")
    prefix = f"{line.at:%H:%M:%S.%f}"[:-3] + f" {line.stage_id}#{line.attempt} "
    out.print(prefix, style="dim", end="", highlight=False, markup=False)
    out.print(line.text, style=style, highlight=False, markup=False, soft_wrap=True)
