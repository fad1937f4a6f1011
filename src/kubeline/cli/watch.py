"""``kubeline runs --watch``: the runs listing kept current from the server's run stream (SSE).

On a terminal the table is redrawn in place as runs change (newest first, ``--limit`` rows).
Piped, it behaves like ``kubectl get -w``: the listing, then one more row per change (``-o json``:
one object per line; ``-o yaml``: one document per change), each flushed when it happens.
Nothing polls: the server pushes every change (``GET /api/v1/runs/stream``).
"""

from __future__ import annotations

import json
import sys

from rich.live import Live

from kubeline import client as client_
from kubeline.api import schemas
from kubeline.cli import output, render
from kubeline.domain import states


def watch(url: str, *, pipeline: str | None, state: list[states.RunState], limit: int, fmt: output.Format,
          timeout: float | None) -> None:
    shown: dict[str, schemas.RunOut] = {}
    console = output.console()
    live = Live(console=console, auto_refresh=False) if console.is_terminal and fmt in (
        output.Format.TABLE, output.Format.WIDE) else None

    def newest() -> list[schemas.RunOut]:
        return sorted(shown.values(), key=lambda r: (r.created_at, r.id), reverse=True)[:limit]

    with client_.Client(url) as api:
        stream = api.follow_runs(pipeline=pipeline, state=[s.value for s in state] or None, limit=limit,
                                 timeout=timeout)
        try:
            if live is not None:
                live.start()
            for item in stream:
                changed = item.items if isinstance(item, schemas.RunList) else [item]
                for run in changed:
                    shown[run.id] = run
                if live is not None:
                    drawn = output.table(newest(), columns=render.RUN_COLUMNS, fmt=fmt)
                    output.fit(drawn, width=console.width)  # short columns fold before the error is cut
                    live.update(drawn, refresh=True)
                else:
                    _print(changed, fmt=fmt, header=isinstance(item, schemas.RunList))
        except KeyboardInterrupt:
            pass
        finally:
            if live is not None:
                live.stop()


def _print(items: list[schemas.RunOut], *, fmt: output.Format, header: bool) -> None:
    if fmt is output.Format.JSON:
        for run in items:
            sys.stdout.write(json.dumps(run.model_dump(mode="json"), ensure_ascii=False) + "\n")
    elif fmt is output.Format.YAML:
        for run in items:
            sys.stdout.write("---\n")
            output.write_data(run.model_dump(mode="json"), fmt=fmt)
    else:
        shown = [c for c in render.RUN_COLUMNS if fmt is output.Format.WIDE or not c.wide]
        if header:
            sys.stdout.write("\t".join(c.header for c in shown) + "\n")
        for run in items:
            sys.stdout.write("\t".join(output.cell_text(c.value(run)) for c in shown) + "\n")
    sys.stdout.flush()
