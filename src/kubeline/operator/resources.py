"""The shapes of the ``Pipeline`` and ``PipelineRun`` custom resources (spec and status).

A ``Pipeline``'s spec *is* the folder spec (``domain.specs.PipelineSpec``, camelCase aliases as in
``pipeline.yaml``) plus where its files come from (``source``) and FlowMason's single ``schedule``
string. The CRD schemas in ``deploy/`` are generated from these models (``operator.crds``), so the
API server and the operator accept the same documents. Status models are written by the operator
only; they stay small (etcd objects are limited): outputs are summarised, logs stay in the store.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from kubeline.domain import specs

GROUP = "kubeline.dev"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"


class LocalRef(specs.Model):
    name: str = pydantic.Field(description="Name of the object in the resource's namespace.")
    optional: bool = pydantic.Field(False, description="A missing object is not an error.")


class GitSource(specs.Model):
    url: str = pydantic.Field(description="Repository URL that `git clone` accepts.")
    revision: str = pydantic.Field("HEAD", description="Branch, tag or commit.")
    path: str = pydantic.Field("", description="Folder of the pipeline inside the repository.")


class SourceSpec(specs.Model):
    """Where the pipeline's files (scripts, notebooks, requirements) come from."""

    inline: dict[str, str] | None = pydantic.Field(
        None, description="Files by relative path, e.g. {'clean.py': '...'}.")
    config_map: LocalRef | None = pydantic.Field(
        None, alias="configMap",
        description="A ConfigMap whose keys are file names ('__' stands for '/' in sub-folders).")
    git: GitSource | None = None

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        given = [k for k in ("inline", "config_map", "git") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("source needs exactly one of inline, configMap or git")
        return self


class PipelineResourceSpec(specs.PipelineSpec):
    """``Pipeline.spec``: the folder spec plus ``source`` and a single ``schedule`` (FlowMason)."""

    source: SourceSpec | None = None
    schedule: specs.Cron | None = pydantic.Field(
        None, description="Shorthand for schedules: [{cron: ...}] (UTC).")


class InputsSource(specs.Model):
    config_map_ref: LocalRef | None = pydantic.Field(None, alias="configMapRef")
    secret_ref: LocalRef | None = pydantic.Field(None, alias="secretRef")

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> InputsSource:
        if (self.config_map_ref is None) == (self.secret_ref is None):
            raise ValueError("inputsFrom entries need exactly one of configMapRef or secretRef")
        return self


class PipelineRunResourceSpec(specs.Model):
    """``PipelineRun.spec``: one run of a Pipeline in the same namespace."""

    pipeline_ref: specs.Name = pydantic.Field(alias="pipelineRef", description="Name of the Pipeline.")
    inputs: dict[str, Any] = pydantic.Field(default_factory=dict)
    inputs_from: list[InputsSource] = pydantic.Field(
        default_factory=list, alias="inputsFrom",
        description="Every key of these ConfigMaps/Secrets becomes an input; `inputs` win.")
    timeout: specs.Seconds | None = pydantic.Field(
        None, description="Seconds for the whole run; it is cancelled after that (phase TimedOut).")
    service_account_name: str | None = pydantic.Field(None, alias="serviceAccountName")
    node_selector: dict[str, str] = pydantic.Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = pydantic.Field(default_factory=list)
    cancel: bool = pydantic.Field(False, description="Set true to cancel the run.")


# status ---------------------------------------------------------------------------------------
Status = Literal["True", "False", "Unknown"]


class Condition(specs.Model):
    type: str
    status: Status
    reason: str = ""
    message: str = ""
    last_transition_time: str = pydantic.Field("", alias="lastTransitionTime")


class StageStatus(specs.Model):
    phase: str
    attempts: int = 0
    start_time: str | None = pydantic.Field(None, alias="startTime")
    completion_time: str | None = pydantic.Field(None, alias="completionTime")
    message: str = ""


class PipelineRunStatus(specs.Model):
    phase: str = "Pending"
    run_id: str | None = pydantic.Field(None, alias="runId")
    pipeline: str | None = None
    start_time: str | None = pydantic.Field(None, alias="startTime")
    completion_time: str | None = pydantic.Field(None, alias="completionTime")
    duration: str | None = None
    stages: dict[str, StageStatus] = pydantic.Field(default_factory=dict)
    outputs: dict[str, str] = pydantic.Field(
        default_factory=dict, description="Outputs as short JSON texts; the full values stay in Kubeline.")
    outputs_truncated: bool = pydantic.Field(False, alias="outputsTruncated")
    error: str = ""
    conditions: list[Condition] = pydantic.Field(default_factory=list)
    observed_generation: int | None = pydantic.Field(None, alias="observedGeneration")


class LastRun(specs.Model):
    name: str = ""
    run_id: str = pydantic.Field("", alias="runId")
    phase: str = ""
    time: str | None = None


class PipelineStatus(specs.Model):
    phase: str = "Pending"
    spec_hash: str = pydantic.Field("", alias="specHash")
    stages: int = 0
    last_run: LastRun | None = pydantic.Field(None, alias="lastRun")
    next_schedule: str | None = pydantic.Field(None, alias="nextSchedule")
    conditions: list[Condition] = pydantic.Field(default_factory=list)
    observed_generation: int | None = pydantic.Field(None, alias="observedGeneration")
