"""Notices: what a valid pipeline sets that Kubeline reads but will not act on as written.

A Fast-Flow folder must load unmodified, so settings Fast-Flow itself tolerated (a ``cells``
entry for a code cell the notebook does not have, an unknown key in a cell's ``fastflow``
metadata, a daemon restart policy) are not errors. They are not silently ignored either:
``kubeline validate`` prints them and the API returns them with the pipeline.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from kubeline.domain import components, errors, fastflow, runs, specs

_CELL_KEYS = {"retries", "delay_seconds"}


def of(pipeline: runs.Pipeline, *, spec_file: str) -> list[errors.Problem]:
    label = f"{pipeline.name}/{spec_file}"
    found = [errors.Problem(file=label, location=field, message=message)
             for field, message in fastflow.notices(pipeline.spec)]
    if pipeline.path:
        folder = pathlib.Path(pipeline.path)
        for pos, stage in enumerate(pipeline.spec.stages):
            if components.ALIASES.get(stage.type, stage.type) == "notebook" and stage.file:
                found.extend(_notebook(folder / stage.file, stage=stage, spec=pipeline.spec,
                                       where=f"stages[{pos}]" if stage.id != "main" else "", label=label))
    return found


def _notebook(path: pathlib.Path, *, stage: specs.StageSpec, spec: specs.PipelineSpec, where: str,
              label: str) -> list[errors.Problem]:
    try:
        notebook: Any = json.loads(path.read_text(encoding="utf-8"))
        cells = [c for c in notebook.get("cells", []) if isinstance(c, dict) and c.get("cell_type") == "code"]
    except (OSError, ValueError, AttributeError):
        return []  # the run reports an unreadable notebook with papermill's own words
    found = []
    policies = stage.cells or spec.cells
    field = f"{where}.cells" if where and stage.cells else "cells"
    for index in sorted(i for i in policies if i >= len(cells)):
        found.append(errors.Problem(
            file=label, location=f"{field}[{index}]",
            message=f"{path.name} has {len(cells)} code cells (markdown cells are not counted), so this "
                    "policy applies to no cell", hint="remove it or fix its position"))
    for index, cell in enumerate(cells):
        metadata = (cell.get("metadata") or {}).get("fastflow")
        if metadata is None:
            continue
        unknown = sorted(set(metadata) - _CELL_KEYS) if isinstance(metadata, dict) else ["(not an object)"]
        if unknown:
            found.append(errors.Problem(
                file=f"{label.split('/', maxsplit=1)[0]}/{path.name}", location=f"code cell {index} metadata.fastflow",
                message=f"{', '.join(unknown)} not read: only retries and delay_seconds are",
                hint="remove the other keys"))
    return found
