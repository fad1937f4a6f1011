"""Load pipeline folders: parse, validate everything up front, and materialise the stages.

A folder with only ``main.py`` (or ``main.ipynb``) becomes one stage named ``main``. Every problem
found is collected (not just the first) and raised together as ``SpecError``, each naming the
file, the field and, where we can guess it, the fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import re
from typing import Any

import pydantic
import yaml

from kubeline.domain import components, dag, errors, expressions, runs, specs
from kubeline.pipelines import notices as notices_
from kubeline.pipelines import problems as problems_

SPEC_FILES = ("pipeline.yaml", "pipeline.yml", "pipeline.json")
MAIN_FILES = {"python": "main.py", "notebook": "main.ipynb"}
REQUIREMENT_FILES = ("requirements.txt.lock", "requirements.txt")
MAX_SPEC_BYTES = 1024 * 1024


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. In YAML 1.1 ``on: success`` would make the key ``True``."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


@dataclasses.dataclass(frozen=True)
class Discovery:
    pipelines: list[runs.Pipeline]
    problems: list[errors.Problem]
    notices: list[errors.Problem] = dataclasses.field(default_factory=list)  # see pipelines.notices


def is_pipeline_folder(path: pathlib.Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in (*SPEC_FILES, *MAIN_FILES.values()))


def discover(root: pathlib.Path) -> Discovery:
    """Every pipeline folder directly under ``root`` (or ``root`` itself), loaded and validated."""
    root = root.resolve()
    if not root.is_dir():
        raise errors.NotFoundError(f"{root} is not a folder")
    folders = [root] if is_pipeline_folder(root) else sorted(
        p for p in root.iterdir() if not p.name.startswith((".", "_")) and is_pipeline_folder(p)
    )
    loaded: list[runs.Pipeline] = []
    found: list[errors.Problem] = []
    for folder in folders:
        try:
            loaded.append(load_folder(folder))
        except errors.SpecError as exc:
            found.extend(exc.problems)
    names = {p.name for p in loaded}
    for pipeline in loaded:
        for i, target in enumerate(pipeline.spec.downstream):
            if target.pipeline not in names:
                found.append(errors.Problem(
                    file=f"{pipeline.name}/{_spec_file_name(pipeline)}",
                    location=f"downstream[{i}].pipeline",
                    message=f"pipeline {target.pipeline!r} does not exist",
                    hint=dag.suggest(target.pipeline, names),
                ))
    return Discovery(pipelines=loaded, problems=found, notices=[
        n for p in loaded for n in notices_.of(p, spec_file=_spec_file_name(p))])


def notices_of(pipeline: runs.Pipeline) -> list[errors.Problem]:
    """Settings of a valid pipeline that Kubeline reads but does not act on (``pipelines.notices``)."""
    return notices_.of(pipeline, spec_file=_spec_file_name(pipeline))


def _spec_file_name(pipeline: runs.Pipeline) -> str:
    if pipeline.path:
        folder = pathlib.Path(pipeline.path)
        for name in (*SPEC_FILES, f"{folder.name}.json"):
            if (folder / name).is_file():
                return name
    return "main.py"


def read_spec_file(folder: pathlib.Path) -> tuple[str, dict[str, Any], list[errors.Problem]]:  # noqa: PLR0911
    """(file name, raw mapping, problems) of the folder's spec file; {} when there is none."""
    present = [name for name in SPEC_FILES if (folder / name).is_file()]
    label = f"{folder.name}/"
    if not present and (folder / f"{folder.name}.json").is_file():
        present = [f"{folder.name}.json"]  # Fast-Flow's other metadata file name
    if not present:
        return "", {}, []
    if len(present) > 1:
        return present[0], {}, [errors.Problem(
            file=label + present[0], location="", message=f"both {' and '.join(present)} exist",
            hint="keep one spec file")]
    name = present[0]
    path = folder / name
    if path.stat().st_size > MAX_SPEC_BYTES:
        return name, {}, [errors.Problem(file=label + name, location="",
                                         message="spec file is larger than 1 MiB")]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return name, {}, [errors.Problem(file=label + name, location="",
                                         message=f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
    try:
        raw = json.loads(text) if name.endswith(".json") else parse_yaml(text)
    except json.JSONDecodeError as exc:
        return name, {}, [errors.Problem(file=label + name, location=f"line {exc.lineno} column {exc.colno}",
                                         message=f"invalid JSON: {exc.msg}")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc)
        return name, {}, [errors.Problem(file=label + name, location=where, message=f"invalid YAML: {what}")]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return name, {}, [errors.Problem(file=label + name, location="",
                                         message=f"the top level must be a mapping, not {type(raw).__name__}")]
    return name, raw, []


def load_folder(folder: pathlib.Path, *, name: str | None = None) -> runs.Pipeline:
    """Load and validate one pipeline folder; ``SpecError`` lists every problem."""
    folder = folder.resolve()
    if not folder.is_dir():
        raise errors.NotFoundError(f"pipeline folder {folder} does not exist")
    spec_name, raw, found = read_spec_file(folder)
    file_label = f"{folder.name}/{spec_name or 'main.py'}"
    if found:
        raise errors.SpecError(found)
    try:
        spec = specs.PipelineSpec.model_validate(raw)
    except pydantic.ValidationError as exc:
        found = problems_.from_validation_error(exc, file=file_label)
        found.extend(_semantic_problems_despite(exc, raw=raw, folder=folder, file=file_label))
        raise errors.SpecError(found) from None
    pipeline_name = name or spec.name or folder.name
    if not re.fullmatch(specs.NAME_PATTERN, pipeline_name):
        raise errors.SpecError([errors.Problem(
            file=file_label, location="name",
            message=f"{pipeline_name!r} is not a valid pipeline name",
            hint="use letters, digits, '.', '_' and '-' (max 63), starting with a letter or digit; "
                 "rename the folder or set 'name:'")])
    spec, found = materialise(spec, folder=folder, file=file_label)
    if found:
        raise errors.SpecError(found)
    spec = spec.model_copy(update={"name": pipeline_name})
    return runs.Pipeline(name=pipeline_name, spec=spec, path=str(folder), source="folder",
                         spec_hash=spec_hash(spec))


def _semantic_problems_despite(
    exc: pydantic.ValidationError, *, raw: dict[str, Any], folder: pathlib.Path, file: str
) -> list[errors.Problem]:
    """Report the stage graph's problems too when other fields are invalid (every problem at once)."""
    bad_keys = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
    if "stages" in bad_keys or any(not e["loc"] for e in exc.errors()):
        return []
    try:
        spec = specs.PipelineSpec.model_validate({k: v for k, v in raw.items() if k not in bad_keys})
    except pydantic.ValidationError:
        return []
    return materialise(spec, folder=folder, file=file)[1]


def spec_hash(spec: specs.PipelineSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]


def materialise(
    spec: specs.PipelineSpec, *, folder: pathlib.Path | None, file: str
) -> tuple[specs.PipelineSpec, list[errors.Problem]]:
    """Fill in the implicit stage and requirements file, then check the whole spec semantically."""
    found: list[errors.Problem] = []
    stages = list(spec.stages)
    if not stages:
        implicit = _implicit_stage(spec, folder=folder, file=file, found=found)
        stages = [implicit] if implicit else []
    requirements = spec.requirements
    if requirements is not None and not inside(folder, requirements):
        found.append(errors.Problem(file=file, location="requirements",
                                    message=f"{requirements!r} is outside the pipeline folder"))
    elif folder is not None:
        if requirements is None:
            requirements = next((r for r in REQUIREMENT_FILES if (folder / r).is_file()), None)
        elif not (folder / requirements).is_file():
            found.append(errors.Problem(file=file, location="requirements",
                                        message=f"file {requirements!r} does not exist",
                                        hint="create it or remove 'requirements'"))
    spec = spec.model_copy(update={"stages": stages, "requirements": requirements})
    found.extend(check_stages(spec, folder=folder, file=file))
    return spec, found


def _implicit_stage(
    spec: specs.PipelineSpec, *, folder: pathlib.Path | None, file: str, found: list[errors.Problem]
) -> specs.StageSpec | None:
    if folder is None:
        found.append(errors.Problem(file=file, location="stages", message="a pipeline needs stages"))
        return None
    kind = {"script": "python", "notebook": "notebook", None: None}[spec.type]
    if kind is None and spec.kubernetes.code_path and not (folder / "main.ipynb").is_file():
        kind = "python"  # main.py is in the image
    if kind is None:
        kind = "python" if (folder / "main.py").is_file() else (
            "notebook" if (folder / "main.ipynb").is_file() else None)
    if kind is None:
        found.append(errors.Problem(file=file, location="stages",
                                    message="no stages and no main.py or main.ipynb",
                                    hint="add main.py, main.ipynb or a 'stages:' list"))
        return None
    return specs.StageSpec(id="main", type=kind, file=MAIN_FILES[kind])


def inside(folder: pathlib.Path | None, relative: str) -> bool:
    """``relative`` names a path inside ``folder``, symlinks followed. Without a folder (a spec
    posted to the API) the same question is answered from the text alone: relative, and no
    ``..`` climbing above where it starts, so a posted spec is refused what a folder is."""
    if "\0" in relative:
        return False
    if folder is None:
        path = pathlib.PurePosixPath(relative)
        if path.is_absolute():
            return False
        depth = 0
        for part in path.parts:
            depth += -1 if part == ".." else 1
            if depth < 0:
                return False
        return True
    target = (folder / relative).resolve()
    return target == folder or folder in target.parents


def check_stages(spec: specs.PipelineSpec, *, folder: pathlib.Path | None, file: str) -> list[errors.Problem]:
    """Semantic checks the models cannot do alone: types, configs, files, the DAG, expressions."""
    found: list[errors.Problem] = []
    graph = {s.id: list(s.depends_on) for s in spec.stages}
    for dependant, index, missing, hint in dag.missing_dependencies(graph):
        pos = next(i for i, s in enumerate(spec.stages) if s.id == dependant)
        found.append(errors.Problem(file=file, location=f"stages[{pos}].dependsOn[{index}]",
                                    message=f"{missing!r} is not a stage", hint=hint))
    cycle = dag.find_cycle(graph)
    if cycle:
        found.append(errors.Problem(file=file, location="stages",
                                    message=f"stages form a cycle: {' -> '.join(cycle)}",
                                    hint="remove one of these dependsOn entries"))
    declared_inputs = set(spec.inputs)
    for pos, stage in enumerate(spec.stages):
        where = f"stages[{pos}]"
        type_name = components.ALIASES.get(stage.type, stage.type)
        kind = components.BUILTIN.get(type_name)
        if kind is None:
            found.append(errors.Problem(file=file, location=f"{where}.type",
                                        message=f"unknown stage type {stage.type!r}",
                                        hint=dag.suggest(stage.type, components.BUILTIN)
                                        or f"use one of {', '.join(components.BUILTIN)}"))
            continue
        found.extend(_check_config(kind, stage, where=where, file=file))
        # Code baked into the image (kubernetes.codePath) is not in the folder to be checked.
        in_image = bool((stage.kubernetes or spec.kubernetes).code_path)
        if kind.needs_file:
            target = stage.file or kind.default_file or ""
            if not inside(folder, target):
                found.append(errors.Problem(file=file, location=f"{where}.file",
                                            message=f"{target!r} is outside the pipeline folder"))
            elif folder is not None and not in_image and not (folder / target).is_file():
                found.append(errors.Problem(file=file, location=f"{where}.file",
                                            message=f"file {target!r} does not exist",
                                            hint=dag.suggest(target, [p.name for p in folder.iterdir()])))
        if type_name == "shell" and not (stage.command or stage.config.get("command")):
            found.append(errors.Problem(file=file, location=f"{where}.command",
                                        message="a shell stage needs a command"))
        if stage.requirements and not inside(folder, stage.requirements):
            found.append(errors.Problem(file=file, location=f"{where}.requirements",
                                        message=f"{stage.requirements!r} is outside the pipeline folder"))
        elif stage.requirements and folder is not None and not in_image \
                and not (folder / stage.requirements).is_file():
            found.append(errors.Problem(file=file, location=f"{where}.requirements",
                                        message=f"file {stage.requirements!r} does not exist"))
        upstream = dag.ancestors(graph, stage.id)
        found.extend(_check_expressions(stage, where=where, file=file, upstream=upstream,
                                        stage_ids=set(graph), declared=declared_inputs))
    for i, output in enumerate(spec.outputs):
        stage_id = output.split(".", 1)[0]
        if stage_id not in graph:
            found.append(errors.Problem(file=file, location=f"outputs[{i}]",
                                        message=f"{output!r} names no stage",
                                        hint="write 'STAGE.KEY' or 'STAGE'"))
    return found


def _check_config(kind: components.StageType, stage: specs.StageSpec, *, where: str, file: str) -> list[errors.Problem]:
    try:
        kind.config.model_validate(stage.config)
    except pydantic.ValidationError as exc:
        result = []
        for problem in problems_.from_validation_error(exc, file=file):
            value: Any = stage.config
            for part in problem.location.replace("[", ".").replace("]", "").split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if specs.has_expression(value):
                continue  # a value filled in at run time cannot be checked now
            result.append(dataclasses.replace(problem, location=f"{where}.config.{problem.location}"))
        return result
    return []


def _check_expressions(
    stage: specs.StageSpec, *, where: str, file: str, upstream: set[str], stage_ids: set[str], declared: set[str]
) -> list[errors.Problem]:
    found: list[errors.Problem] = []
    for field, value in (("inputs", stage.inputs), ("config", stage.config), ("command", stage.command)):
        try:
            refs = expressions.references(value)
        except expressions.ExpressionError as exc:
            found.append(errors.Problem(file=file, location=f"{where}.{field}", message=str(exc)))
            continue
        for ref in refs:
            if ref.root == "inputs" and ref.path[0] not in declared:
                found.append(errors.Problem(
                    file=file, location=f"{where}.{field}",
                    message=f"${{{ref.text}}} uses input {ref.path[0]!r}, which is not declared",
                    hint=dag.suggest(str(ref.path[0]), declared)
                    or f"declare it under 'inputs: {{{ref.path[0]}: {{type: string}}}}'"))
            elif ref.root == "stages" and ref.stage not in upstream:
                if ref.stage in stage_ids:
                    hint = f"add {ref.stage!r} to dependsOn"
                    message = f"${{{ref.text}}} uses stage {ref.stage!r}, which {stage.id!r} does not depend on"
                else:
                    hint = dag.suggest(ref.stage or "", stage_ids)
                    message = f"${{{ref.text}}} names stage {ref.stage!r}, which does not exist"
                found.append(errors.Problem(file=file, location=f"{where}.{field}", message=message, hint=hint))
    return found
