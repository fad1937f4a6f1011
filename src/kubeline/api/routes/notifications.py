"""``/api/v1/notifications``: every delivery with its state, attempts and last error."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import fastapi
import pydantic

from kubeline.api import access, deps
from kubeline.auth import roles
from kubeline.storage.sql import notifications as outbox

router = fastapi.APIRouter(prefix="/notifications", tags=["notifications"])


class DeliveryOut(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{
        "id": "0190a1b2c3d4e5f6a7b8c9", "run_id": "0190a1b2c3d4e5f6a7b8c0", "pipeline": "nightly", "event": "failure",
        "channel": "slack", "target": "secret:SLACK_URL", "state": "pending", "attempts": 2,
        "next_at": "2026-01-01T02:00:30Z", "last_error": "slack receiver answered 500: oops",
        "created_at": "2026-01-01T02:00:00Z", "sent_at": None}]})

    id: str
    run_id: str
    pipeline: str
    event: str
    channel: str
    target: str = pydantic.Field(description="Recipients, or the URL without query, or secret:<name>.")
    state: str = pydantic.Field(description="pending, sending, sent, failed (after every retry) or suppressed "
                                            "(rate limited).")
    attempts: int
    next_at: dt.datetime
    last_error: str
    created_at: dt.datetime
    sent_at: dt.datetime | None

    @classmethod
    def of(cls, d: outbox.Delivery) -> DeliveryOut:
        return cls(id=d.id, run_id=d.run_id, pipeline=d.pipeline, event=d.event, channel=d.channel, target=d.target,
                   state=d.state, attempts=d.attempts, next_at=d.next_at, last_error=d.last_error,
                   created_at=d.created_at, sent_at=d.sent_at)


class DeliveryList(pydantic.BaseModel):
    items: list[DeliveryOut]


@router.get("", response_model=DeliveryList)
async def list_notifications(
    kl: deps.KL,
    who: Annotated[roles.Principal, access.requires(roles.Role.viewer, filtered=True)],
    run: Annotated[str | None, fastapi.Query(max_length=64)] = None,
    pipeline: Annotated[str | None, fastapi.Query(max_length=128)] = None,
    limit: Annotated[int, fastapi.Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    """Deliveries newest first, with why the last attempt failed (failed ones are retried with backoff)."""
    if kl.notifier is None:
        return DeliveryList(items=[])
    found = await kl.notifier.outbox.list(run_id=run, pipeline=pipeline, limit=limit)
    return DeliveryList(items=[DeliveryOut.of(d) for d in found if access.visible(who, d.pipeline)])
