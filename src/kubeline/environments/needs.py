"""Which virtualenvs a pipeline's stages run in, derived from its spec alone (no run needed).

A stage runs in a pipeline venv when its type starts the pipeline's own interpreter (``python``,
``notebook``, ``shell``; see ``components.launch``) and its executor builds venvs on this machine
(``local``, ``local-warm``); built-in components run on Kubeline's interpreter, and docker and
kubernetes attempts build theirs inside the container. Stages with the same python version,
requirements file and extra packages share one venv, as they do at run time
(``engine.planner.build`` gives the executor the same three values).
"""

from __future__ import annotations

import dataclasses
import pathlib

from kubeline.components import launch
from kubeline.domain import components, runs

LOCAL_EXECUTORS = frozenset({"local", "local-warm"})
_PIPELINE_TYPES = frozenset({"python", "notebook", "shell"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class VenvNeed:
    python_version: str
    requirements: pathlib.Path | None
    extra_packages: tuple[str, ...]
    stages: tuple[str, ...]


def of(pipeline: runs.Pipeline, *, default_executor: str) -> list[VenvNeed]:
    """The venvs the pipeline's stages need on this machine, one per distinct (python version,
    requirements, extra packages), in stage order."""
    spec = pipeline.spec
    folder = pathlib.Path(pipeline.path) if pipeline.path else None
    grouped: dict[tuple[str, pathlib.Path | None, tuple[str, ...]], list[str]] = {}
    for stage in spec.stages:
        type_name = components.ALIASES.get(stage.type, stage.type)
        executor = stage.executor or spec.executor or default_executor
        if type_name not in _PIPELINE_TYPES or executor not in LOCAL_EXECUTORS:
            continue
        requirements_name = stage.requirements or spec.requirements
        requirements = folder / requirements_name if folder and requirements_name else None
        extra = launch.NOTEBOOK_PACKAGES if type_name == "notebook" else ()
        key = (stage.python_version or spec.python_version, requirements, tuple(extra))
        grouped.setdefault(key, []).append(stage.id)
    return [VenvNeed(python_version=python, requirements=requirements, extra_packages=extra,
                     stages=tuple(stages))
            for (python, requirements, extra), stages in grouped.items()]
