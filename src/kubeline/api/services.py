"""What the routes do, as plain async functions on a ``Kubeline``: no HTTP in here.

Routes parse and map; these functions hold the behaviour (reload from the pipelines folder,
retry from the failed stage, ad-hoc script runs), so the CLI or a test can call them directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import tempfile
import time
from typing import Any

import pydantic

from kubeline import bootstrap
from kubeline.api import environments as env_schemas
from kubeline.domain import errors, runs, specs, states
from kubeline.logs import availability, lines
from kubeline.logs import base as log_base
from kubeline.pipelines import loader
from kubeline.pipelines import problems as problems_
from kubeline.storage import wakeups

SCRIPT_PIPELINE = "adhoc-script"


# pipelines ------------------------------------------------------------------------------------
async def reload_pipelines(kl: bootstrap.Kubeline) -> loader.Discovery:
    """Load every folder of the pipelines dir into the store (the server does this at start)."""
    folder = kl.settings.pipelines_dir
    if folder is None:
        return loader.Discovery([], [])
    if not folder.is_dir():
        raise errors.NotFoundError(f"the pipelines dir {folder} does not exist; create it or fix "
                                   "KUBELINE_PIPELINES_DIR / --pipelines")
    found = await asyncio.to_thread(loader.discover, folder)
    for pipeline in found.pipelines:
        await kl.store.upsert_pipeline(pipeline)
    if kl.environments is not None:
        kl.environments.preheat(found.pipelines)  # in the background: the first run finds its venv built
    return found


async def current_pipeline(kl: bootstrap.Kubeline, name: str, *, stored: runs.Pipeline | None = None) -> runs.Pipeline:
    """The stored pipeline (``stored`` when the caller read it already), reloaded from its folder
    when that still exists (edits take effect)."""
    pipeline = stored if stored is not None and stored.name == name else await kl.store.get_pipeline(name)
    if pipeline.source == "folder" and pipeline.path:
        fresh = await _folder_pipeline(pathlib.Path(pipeline.path), name=name)
        if fresh is None:
            return pipeline
        if fresh.spec_hash != pipeline.spec_hash:
            await kl.store.upsert_pipeline(fresh)
        return fresh
    return pipeline


FOLDER_RECHECK_SECONDS = 1.0
_FOLDER_FILES = (*loader.SPEC_FILES, *loader.REQUIREMENT_FILES, *loader.MAIN_FILES.values())
_folders: dict[tuple[str, str], tuple[float, tuple[tuple[int, int, int], ...], runs.Pipeline | None]] = {}


async def _folder_pipeline(folder: pathlib.Path, *, name: str) -> runs.Pipeline | None:
    """The folder's pipeline as ``_reload`` gives it, loaded again only when the folder changed.

    Every run created through the API reloaded its folder (a thread hop, the spec file parsed and
    validated, its hash computed: a good part of a request's CPU). The load is kept while the folder
    and its spec, requirements and main files stat the same (checked on every call: a few ``stat``
    calls, no thread), and at most ``FOLDER_RECHECK_SECONDS`` for what those stats cannot see (a
    file a stage names, in a subfolder, removed or added).
    """
    key = (str(folder), name)
    signature = _folder_signature(folder)
    kept = _folders.get(key)
    now = time.monotonic()
    if kept is not None and kept[1] == signature and now - kept[0] < FOLDER_RECHECK_SECONDS:
        return kept[2]
    fresh = await asyncio.to_thread(_reload, folder, name=name)
    if len(_folders) > 1_000:
        _folders.clear()
    _folders[key] = (now, signature, fresh)
    return fresh


def _folder_signature(folder: pathlib.Path) -> tuple[tuple[int, int, int], ...]:
    found = []
    for path in (folder, *(folder / f for f in _FOLDER_FILES)):
        try:
            st = path.stat()
        except OSError:
            found.append((0, 0, 0))
        else:
            found.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(found)


def _reload(folder: pathlib.Path, *, name: str) -> runs.Pipeline | None:
    """The folder's pipeline, or None when the folder is gone (one thread hop for both)."""
    return loader.load_folder(folder, name=name) if folder.is_dir() else None


async def environment_of(kl: bootstrap.Kubeline, pipeline: runs.Pipeline) -> env_schemas.EnvironmentOut:
    """A pipeline's venvs with their state and, when built, their packages (the dependency view)."""
    if kl.environments is None:
        return env_schemas.EnvironmentOut(state="none", reason=None, venvs=[])
    found = await asyncio.to_thread(kl.environments.state, pipeline)
    venvs = []
    for venv in found.venvs:
        python, packages = await kl.environments.packages(venv)
        need = venv.need
        venvs.append(env_schemas.VenvOut(
            stages=list(need.stages), python_version=need.python_version,
            requirements=need.requirements.name if need.requirements else None,
            extra_packages=list(need.extra_packages), state=venv.state, reason=venv.reason, python=python,
            packages=[env_schemas.PackageOut(name=p.name, version=p.version) for p in packages]))
    return env_schemas.EnvironmentOut(state=found.state, reason=found.reason, venvs=venvs)


def validate_spec(*, spec: dict[str, Any] | None, files: dict[str, str] | None,
                  name: str | None) -> runs.Pipeline:
    """A posted spec mapping (checked without a folder) or a posted folder; ``SpecError`` lists
    every problem."""
    if (spec is None) == (files is None):
        raise errors.InvalidInputError("send exactly one of 'spec' (a pipeline.yaml mapping) or 'files'")
    if files is not None:
        return _validate_files(files, name=name)
    assert spec is not None
    label = "pipeline.yaml"
    try:
        parsed = specs.PipelineSpec.model_validate(spec)
    except pydantic.ValidationError as exc:
        found = problems_.from_validation_error(exc, file=label)
        found.extend(_stage_problems_despite(exc, raw=spec, file=label))
        raise errors.SpecError(found) from None
    parsed, found = loader.materialise(parsed, folder=None, file=label)
    if found:
        raise errors.SpecError(found)
    pipeline_name = name or parsed.name or "pipeline"
    parsed = parsed.model_copy(update={"name": pipeline_name})
    return runs.Pipeline(name=pipeline_name, spec=parsed, source="api", spec_hash=loader.spec_hash(parsed))


def _stage_problems_despite(exc: pydantic.ValidationError, *, raw: dict[str, Any], file: str) -> list[errors.Problem]:
    """The stage graph's problems too, when only other top-level fields are invalid (all at once)."""
    bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    if "stages" in bad or any(not e["loc"] for e in exc.errors()):
        return []
    try:
        rest = specs.PipelineSpec.model_validate({k: v for k, v in raw.items() if k not in bad})
    except pydantic.ValidationError:
        return []
    return loader.materialise(rest, folder=None, file=file)[1]


def _validate_files(files: dict[str, str], *, name: str | None) -> runs.Pipeline:
    for file_name in files:
        parts = pathlib.PurePosixPath(file_name).parts
        if not parts or file_name.startswith("/") or ".." in parts or "\\" in file_name or "\0" in file_name:
            raise errors.InvalidInputError(f"file name {file_name!r} must be a relative path inside the folder")
    with tempfile.TemporaryDirectory(prefix="kubeline-validate-") as tmp:
        folder = pathlib.Path(tmp) / (name or "pipeline")
        folder.mkdir()
        for file_name, text in files.items():
            path = folder / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        pipeline = loader.load_folder(folder, name=name)
    return dataclasses.replace(pipeline, path=None, source="api")


# runs -----------------------------------------------------------------------------------------
async def create_run(kl: bootstrap.Kubeline, *, pipeline_name: str, inputs: dict[str, Any],
                     schedule_id: str | None, trigger: runs.TriggeredBy,
                     stored: runs.Pipeline | None = None, audit: dict[str, Any] | None = None) -> runs.Run:
    """Queue a run; ``stored``: the pipeline as already read for this request (not read again);
    ``audit``: the request's audit row (``AuthService.audit_row``), written with the run."""
    pipeline = await current_pipeline(kl, pipeline_name, stored=stored)
    return await kl.engine.submit(pipeline, inputs=inputs, triggered_by=trigger, schedule_id=schedule_id, audit=audit)


async def retry_run(kl: bootstrap.Kubeline, run_id: str) -> runs.Run:
    """A new run of the same spec and inputs: stages that succeeded are copied (state, outputs,
    times), the rest start again. Only for runs that ended without success."""
    old = await kl.store.get_run(run_id)
    if not states.is_final(old.state) or old.state is states.RunState.SUCCEEDED:
        raise errors.ConflictError(f"run {run_id} is {old.state.value}; only failed, cancelled or timed-out "
                                   "runs can be retried (start a new run instead)")
    kl.engine.refuse_unknown_executors(runs.Pipeline(name=old.pipeline, spec=old.spec, source="api"))
    stages = await kl.store.list_stage_runs(run_id)
    run = runs.Run(id=runs.new_id(), pipeline=old.pipeline, inputs=old.inputs, spec=old.spec,
                   triggered_by=runs.TriggeredBy(kind=runs.TriggerKind.RETRY, detail=old.id),
                   pipeline_path=old.pipeline_path, schedule_id=old.schedule_id, parent_run_id=old.id)
    copied = [
        runs.StageRun(run_id=run.id, stage_id=s.stage_id, state=s.state, attempts=0, outputs=s.outputs,
                      started_at=s.started_at, finished_at=s.finished_at)
        if s.state is states.StageState.SUCCEEDED else runs.StageRun(run_id=run.id, stage_id=s.stage_id)
        for s in stages
    ]
    created = await kl.store.create_run(run, copied)
    kl.engine.notify(created.id)
    return created


async def wait_final(kl: bootstrap.Kubeline, run_id: str, *, within: float) -> runs.Run:
    """The run once final, or as it is after ``within`` seconds: woken by its driver's end when
    this process drives it, else by its events (another replica drives it, or it is queued)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with kl.store.wakeups.subscribe(wakeups.Channel.EVENTS, key=run_id) as changes:
        while True:
            run = await kl.store.get_run(run_id)
            left = deadline - loop.time()
            if states.is_final(run.state) or left <= 0:
                return run
            if not await kl.engine.driven(run_id, within=left):
                await changes.wait(within=min(deadline - loop.time(), 2.0))


# scripts --------------------------------------------------------------------------------------
async def run_script(kl: bootstrap.Kubeline, *, code: str, inputs: dict[str, Any],
                     requirements: list[str], stage_timeout: float | None) -> runs.Run:
    """Write the code as a one-stage pipeline folder under the data dir and queue a run of it."""
    script_id = runs.new_id()
    folder = kl.settings.home / "scripts" / script_id
    spec: dict[str, Any] = {"name": SCRIPT_PIPELINE, "description": "ad-hoc script run through the API",
                            "stages": [{"id": "script", "type": "python", "file": "main.py"}]}
    if stage_timeout is not None:
        spec["timeout"] = stage_timeout
    files = {"main.py": code, "pipeline.json": json.dumps(spec)}
    if requirements:
        files["requirements.txt"] = "\n".join(requirements) + "\n"

    def write() -> runs.Pipeline:
        folder.mkdir(parents=True)
        for file_name, text in files.items():
            (folder / file_name).write_text(text, encoding="utf-8")
        return loader.load_folder(folder, name=SCRIPT_PIPELINE)

    pipeline = await asyncio.to_thread(write)
    await kl.store.upsert_pipeline(pipeline)
    return await kl.engine.submit(pipeline, inputs=inputs,
                                  triggered_by=runs.TriggeredBy(kind=runs.TriggerKind.API, detail="script"))


async def log_text(kl: bootstrap.Kubeline, run_id: str, *, stage_id: str | None = None) -> str:
    return "".join([lines.display(at=line.at, stage_id=line.stage_id, attempt=line.attempt, stream=line.stream,
                                  text=line.text) + "\n"
                     async for line in kl.logs.iter_lines(run_id, stage_id=stage_id)])


async def log_availability(kl: bootstrap.Kubeline, run_id: str, *,
                           stage_id: str | None = None) -> log_base.Availability:
    """``logs.availability.check`` of the run: ``GoneError`` (410) when its log is gone."""
    return await availability.check(kl.logs, run_id, attempts=await kl.store.list_attempts(run_id),
                                    stage_id=stage_id)
