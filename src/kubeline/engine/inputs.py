"""Run inputs checked against the pipeline's declared inputs (types coerced from CLI strings)."""

from __future__ import annotations

import json
from typing import Any

from kubeline.domain import dag, errors, specs

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(name: str, spec: specs.InputSpec, value: Any) -> Any:  # noqa: PLR0911, PLR0912
    kind = spec.type
    if kind is specs.InputType.ANY:
        return value
    try:
        if kind is specs.InputType.STRING:
            if not isinstance(value, str):
                raise TypeError
            return value
        if kind is specs.InputType.BOOLEAN:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
                return value.lower() in _TRUE
            raise TypeError
        if kind is specs.InputType.INTEGER:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, int):
                return value
            if isinstance(value, str):
                return int(value)
            raise TypeError
        if kind is specs.InputType.NUMBER:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, int | float):
                return value
            if isinstance(value, str):
                return float(value)
            raise TypeError
        expected = dict if kind is specs.InputType.OBJECT else list
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, expected):
            raise TypeError
        return value
    except (TypeError, ValueError):
        raise errors.InvalidInputError(
            f"input {name!r} must be {kind.value}, got {json.dumps(value)[:80]}"
        ) from None


def validate(spec: specs.PipelineSpec, given: dict[str, Any]) -> dict[str, Any]:
    """The run's inputs: defaults filled, types checked. Undeclared inputs are refused only when
    the pipeline declares any (pipelines without declarations take inputs as they come)."""
    if not spec.inputs:
        return dict(given)
    problems: list[str] = []
    result: dict[str, Any] = {}
    for name in given:
        if name not in spec.inputs:
            hint = dag.suggest(name, spec.inputs)
            problems.append(f"unknown input {name!r}" + (f" ({hint})" if hint else
                            f" (declared: {', '.join(spec.inputs)})"))
    for name, declared in spec.inputs.items():
        if name in given:
            try:
                result[name] = _coerce(name, declared, given[name])
            except errors.InvalidInputError as exc:
                problems.append(str(exc))
                continue
            if declared.enum is not None and result[name] not in declared.enum:
                problems.append(f"input {name!r} must be one of {declared.enum}, got {result[name]!r}")
        elif declared.default is not None:
            result[name] = declared.default
        elif declared.is_required:
            about = f": {declared.description}" if declared.description else ""
            problems.append(f"input {name!r} is required{about}")
    if problems:
        raise errors.InvalidInputError("; ".join(problems))
    return result
