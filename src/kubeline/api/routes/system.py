"""``/api/v1/system``: what this server is, for the System page: version, database kind, the
executors it registered with their capabilities, the queue, the scheduler's lag, and where its
readiness stands.

No setting that could hold a credential (database URL, keys) is ever included.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

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
    queued: int = pydantic.Field(description="Queued runs.")
    running: int = pydantic.Field(description="Running runs.")
    scheduler_lag: float | None = pydantic.Field(
        None, description="Seconds between the newest schedule fire's due time and the moment a scheduler "
                          "recorded it (any replica); null before the first fire.")
    last_fire_at: dt.datetime | None = pydantic.Field(None, description="The newest schedule fire's due time.")
    kubernetes_namespace: str | None = pydantic.Field(None, description="When the kubernetes executor is on.")


@router.get("/system", dependencies=[access.requires(roles.Role.viewer)], response_model=SystemOut)
async def get_system(kl: deps.KL) -> SystemOut:
    """This server: version, database kind, executors and capabilities, queue depth, scheduler lag."""
    url = kl.settings.database_url or "sqlite"
    counts = await kl.store.count_runs()  # one GROUP BY, never the rows
    fire = await kl.store.latest_fire()
    return SystemOut(
        version=getattr(kubeline, "__version__", "0"),
        database="postgresql" if url.startswith("postgres") else url.split(":", 1)[0].split("+", 1)[0],
        default_executor=kl.settings.executor,
        executors=[ExecutorOut(name=name, capabilities=dataclasses.asdict(executor.capabilities))
                   for name, executor in sorted(kl.executors.items())],
        queued=counts.get(states.RunState.QUEUED, 0), running=counts.get(states.RunState.RUNNING, 0),
        scheduler_lag=None if fire is None else max((fire.created_at - fire.fire_time).total_seconds(), 0.0),
        last_fire_at=None if fire is None else fire.fire_time,
        kubernetes_namespace=kl.settings.kubernetes_namespace if "kubernetes" in kl.executors else None)
