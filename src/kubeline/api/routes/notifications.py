"""``/api/v1/notifications``: every delivery with its state, attempts and last error, and the
rules in effect (``/rules``). No secret leaves: webhook URLs show their host only (Slack and Teams
put the secret in the path), stored secrets by name, SMTP's password as whether one is set."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import fastapi
import pydantic

from kubeline.api import access, deps
from kubeline.auth import roles
from kubeline.domain import errors, notifications
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
    target: str = pydantic.Field(description="Recipients, or the URL's scheme and host only, or secret:<name>.")
    state: str = pydantic.Field(description="pending, sending, sent, failed (after every retry) or suppressed "
                                            "(rate limited).")
    attempts: int
    next_at: dt.datetime
    last_error: str
    created_at: dt.datetime
    sent_at: dt.datetime | None

    @classmethod
    def of(cls, d: outbox.Delivery) -> DeliveryOut:
        return cls(id=d.id, run_id=d.run_id, pipeline=d.pipeline, event=d.event, channel=d.channel,
                   target=notifications.masked(d.target),
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


class RuleOut(pydantic.BaseModel):
    channel: str = pydantic.Field(description="email, slack, teams or webhook.")
    on: list[str] = pydantic.Field(description="Events that notify: failure, success, recovery, slow.")
    target: str = pydantic.Field(description="Recipients, the URL's scheme and host only, or secret:<name>.")
    signed_with: str | None = pydantic.Field(None, description="webhook: the stored secret signing the body (name).")

    @classmethod
    def of(cls, spec: notifications.NotificationSpec) -> RuleOut:
        return cls(channel=spec.channel, on=list(spec.on), target=notifications.masked(spec.target),
                   signed_with=spec.secret)


class PipelineRulesOut(pydantic.BaseModel):
    pipeline: str
    rules: list[RuleOut]
    expected_duration: float | None = pydantic.Field(description="Seconds; a run still running after it is 'slow'.")
    rate_limit: int = pydantic.Field(description="Notifications per channel per hour; more are suppressed.")


class EmailOut(pydantic.BaseModel):
    host: str
    port: int
    starttls: bool
    sender: str
    login: bool = pydantic.Field(description="Whether a username and password are set (never returned).")


class RulesOut(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{
        "global_rules": [{"channel": "slack", "on": ["failure"], "target": "secret:SLACK_URL", "signed_with": None}],
        "pipelines": [{"pipeline": "nightly", "expected_duration": 600.0, "rate_limit": 10, "rules": [
            {"channel": "webhook", "on": ["failure", "recovery"], "target": "https://hooks.example.org/***",
             "signed_with": "HOOK_KEY"}]}],
        "email": {"host": "smtp.example.org", "port": 587, "starttls": True, "sender": "kubeline@example.org",
                  "login": True}}]})

    global_rules: list[RuleOut] = pydantic.Field(description="KUBELINE_NOTIFICATIONS: every pipeline's runs.")
    pipelines: list[PipelineRulesOut] = pydantic.Field(description="Pipelines with rules of their own.")
    email: EmailOut | None = pydantic.Field(description="The SMTP server email rules use; none when unset.")


@router.get("/rules", response_model=RulesOut)
async def list_rules(
    kl: deps.KL, who: Annotated[roles.Principal, access.requires(roles.Role.viewer, filtered=True)],
) -> RulesOut:
    """The rules in effect: the server's global ones and each visible pipeline's, secrets masked."""
    config = kl.settings
    email = EmailOut(host=config.smtp_host, port=config.smtp_port, starttls=config.smtp_starttls,
                     sender=config.smtp_from, login=bool(config.smtp_username and config.smtp_password)) \
        if config.smtp_host else None
    found = [p for p in await kl.store.list_pipelines()
             if p.spec.notifications and access.visible(who, p.name, p.spec.tags)]
    return RulesOut(
        global_rules=[RuleOut.of(s) for s in (kl.notifier.global_specs if kl.notifier else [])],
        pipelines=[PipelineRulesOut(pipeline=p.name, rules=[RuleOut.of(s) for s in p.spec.notifications],
                                    expected_duration=p.spec.expected_duration, rate_limit=p.spec.notify_rate_limit)
                   for p in sorted(found, key=lambda p: p.name)],
        email=email)


class TestIn(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    pipeline: str | None = pydantic.Field(None, description="The pipeline whose rule to test; none: a global rule.")
    index: int = pydantic.Field(ge=0, description="The rule's position in that list (as /rules lists them).")


class TestOut(pydantic.BaseModel):
    sent: bool
    channel: str
    target: str = pydantic.Field(description="As /rules shows it (no secret).")
    error: str = pydantic.Field(description="Why the channel refused or did not answer; empty when sent.")


@router.post("/rules/test", response_model=TestOut, responses=deps.problem_responses(404),
             dependencies=[access.requires(roles.Role.admin)])
async def send_test(body: TestIn, kl: deps.KL) -> TestOut:
    """Send a test message through one rule now and say how it went (not recorded, not retried)."""
    if kl.notifier is None:
        raise errors.NotFoundError("notifications are not set up on this server")
    if body.pipeline is None:
        found, where = kl.notifier.global_specs, "KUBELINE_NOTIFICATIONS"
    else:
        found, where = (await kl.store.get_pipeline(body.pipeline)).spec.notifications, f"pipeline {body.pipeline!r}"
    if body.index >= len(found):
        raise errors.NotFoundError(f"{where} has {len(found)} notification rule(s); there is no rule {body.index} "
                                   "(count from 0, as GET /api/v1/notifications/rules lists them)")
    spec = found[body.index]
    error = await kl.notifier.send_test(spec, pipeline=body.pipeline or "(global)")
    return TestOut(sent=not error, channel=spec.channel, target=notifications.masked(spec.target), error=error)
