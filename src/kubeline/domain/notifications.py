"""Notifications: which run events go where, and the message they carry (pure).

A pipeline's ``notifications`` (and the server's global ones) name a channel, its target and the
events: ``failure``, ``success``, ``recovery`` (the first success after a failure) and ``slow``
(a run still running after the pipeline's ``expected_duration``). Secrets (webhook URLs, HMAC
keys) are referenced by the name of a stored secret, never written in the spec.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import urllib.parse
from typing import Any, Literal

import pydantic

Event = Literal["failure", "success", "recovery", "slow", "script"]
EVENTS: tuple[str, ...] = ("failure", "success", "recovery", "slow")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class NotificationSpec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    channel: Literal["email", "slack", "teams", "webhook"]
    on: list[Literal["failure", "success", "recovery", "slow"]] = pydantic.Field(
        default_factory=lambda: ["failure"],  # type: ignore[arg-type]
        description="Events that notify (script notices always do).")
    to: list[str] = pydantic.Field(default_factory=list, description="email: recipients.")
    url: str | None = pydantic.Field(None, description="slack/teams/webhook: the URL (prefer url_secret).")
    url_secret: str | None = pydantic.Field(None, description="Stored secret holding the URL.")
    secret: str | None = pydantic.Field(None, description="webhook: stored secret signing the body (HMAC-SHA256).")

    @pydantic.model_validator(mode="after")
    def _target(self) -> NotificationSpec:
        if self.channel == "email":
            if not self.to:
                raise ValueError("an email notification needs 'to: [address, ...]'")
            bad = [a for a in self.to if not _EMAIL.match(a)]
            if bad:
                raise ValueError(f"not an email address: {', '.join(bad)}")
        elif (self.url is None) == (self.url_secret is None):
            raise ValueError(f"a {self.channel} notification needs exactly one of 'url' or 'url_secret'")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"{self.url!r} is not an http(s) URL")
        return self

    @property
    def target(self) -> str:
        """What identifies the destination in records (never a secret value)."""
        if self.channel == "email":
            return ",".join(self.to)
        return f"secret:{self.url_secret}" if self.url_secret else _without_query(self.url or "")


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def masked(target: str) -> str:
    """A target as the API shows it: an http(s) URL keeps its scheme and host only, since incoming
    webhook URLs (Slack, Teams) carry their secret in the path; recipients and ``secret:NAME`` stay."""
    parts = urllib.parse.urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return target
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    base = f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"
    return f"{base}/***" if parts.path.strip("/") or parts.query else base


def events_for(*, state: str, previous: str | None) -> list[str]:
    """Events of a run that ended in ``state``; ``previous`` is the pipeline's run before it."""
    if state == "succeeded":
        return ["success", "recovery"] if previous in ("failed", "timed_out") else ["success"]
    if state in ("failed", "timed_out"):
        return ["failure"]
    return []


@dataclasses.dataclass(frozen=True, kw_only=True)
class Message:
    event: str
    pipeline: str
    run_id: str
    state: str
    link: str
    title: str
    reason: str = ""
    failed_stage: str | None = None
    log_tail: list[str] = dataclasses.field(default_factory=list)
    git_commit: str | None = None
    at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def text(self) -> str:
        lines = [self.title, f"Run: {self.link}"]
        if self.failed_stage:
            lines.append(f"Failed stage: {self.failed_stage}")
        if self.reason:
            lines.append(f"Reason: {self.reason}")
        if self.git_commit:
            lines.append(f"Commit: {self.git_commit[:12]}")
        if self.log_tail:
            lines += ["", "Last log lines:", *self.log_tail]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {"event": self.event, "pipeline": self.pipeline, "run_id": self.run_id, "state": self.state,
                "link": self.link, "title": self.title, "reason": self.reason, "failed_stage": self.failed_stage,
                "log_tail": self.log_tail, "git_commit": self.git_commit, "at": self.at.isoformat()}


def title(*, event: str, pipeline: str, run_id: str, state: str, detail: str = "") -> str:
    words = {"failure": f"{pipeline}: run {run_id} {state.replace('_', ' ')}",
             "success": f"{pipeline}: run {run_id} succeeded",
             "recovery": f"{pipeline}: recovered, run {run_id} succeeded after a failure",
             "slow": f"{pipeline}: run {run_id} is still running after its expected duration",
             "script": f"{pipeline}: run {run_id}: {detail}"}
    return words.get(event, f"{pipeline}: run {run_id}: {event}")


def backoff(attempt: int) -> float:
    """Seconds before delivery attempt ``attempt + 1`` (5 s, 30 s, 2 min, 10 min)."""
    return [5.0, 30.0, 120.0, 600.0][min(attempt - 1, 3)]


MAX_ATTEMPTS = 5
