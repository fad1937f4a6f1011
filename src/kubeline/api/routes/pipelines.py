"""``/api/v1/pipelines``: list, get, spec, validate a posted spec or folder, reload the folder."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import fastapi

from kubeline.api import access, deps, schemas, services
from kubeline.api import environments as env_schemas
from kubeline.auth import roles
from kubeline.domain import errors, runs
from kubeline.pipelines import loader

Role = roles.Role
router = fastapi.APIRouter(prefix="/pipelines", tags=["pipelines"])


@router.get("", response_model=schemas.PipelineList)
async def list_pipelines(kl: deps.KL, who: Annotated[roles.Principal, access.requires(Role.viewer, filtered=True)],
                         ) -> schemas.PipelineList:
    """Every known pipeline (loaded from the pipelines dir, or run before)."""
    items = [p for p in await kl.store.list_pipelines() if access.visible(who, p.name, p.spec.tags)]
    return schemas.PipelineList(items=[schemas.PipelineOut.of(p, environment=_environment(kl, p)) for p in items])


@router.post("/reload", response_model=schemas.ReloadOut, responses=deps.problem_responses(404),
             dependencies=[access.requires(Role.operator)])
async def reload_pipelines(kl: deps.KL) -> schemas.ReloadOut:
    """Load every folder of the pipelines dir again; invalid folders are reported, not loaded."""
    found = await services.reload_pipelines(kl)
    return schemas.ReloadOut(loaded=[p.name for p in found.pipelines],
                             problems=[schemas.SpecProblem.of(p) for p in found.problems],
                             notices=[schemas.SpecProblem.of(p) for p in found.notices])


@router.post("/validate", response_model=schemas.ValidateOut, responses=deps.problem_responses(422),
             dependencies=[access.requires(Role.viewer)])
async def validate_pipeline(body: schemas.ValidateIn) -> schemas.ValidateOut:
    """Check a spec (a ``pipeline.yaml`` mapping) or a folder (``files``) without storing or running it.

    Answers 200 with ``valid: false`` and every problem (file, field, hint) when it is invalid."""
    try:
        pipeline = services.validate_spec(spec=body.spec, files=body.files, name=body.name)
    except errors.SpecError as exc:
        return schemas.ValidateOut(valid=False, problems=[schemas.SpecProblem.of(p) for p in exc.problems])
    return schemas.ValidateOut(valid=True, name=pipeline.name, stages=[s.id for s in pipeline.spec.stages])


@router.get("/{name}", response_model=schemas.PipelineOut, responses=deps.problem_responses(404),
            dependencies=[access.requires(Role.viewer, pipeline=access.pipeline_path())])
async def get_pipeline(name: str, kl: deps.KL) -> schemas.PipelineOut:
    """One pipeline, with ``notices``: settings it has that Kubeline reads but does not act on."""
    pipeline = await kl.store.get_pipeline(name)
    return schemas.PipelineOut.of(pipeline, notices=await asyncio.to_thread(loader.notices_of, pipeline),
                                  environment=_environment(kl, pipeline))


@router.get("/{name}/environment", response_model=env_schemas.EnvironmentOut, responses=deps.problem_responses(404),
            dependencies=[access.requires(Role.viewer, pipeline=access.pipeline_path())])
async def get_pipeline_environment(name: str, kl: deps.KL) -> env_schemas.EnvironmentOut:
    """Its virtualenvs (one per python version + requirements its stages use), each with its state and,
    when built, the installed packages and versions: what the resolver chose."""
    pipeline = await kl.store.get_pipeline(name)
    return await services.environment_of(kl, pipeline)


def _environment(kl: deps.KL, pipeline: runs.Pipeline) -> env_schemas.EnvironmentSummary | None:
    if kl.environments is None:
        return None
    return env_schemas.EnvironmentSummary.of(kl.environments.state(pipeline))


@router.get("/{name}/spec", responses=deps.problem_responses(404),
            dependencies=[access.requires(Role.viewer, pipeline=access.pipeline_path())])
async def get_pipeline_spec(name: str, kl: deps.KL) -> dict[str, Any]:
    """The full spec as the server sees it (implicit stages filled in), JSON."""
    pipeline = await kl.store.get_pipeline(name)
    spec: dict[str, Any] = pipeline.spec.model_dump(mode="json", exclude={"encrypted_env"})
    return spec
