"""The ``json_transform`` stage: a JMESPath expression applied to JSON, without writing a script.

``data`` is usually an upstream output (``${stages.fetch.outputs.body}``); without it the
expression sees the stage's inputs. The output is ``{result}``. Without an expression (FlowMason's
example has a ``json_transform`` stage without ``config``) the input passes through unchanged.
"""

from __future__ import annotations

from typing import Any

import jmespath
import jmespath.exceptions

from kubeline.components import base
from kubeline.domain import components


def run(
    *, config: components.JsonTransformConfig, inputs: dict[str, Any], log: base.Log
) -> dict[str, Any]:
    """Apply the expression; ``data`` counts as given when the key is present, even if null."""
    given = "data" in config.model_fields_set
    data = config.data if given else inputs
    if config.expression is None:
        log(f"json_transform: no expression, {'data' if given else 'the inputs'} passed through unchanged"
            f" ({_describe(data)})")
        return {"result": data}
    log(
        f"json_transform: {config.expression!r} on {'data' if given else 'the inputs'}"
        f" ({_describe(data)})"
    )
    try:
        result = jmespath.search(config.expression, data)
    except jmespath.exceptions.JMESPathError as exc:
        raise base.ComponentError(f"json_transform: {config.expression!r} failed: {exc}") from None
    log(f"json_transform: result is {_describe(result)}")
    return {"result": result}


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return "null" if value is None else f"a {type(value).__name__}"
