"""``kubeline git status|sync|keygen``: the repositories of ``KUBELINE_GIT_REPOS``.

These act on the database directly (as the other embedded-default commands do): a sync made here
is the commit every running server replica checks out within a few seconds.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console

from kubeline import bootstrap
from kubeline.cli import output
from kubeline.domain import errors, repos
from kubeline.gitsync import service

app = typer.Typer(no_args_is_help=True, help="Git repositories pipelines are synced from.")
out = Console(highlight=False, soft_wrap=True)


def _with_git(fn: Any) -> Any:
    async def run() -> Any:
        async with bootstrap.open_kubeline() as kl:
            if kl.git is None:
                raise errors.NotFoundError("no git repositories are configured: set KUBELINE_GIT_REPOS")
            return await fn(kl.git)
    try:
        return asyncio.run(run())
    except errors.KubelineError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


def _row(state: repos.SyncState, git: service.GitSync) -> dict[str, Any]:
    return {"name": state.name, "url": state.url, "branch": state.branch, "good_commit": state.good_commit,
            "seen_commit": state.seen_commit, "served_here": git.current(state.name), "status": state.status,
            "message": state.message, "problems": list(state.problems)}


def _show(state: repos.SyncState, git: service.GitSync, *, as_json: bool) -> None:
    row = _row(state, git)
    if as_json:
        out.print(json.dumps(row), markup=False)
        return
    colour = "green" if state.status == repos.OK else "yellow" if state.status == repos.NEVER else "red"
    out.print(f"[bold]{state.name}[/bold] {state.url} ({state.branch}): [{colour}]{state.status}[/{colour}] "
              f"- {state.message or 'not synced yet'}")
    for problem in state.problems:
        out.print(f"  - {problem}", markup=False)


COLUMNS = (
    output.Column(header="NAME", value=lambda r: r["name"], key=True),
    output.Column(header="BRANCH", value=lambda r: r["branch"]),
    output.Column(header="STATUS", value=lambda r: r["status"]),
    output.Column(header="SERVED HERE", value=lambda r: r["served_here"] or "", key=True),
    output.Column(header="GOOD COMMIT", value=lambda r: r["good_commit"] or "", key=True, wide=True),
    output.Column(header="SEEN COMMIT", value=lambda r: r["seen_commit"] or "", key=True, wide=True),
    output.Column(header="URL", value=lambda r: r["url"], wide=True),
    output.Column(header="MESSAGE", value=lambda r: "; ".join([r["message"], *r["problems"]]).strip("; "), flex=True),
)


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
           fmt: output.Option = output.Format.TABLE) -> None:
    """The commit each repository is served from and how the last sync went."""
    async def run(git: service.GitSync) -> None:
        found = await git.states()
        if as_json:
            for state in found:
                _show(state, git, as_json=True)
            return
        output.emit([_row(state, git) for state in found], columns=COLUMNS, fmt=fmt)
    _with_git(run)


@app.command()
def sync(
    name: Annotated[str, typer.Argument(help="Repository name.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Fetch, validate and serve the branch head now; exit 1 unless the status is ok."""
    async def run(git: service.GitSync) -> repos.SyncState:
        state = await git.sync(name)
        _show(state, git, as_json=as_json)
        return state
    if _with_git(run).status != repos.OK:
        raise typer.Exit(1)


@app.command()
def keygen(name: Annotated[str, typer.Argument(help="Repository name.")]) -> None:
    """Generate an SSH deploy key pair; prints the public key to add to the repository (read-only)."""
    async def run(git: service.GitSync) -> None:
        out.print(await git.generate_key(name), markup=False)
    _with_git(run)
