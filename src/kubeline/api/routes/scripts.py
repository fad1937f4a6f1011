"""``/api/v1/scripts``: run a posted Python script with a JSON input on the configured executor.

The script-runner service: the code becomes a one-stage pipeline folder under the data dir (kept,
so a run can be inspected and retried like any other), the input becomes the run's inputs.
``?wait=true`` answers when the run is final (or after ``timeout``) with outputs and logs.
"""

from __future__ import annotations

from typing import Annotated

import fastapi

from kubeline.api import access, deps, schemas, services
from kubeline.auth import roles
from kubeline.domain import states

Role = roles.Role
router = fastapi.APIRouter(prefix="/scripts", tags=["scripts"])


@router.post("", status_code=201, response_model=schemas.ScriptOut,
             responses=deps.problem_responses(404, 413, 422), dependencies=[access.requires(Role.operator)])
async def run_script(
    body: schemas.ScriptIn, kl: deps.KL, response: fastapi.Response,
    wait: Annotated[bool, fastapi.Query(description="Answer when the run has finished")] = False,
    wait_timeout: Annotated[float, fastapi.Query(gt=0, le=3600, description="Seconds to wait at most")] = 300,
) -> schemas.ScriptOut:
    if not kl.settings.scripts_enabled:
        raise fastapi.HTTPException(404, detail="the script runner is off on this server: start it with "
                                                "KUBELINE_SCRIPTS_ENABLED=true to serve POST /api/v1/scripts")
    run = await services.run_script(kl, code=body.code, inputs=body.input, requirements=body.requirements,
                                    stage_timeout=body.timeout)
    response.headers["Location"] = f"/api/v1/runs/{run.id}"
    if not wait:
        return schemas.ScriptOut(run=schemas.RunOut.of(run))
    run = await services.wait_final(kl, run.id, within=wait_timeout)
    stages = await kl.store.list_stage_runs(run.id)
    outputs = stages[0].outputs if stages else {}
    done = states.is_final(run.state)
    return schemas.ScriptOut(run=schemas.RunOut.of(run, stages=stages), outputs=outputs,
                             logs=await services.log_text(kl, run.id), success=run.state is states.RunState.SUCCEEDED
                             if done else None)
