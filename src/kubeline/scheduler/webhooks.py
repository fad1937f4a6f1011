"""Webhook triggers: which run config a hook starts, signature and timestamp checks, the body.

``POST /api/v1/hooks/{pipeline}/{trigger}``: ``trigger`` is the pipeline's webhook key
(``triggers.webhook.key``, default ``default``) or a schedule's Fast-Flow ``webhook_key`` (the
run then uses that schedule's inputs and overrides). With ``triggers.webhook.secret`` set, the
sender signs the raw body: ``X-Kubeline-Signature: sha256=<hex HMAC-SHA256(secret, body)>``
(compared in constant time) and sends ``X-Kubeline-Timestamp`` (Unix seconds) within
``TOLERANCE``. Replays are refused by remembering each delivery (``X-Kubeline-Delivery`` or,
without it, the signature) in the database for the tolerance window, so that holds across
replicas; so does the per-trigger rate limit (``triggers.webhook.rate_limit`` per minute).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from typing import Any

from kubeline.domain import errors, runs, specs

DEFAULT_KEY = "default"
TOLERANCE = 300.0  # seconds a signed request's timestamp may differ from our clock
SIGNATURE_HEADER = "X-Kubeline-Signature"
TIMESTAMP_HEADER = "X-Kubeline-Timestamp"
DELIVERY_HEADER = "X-Kubeline-Delivery"


class SignatureError(errors.KubelineError):
    """The request is not signed with the trigger's secret (answered with 401)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Target:
    """What a hook starts: the pipeline, with a schedule's run config or without."""

    pipeline: runs.Pipeline
    trigger: str
    schedule_id: str | None
    webhook: specs.WebhookSpec

    @property
    def hook_key(self) -> str:
        return f"{self.pipeline.name}/{self.trigger}"


def resolve(pipeline: runs.Pipeline, trigger: str) -> Target:
    """The hook's target, or ``NotFoundError`` saying which hooks the pipeline has."""
    spec = pipeline.spec
    webhook = spec.triggers.webhook
    if not spec.enabled:
        raise errors.NotFoundError(f"pipeline {pipeline.name!r} is disabled: its webhooks do not start runs")
    if webhook is not None and webhook.enabled and trigger == (webhook.key or DEFAULT_KEY):
        return Target(pipeline=pipeline, trigger=trigger, schedule_id=None, webhook=webhook)
    for schedule_id, schedule in zip(spec.schedule_ids(), spec.schedules, strict=True):
        if schedule.webhook_key and trigger == schedule.webhook_key:
            return Target(pipeline=pipeline, trigger=trigger, schedule_id=schedule_id,
                          webhook=webhook or specs.WebhookSpec())
    known = available(pipeline)
    raise errors.NotFoundError(
        f"pipeline {pipeline.name!r} has no enabled webhook {trigger!r}"
        + (f" (its webhooks: {', '.join(known)})" if known else
           " (enable one with 'triggers: {webhook: {enabled: true}}' in its pipeline.yaml)"))


def available(pipeline: runs.Pipeline) -> list[str]:
    webhook = pipeline.spec.triggers.webhook
    keys = [webhook.key or DEFAULT_KEY] if webhook is not None and webhook.enabled else []
    return keys + [s.webhook_key for s in pipeline.spec.schedules if s.webhook_key]


def sign(secret: str, body: bytes) -> str:
    """The signature header value a sender computes (also used by tests and the client)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(*, secret: str, body: bytes, signature: str | None, timestamp: str | None,
           now: float | None = None, tolerance: float = TOLERANCE) -> None:
    """Raise ``SignatureError`` unless ``signature`` signs ``body`` and ``timestamp`` is recent."""
    if not signature:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header: sign the body with HMAC-SHA256 and the "
                             "webhook's secret, as 'sha256=<hex>'")
    if not hmac.compare_digest(signature.strip().encode(), sign(secret, body).encode()):
        raise SignatureError(f"{SIGNATURE_HEADER} does not match the body: sign the exact raw body with "
                             "HMAC-SHA256 and the webhook's secret, as 'sha256=<hex>'")
    check_timestamp(timestamp, now=now, tolerance=tolerance, required=True)


def check_timestamp(timestamp: str | None, *, now: float | None = None, tolerance: float = TOLERANCE,
                    required: bool) -> None:
    if timestamp is None:
        if required:
            raise SignatureError(f"missing {TIMESTAMP_HEADER} header: send the current Unix time in seconds")
        return
    try:
        sent = float(timestamp)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} {timestamp!r} is not a Unix time in seconds") from None
    skew = abs((time.time() if now is None else now) - sent)
    if skew > tolerance:
        raise SignatureError(f"{TIMESTAMP_HEADER} is {skew:.0f}s away from the server's clock (tolerance "
                             f"{tolerance:.0f}s): send the current time, and check the sender's clock")


def inputs_of(body: bytes) -> dict[str, Any]:
    """The run inputs: the JSON object in the body (an empty body means no inputs)."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.InvalidInputError(f"the body is not JSON ({exc}): send a JSON object of run inputs") from None
    if not isinstance(value, dict):
        raise errors.InvalidInputError(
            f"the body is a JSON {type(value).__name__}, expected an object of run inputs, "
            'e.g. {"day": "2024-01-01"}')
    return value


def delivery_id(*, header: str | None, signature: str | None, body: bytes) -> str:
    """What identifies a delivery for replay protection."""
    if header:
        return "id:" + header[:200]
    if signature:
        return "sig:" + signature.strip()[:200]
    return "body:" + hashlib.sha256(body).hexdigest() + f":{time.time_ns()}"
