"""Retention policies: how long runs, logs and artifacts are kept (pure).

A pipeline's ``retention`` overrides the server's (``KUBELINE_RETENTION``) field by field; unset
fields keep everything. Only finished runs are ever candidates: a queued or running run, its
logs and its artifacts are never touched.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pydantic

Days = float


class RetentionPolicy(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    max_age_days: Days | None = pydantic.Field(None, gt=0, description="Finished runs older than this go.")
    max_runs: int | None = pydantic.Field(None, ge=0, description="Finished runs kept per pipeline (newest).")
    logs_max_age_days: Days | None = pydantic.Field(None, gt=0, description="Logs of older runs go (runs stay).")
    artifacts_max_age_days: Days | None = pydantic.Field(None, gt=0, description="Artifacts of older runs go.")

    def over(self, base: RetentionPolicy) -> RetentionPolicy:
        """This policy with the unset fields taken from ``base``."""
        return RetentionPolicy(**{name: getattr(self, name) if getattr(self, name) is not None
                                  else getattr(base, name) for name in type(self).model_fields})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finished:
    id: str
    finished_at: dt.datetime


@dataclasses.dataclass(frozen=True, kw_only=True)
class Decision:
    delete_runs: list[tuple[str, str]]  # (run id, why)
    delete_logs: list[tuple[str, str]]
    delete_artifacts: list[tuple[str, str]]


def decide(policy: RetentionPolicy, finished: list[Finished], *, now: dt.datetime) -> Decision:
    """What goes for one pipeline; ``finished`` are its finished runs, newest first."""
    runs_out: list[tuple[str, str]] = []
    kept: list[Finished] = []
    for position, run in enumerate(finished):
        age = (now - run.finished_at).total_seconds() / 86400
        if policy.max_runs is not None and position >= policy.max_runs:
            runs_out.append((run.id, f"beyond the newest {policy.max_runs} runs (max_runs)"))
        elif policy.max_age_days is not None and age > policy.max_age_days:
            runs_out.append((run.id, f"finished {age:.1f} days ago (max_age_days {policy.max_age_days:g})"))
        else:
            kept.append(run)

    def older(limit: Days | None, what: str) -> list[tuple[str, str]]:
        if limit is None:
            return []
        return [(r.id, f"{what} of a run finished {(now - r.finished_at).total_seconds() / 86400:.1f} days ago "
                       f"({what}_max_age_days {limit:g})")
                for r in kept if (now - r.finished_at).total_seconds() / 86400 > limit]
    return Decision(delete_runs=runs_out, delete_logs=older(policy.logs_max_age_days, "logs"),
                    delete_artifacts=older(policy.artifacts_max_age_days, "artifacts"))
