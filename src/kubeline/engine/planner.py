"""Plan one attempt: resolve the effective settings of a stage and render its inputs and config.

Precedence, lowest first: pipeline < stage < the run config (schedule) the run was made from.
Env layering follows Fast-Flow: env, schedule env, encrypted env, schedule encrypted env, stored
secrets, then the run's inputs (as env vars when their names allow).

Executor choice: the stage's, else the pipeline's, else the engine's default. ``local-warm`` (a
pre-started interpreter that forks per attempt) only fits ``python`` stages that run in the
shared venv of their python version, i.e. with no requirements of their own; any other stage
that would land on it runs on ``local``. The composition root makes ``local-warm`` the default
when the server's executor is ``local``, so small python stages get it without asking, and a
pipeline or stage that names ``local`` keeps a fresh interpreter per attempt.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Any

from kubeline.components import launch
from kubeline.domain import components, expressions, runs, specs
from kubeline.executors import base

_ENV_NAME = re.compile(specs.ENV_NAME_PATTERN)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Effective:
    """A stage's settings after overrides."""

    executor: str
    timeout: float | None
    retries: specs.RetryPolicy
    resources: specs.Resources


def schedule_of(run: runs.Run) -> specs.ScheduleSpec | None:
    if run.schedule_id is None:
        return None
    for schedule_id, schedule in zip(run.spec.schedule_ids(), run.spec.schedules, strict=True):
        if schedule_id == run.schedule_id:
            return schedule
    return None


def stage_of(run: runs.Run, stage_id: str) -> specs.StageSpec:
    return next(s for s in run.spec.stages if s.id == stage_id)


WARM_EXECUTOR = "local-warm"


def warm_eligible(run: runs.Run, stage: specs.StageSpec) -> bool:
    """A ``python`` stage without requirements: its venv is shared, so a warm interpreter fits."""
    type_name = components.ALIASES.get(stage.type, stage.type)
    return type_name == "python" and stage.requirements is None and run.spec.requirements is None


def effective(run: runs.Run, stage: specs.StageSpec, *, default_executor: str) -> Effective:
    spec, schedule = run.spec, schedule_of(run)
    timeout = spec.timeout
    if stage.timeout is not None:
        timeout = stage.timeout
    if schedule is not None and schedule.timeout is not None:
        timeout = schedule.timeout
    retries = spec.retries
    if stage.retries is not None:
        retries = stage.retries
    if schedule is not None and schedule.retries is not None:
        retries = schedule.retries
    resources = spec.resources.merged(stage.resources)
    if schedule is not None:
        resources = resources.merged(schedule.resources)
    executor = stage.executor or spec.executor or default_executor
    if executor == WARM_EXECUTOR and not warm_eligible(run, stage):
        executor = "local"
    return Effective(
        executor=executor,
        timeout=timeout or None,
        retries=retries,
        resources=resources,
    )


def context(run: runs.Run, outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "inputs": run.inputs,
        "stages": outputs,
        "run": {"id": run.id, "pipeline": run.pipeline, "trigger": str(run.triggered_by)},
    }


def plain_env(run: runs.Run, stage: specs.StageSpec) -> tuple[dict[str, str], dict[str, specs.EnvFrom]]:
    """Plain env (pipeline < stage < schedule) split into values and K8s valueFrom references."""
    schedule = schedule_of(run)
    merged: dict[str, specs.EnvValue] = {**run.spec.env, **stage.env, **(schedule.env if schedule else {})}
    values = {k: v for k, v in merged.items() if isinstance(v, str)}
    refs = {k: v for k, v in merged.items() if isinstance(v, specs.EnvFrom)}
    return values, refs


def encrypted_env(run: runs.Run) -> list[dict[str, str]]:
    """Ciphertexts in precedence order: pipeline's, then the schedule's."""
    schedule = schedule_of(run)
    return [run.spec.encrypted_env, schedule.encrypted_env if schedule else {}]


def secret_names(run: runs.Run, stage: specs.StageSpec) -> list[str]:
    return list(dict.fromkeys([*run.spec.secrets, *stage.secrets]))


def build(
    *,
    run: runs.Run,
    stage: specs.StageSpec,
    attempt: runs.Attempt,
    settings: Effective,
    outputs: dict[str, dict[str, Any]],
    secret_values: dict[str, str],
) -> base.AttemptSpec:
    """The executor's view of one attempt. ``secret_values`` are decrypted secrets and encrypted env."""
    type_name = components.ALIASES.get(stage.type, stage.type)
    kind = components.BUILTIN[type_name]
    ctx = context(run, outputs)
    config = expressions.render(stage.config, ctx)
    if type_name == "shell":
        command = stage.command if stage.command is not None else config.get("command")
        config = {**config, "command": expressions.render(command, ctx)}
    if type_name == "notebook":
        cells = stage.cells or run.spec.cells
        config = {**config, "cells": {str(k): v.model_dump() for k, v in cells.items()}}
    stage_inputs = {**run.inputs, **expressions.render(stage.inputs, ctx)}
    argv, runtime, extra = launch.argv_for(type_name, file=stage.file or kind.default_file, config=config)
    env, env_from = plain_env(run, stage)
    env.update(secret_values)
    env.update({k: _env_text(v) for k, v in run.inputs.items() if _ENV_NAME.fullmatch(k)})
    folder = pathlib.Path(run.pipeline_path) if run.pipeline_path else None
    requirements_name = stage.requirements or run.spec.requirements
    return base.AttemptSpec(
        attempt_id=attempt.id,
        run_id=run.id,
        pipeline=run.pipeline,
        stage_id=stage.id,
        number=attempt.number,
        stage_type=type_name,
        folder=folder,
        argv=tuple(argv),
        runtime=runtime,
        python_version=stage.python_version or run.spec.python_version,
        requirements=(folder / requirements_name) if folder and requirements_name else None,
        extra_packages=tuple(extra),
        env=env,
        secret_env=frozenset(secret_values),
        env_from=env_from,
        inputs=stage_inputs,
        config=config,
        timeout=settings.timeout,
        resources=settings.resources,
        kubernetes=stage.kubernetes or run.spec.kubernetes,
        tags=tuple(run.spec.tags),
    )


def _env_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value)
