"""``python -m kubeline.components TYPE``: run a built-in component as a stage attempt.

The executor starts this in an interpreter with Kubeline installed. It reads the rendered config
and inputs through ``kubeline.task`` (the same contract as user scripts), validates the config
with the models of ``domain.components``, writes the outputs, logs to stdout, and on failure
prints one line that says why on stderr and exits 1 (2 for a wrong command line).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import pydantic

from kubeline import task
from kubeline.components import base, http_request, json_transform
from kubeline.domain import components

Run = Callable[..., dict[str, Any]]

RUNNERS: dict[str, tuple[type[pydantic.BaseModel], Run]] = {
    "http_request": (components.HttpRequestConfig, http_request.run),
    "json_transform": (components.JsonTransformConfig, json_transform.run),
}


def main(argv: Sequence[str]) -> int:
    if len(argv) != 1 or argv[0] not in RUNNERS:
        print(f"usage: python -m kubeline.components {{{','.join(RUNNERS)}}}", file=sys.stderr)
        return 2
    name = argv[0]
    try:
        outputs = run_component(name)
    except base.ComponentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: keep the traceback, end with the one line
        traceback.print_exc()
        print(f"error: {name} crashed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    base.log_to_stdout(f"{name}: wrote outputs {', '.join(sorted(outputs)) or '(none)'}")
    return 0


def run_component(name: str, *, log: base.Log = base.log_to_stdout) -> dict[str, Any]:
    """Validate the config, run the component and record its outputs; return them."""
    model, run = RUNNERS[name]
    if not os.environ.get(task.CONFIG_ENV):
        raise base.ComponentError(
            f"{task.CONFIG_ENV} is not set: run {name} through Kubeline, or point it at a JSON file"
            " with the stage config"
        )
    try:
        raw_config = task.config()
        stage_inputs = task.inputs()
    except RuntimeError as exc:
        raise base.ComponentError(str(exc)) from None
    config = validate_config(model, raw_config, name=name)
    outputs = run(config=config, inputs=stage_inputs, log=log)
    try:
        task.set_outputs(outputs)
    except (TypeError, ValueError) as exc:
        raise base.ComponentError(str(exc)) from None
    return outputs


def validate_config(model: type[pydantic.BaseModel], raw: dict[str, Any], *, name: str) -> Any:
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"config.{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in exc.errors()
        )
        raise base.ComponentError(f"{name}: invalid stage config: {problems}") from None
