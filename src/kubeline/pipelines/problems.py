"""Turn pydantic validation errors into ``Problem``s a user can act on."""

from __future__ import annotations

from typing import Any

import pydantic

from kubeline.domain import dag, errors, specs


def location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _model_at(loc: tuple[int | str, ...]) -> type[pydantic.BaseModel] | None:
    """The spec model that owns the field at ``loc`` (for 'did you mean' hints)."""
    model: type[pydantic.BaseModel] | None = specs.PipelineSpec
    for part in loc[:-1]:
        if model is None or isinstance(part, int):
            continue
        field = _field(model, part)
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model


def _field(model: type[pydantic.BaseModel], name: str) -> Any:
    for field_name, field in model.model_fields.items():
        if name in (field_name, field.alias):
            return field
    return None


def _inner_model(annotation: Any) -> type[pydantic.BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found:
            return found
    return None


def from_validation_error(exc: pydantic.ValidationError, *, file: str) -> list[errors.Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = error["msg"].removeprefix("Value error, ")
        hint = ""
        if error["type"] == "extra_forbidden" and loc:
            model = _model_at(loc)
            names = set()
            if model is not None:
                for name, field in model.model_fields.items():
                    names.add(field.alias or name)
            message = f"unknown field {loc[-1]!r}"
            hint = dag.suggest(str(loc[-1]), names) or (
                f"allowed: {', '.join(sorted(names))}" if names else ""
            )
        elif error["type"] == "missing":
            message = "required field is missing"
        elif error["type"] == "string_pattern_mismatch" and loc and loc[-1] in ("id", "dependsOn"):
            hint = "stage ids use lowercase letters, digits, '-' and '_' (max 63)"
        problems.append(errors.Problem(file=file, location=location(loc), message=message, hint=hint))
    return problems
