"""Fast-Flow ``pipeline.json`` compatibility: its flat keys folded into Kubeline's native spec.

Teams migrating from Fast-Flow keep their folders unmodified, so every Fast-Flow key listed in
``shared/compat/fastflow-pipeline-json.md`` is accepted and mapped here, before pydantic
validates the native models. A key given both ways (``retries`` and ``retry_attempts``) is an
error rather than a silent pick.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from kubeline.domain import quantities

_STRATEGIES = {"exponential_backoff": "exponential", "fixed_delay": "fixed", "custom_schedule": "custom"}


class _RetryStrategy(pydantic.BaseModel):
    type: Literal["exponential_backoff", "fixed_delay", "custom_schedule"]
    initial_delay: float | None = None
    max_delay: float | None = None
    multiplier: float | None = None
    delay: float | None = None
    delays: list[float] | None = None


class _Downstream(pydantic.BaseModel):
    pipeline: str
    on_success: bool = True
    on_failure: bool = False
    on_route: str | None = None
    run_config_id: str | None = None


class FastFlowFields(pydantic.BaseModel):
    """The Fast-Flow keys; documented in the JSON schema, folded into native fields."""

    cpu_hard_limit: float | None = pydantic.Field(
        None, description="Fast-Flow: CPU cores (use resources.limits.cpu)."
    )
    mem_hard_limit: str | None = pydantic.Field(
        None, description="Fast-Flow: '512m', '1g' (use resources.limits.memory)."
    )
    cpu_soft_limit: float | None = pydantic.Field(None, description="Fast-Flow: warn above these cores.")
    mem_soft_limit: str | None = pydantic.Field(None, description="Fast-Flow: warn above this memory.")
    retry_attempts: int | None = pydantic.Field(None, description="Fast-Flow: extra attempts (use retries.attempts).")
    retry_strategy: _RetryStrategy | None = pydantic.Field(None, description="Fast-Flow retry strategy.")
    default_env: dict[str, str] | None = pydantic.Field(None, description="Fast-Flow: use env.")
    schedule_cron: str | None = pydantic.Field(None, description="Fast-Flow: one cron schedule.")
    schedule_interval_seconds: float | None = pydantic.Field(None, description="Fast-Flow: one interval schedule.")
    schedule_start: str | None = None
    schedule_end: str | None = None
    run_once_at: str | None = pydantic.Field(None, description="Fast-Flow: one-off run (ISO 8601).")
    webhook_key: str | None = pydantic.Field(None, description="Fast-Flow: webhook key.")
    restart_on_crash: bool | None = None
    restart_cooldown: float | None = None
    restart_interval: float | None = None
    downstream_triggers: list[_Downstream] | None = pydantic.Field(None, description="Fast-Flow: use downstream.")


def schema_properties() -> dict[str, Any]:
    schema = FastFlowFields.model_json_schema()
    properties: dict[str, Any] = schema["properties"]
    defs = schema.get("$defs", {})
    for prop in properties.values():  # inline the two small sub-models so the merged schema resolves
        _inline(prop, defs)
    return properties


def _inline(node: Any, defs: dict[str, Any]) -> None:
    if isinstance(node, dict):
        ref = node.pop("$ref", None)
        if ref:
            node.update(defs[ref.rsplit("/", 1)[-1]])
        for value in node.values():
            _inline(value, defs)
    elif isinstance(node, list):
        for value in node:
            _inline(value, defs)


def _take(raw: dict[str, Any], key: str) -> Any:
    return raw.pop(key, None)


def _set(raw: dict[str, Any], key: str, value: Any, *, source: str) -> None:
    if value is None:
        return
    if key in raw:
        raise ValueError(f"'{source}' (Fast-Flow) and '{key}' both given; keep one")
    raw[key] = value


def _limits(raw: dict[str, Any]) -> dict[str, Any] | None:
    hard = {"cpu": _take(raw, "cpu_hard_limit"), "memory": _take(raw, "mem_hard_limit")}
    soft = {"cpu": _take(raw, "cpu_soft_limit"), "memory": _take(raw, "mem_soft_limit")}
    if all(v is None for v in (*hard.values(), *soft.values())):
        return None
    resources: dict[str, Any] = dict(raw.pop("resources", None) or {})
    for part, amounts in (("limits", hard), ("soft_limits", soft)):
        if all(v is None for v in amounts.values()):
            continue
        target = dict(resources.get(part) or {})
        if amounts["cpu"] is not None:
            target["cpu"] = str(amounts["cpu"])
        if amounts["memory"] is not None:
            target["memory"] = quantities.docker_memory_to_quantity(amounts["memory"])
        resources[part] = target
    return resources


def _retries(raw: dict[str, Any]) -> dict[str, Any] | None:
    attempts, strategy = _take(raw, "retry_attempts"), _take(raw, "retry_strategy")
    if attempts is None and strategy is None:
        return None
    policy: dict[str, Any] = {"attempts": attempts or 0}
    if isinstance(strategy, dict):
        kind = strategy.get("type")
        if kind not in _STRATEGIES:
            raise ValueError(
                f"retry_strategy.type {kind!r} is unknown: use exponential_backoff, fixed_delay or custom_schedule"
            )
        policy["strategy"] = _STRATEGIES[kind]
        for src, dst in (("initial_delay", "delay"), ("delay", "delay"), ("max_delay", "max_delay"),
                         ("multiplier", "multiplier"), ("delays", "delays")):
            if strategy.get(src) is not None:
                policy[dst] = strategy[src]
        unknown = set(strategy) - {"type", "initial_delay", "delay", "max_delay", "multiplier", "delays"}
        if unknown:
            raise ValueError(f"retry_strategy has unknown keys: {', '.join(sorted(unknown))}")
    return policy


def _blank_to_none(raw: dict[str, Any], *keys: str) -> None:
    """Fast-Flow reads ``""`` (and null) as "not set" for these keys."""
    for key in keys:
        if key in raw and (raw[key] is None or (isinstance(raw[key], str) and not raw[key].strip())):
            del raw[key]


def _cron_wins(raw: dict[str, Any]) -> None:
    """Fast-Flow keeps ``schedule_cron`` and drops ``schedule_interval_seconds`` when both are set."""
    if raw.get("schedule_cron") and raw.get("schedule_interval_seconds") is not None:
        del raw["schedule_interval_seconds"]


def _schedule(entry: dict[str, Any]) -> dict[str, Any]:
    raw = dict(entry)
    _blank_to_none(raw, "schedule_cron", "schedule_start", "schedule_end", "webhook_key")
    _cron_wins(raw)
    for src, dst in (("schedule_cron", "cron"), ("schedule_interval_seconds", "interval"),
                     ("interval_seconds", "interval"), ("schedule_start", "start"),
                     ("schedule_end", "end"), ("default_env", "env"), ("run_once_at", "at")):
        _set(raw, dst, _take(raw, src), source=src)
    _set(raw, "resources", _limits(raw), source="cpu_hard_limit/mem_hard_limit")
    _set(raw, "retries", _retries(raw), source="retry_attempts/retry_strategy")
    if raw.get("timeout") == 0:
        raw["timeout"] = None
    return raw


def _as_fastflow_reads_them(raw: dict[str, Any]) -> None:
    """Values Fast-Flow's loader normalises: blanks are unset, ``type`` is case-insensitive,
    ``python_version`` may be a JSON number, ``max_instances: 0`` means no per-pipeline limit."""
    _blank_to_none(raw, "webhook_key", "python_version", "type", "schedule_cron", "schedule_start",
                   "schedule_end", "run_once_at", "restart_interval")
    _cron_wins(raw)
    if isinstance(raw.get("python_version"), int | float) and not isinstance(raw["python_version"], bool):
        raw["python_version"] = str(raw["python_version"])
    if isinstance(raw.get("type"), str):
        raw["type"] = raw["type"].strip().lower()
    if isinstance(raw.get("max_instances"), int) and raw["max_instances"] <= 0:
        del raw["max_instances"]


def _unique_webhook_keys(raw: dict[str, Any]) -> None:
    keys = [raw.get("webhook_key")]
    keys += [s.get("webhook_key") for s in raw.get("schedules") or [] if isinstance(s, dict)]
    seen: set[str] = set()
    for key in keys:
        if isinstance(key, str) and key.strip():
            if key in seen:
                raise ValueError(f"webhook_key {key!r} is used twice (pipeline and schedules); each key "
                                 "must name one run config, give the others their own key")
            seen.add(key)


def to_native(value: dict[str, Any]) -> dict[str, Any]:
    """Fold Fast-Flow keys of a pipeline mapping into native keys; native input passes unchanged."""
    raw = dict(value)
    _as_fastflow_reads_them(raw)
    _unique_webhook_keys(raw)
    _set(raw, "env", _take(raw, "default_env"), source="default_env")
    _set(raw, "resources", _limits(raw), source="cpu_hard_limit/mem_hard_limit")
    _set(raw, "retries", _retries(raw), source="retry_attempts/retry_strategy")
    if raw.get("timeout") == 0:
        raw["timeout"] = None  # Fast-Flow: 0 = unlimited

    top_schedule = {k: _take(raw, k) for k in ("schedule_cron", "schedule_interval_seconds",
                                               "schedule_start", "schedule_end", "run_once_at")}
    webhook_key = _take(raw, "webhook_key")
    if isinstance(raw.get("schedules"), list):
        raw["schedules"] = [_schedule(s) if isinstance(s, dict) else s for s in raw["schedules"]]
    elif top_schedule["schedule_cron"] or top_schedule["schedule_interval_seconds"] or top_schedule["run_once_at"]:
        entry = {k: v for k, v in top_schedule.items() if v is not None}
        once = top_schedule["run_once_at"]
        if once and (top_schedule["schedule_cron"] or top_schedule["schedule_interval_seconds"]):
            entry.pop("run_once_at")
            raw["schedules"] = [_schedule(entry), _schedule({"id": "run-once", "run_once_at": once})]
        else:
            raw["schedules"] = [_schedule(entry)]
    if webhook_key is not None:
        triggers = dict(raw.get("triggers") or {})
        if "webhook" in triggers:
            raise ValueError("'webhook_key' (Fast-Flow) and 'triggers.webhook' both given; keep one")
        triggers["webhook"] = {"enabled": True, "key": webhook_key}
        raw["triggers"] = triggers

    restart = {"on_crash": _take(raw, "restart_on_crash"), "cooldown": _take(raw, "restart_cooldown"),
               "interval": _take(raw, "restart_interval")}
    _set(raw, "restart", {k: v for k, v in restart.items() if v is not None} or None, source="restart_on_crash")

    triggers_list = _take(raw, "downstream_triggers")
    if triggers_list is not None:
        downstream = []
        for item in triggers_list:
            if not isinstance(item, dict):
                raise ValueError("downstream_triggers entries must be objects with a 'pipeline'")
            parsed = _Downstream.model_validate(item)
            on = "always" if parsed.on_success and parsed.on_failure else (
                "failure" if parsed.on_failure else "success")
            target: dict[str, Any] = {"pipeline": parsed.pipeline, "on": on}
            if parsed.on_route:
                target["route"] = parsed.on_route
            if parsed.run_config_id:
                target["schedule"] = parsed.run_config_id
            downstream.append(target)
        _set(raw, "downstream", downstream, source="downstream_triggers")
    return raw


def notices(spec: Any) -> list[tuple[str, str]]:
    """(field, message) for Fast-Flow settings Kubeline accepts but does not act on yet.

    They are not errors (the folder loads unmodified, as in Fast-Flow); ``kubeline validate``
    and the API show them so nobody relies on a setting that is silently ignored."""
    found: list[tuple[str, str]] = []
    restart = getattr(spec, "restart", None)
    if restart is not None and (restart.on_crash or restart.interval is not None):
        field = "restart_on_crash" if restart.on_crash else "restart_interval"
        found.append((field, "daemon restarts (restart_on_crash / restart_interval / restart_cooldown) are "
                             "read but not acted on: Kubeline does not restart a finished run; use a "
                             "schedule (interval) with max_instances: 1 to keep one instance running"))
    return found
