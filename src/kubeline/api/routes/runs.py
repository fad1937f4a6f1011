"""``/api/v1/runs``: create, list (filters + cursor), get, cancel, retry; attempts and outputs."""

from __future__ import annotations

from typing import Annotated, Any

import fastapi

from kubeline.api import access, deps, schemas, security, services
from kubeline.auth import roles
from kubeline.domain import errors, runs, states

Role = roles.Role
router = fastapi.APIRouter(prefix="/runs", tags=["runs"])
_SCAN_PAGES = 20  # pages read per request when a filter the store cannot apply (trigger) drops runs


@router.post("", status_code=201, response_model=schemas.RunOut,
             responses=deps.problem_responses(404, 409, 422),
             dependencies=[access.requires(Role.operator, pipeline=access.pipeline_body())])
async def create_run(body: schemas.RunCreate, kl: deps.KL, request: fastapi.Request,
                     response: fastapi.Response) -> schemas.RunOut:
    """Queue a run of a pipeline with these inputs (checked against its declared inputs: 422)."""
    entry = security.audit_entry(request.scope, 201)  # written with the run (one statement on PostgreSQL)
    # Marked before the write: a request cancelled while its run commits (the client went away)
    # has its row already; only a refusal (an exception) leaves the row to the middleware.
    if entry is not None:
        security.audited(request)
    try:
        run = await services.create_run(kl, pipeline_name=body.pipeline, inputs=body.inputs,
                                        schedule_id=body.schedule_id,
                                        trigger=runs.TriggeredBy(kind=runs.TriggerKind.API),
                                        stored=access.located_pipeline(request, body.pipeline),
                                        audit=kl.auth.audit_row(**entry) if entry is not None else None)
    except Exception:
        security.audited(request, False)
        raise
    response.headers["Location"] = f"/api/v1/runs/{run.id}"
    return schemas.RunOut.of(run)


@router.get("", response_model=schemas.RunList)
async def list_runs(
    *,
    kl: deps.KL,
    who: Annotated[roles.Principal, access.requires(Role.viewer, filtered=True)],
    pipeline: Annotated[str | None, fastapi.Query(max_length=128)] = None,
    state: Annotated[list[states.RunState] | None, fastapi.Query()] = None,
    trigger: Annotated[runs.TriggerKind | None, fastapi.Query()] = None,
    limit: Annotated[int, fastapi.Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, fastapi.Query(max_length=64, description="'next' of the previous page")] = None,
) -> schemas.RunList:
    """Runs newest first; ``next`` is the cursor of the following page (absent on the last)."""
    found: list[runs.Run] = []
    before, exhausted = cursor, False
    for _ in range(_SCAN_PAGES):
        page = await kl.store.list_runs(pipeline=pipeline, states_in=state or None, limit=limit, before=before)
        for run in page:
            before = run.id
            if (trigger is None or run.triggered_by.kind is trigger) and access.visible(who, run.pipeline,
                                                                                         run.spec.tags):
                found.append(run)
                if len(found) == limit:
                    break
        if len(found) == limit:
            exhausted = not await kl.store.list_runs(pipeline=pipeline, states_in=state or None, limit=1,
                                                     before=before)
            break
        if len(page) < limit:
            exhausted = True
            break
    next_cursor = None if exhausted else before
    return schemas.RunList(items=[schemas.RunOut.of(r) for r in found], next=next_cursor)


@router.get("/{run_id}", response_model=schemas.RunOut, responses=deps.problem_responses(404),
            dependencies=[access.requires(Role.viewer, pipeline=access.run_path())])
async def get_run(run_id: str, kl: deps.KL, request: fastapi.Request) -> schemas.RunOut:
    """One run with its stages and attempts."""
    run = access.located_run(request, run_id) or await kl.store.get_run(run_id)
    return schemas.RunOut.of(run, stages=await kl.store.list_stage_runs(run_id),
                             attempts=await kl.store.list_attempts(run_id))


@router.post("/{run_id}/cancel", response_model=schemas.RunOut, responses=deps.problem_responses(404, 409),
             dependencies=[access.requires(Role.operator, pipeline=access.run_path())])
async def cancel_run(run_id: str, kl: deps.KL) -> schemas.RunOut:
    """Cancel a queued or running run; 409 when it has already finished."""
    return schemas.RunOut.of(await kl.engine.cancel(run_id))


@router.post("/{run_id}/retry", status_code=201, response_model=schemas.RunOut,
             responses=deps.problem_responses(404, 409),
             dependencies=[access.requires(Role.operator, pipeline=access.run_path())])
async def retry_run(run_id: str, kl: deps.KL, response: fastapi.Response) -> schemas.RunOut:
    """A new run that keeps the stages that succeeded (with their outputs) and runs the rest again."""
    run = await services.retry_run(kl, run_id)
    response.headers["Location"] = f"/api/v1/runs/{run.id}"
    return schemas.RunOut.of(run)


@router.get("/{run_id}/attempts", response_model=schemas.AttemptList, responses=deps.problem_responses(404),
            dependencies=[access.requires(Role.viewer, pipeline=access.run_path())])
async def list_attempts(run_id: str, kl: deps.KL,
                        stage: Annotated[str | None, fastapi.Query(max_length=128)] = None) -> schemas.AttemptList:
    await kl.store.get_run(run_id)
    return schemas.AttemptList(items=[schemas.AttemptOut.of(a)
                                      for a in await kl.store.list_attempts(run_id, stage_id=stage)])


@router.get("/{run_id}/attempts/{attempt_id}", response_model=schemas.AttemptOut,
            responses=deps.problem_responses(404),
            dependencies=[access.requires(Role.viewer, pipeline=access.run_path())])
async def get_attempt(run_id: str, attempt_id: str, kl: deps.KL) -> schemas.AttemptOut:
    attempt = await _attempt_of(kl, run_id, attempt_id)
    return schemas.AttemptOut.of(attempt, resources=await _resources(kl, attempt))


async def _resources(kl: deps.KL, attempt: runs.Attempt) -> dict[str, Any]:
    """CPU/memory from the attempt's executor when it measures them (``resource_usage``)."""
    executor = kl.executors.get(attempt.executor)
    usage = getattr(executor, "resource_usage", None)
    if usage is None:
        return {"available": False,
                "reason": f"metrics unavailable: the {attempt.executor} executor does not report them here"}
    found: dict[str, Any] = await usage(attempt.handle, running=attempt.state is states.AttemptState.RUNNING)
    return found


@router.get("/{run_id}/attempts/{attempt_id}/outputs", response_model=schemas.OutputsOut,
            responses=deps.problem_responses(404),
            dependencies=[access.requires(Role.viewer, pipeline=access.run_path())])
async def get_attempt_outputs(run_id: str, attempt_id: str, kl: deps.KL) -> schemas.OutputsOut:
    return schemas.OutputsOut(outputs=(await _attempt_of(kl, run_id, attempt_id)).outputs)


@router.get("/{run_id}/outputs", response_model=schemas.OutputsOut, responses=deps.problem_responses(404),
            dependencies=[access.requires(Role.viewer, pipeline=access.run_path())])
async def get_run_outputs(run_id: str, kl: deps.KL) -> schemas.OutputsOut:
    return schemas.OutputsOut(outputs=(await kl.store.get_run(run_id)).outputs)


async def _attempt_of(kl: deps.KL, run_id: str, attempt_id: str) -> runs.Attempt:
    attempt = await kl.store.get_attempt(attempt_id)
    if attempt.run_id != run_id:
        raise errors.NotFoundError(f"attempt {attempt_id!r} not found in run {run_id!r}")
    return attempt
