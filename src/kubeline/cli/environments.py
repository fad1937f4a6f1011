"""``kubeline environment NAME``: a pipeline's virtualenvs, their state and packages (the
dependency view); ``--build`` builds them now. Through the server when ``KUBELINE_URL`` is set."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from kubeline import bootstrap
from kubeline import settings as settings_
from kubeline.api import environments as env_schemas
from kubeline.api import services
from kubeline.cli import output
from kubeline.domain import errors
from kubeline.pipelines import loader

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
STYLES = {"ready": "green", "building": "yellow", "pending": "yellow", "failed": "red", "missing": "dim",
          "none": "dim"}


def state_text(state: str, reason: str | None) -> str:
    """``ready`` / ``building`` / ``failed: <reason>`` as the CLI prints it (plain text)."""
    return f"{state}: {reason}" if state == "failed" and reason else state


def environment(
    name: Annotated[str, typer.Argument(help="Pipeline name (or a pipeline folder, locally).")],
    build: Annotated[bool, typer.Option("--build", help="Build the venvs now (locally), then show them.")] = False,
    fmt: output.Option = output.Format.TABLE,
) -> None:
    """A pipeline's environment: ready / building / failed: <reason>, and every venv's packages and versions.

    Exit 1 when the environment failed."""
    url = settings_.Settings().url
    try:
        if url:
            if build:
                raise errors.InvalidInputError("--build works on this machine only; the server pre-heats by itself "
                                               "(unset KUBELINE_URL to build here)")
            from kubeline import client

            with client.Client(url) as api:
                found = api.pipeline_environment(name)
        else:
            found = asyncio.run(_local(name, build=build))
    except errors.KubelineError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if fmt in (output.Format.JSON, output.Format.YAML):
        output.write_data(found.model_dump(mode="json"), fmt=fmt)
    else:
        show(found)
    if found.state == "failed":
        raise typer.Exit(1)


async def _local(name: str, *, build: bool) -> env_schemas.EnvironmentOut:
    async with bootstrap.open_kubeline() as kl:
        path = pathlib.Path(name)
        if path.is_dir():
            pipeline = loader.load_folder(path.resolve())
        else:
            pipeline = await services.current_pipeline(kl, name)
        if build:
            if kl.environments is None:
                raise errors.InvalidInputError("no local executor is configured here: its executor builds the venvs")
            await kl.environments.build(pipeline)
        return await services.environment_of(kl, pipeline)


def show(found: env_schemas.EnvironmentOut) -> None:
    style = STYLES.get(found.state, "")
    out.print(f"environment: [{style}]{state_text(found.state, found.reason)}[/{style}]" if style
              else f"environment: {found.state}")
    for venv in found.venvs:
        python = f"Python {venv.python}" if venv.python else f"python_version {venv.python_version}"
        source = venv.requirements or "no requirements"
        extra = f" + {', '.join(venv.extra_packages)}" if venv.extra_packages else ""
        state = state_text(venv.state, venv.reason) if len(found.venvs) > 1 else venv.state
        out.print(f"\nstages {', '.join(venv.stages)}: {python}, {source}{extra}: {state}", markup=False)
        if venv.packages:
            table = Table("package", "version")
            for package in venv.packages:
                table.add_row(package.name, package.version)
            out.print(table)
