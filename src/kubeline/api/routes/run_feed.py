"""``GET /api/v1/runs/stream``: every run's changes as server-sent events (``kubeline runs --watch``).

Like ``kubectl get -w``: a ``snapshot`` event with the newest runs (the first page of
``GET /runs`` with the same filters), a ``live`` event once it is sent, then a ``run`` event with
the run as it now is each time one matching the filters changes state or is created. Woken by the
store's EVENTS wake-up of every run (any replica, through NOTIFY on PostgreSQL); a wake-up can be
lost, so every few seconds the newest runs are read again and those that changed are sent too.
The stream never ends by itself; a ``ping`` event every ``heartbeat`` seconds keeps proxies open.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

import fastapi
from fastapi import responses

from kubeline.api import access, deps, openapi, schemas, sse
from kubeline.auth import roles
from kubeline.domain import errors, runs, states
from kubeline.storage import wakeups

router = fastapi.APIRouter(prefix="/runs", tags=["runs"])
_SAFETY_POLL = 5.0
_KEEP = 20_000
_EVENTS = openapi.sse_events(
    ("snapshot", {"$ref": "#/components/schemas/RunList"}),  # nested models: the documented components
    ("live", {"type": "object", "description": "The snapshot is complete; changes follow."}),
    ("run", {"$ref": "#/components/schemas/RunOut"}),
    ("ping", {"type": "object", "description": "Sent every `heartbeat` seconds without changes."}))


@router.get("/stream", response_class=responses.StreamingResponse, responses={**deps.problem_responses(422), **_EVENTS})
async def follow_runs(
    *,
    kl: deps.KL,
    who: Annotated[roles.Principal, access.requires(roles.Role.viewer, filtered=True)],
    pipeline: Annotated[str | None, fastapi.Query(max_length=128)] = None,
    state: Annotated[list[states.RunState] | None, fastapi.Query()] = None,
    limit: Annotated[int, fastapi.Query(ge=1, le=500, description="Runs in the snapshot")] = 50,
    heartbeat: Annotated[float, fastapi.Query(ge=1, le=300)] = 15.0,
) -> responses.StreamingResponse:
    """Follow the runs (``snapshot``, ``live``, then a ``run`` event per change); only runs of pipelines the
    caller may see."""
    wanted = set(state or [])

    def matches(run: runs.Run) -> bool:
        return ((pipeline is None or run.pipeline == pipeline) and (not wanted or run.state in wanted)
                and access.visible(who, run.pipeline, run.spec.tags))

    async def frames() -> AsyncIterator[bytes]:
        seen: dict[str, tuple[states.RunState, bool]] = {}
        async with kl.store.wakeups.subscribe(wakeups.Channel.EVENTS) as changes:
            first = [r for r in await kl.store.list_runs(pipeline=pipeline, states_in=state or None, limit=limit)
                     if matches(r)]
            seen.update({r.id: (r.state, r.cancel_requested) for r in first})
            yield sse.retry_hint()
            snapshot = schemas.RunList(items=[schemas.RunOut.of(r) for r in first], next=None)
            yield sse.event(data=snapshot.model_dump(mode="json"), event_type="snapshot")
            yield sse.event(data={}, event_type="live")
            quiet_since = time.monotonic()
            while True:
                keys = await changes.wait(within=min(_SAFETY_POLL, heartbeat))
                found: list[runs.Run] = []
                if keys:
                    for run_id in sorted(keys):
                        try:
                            found.append(await kl.store.get_run(run_id))
                        except errors.NotFoundError:  # deleted by retention meanwhile
                            continue
                else:
                    found = await kl.store.list_runs(pipeline=pipeline, limit=limit)
                for run in sorted(found, key=lambda r: r.id):
                    mark = (run.state, run.cancel_requested)
                    if seen.get(run.id) == mark or not matches(run):
                        continue
                    if len(seen) > _KEEP:  # a changed run may then be sent twice: harmless
                        seen.clear()
                    seen[run.id] = mark
                    quiet_since = time.monotonic()
                    yield sse.event(data=schemas.RunOut.of(run).model_dump(mode="json"), event_type="run")
                if time.monotonic() - quiet_since >= heartbeat:
                    quiet_since = time.monotonic()
                    yield sse.event(data={}, event_type="ping")

    return responses.StreamingResponse(frames(), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
