"""What process an attempt of each stage type starts, and in which interpreter.

Executors know nothing about stage types: the planner asks ``argv_for`` and hands the result
to whichever executor runs the attempt. ``argv[0] == "python"`` means "the runtime's
interpreter" (the pipeline's virtualenv, or one with Kubeline installed).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pydantic

from kubeline.domain import components, errors
from kubeline.executors import base

NOTEBOOK_PACKAGES = ("papermill>=2.6", "ipykernel>=6.29")

# Keys the planner adds to the rendered config of a stage type beside its user-facing model.
_RUNTIME_KEYS = {"notebook": {"cells"}}


class Launch(NamedTuple):
    argv: tuple[str, ...]
    runtime: base.Runtime
    extra_packages: tuple[str, ...]


def argv_for(stage_type: str, *, file: str | None, config: dict[str, Any]) -> Launch:
    """The argv, runtime and extra packages of one attempt; ``config`` is the rendered config.

    Raises ``SpecError`` when the type is unknown or the config does not fit it, since a
    validated pipeline never gets here with either.
    """
    name = components.ALIASES.get(stage_type, stage_type)
    kind = components.BUILTIN.get(name)
    if kind is None:
        raise _problem(
            "type",
            f"unknown stage type {stage_type!r}",
            hint=f"use one of {', '.join(components.BUILTIN)}",
        )
    extra_keys = _RUNTIME_KEYS.get(name, set())
    model = _validate(kind.config, {k: v for k, v in config.items() if k not in extra_keys})
    path = file or kind.default_file
    if kind.needs_file and not path:
        raise _problem("file", f"a {name} stage needs a file")

    if isinstance(model, components.PythonConfig):
        return Launch(("python", "-u", str(path), *model.args), base.Runtime.PIPELINE, ())
    if isinstance(model, components.NotebookConfig):
        return Launch(
            ("python", "-m", "kubeline.components.notebook", str(path)),
            base.Runtime.PIPELINE,
            NOTEBOOK_PACKAGES,
        )
    if isinstance(model, components.ShellConfig):
        return Launch(_shell_argv(model), base.Runtime.PIPELINE, ())
    return Launch(("python", "-m", "kubeline.components", name), base.Runtime.KUBELINE, ())


def _shell_argv(config: components.ShellConfig) -> tuple[str, ...]:
    """A string runs through the shell; a list is the argv itself, without a shell."""
    if isinstance(config.command, list):
        if not config.command:
            raise _problem("command", "a shell stage's command list is empty")
        return tuple(config.command)
    if not config.command or not config.command.strip():
        raise _problem(
            "command",
            "a shell stage needs a command",
            hint="command: 'echo hello' or command: [echo, hello]",
        )
    return (config.shell, "-c", config.command)


def _validate(model: type[pydantic.BaseModel], config: dict[str, Any]) -> pydantic.BaseModel:
    try:
        return model.model_validate(config)
    except pydantic.ValidationError as exc:
        raise errors.SpecError(
            [
                errors.Problem(
                    file="stage",
                    location="config." + ".".join(map(str, e["loc"])),
                    message=e["msg"],
                )
                for e in exc.errors()
            ]
        ) from None


def _problem(location: str, message: str, *, hint: str = "") -> errors.SpecError:
    return errors.SpecError(
        [errors.Problem(file="stage", location=location, message=message, hint=hint)]
    )
