"""``kubeline retention plan|apply``: runs, logs, artifacts, log tails, venvs and checkouts."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from kubeline import bootstrap
from kubeline.cleanup import service
from kubeline.cli import output
from kubeline.domain import errors

app = typer.Typer(no_args_is_help=True, help="Retention: what goes by age, count and size.")
out = Console(highlight=False, soft_wrap=True)


def _go(*, apply: bool, force: bool) -> service.Plan:
    async def run() -> service.Plan:
        async with bootstrap.open_kubeline() as kl:
            assert kl.cleanup is not None
            return await (kl.cleanup.apply(force=force) if apply else kl.cleanup.plan(force=force))
    try:
        return asyncio.run(run())
    except errors.KubelineError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


COLUMNS = [
    output.Column(header="KIND", value=lambda i: i.kind),
    output.Column(header="TARGET", value=lambda i: i.target, key=True),
    output.Column(header="PIPELINE", value=lambda i: i.pipeline),
    output.Column(header="SIZE", value=lambda i: "" if i.bytes is None else _size(i.bytes)),
    output.Column(header="REASON", value=lambda i: i.reason, flex=True),
    output.Column(header="BYTES", value=lambda i: "" if i.bytes is None else str(i.bytes), wide=True),
]


def _show(plan: service.Plan, *, applied: bool, fmt: output.Format) -> None:
    """JSON/YAML: the API's object (``GET /api/v1/retention/plan``); a table for people, with the
    count and the refusals under it."""
    if fmt in (output.Format.JSON, output.Format.YAML):
        output.write_data({"applied": applied, "items": [output.plain(i) for i in plan.items],
                           "refused": plan.refused}, fmt=fmt)
        return
    verb = "removed" if applied else "would remove"
    if plan.items:
        output.print_table(output.table(plan.items, columns=COLUMNS, fmt=fmt))
    out.print(f"{len(plan.items)} item(s) {verb}", markup=False)
    for note in plan.refused:
        out.print(f"[red]refused[/red] {note}")


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


@app.command()
def plan(force: Annotated[bool, typer.Option("--force", help="Include pipelines whose policy removes every run.")]
         = False, fmt: output.Option = output.Format.TABLE) -> None:
    """Dry run: list what would go and why; nothing is removed."""
    found = _go(apply=False, force=force)
    _show(found, applied=False, fmt=fmt)
    if found.refused:
        raise typer.Exit(1)


@app.command()
def apply(force: Annotated[bool, typer.Option("--force", help="Also when a policy removes every run of a "
                                                               "pipeline.")] = False,
          fmt: output.Option = output.Format.TABLE) -> None:
    """Remove what the plan lists (never a queued or running run's data)."""
    done = _go(apply=True, force=force)
    _show(done, applied=True, fmt=fmt)
    if done.refused:
        raise typer.Exit(1)
