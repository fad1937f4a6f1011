"""API bodies of a pipeline's environment: its state in pipeline lists, its venvs and packages.

Kept apart from ``schemas`` (already the largest module of the API); mapped explicitly from
``environments.service`` values.
"""

from __future__ import annotations

from typing import Literal

import pydantic

from kubeline.environments import service

EnvState = Literal["ready", "building", "pending", "failed", "missing", "none"]
_STATE_HELP = ("ready: built; building: being built (pre-heating or a run); pending: queued for pre-heating; "
               "failed: the last build failed (see reason); missing: not built yet (built by the first run); "
               "none: no stage runs in a venv on this server (built-in components, or docker/kubernetes "
               "executors, which build theirs in the container)")


class EnvironmentSummary(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [
        {"state": "failed", "reason": "pip install of requirements.txt failed: No solution found when resolving "
                                      "dependencies: Because nonexistent-pkg was not found in the package registry"},
        {"state": "ready", "reason": None}]})

    state: EnvState = pydantic.Field(description=_STATE_HELP)
    reason: str | None = pydantic.Field(None, description="Why the build failed (state failed), else null.")

    @classmethod
    def of(cls, found: service.EnvironmentState) -> EnvironmentSummary:
        return cls(state=found.state, reason=found.reason)


class PackageOut(pydantic.BaseModel):
    name: str
    version: str


class VenvOut(pydantic.BaseModel):
    stages: list[str] = pydantic.Field(description="The stages that run in this venv.")
    python_version: str = pydantic.Field(description="As the spec asks (a version prefix, e.g. 3.11).")
    requirements: str | None = pydantic.Field(description="The requirements file (a .lock is installed exactly).")
    extra_packages: list[str] = pydantic.Field(description="Added by Kubeline (papermill for notebooks).")
    state: EnvState
    reason: str | None = None
    python: str | None = pydantic.Field(None, description="The interpreter's full version, when ready.")
    packages: list[PackageOut] = pydantic.Field(
        default_factory=list, description="Installed packages and versions, when ready (the resolved set).")


class EnvironmentOut(EnvironmentSummary):
    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{
        "state": "ready", "reason": None, "venvs": [{
            "stages": ["main"], "python_version": "3.11", "requirements": "requirements.txt.lock",
            "extra_packages": [], "state": "ready", "reason": None, "python": "3.11.7",
            "packages": [{"name": "pandas", "version": "2.2.3"}, {"name": "numpy", "version": "2.1.3"}]}]}]})

    venvs: list[VenvOut]
