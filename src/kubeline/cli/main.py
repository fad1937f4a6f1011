"""``kubeline``: run, validate and inspect pipelines on the embedded default (no server needed).

Exit codes of ``kubeline run``: 0 succeeded, 1 failed (or invalid pipeline/inputs), 124 timed
out, 130 cancelled — so shell scripts and CI can branch on the outcome.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import signal
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live

from kubeline import bootstrap
from kubeline import settings as settings_
from kubeline.api import environments as env_schemas
from kubeline.api import schemas
from kubeline.cli import browse, output, remote, render, watch
from kubeline.cli import environments as environments_cli
from kubeline.cli import git as git_cli
from kubeline.cli import k8s as k8s_cli
from kubeline.cli import login as login_cli
from kubeline.cli import retention as retention_cli
from kubeline.cli import server as server_cli
from kubeline.domain import errors, runs, specs, states
from kubeline.logs import availability
from kubeline.pipelines import loader

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.splitlines()[0])
secrets_app = typer.Typer(no_args_is_help=True, help="Encrypted secrets (values are never shown).")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
app.add_typer(secrets_app, name="secrets")
app.add_typer(db_app, name="db")
app.add_typer(git_cli.app, name="git")
app.add_typer(retention_cli.app, name="retention")
app.command("server")(server_cli.server)
app.command("environment")(environments_cli.environment)
app.command("login")(login_cli.login)
app.command("logout")(login_cli.logout)
k8s_cli.register(app)  # kubeline k8s ..., kubeline operator
out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _run_async(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except errors.SpecError as exc:
        err.print(render.problems_table(exc.problems))
        raise typer.Exit(1) from None
    except errors.KubelineError as exc:
        raise _fail(str(exc)) from None


def _server_url() -> str | None:
    """``KUBELINE_URL``: the run/runs/status/logs/cancel commands then go through that server."""
    return settings_.Settings().url


def _remote(call: Any) -> Any:
    import httpx

    try:
        return call()
    except errors.SpecError as exc:
        err.print(render.problems_table(exc.problems))
        raise typer.Exit(1) from None
    except errors.KubelineError as exc:
        raise _fail(str(exc)) from None
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach the server at KUBELINE_URL: {exc}") from None


def _parse_inputs(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; a value that parses as JSON object/array is taken as such."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _fail(f"--input {pair!r} is not KEY=VALUE")
        if value[:1] in "[{":
            try:
                result[key] = json.loads(value)
                continue
            except json.JSONDecodeError:
                pass
        result[key] = value
    return result


async def _resolve(app_: bootstrap.Kubeline, target: str) -> runs.Pipeline:
    """A folder path, or the name of a pipeline in the pipelines dir or the store."""
    path = pathlib.Path(target)
    if path.is_dir():
        return loader.load_folder(path)
    pipelines_dir = app_.settings.pipelines_dir
    if pipelines_dir is not None and (pipelines_dir / target).is_dir():
        return loader.load_folder(pipelines_dir / target)
    try:
        known = await app_.store.get_pipeline(target)
    except errors.NotFoundError:
        names = [p.name for p in await app_.store.list_pipelines()]
        from kubeline.domain import dag

        hint = dag.suggest(target, names)
        raise errors.NotFoundError(
            f"no pipeline folder or known pipeline named {target!r}" + (f" ({hint})" if hint else "")
            + "; give a folder path, or set KUBELINE_PIPELINES_DIR") from None
    if known.path and pathlib.Path(known.path).is_dir():
        return loader.load_folder(pathlib.Path(known.path), name=known.name)
    return known


@app.command()
def run(
    target: Annotated[str, typer.Argument(help="Pipeline folder or name.")],
    input_: Annotated[list[str], typer.Option("--input", "-i", help="KEY=VALUE run input.")] = [],  # noqa: B006
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream log lines while it runs.")] = False,
    executor: Annotated[str | None, typer.Option(help="Override the executor.")] = None,
) -> None:
    """Run a pipeline and wait for it, showing its stages live; exits with the run's outcome."""
    inputs = _parse_inputs(input_)
    if url := _server_url():
        raise typer.Exit(_remote(lambda: remote.run(url, target=target, inputs=inputs, follow=follow)))
    final = _run_async(_run(target, inputs=inputs, follow=follow, executor=executor))
    raise typer.Exit(render.EXIT_CODES.get(final.state, 1))


async def _run(target: str, *, inputs: dict[str, Any], follow: bool, executor: str | None) -> runs.Run:
    overrides: dict[str, Any] = {"executor": executor} if executor else {}
    async with bootstrap.open_kubeline(settings_.Settings(**overrides)) as kl:
        if kl.new_key_file:
            err.print(f"[yellow]generated a new secret key at {kl.new_key_file}; back it up[/yellow]")
        pipeline = await _resolve(kl, target)
        await kl.store.upsert_pipeline(pipeline)
        run_ = await kl.engine.submit(pipeline, inputs=inputs,
                                      triggered_by=runs.TriggeredBy(kind=runs.TriggerKind.MANUAL, detail="cli"))
        err.print(f"run [bold]{run_.id}[/bold] of {pipeline.name} queued")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(kl.engine.cancel(run_.id)))
        task = asyncio.create_task(kl.engine.execute(run_.id))
        follower = asyncio.create_task(_print_logs(kl, run_.id)) if follow else None
        if out.is_terminal and not follow:
            with Live(console=out, refresh_per_second=8, transient=False) as live:
                while not task.done():
                    live.update(render.stage_table(await _run_out(kl, run_.id)))
                    await asyncio.wait([task], timeout=0.25)
                live.update(render.stage_table(await _run_out(kl, run_.id)))
        final = await task
        if follower is not None:
            await follower
        if not out.is_terminal or follow:
            output.print_table(render.stage_table(await _run_out(kl, final.id)))
        if final.outputs:
            out.print_json(json.dumps(final.outputs, default=str))
        if final.error:
            err.print(f"[red]{final.state.value}:[/red] {final.error}")
        return final


async def _run_out(kl: bootstrap.Kubeline, run_id: str) -> schemas.RunOut:
    """A run as the API shows one (stages and attempts), so local and remote output are alike."""
    return schemas.RunOut.of(await kl.store.get_run(run_id), stages=await kl.store.list_stage_runs(run_id),
                             attempts=await kl.store.list_attempts(run_id))


async def _print_logs(kl: bootstrap.Kubeline, run_id: str, *, stage: str | None = None) -> None:
    async def finished() -> bool:
        return states.is_final((await kl.store.get_run(run_id)).state)

    async for batch in kl.logs.follow(run_id, stage_id=stage, until=finished):
        for line in batch:
            _print_line(line)


def _print_line(line: Any) -> None:
    output.log_line(at=line.at, stage_id=line.stage_id, attempt=line.attempt, stream=line.stream, text=line.text)


@app.command()
def validate(
    paths: Annotated[list[pathlib.Path], typer.Argument(help="Pipeline folders or folders of pipelines.")],
) -> None:
    """Check pipelines without running anything; every problem with file, field and hint. Exit 1 if any."""
    problems: list[errors.Problem] = []
    notices: list[errors.Problem] = []
    count = 0
    for path in paths:
        if not path.exists():
            problems.append(errors.Problem(file=str(path), location="", message="does not exist"))
            continue
        try:
            found = loader.discover(path)
        except errors.KubelineError as exc:
            problems.append(errors.Problem(file=str(path), location="", message=str(exc)))
            continue
        count += len(found.pipelines)
        problems.extend(found.problems)
        notices.extend(found.notices)
        if not found.pipelines and not found.problems:
            problems.append(errors.Problem(file=str(path), location="", message="no pipeline found",
                                           hint="a pipeline folder has main.py, main.ipynb or pipeline.yaml"))
    if notices:
        out.print(render.problems_table(notices, notices=True))
    if problems:
        out.print(render.problems_table(problems))
        raise typer.Exit(1)
    out.print(f"[green]{count} pipeline(s) valid[/green]")


@app.command()
def pipelines(
    directory: Annotated[pathlib.Path | None, typer.Option("--dir", help="Folder of pipelines.")] = None,
    fmt: output.Option = output.Format.TABLE,
) -> None:
    """List pipelines (from the pipelines folder and those run before) with their last run."""
    _run_async(_pipelines(directory, fmt=fmt))


async def _pipelines(directory: pathlib.Path | None, *, fmt: output.Format) -> None:
    async with bootstrap.open_kubeline() as kl:
        folder = directory or kl.settings.pipelines_dir
        found = loader.discover(folder) if folder else loader.Discovery([], [])
        for pipeline in found.pipelines:
            await kl.store.upsert_pipeline(pipeline)
        rows: list[dict[str, Any]] = []
        failures: list[str] = []
        for pipeline in await kl.store.list_pipelines():
            last = await kl.store.list_runs(pipeline=pipeline.name, limit=1)
            schedules = ", ".join(s.cron or (f"every {s.interval:g}s" if s.interval else str(s.at))
                                  for s in pipeline.spec.schedules)
            environment = (env_schemas.EnvironmentSummary.of(kl.environments.state(pipeline))
                           if kl.environments else None)
            if environment is not None and environment.state == "failed":
                failures.append(f"{pipeline.name}: environment failed: {environment.reason}")
            rows.append({**schemas.PipelineOut.of(pipeline, environment=environment).model_dump(mode="json"),
                         "schedule_text": schedules,
                         "last_run": {"id": last[0].id, "state": last[0].state.value} if last else None})
        output.emit(rows, columns=render.PIPELINE_COLUMNS, fmt=fmt)
        if fmt in (output.Format.TABLE, output.Format.WIDE):
            for failure in failures:
                err.print(failure, markup=False, highlight=False, soft_wrap=True)
        if found.problems:
            err.print(render.problems_table(found.problems))


@app.command("runs")
def runs_(  # noqa: PLR0917 - Typer options
    pipeline: Annotated[str | None, typer.Option(help="Only this pipeline.")] = None,
    state: Annotated[list[states.RunState], typer.Option(help="Only these states.")] = [],  # noqa: B006
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    fmt: output.Option = output.Format.TABLE,
    watch_: Annotated[bool, typer.Option("--watch", "-w", help="Keep the listing current as runs change "
                                                               "(pushed by the server: needs KUBELINE_URL).")] = False,
    timeout: Annotated[float | None, typer.Option(min=1, help="With --watch: stop after this many seconds "
                                                              "(default: until Ctrl-C).")] = None,
) -> None:
    """Recent runs, newest first."""
    url = _server_url()
    if watch_:
        if url is None:
            raise _fail("--watch follows a server's run stream: set KUBELINE_URL to the server that runs them "
                        "(e.g. KUBELINE_URL=http://127.0.0.1:8080, the address of `kubeline server`)")
        _remote(lambda: watch.watch(url, pipeline=pipeline, state=state, limit=limit, fmt=fmt, timeout=timeout))
        return
    if url is not None:
        items = _remote(lambda: remote.runs(url, pipeline=pipeline, state=state, limit=limit))
        output.emit(items, columns=render.RUN_COLUMNS, fmt=fmt)
        return

    async def _list() -> list[schemas.RunOut]:
        async with bootstrap.open_kubeline() as kl:
            found = await kl.store.list_runs(pipeline=pipeline, states_in=state or None, limit=limit)
            return [schemas.RunOut.of(r) for r in found]

    output.emit(_run_async(_list()), columns=render.RUN_COLUMNS, fmt=fmt)


@app.command()
def status(run_id: Annotated[str, typer.Argument(help="Run id.")], fmt: output.Option = output.Format.TABLE) -> None:
    """One run: its stages, attempts (-o wide) and outputs."""
    if url := _server_url():
        found = _remote(lambda: remote.status(url, run_id=run_id))
    else:
        async def _status() -> schemas.RunOut:
            async with bootstrap.open_kubeline() as kl:
                return await _run_out(kl, run_id)

        found = _run_async(_status())
    output.emit_one(found, fmt=fmt, show=lambda to, f: render.show_run(found, fmt=f, to=to))


@app.command("open")
def open_(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.")],
    browser: Annotated[bool, typer.Option(help="Open it in a browser when one is available.")] = True,
) -> None:
    """Print the web UI's page of a run (and open it in a browser when one is available)."""
    settings = settings_.Settings()
    if url := settings.url:
        _remote(lambda: remote.status(url, run_id=run_id))  # 404: say so rather than open a dead page
    else:
        async def _check() -> None:
            async with bootstrap.open_kubeline(settings) as kl:
                await kl.store.get_run(run_id)

        _run_async(_check())
    page = browse.run_page(settings, run_id=run_id)
    sys.stdout.write(page + "\n")
    sys.stdout.flush()
    if browser and browse.available():
        browse.open_page(page)


@app.command()
def logs(
    run_id: Annotated[str, typer.Argument(help="Run id.")],
    stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the run ends.")] = False,
) -> None:
    """Print a run's logs (all stages in time order, or one stage)."""
    if url := _server_url():
        _remote(lambda: remote.logs(url, run_id=run_id, stage=stage, follow=follow))
        return

    async def _logs() -> None:
        async with bootstrap.open_kubeline() as kl:
            run_ = await kl.store.get_run(run_id)
            if stage is not None and stage not in {s.id for s in run_.spec.stages}:
                raise errors.NotFoundError(f"run {run_id} has no stage {stage!r}")
            found = await availability.check(kl.logs, run_id, attempts=await kl.store.list_attempts(run_id),
                                             stage_id=stage)  # GoneError: exit 1
            if found.delayed:
                err.print(f"[yellow]log delayed:[/yellow] {found.delayed}", highlight=False)
            if follow:
                await _print_logs(kl, run_id, stage=stage)
            else:
                async for line in kl.logs.iter_lines(run_id, stage_id=stage):
                    _print_line(line)

    _run_async(_logs())


@app.command()
def cancel(run_id: Annotated[str, typer.Argument(help="Run id.")]) -> None:
    """Cancel a queued or running run (the process driving it stops its attempts)."""
    if url := _server_url():
        _remote(lambda: remote.cancel(url, run_id=run_id))
        return

    async def _cancel() -> None:
        async with bootstrap.open_kubeline() as kl:
            run_ = await kl.engine.cancel(run_id)
            out.print(f"run {run_id}: cancel requested ({run_.state.value})")

    _run_async(_cancel())


@secrets_app.command("set")
def secrets_set(
    name: Annotated[str, typer.Argument(help="Secret name (an env var name).")],
    value: Annotated[str | None, typer.Option(help="The value; read from stdin when omitted.")] = None,
) -> None:
    """Store (or replace) an encrypted secret."""
    if value is None:
        interactive = sys.stdin.isatty()
        value = typer.prompt(f"value of {name}", hide_input=True) if interactive else sys.stdin.read().rstrip("\n")

    async def _set() -> None:
        async with bootstrap.open_kubeline() as kl:
            if kl.new_key_file:
                err.print(f"[yellow]generated a new secret key at {kl.new_key_file}; back it up[/yellow]")
            await kl.secrets.set(name, value or "")
            out.print(f"secret {name} stored")

    _run_async(_set())


@secrets_app.command("list")
def secrets_list(fmt: output.Option = output.Format.TABLE) -> None:
    """Names of stored secrets."""
    async def _list() -> list[dict[str, str]]:
        async with bootstrap.open_kubeline() as kl:
            return [{"name": name} for name in await kl.secrets.list()]

    output.emit(_run_async(_list()), columns=(output.Column(header="NAME", value=lambda s: s["name"], key=True),),
                fmt=fmt)


@secrets_app.command("delete")
def secrets_delete(name: Annotated[str, typer.Argument()]) -> None:
    """Delete a stored secret."""
    async def _delete() -> None:
        async with bootstrap.open_kubeline() as kl:
            await kl.secrets.delete(name)
            out.print(f"secret {name} deleted")

    _run_async(_delete())


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (also done automatically at start)."""
    from kubeline.storage import sql

    settings = settings_.Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    asyncio.run(sql.upgrade(settings.database))
    out.print("database is up to date")


@app.command()
def schema() -> None:
    """Print the JSON Schema of pipeline.yaml / pipeline.json."""
    out.print_json(json.dumps(specs.json_schema()))
