"""``kubeline retention plan|apply``: runs, logs, artifacts, log tails, venvs and checkouts."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console

from kubeline import bootstrap
from kubeline.cleanup import service
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


def _show(plan: service.Plan, *, verb: str) -> None:
    for item in plan.items:
        where = f"{item.pipeline}: " if item.pipeline else ""
        out.print(f"{verb} {item.kind} {item.target} ({where}{item.reason})", markup=False)
    out.print(f"{len(plan.items)} item(s) {verb}", markup=False)
    for note in plan.refused:
        out.print(f"[red]refused[/red] {note}")


@app.command()
def plan(force: Annotated[bool, typer.Option("--force", help="Include pipelines whose policy removes every run.")]
         = False) -> None:
    """Dry run: list what would go and why; nothing is removed."""
    found = _go(apply=False, force=force)
    _show(found, verb="would remove")
    if found.refused:
        raise typer.Exit(1)


@app.command()
def apply(force: Annotated[bool, typer.Option("--force", help="Also when a policy removes every run of a "
                                                               "pipeline.")] = False) -> None:
    """Remove what the plan lists (never a queued or running run's data)."""
    done = _go(apply=True, force=force)
    _show(done, verb="removed")
    if done.refused:
        raise typer.Exit(1)
