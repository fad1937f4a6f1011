"""``POST /api/v1/hooks/{pipeline}/{trigger}``: a signed webhook starts a run (see
``kubeline.scheduler.webhooks`` for the rules)."""

from __future__ import annotations

from typing import Annotated, Any

import fastapi
import pydantic

from kubeline import bootstrap
from kubeline.api import access
from kubeline.domain import errors, runs
from kubeline.engine import inputs as inputs_
from kubeline.scheduler import webhooks

router = fastapi.APIRouter(tags=["webhooks"])


class HookRunOut(pydantic.BaseModel):
    run_id: str
    pipeline: str
    state: str
    triggered_by: str
    schedule_id: str | None = None

    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{
        "run_id": "018cc0a1b2c3d4e5f6a7b8", "pipeline": "sales", "state": "queued",
        "triggered_by": "webhook:default", "schedule_id": None}]})


async def _kubeline(request: fastapi.Request) -> bootstrap.Kubeline:
    kl: bootstrap.Kubeline = request.app.state.kubeline
    return kl


KL = Annotated[bootstrap.Kubeline, fastapi.Depends(_kubeline)]


def _problem(status: int, detail: str) -> dict[str, Any]:
    return {"description": detail, "content": {"application/problem+json": {}}}


@router.post(
    "/hooks/{pipeline}/{trigger}", status_code=202, response_model=HookRunOut,
    summary="Start a run from a webhook; the JSON body becomes the run inputs",
    openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": {"type": "object", "additionalProperties": True}, "example": {"day": "2024-01-01"}}}}},
    responses={401: _problem(401, "Missing or wrong signature, or a stale timestamp"),
               404: _problem(404, "Unknown pipeline or no such enabled webhook"),
               409: _problem(409, "This delivery was already received (replay)"),
               413: _problem(413, "Body too large"), 422: _problem(422, "Body is not a JSON object of valid inputs"),
               429: _problem(429, "Rate limit of the webhook reached; see Retry-After")},
    dependencies=[access.public("a webhook proves itself with its HMAC signature")],
)
async def fire_hook(
    pipeline: str,
    trigger: str,
    *,
    request: fastapi.Request,
    kl: KL,
    x_kubeline_signature: Annotated[str | None, fastapi.Header()] = None,
    x_kubeline_timestamp: Annotated[str | None, fastapi.Header()] = None,
    x_kubeline_delivery: Annotated[str | None, fastapi.Header()] = None,
) -> HookRunOut:
    target = webhooks.resolve(await kl.store.get_pipeline(pipeline), trigger)
    body = await request.body()
    try:
        if target.webhook.secret:
            secret = await kl.secrets.get(target.webhook.secret)
            webhooks.verify(secret=secret, body=body, signature=x_kubeline_signature, timestamp=x_kubeline_timestamp)
        else:
            webhooks.check_timestamp(x_kubeline_timestamp, required=False)
    except webhooks.SignatureError as exc:
        raise fastapi.HTTPException(401, detail=str(exc)) from None
    except errors.NotFoundError:
        raise errors.ConflictError(
            f"webhook {target.hook_key!r} names secret {target.webhook.secret!r}, which is not stored: "
            f"add it with 'kubeline secrets set {target.webhook.secret}'") from None
    given = webhooks.inputs_of(body)
    spec = target.pipeline.spec
    if target.schedule_id is not None:
        given = {**spec.schedules[spec.schedule_ids().index(target.schedule_id)].inputs, **given}
    inputs_.validate(spec, given)  # 422 before the delivery counts against the rate limit
    new = kl.engine.prepare(
        target.pipeline, inputs=webhooks.inputs_of(body), schedule_id=target.schedule_id,
        triggered_by=runs.TriggeredBy(kind=runs.TriggerKind.WEBHOOK, detail=target.trigger))
    # The delivery and its run are one transaction: an accepted delivery always has its run.
    verdict = await kl.store.accept_delivery(
        target.hook_key, webhooks.delivery_id(header=x_kubeline_delivery, signature=x_kubeline_signature, body=body),
        now=runs.utcnow(), rate_limit=target.webhook.rate_limit, keep=webhooks.TOLERANCE * 2, run=new)
    if verdict.replayed:
        raise errors.ConflictError(f"delivery to {target.hook_key!r} was already received (replay refused); "
                                   f"send a new {webhooks.DELIVERY_HEADER} for a new delivery")
    if not verdict.accepted:
        retry = max(1, int(verdict.retry_after + 0.999))
        raise fastapi.HTTPException(
            429, detail=f"webhook {target.hook_key!r} accepts {target.webhook.rate_limit} requests per minute; "
                        f"retry in {retry}s", headers={"Retry-After": str(retry)})
    run = new.run
    kl.engine.notify(run.id)
    return HookRunOut(run_id=run.id, pipeline=run.pipeline, state=run.state.value, triggered_by=str(run.triggered_by),
                      schedule_id=run.schedule_id)
