"""``/api/v1/system``: what this server is, for the System page: version, database kind, the
executors it registered with their capabilities, the queue, and where its readiness stands.

No setting that could hold a credential (database URL, keys) is ever included.
"""

from __future__ import annotations

import dataclasses

import fastapi
import pydantic

import kubeline
from kubeline.api import access, deps
from kubeline.auth import roles
from kubeline.domain import states

router = fastapi.APIRouter(tags=["system"])


class ExecutorOut(pydantic.BaseModel):
    name: str
    capabilities: dict[str, bool]


class SystemOut(pydantic.BaseModel):
    version: str
    database: str = pydantic.Field(description="The database kind (sqlite, postgresql), never its URL.")
    default_executor: str
    executors: list[ExecutorOut]
    queued: int = pydantic.Field(description="Queued runs (up to 1000 counted).")
    running: int = pydantic.Field(description="Running runs (up to 1000 counted).")
    kubernetes_namespace: str | None = pydantic.Field(None, description="When the kubernetes executor is on.")


@router.get("/system", dependencies=[access.requires(roles.Role.viewer)], response_model=SystemOut)
async def get_system(kl: deps.KL) -> SystemOut:
    """This server: version, database kind, executors and capabilities, queue depth."""
    url = kl.settings.database_url or "sqlite"
    queued = await kl.store.list_runs(states_in=[states.RunState.QUEUED], limit=1000)
    running = await kl.store.list_runs(states_in=[states.RunState.RUNNING], limit=1000)
    return SystemOut(
        version=getattr(kubeline, "__version__", "0"),
        database="postgresql" if url.startswith("postgres") else url.split(":", 1)[0].split("+", 1)[0],
        default_executor=kl.settings.executor,
        executors=[ExecutorOut(name=name, capabilities=dataclasses.asdict(executor.capabilities))
                   for name, executor in sorted(kl.executors.items())],
        queued=len(queued), running=len(running),
        kubernetes_namespace=kl.settings.kubernetes_namespace if "kubernetes" in kl.executors else None)
