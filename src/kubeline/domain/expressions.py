"""Input mapping expressions: ``${inputs.day}`` and ``${stages.fetch.outputs.body.items[0]}``.

A value that is exactly one expression takes the referenced JSON value as it is (a dict stays a
dict); an expression inside a longer string is rendered into it (JSON for non-strings). ``$${``
escapes a literal ``${``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

_EXPR = re.compile(r"(?<!\$)\$\{\s*([^}]*?)\s*\}")
_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")


@dataclasses.dataclass(frozen=True)
class Reference:
    """A parsed expression: ``inputs`` + path, or ``stages`` + stage id + path below its outputs."""

    text: str
    root: str  # "inputs" | "stages" | "run"
    stage: str | None
    path: tuple[str | int, ...]


class ExpressionError(ValueError):
    pass


def parse(text: str) -> Reference:
    parts: list[str | int] = []
    for raw in text.split("."):
        match = _SEGMENT.fullmatch(raw)
        if not match:
            raise ExpressionError(
                f"'${{{text}}}' is not an expression: use ${{inputs.NAME}} or ${{stages.ID.outputs.KEY}}"
            )
        parts.append(match.group(1))
        parts.extend(int(i) for i in _INDEX.findall(match.group(2)))
    root = parts[0]
    if root == "inputs" and len(parts) >= 2:
        return Reference(text=text, root="inputs", stage=None, path=tuple(parts[1:]))
    if root == "run" and len(parts) == 2 and parts[1] in ("id", "pipeline", "trigger"):
        return Reference(text=text, root="run", stage=None, path=tuple(parts[1:]))
    if root == "stages" and len(parts) >= 3 and parts[2] == "outputs" and isinstance(parts[1], str):
        return Reference(text=text, root="stages", stage=parts[1], path=tuple(parts[3:]))
    raise ExpressionError(
        f"'${{{text}}}' is not an expression: use ${{inputs.NAME}}, ${{stages.ID.outputs[.KEY]}} or ${{run.id}}"
    )


def references(value: Any) -> list[Reference]:
    """Every expression in a value (strings, lists and dicts are searched)."""
    found: list[Reference] = []
    if isinstance(value, str):
        found.extend(parse(m.group(1)) for m in _EXPR.finditer(value))
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(references(item))
    elif isinstance(value, list):
        for item in value:
            found.extend(references(item))
    return found


def _lookup(reference: Reference, context: dict[str, Any]) -> Any:
    if reference.root == "stages":
        stages = context.get("stages", {})
        if reference.stage not in stages:
            raise ExpressionError(f"${{{reference.text}}}: stage {reference.stage!r} has no outputs")
        node = stages[reference.stage]
    else:
        node = context.get(reference.root, {})
    walked = reference.root if reference.stage is None else f"stages.{reference.stage}.outputs"
    for key in reference.path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            raise ExpressionError(f"${{{reference.text}}}: {walked} has no {key!r}") from None
        walked += f"[{key}]" if isinstance(key, int) else f".{key}"
    return node


def render(value: Any, context: dict[str, Any]) -> Any:
    """Replace expressions in ``value`` using ``context`` = {inputs, stages: {id: outputs}, run}."""
    if isinstance(value, str):
        whole = _EXPR.fullmatch(value.strip())
        if whole and value.strip() == value:
            return _lookup(parse(whole.group(1)), context)

        def substitute(match: re.Match[str]) -> str:
            found = _lookup(parse(match.group(1)), context)
            return found if isinstance(found, str) else json.dumps(found)

        return _EXPR.sub(substitute, value).replace("$${", "${")
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    return value
