"""``/api/v1/retention``: what retention would remove (dry run), and removing it now."""

from __future__ import annotations

from typing import Annotated

import fastapi
import pydantic

from kubeline.api import access, deps
from kubeline.auth import roles
from kubeline.cleanup import service

# Admins only: the plan lists paths on the server, and applying it deletes runs and logs.
router = fastapi.APIRouter(prefix="/retention", tags=["retention"],
                           dependencies=[access.requires(roles.Role.admin)])


class ItemOut(pydantic.BaseModel):
    kind: str = pydantic.Field(description="run, logs, artifacts, log_tail, venv, checkout or audit.")
    target: str = pydantic.Field(description="A run id, or a path on this server.")
    pipeline: str
    reason: str
    bytes: int | None = pydantic.Field(None, description="Bytes it frees on the server; none where unknown.")


class PlanOut(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{"applied": False, "items": [
        {"kind": "run", "target": "0190a1b2c3d4e5f6a7b8c9", "pipeline": "nightly",
         "reason": "beyond the newest 100 runs (max_runs)", "bytes": 48213}], "refused": []}]})

    applied: bool
    items: list[ItemOut]
    refused: list[str] = pydantic.Field(description="Pipelines skipped: the policy would delete all their runs.")

    @classmethod
    def of(cls, plan: service.Plan, *, applied: bool) -> PlanOut:
        return cls(applied=applied, refused=plan.refused, items=[
            ItemOut(kind=i.kind, target=i.target, pipeline=i.pipeline, reason=i.reason, bytes=i.bytes)
            for i in plan.items])


def _cleanup(kl: deps.KL) -> service.Cleanup:
    assert kl.cleanup is not None  # bootstrap always makes one
    return kl.cleanup


@router.get("/plan", response_model=PlanOut)
async def plan(kl: deps.KL, force: Annotated[bool, fastapi.Query()] = False) -> PlanOut:
    """Dry run: everything retention would remove now, and why."""
    return PlanOut.of(await _cleanup(kl).plan(force=force), applied=False)


@router.post("/apply", response_model=PlanOut)
async def apply(kl: deps.KL, force: Annotated[bool, fastapi.Query(
        description="Also for pipelines whose policy removes every finished run.")] = False) -> PlanOut:
    """Remove what the plan lists now (running runs are never touched)."""
    return PlanOut.of(await _cleanup(kl).apply(force=force), applied=True)
