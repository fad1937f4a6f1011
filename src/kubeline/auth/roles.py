"""Roles, per-pipeline grants and the ``Principal`` a request acts as.

Three roles, each including the one below it: ``viewer`` reads everything but secret values,
``operator`` also runs, cancels and retries runs and enables or disables schedules, ``admin``
also manages secrets, users, tokens and settings. A user has one global role; grants raise it
for some pipelines (by name, or by a tag of the pipeline). An API token acts with its own role,
never above its owner's current one, and may be limited to some pipelines (its scope): then it
can touch nothing that is not one of those pipelines.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from typing import Literal

TAG_PREFIX = "tag:"


class Role(enum.IntEnum):
    viewer = 1
    operator = 2
    admin = 3

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls[value]
        except KeyError:
            raise ValueError(f"role {value!r} is not one of {', '.join(r.name for r in cls)}") from None


@dataclasses.dataclass(frozen=True)
class Grant:
    """``role`` on the pipelines ``target`` names: a pipeline name, or ``tag:NAME``."""

    target: str
    role: Role

    def matches(self, pipeline: str, tags: Iterable[str]) -> bool:
        return matches(self.target, pipeline, tags)


def matches(target: str, pipeline: str, tags: Iterable[str]) -> bool:
    if target.startswith(TAG_PREFIX):
        return target[len(TAG_PREFIX):] in set(tags)
    return target == pipeline


Kind = Literal["user", "token", "insecure"]


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a request acts as. ``scope`` None: every pipeline; else pipeline names / ``tag:NAME``."""

    name: str
    kind: Kind
    role: Role
    user_id: str | None = None
    token_id: str | None = None
    grants: tuple[Grant, ...] = ()
    scope: tuple[str, ...] | None = None
    must_change_password: bool = False
    session_id: str | None = None

    @property
    def scoped(self) -> bool:
        return self.scope is not None

    def in_scope(self, pipeline: str, tags: Iterable[str] = ()) -> bool:
        tags = list(tags)
        return self.scope is None or any(matches(t, pipeline, tags) for t in self.scope)

    def role_for(self, pipeline: str, tags: Iterable[str] = ()) -> Role | None:
        """The role on one pipeline: the global role raised by matching grants; None out of scope."""
        tags = list(tags)
        if not self.in_scope(pipeline, tags):
            return None
        raised = [g.role for g in self.grants if g.matches(pipeline, tags)]
        return max([self.role, *raised])

    def can(self, role: Role, pipeline: str, tags: Iterable[str] = ()) -> bool:
        found = self.role_for(pipeline, tags)
        return found is not None and found >= role

    @property
    def actor(self) -> str:
        """How the audit log names this principal."""
        return {"user": f"user:{self.name}", "token": f"token:{self.name}", "insecure": "anonymous"}[self.kind]


INSECURE = Principal(name="anonymous", kind="insecure", role=Role.admin)
