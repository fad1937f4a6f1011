"""Pipeline specs: the one source of truth for ``pipeline.yaml``/``pipeline.json``, the CRDs and the API.

Every model forbids unknown fields so a typo is reported instead of silently ignored. Field names
are snake_case; the camelCase names used by Kubernetes-style specs (``dependsOn``, ``componentType``,
``inputMapping``, ``serviceAccountName`` ...) are accepted as aliases. Fast-Flow's flat
``pipeline.json`` keys are folded into these models by ``domain.fastflow`` before validation.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import zoneinfo
from typing import Annotated, Any, Literal

import croniter
import pydantic

from kubeline.domain import notifications as notifications_
from kubeline.domain import quantities
from kubeline.domain import retention as retention_

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
STAGE_ID_PATTERN = r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

Name = Annotated[str, pydantic.StringConstraints(pattern=NAME_PATTERN)]
StageId = Annotated[str, pydantic.StringConstraints(pattern=STAGE_ID_PATTERN)]
EnvName = Annotated[str, pydantic.StringConstraints(pattern=ENV_NAME_PATTERN)]
Seconds = Annotated[float, pydantic.Field(ge=0)]


class Model(pydantic.BaseModel):
    """Base: immutable, unknown fields forbidden, aliases and field names both accepted."""

    model_config = pydantic.ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, validate_default=True
    )


class KeyRef(Model):
    name: str = pydantic.Field(description="Name of the Kubernetes Secret or ConfigMap.")
    key: str = pydantic.Field(description="Key inside it.")
    optional: bool = False


class EnvSource(Model):
    secret_key_ref: KeyRef | None = pydantic.Field(None, alias="secretKeyRef")
    config_map_key_ref: KeyRef | None = pydantic.Field(None, alias="configMapKeyRef")

    @pydantic.model_validator(mode="after")
    def _exactly_one(self) -> EnvSource:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError("valueFrom needs exactly one of secretKeyRef or configMapKeyRef")
        return self


class EnvFrom(Model):
    """An env value taken from a Kubernetes Secret/ConfigMap (used by the Kubernetes executor)."""

    value_from: EnvSource = pydantic.Field(alias="valueFrom")


EnvValue = str | EnvFrom


def _normalise_env(value: Any) -> Any:
    """Accept ``{NAME: value}`` or the Kubernetes list ``[{name, value | valueFrom}]``."""
    if isinstance(value, list):
        result: dict[str, Any] = {}
        for item in value:
            if not isinstance(item, dict) or "name" not in item:
                raise ValueError("each env entry needs a 'name' and a 'value' or 'valueFrom'")
            rest = {k: v for k, v in item.items() if k != "name"}
            result[str(item["name"])] = rest.get("value", "") if "valueFrom" not in rest else rest
        value = result
    if isinstance(value, dict):
        return {
            k: (_scalar_to_str(v) if not isinstance(v, dict) else v) for k, v in value.items()
        }
    return value


def _scalar_to_str(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


Env = Annotated[dict[EnvName, EnvValue], pydantic.BeforeValidator(_normalise_env)]


class ResourceAmounts(Model):
    cpu: str | None = pydantic.Field(None, description="CPU quantity: '100m', '0.5', '2'.")
    memory: str | None = pydantic.Field(None, description="Memory quantity: '256Mi', '1Gi'.")

    @pydantic.field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, value: Any) -> Any:
        if value is None:
            return None
        quantities.cpu_cores(value)
        return str(value)

    @pydantic.field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> Any:
        if value is None:
            return None
        quantities.memory_bytes(value)
        return str(value)

    @property
    def cpu_cores(self) -> float | None:
        return None if self.cpu is None else quantities.cpu_cores(self.cpu)

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else quantities.memory_bytes(self.memory)


class Resources(Model):
    requests: ResourceAmounts = ResourceAmounts()
    limits: ResourceAmounts = pydantic.Field(
        ResourceAmounts(), description="Hard limits: the attempt is stopped when it exceeds them."
    )
    soft_limits: ResourceAmounts = pydantic.Field(
        ResourceAmounts(), description="Soft limits: a warning is logged when exceeded, never a kill."
    )

    @pydantic.model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        for kind in ("cpu", "memory"):
            request = getattr(self.requests, f"{'cpu_cores' if kind == 'cpu' else 'memory_bytes'}")
            limit = getattr(self.limits, f"{'cpu_cores' if kind == 'cpu' else 'memory_bytes'}")
            if request is not None and limit is not None and request > limit:
                raise ValueError(
                    f"requests.{kind} ({getattr(self.requests, kind)}) is above "
                    f"limits.{kind} ({getattr(self.limits, kind)})"
                )
        return self

    def merged(self, override: Resources | None) -> Resources:
        """This, with every amount that ``override`` sets replaced."""
        if override is None:
            return self
        parts: dict[str, ResourceAmounts] = {}
        for part in ("requests", "limits", "soft_limits"):
            base, top = getattr(self, part), getattr(override, part)
            parts[part] = ResourceAmounts(cpu=top.cpu or base.cpu, memory=top.memory or base.memory)
        return Resources(**parts)


class RetryStrategy(enum.StrEnum):
    FIXED = "fixed"
    EXPONENTIAL = "exponential"
    CUSTOM = "custom"


class RetryPolicy(Model):
    attempts: int = pydantic.Field(
        0, ge=0, le=100, description="Retries after the first failure (0 = run once)."
    )
    strategy: RetryStrategy = RetryStrategy.FIXED
    delay: Seconds = pydantic.Field(10, description="Seconds before the first retry (fixed/exponential).")
    max_delay: Seconds = pydantic.Field(300, description="Cap for exponential delays.")
    multiplier: float = pydantic.Field(2.0, ge=1)
    delays: list[Seconds] = pydantic.Field(
        default_factory=list, description="custom strategy: delay before each retry, in order."
    )
    on: list[Literal["failed", "timed_out", "oom"]] = pydantic.Field(
        default_factory=lambda: ["failed", "timed_out", "oom"],  # type: ignore[arg-type]
        description="Which kinds of failure are retried.",
    )

    @pydantic.model_validator(mode="before")
    @classmethod
    def _from_int(cls, value: Any) -> Any:
        return {"attempts": value} if isinstance(value, int) and not isinstance(value, bool) else value

    @pydantic.model_validator(mode="after")
    def _custom_has_delays(self) -> RetryPolicy:
        if self.strategy is RetryStrategy.CUSTOM and not self.delays and self.attempts:
            raise ValueError("strategy 'custom' needs 'delays', e.g. delays: [5, 30, 120]")
        return self


class InputType(enum.StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    OBJECT = "object"
    ARRAY = "array"
    ANY = "any"


class InputSpec(Model):
    type: InputType = InputType.STRING
    default: Any = None
    required: bool | None = pydantic.Field(
        None, description="Defaults to true when no default is given."
    )
    description: str = ""
    enum: list[Any] | None = None

    @pydantic.model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str) and value in InputType.__members__.values():
            return {"type": value}
        return value

    @property
    def is_required(self) -> bool:
        return self.default is None if self.required is None else self.required


class CatchUp(enum.StrEnum):
    NONE = "none"
    LATEST = "latest"
    ALL = "all"


def validate_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {expression!r} has {len(fields)} fields; expected 5: minute hour day-of-month month day-of-week"
        )
    if not croniter.croniter.is_valid(expression):
        raise ValueError(f"cron {expression!r} is not valid, e.g. '0 2 * * *' is every day at 02:00")
    return expression


def validate_timezone(name: str) -> str:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'") from exc
    return name


Cron = Annotated[str, pydantic.AfterValidator(validate_cron)]
TimeZone = Annotated[str, pydantic.AfterValidator(validate_timezone)]


class ScheduleSpec(Model):
    id: Name | None = pydantic.Field(None, description="Stable name; defaults to 'schedule-N'.")
    cron: Cron | None = None
    interval: float | None = pydantic.Field(None, gt=0, description="Seconds between fires.")
    at: dt.datetime | None = pydantic.Field(None, description="One-off run at this time.")
    timezone: TimeZone = "UTC"
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    enabled: bool = True
    inputs: dict[str, Any] = pydantic.Field(default_factory=dict)
    env: Env = pydantic.Field(default_factory=dict)
    encrypted_env: dict[EnvName, str] = pydantic.Field(default_factory=dict)
    timeout: Seconds | None = None
    retries: RetryPolicy | None = None
    resources: Resources | None = None
    webhook_key: str | None = None
    catchup: CatchUp = CatchUp.LATEST
    catchup_limit: int = pydantic.Field(10, ge=1, le=10_000)

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> ScheduleSpec:
        kinds = [k for k in ("cron", "interval", "at") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a schedule needs exactly one of 'cron', 'interval' or 'at'"
                + (f" (found {', '.join(kinds)})" if kinds else "")
            )
        if self.start and self.end and self.end <= self.start:
            raise ValueError("schedule 'end' must be after 'start'")
        return self


class WebhookSpec(Model):
    enabled: bool = True
    key: str | None = pydantic.Field(
        None, description="URL key of the hook (Fast-Flow webhook_key); defaults to 'default'."
    )
    secret: str | None = pydantic.Field(
        None, description="Name of the stored secret used to verify HMAC-SHA256 signatures."
    )
    path: str | None = None
    rate_limit: int = pydantic.Field(60, ge=1, description="Requests per minute accepted.")


class TriggersSpec(Model):
    webhook: WebhookSpec | None = None


class DownstreamSpec(Model):
    pipeline: Name
    on: Literal["success", "failure", "always"] = "success"
    route: str | None = pydantic.Field(
        None, description="Fire only when the run selected this route (written to $KUBELINE_ROUTE_FILE)."
    )
    inputs: dict[str, Any] = pydantic.Field(default_factory=dict)
    schedule: str | None = pydantic.Field(None, description="Run config (schedule id) to use.")


class KubernetesSpec(Model):
    namespace: str | None = None
    service_account: str | None = pydantic.Field(None, alias="serviceAccountName")
    node_selector: dict[str, str] = pydantic.Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = pydantic.Field(default_factory=list)
    image: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = pydantic.Field(
        None, alias="imagePullPolicy"
    )
    pool: str | None = pydantic.Field(
        None, description="executor kubernetes-pool: the worker pool to run on (default: the first that serves "
                          "the pipeline).")
    code_path: str | None = pydantic.Field(
        None,
        alias="codePath",
        description="The pipeline folder is baked into the image at this absolute path: no code "
        "is sent to the pod, stages run there (read-only).",
    )

    @pydantic.field_validator("code_path")
    @classmethod
    def _absolute_code_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(
                f"{value!r} is not an absolute path: give where the folder is in the "
                "image, e.g. codePath: /opt/app/pipelines/sales"
            )
        return value


class CellPolicy(Model):
    """Retries of one notebook code cell, re-run in the same kernel (Fast-Flow's cell policy)."""

    retries: int = pydantic.Field(0, ge=0, le=20)
    delay_seconds: Seconds = pydantic.Field(1, description="Seconds before a retry (Fast-Flow's default: 1).")


def _cells_from_list(value: Any) -> Any:
    """Fast-Flow's list form: item *i* is the policy of the *i*-th code cell."""
    if isinstance(value, list):
        return {i: item for i, item in enumerate(value) if item is not None}
    if not isinstance(value, dict):
        raise ValueError("cells must be a list (item i applies to the i-th code cell) or a mapping of "
                         "code-cell index to {retries, delay_seconds}")
    for key in value:
        if not re.fullmatch(r"\d+", str(key)):
            raise ValueError(f"cells key {key!r} is not a code-cell index (0, 1, 2 ...; markdown cells "
                             "are not counted)")
    return value


_CELL_SCHEMA = CellPolicy.model_json_schema()
Cells = Annotated[
    dict[int, CellPolicy],
    pydantic.BeforeValidator(_cells_from_list),
    pydantic.WithJsonSchema({
        "anyOf": [{"type": "array", "items": {"anyOf": [_CELL_SCHEMA, {"type": "null"}]}},
                  {"type": "object", "additionalProperties": _CELL_SCHEMA, "propertyNames": {"pattern": r"^\d+$"}}],
        "description": "Notebook cell policies: a list whose item i applies to the i-th code cell "
        "(markdown cells not counted), or a mapping {i: policy} with the same indexes; a cell's "
        "metadata 'fastflow' overrides its entry.",
    }),
]


class RestartPolicy(Model):
    """Long-running (daemon) pipelines: restart after a crash and/or periodically."""

    on_crash: bool = False
    cooldown: Seconds = 60
    interval: Seconds | Cron | None = pydantic.Field(None, description="Seconds, or a cron string (Fast-Flow).")


ExecutorName = Literal["local", "local-warm", "docker", "kubernetes", "kubernetes-pool"]


class StageSpec(Model):
    id: StageId
    type: str = pydantic.Field("python", alias="componentType")
    name: str | None = None
    description: str = ""
    file: str | None = pydantic.Field(None, description="Script or notebook, relative to the folder.")
    command: str | list[str] | None = pydantic.Field(None, description="shell stages: the command.")
    config: dict[str, Any] = pydantic.Field(default_factory=dict)
    depends_on: list[StageId] = pydantic.Field(default_factory=list, alias="dependsOn")
    inputs: dict[str, Any] = pydantic.Field(
        default_factory=dict,
        alias="inputMapping",
        description="Values or expressions: '${inputs.day}', '${stages.fetch.outputs.body}'.",
    )
    timeout: Seconds | None = None
    retries: RetryPolicy | None = None
    resources: Resources | None = None
    env: Env = pydantic.Field(default_factory=dict)
    secrets: list[EnvName] = pydantic.Field(default_factory=list)
    executor: ExecutorName | None = None
    requirements: str | None = None
    python_version: str | None = None
    kubernetes: KubernetesSpec | None = None
    cells: Cells = pydantic.Field(default_factory=dict)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _accept_both_type_names(cls, value: Any) -> Any:
        if isinstance(value, dict) and "type" in value and "componentType" in value:
            raise ValueError("give 'type' or 'componentType', not both")
        return value

    @pydantic.field_validator("depends_on", mode="before")
    @classmethod
    def _single_dependency(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class PipelineSpec(Model):
    """A pipeline: settings plus a DAG of stages. A folder with only main.py has one stage."""

    name: Name | None = pydantic.Field(None, description="Defaults to the folder name.")
    description: str = ""
    enabled: bool = pydantic.Field(True, description="A disabled pipeline is listed, never scheduled.")
    tags: list[str] = pydantic.Field(default_factory=list)
    type: Literal["script", "notebook"] | None = pydantic.Field(
        None, description="Single-stage pipelines: main.py (script) or main.ipynb; inferred from files."
    )
    python_version: str = pydantic.Field("3.11", pattern=r"^3\.\d{1,2}(\.\d{1,2})?$")
    requirements: str | None = pydantic.Field(
        None, description="Requirements file; default requirements.txt.lock, else requirements.txt."
    )
    timeout: Seconds | None = pydantic.Field(
        None, description="Seconds per stage attempt; 0 or unset = no limit."
    )
    retries: RetryPolicy = RetryPolicy()
    resources: Resources = Resources()
    max_instances: int | None = pydantic.Field(None, ge=1, description="Concurrent runs; more wait.")
    parallelism: int | None = pydantic.Field(None, ge=1, description="Stages of one run at once.")
    env: Env = pydantic.Field(default_factory=dict)
    encrypted_env: dict[EnvName, str] = pydantic.Field(
        default_factory=dict, description="Values are Fernet ciphertext made with the server key."
    )
    secrets: list[EnvName] = pydantic.Field(default_factory=list)
    schedules: list[ScheduleSpec] = pydantic.Field(default_factory=list)
    triggers: TriggersSpec = TriggersSpec()
    downstream: list[DownstreamSpec] = pydantic.Field(default_factory=list)
    inputs: dict[str, InputSpec] = pydantic.Field(default_factory=dict)
    outputs: list[str] = pydantic.Field(
        default_factory=list, description="Stage outputs that form the run's outputs ('stage.key')."
    )
    stages: list[StageSpec] = pydantic.Field(default_factory=list)
    executor: ExecutorName | None = None
    kubernetes: KubernetesSpec = KubernetesSpec()
    restart: RestartPolicy = RestartPolicy()
    cells: Cells = pydantic.Field(default_factory=dict)
    notifications: list[notifications_.NotificationSpec] = pydantic.Field(
        default_factory=list, description="Where run events go: email, slack, teams or a signed webhook.")
    expected_duration: Seconds | None = pydantic.Field(
        None, description="Seconds a run should take; a 'slow' notification fires once it runs longer.")
    notify_rate_limit: int = pydantic.Field(
        10, ge=1, description="Notifications per channel per hour; more are recorded as suppressed.")
    retention: retention_.RetentionPolicy = pydantic.Field(
        retention_.RetentionPolicy(), description="Runs/logs/artifacts kept; unset fields use the server's.")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _fastflow(cls, value: Any) -> Any:
        from kubeline.domain import fastflow  # a sibling in the pure core; imported late to avoid a cycle

        return fastflow.to_native(value) if isinstance(value, dict) else value

    @pydantic.model_validator(mode="after")
    def _unique_ids(self) -> PipelineSpec:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.id in seen:
                raise ValueError(f"stage id {stage.id!r} is used twice; ids must be unique")
            seen.add(stage.id)
        schedule_ids = [s.id for s in self.schedules if s.id]
        if len(schedule_ids) != len(set(schedule_ids)):
            raise ValueError("schedule ids must be unique")
        return self

    def schedule_ids(self) -> list[str]:
        return [s.id or f"schedule-{i + 1}" for i, s in enumerate(self.schedules)]


def json_schema() -> dict[str, Any]:
    """JSON Schema of ``pipeline.yaml``/``pipeline.json``, Fast-Flow keys included."""
    from kubeline.domain import fastflow

    schema = PipelineSpec.model_json_schema(by_alias=False)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Kubeline pipeline"
    schema["properties"].update(fastflow.schema_properties())
    return schema


_TEMPLATE = re.compile(r"\$\{")


def has_expression(value: Any) -> bool:
    """True when a config value contains a ``${...}`` expression anywhere."""
    if isinstance(value, str):
        return bool(_TEMPLATE.search(value))
    if isinstance(value, dict):
        return any(has_expression(v) for v in value.values())
    if isinstance(value, list):
        return any(has_expression(v) for v in value)
    return False
