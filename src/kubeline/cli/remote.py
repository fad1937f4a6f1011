"""The CLI commands through a server's API, used when ``KUBELINE_URL`` is set.

``kubeline run NAME`` then queues the run on the server, shows its state changes (or, with
``--follow``, its log lines) live over SSE, and exits with the run's outcome like the local run.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

from kubeline import client as client_
from kubeline.api import schemas
from kubeline.cli import output, render
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
        output.print_table(render.stage_table(final))
        if final.outputs:
            out.print_json(json.dumps(final.outputs, default=str))
        if final.error:
            err.print(f"[red]{final.state.value}:[/red] {final.error}")
        return render.EXIT_CODES.get(final.state, 1)


def runs(url: str, *, pipeline: str | None, state: list[states.RunState], limit: int) -> list[schemas.RunOut]:
    with client_.Client(url) as api:
        return api.runs(pipeline=pipeline, state=[s.value for s in state] or None, limit=limit).items


def status(url: str, *, run_id: str) -> schemas.RunOut:
    with client_.Client(url) as api:
        return api.run(run_id)


def logs(url: str, *, run_id: str, stage: str | None, follow: bool) -> None:
    with client_.Client(url) as api:
        if follow:
            for line in api.follow_logs(run_id, stage=stage):
                _print_line(line)
        else:  # the download is already in the shared line format
            sys.stdout.write(api.logs(run_id, stage=stage))
            sys.stdout.flush()


def cancel(url: str, *, run_id: str) -> None:
    with client_.Client(url) as api:
        item = api.cancel(run_id)
    out.print(f"run {run_id}: cancel requested ({item.state.value})")


def _print_line(line: schemas.LogLineOut) -> None:
    output.log_line(at=line.at, stage_id=line.stage_id, attempt=line.attempt, stream=line.stream, text=line.text)
