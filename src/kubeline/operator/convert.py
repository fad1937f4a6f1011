"""Custom resources <-> Kubeline: a Pipeline resource -> a validated pipeline folder; a run -> a status.

A Pipeline resource is written as a folder (its files + ``pipeline.json``) under
``<home>/kubernetes/<namespace>/<name>/<content hash>`` and loaded with the same loader as any
folder, so a resource is checked exactly like ``pipeline.yaml`` (every problem at once). One
folder per content hash: runs started from an older version keep their files.

Statuses stay small: stage phases, times, the error and a summary of the outputs (short JSON
texts, at most ``MAX_OUTPUTS_BYTES`` in all); logs and full outputs stay in the store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pathlib
import shutil
import tempfile
from typing import Any

import pydantic

from kubeline.domain import errors, runs, schedules, specs, states
from kubeline.operator import resources
from kubeline.pipelines import loader
from kubeline.pipelines import problems as problems_

MAX_VALUE_CHARS = 200
MAX_OUTPUTS_BYTES = 4096
MAX_MESSAGE_CHARS = 1024
RUN_PHASES = {
    states.RunState.QUEUED: "Pending", states.RunState.RUNNING: "Running",
    states.RunState.SUCCEEDED: "Succeeded", states.RunState.FAILED: "Failed",
    states.RunState.CANCELLED: "Cancelled", states.RunState.TIMED_OUT: "TimedOut",
}
FINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled", "TimedOut"})


def timestamp(moment: dt.datetime | None) -> str | None:
    """RFC 3339, seconds, ``Z`` (what Kubernetes date columns parse)."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration_text(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes or hours else "") + f"{secs}s"


# Pipeline resources ---------------------------------------------------------------------------
def parse_pipeline_spec(spec: Any, *, where: str) -> resources.PipelineResourceSpec:
    """``spec`` of a Pipeline resource; ``SpecError`` names each bad field as ``spec.<path>``."""
    if not isinstance(spec, dict):
        raise errors.SpecError([errors.Problem(file=where, location="spec", message="spec must be a mapping")])
    try:
        return resources.PipelineResourceSpec.model_validate(spec)
    except pydantic.ValidationError as exc:
        found = problems_.from_validation_error(exc, file=where)
        raise errors.SpecError([_under_spec(p) for p in found]) from None


def parse_run_spec(spec: Any, *, where: str) -> resources.PipelineRunResourceSpec:
    try:
        return resources.PipelineRunResourceSpec.model_validate(spec or {})
    except pydantic.ValidationError as exc:
        found = [errors.Problem(file=where, location="spec." + problems_.location(tuple(e["loc"])),
                                message=e["msg"]) for e in exc.errors()]
        raise errors.SpecError(found) from None


def _under_spec(problem: errors.Problem) -> errors.Problem:
    location = "spec." + problem.location if problem.location else "spec"
    return errors.Problem(file=problem.file, location=location, message=problem.message, hint=problem.hint)


def source_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """ConfigMap keys as relative paths (``__`` stands for ``/``); unsafe names are refused."""
    result: dict[str, bytes] = {}
    for key, data in files.items():
        path = key.replace("__", "/")
        parts = pathlib.PurePosixPath(path).parts
        if not parts or path.startswith("/") or ".." in parts:
            raise errors.InvalidInputError(f"source file {key!r} is not a relative path inside the pipeline")
        result[path] = data
    return result


def build_pipeline(*, name: str, namespace: str, spec: resources.PipelineResourceSpec,
                   files: dict[str, bytes], home: pathlib.Path) -> runs.Pipeline:
    """Write the folder for this resource version and load it (``SpecError`` lists every problem)."""
    files = dict(files)
    raw: dict[str, Any] = {}
    for spec_file in loader.SPEC_FILES:
        text = files.pop(spec_file, None)
        if text is not None:
            parsed = json.loads(text) if spec_file.endswith(".json") else loader.parse_yaml(text.decode())
            raw = dict(parsed or {})
    own = spec.model_dump(by_alias=True, exclude_unset=True, mode="json", exclude={"source", "schedule", "name"})
    raw.update(own)
    if spec.schedule:
        raw["schedules"] = [*raw.get("schedules", []), {"id": "schedule", "cron": spec.schedule}]
    files["pipeline.json"] = json.dumps(raw, sort_keys=True).encode()
    digest = hashlib.sha256(json.dumps(sorted((k, v.hex()) for k, v in files.items())).encode()).hexdigest()[:16]
    parent = home / "kubernetes" / namespace / name
    folder = parent / digest
    if not folder.is_dir():
        parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=".tmp-", dir=parent))
        for path, data in files.items():
            target = tmp / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        try:
            tmp.rename(folder)
        except OSError:  # written meanwhile by another replica: same content
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        pipeline = loader.load_folder(folder, name=name)
    except errors.SpecError as exc:
        where = f"Pipeline {namespace}/{name}"
        raise errors.SpecError([_relabel(p, where) for p in exc.problems]) from None
    return runs.Pipeline(name=pipeline.name, spec=pipeline.spec, path=pipeline.path, source="kubernetes",
                         spec_hash=pipeline.spec_hash)


def _relabel(problem: errors.Problem, where: str) -> errors.Problem:
    return _under_spec(errors.Problem(file=where, location=problem.location, message=problem.message,
                                      hint=problem.hint))


def owner_namespace(pipeline: runs.Pipeline) -> str | None:
    """The namespace of the resource a stored pipeline came from (None when not from Kubernetes)."""
    if pipeline.source != "kubernetes" or not pipeline.path:
        return None
    parts = pathlib.Path(pipeline.path).parts
    return parts[-3] if len(parts) >= 3 else None


def next_schedule(spec: specs.PipelineSpec, *, now: dt.datetime) -> str | None:
    fires = [f for s in spec.schedules if s.enabled and (f := schedules.next_fire(s, now)) is not None]
    return timestamp(min(fires)) if fires else None


def pipeline_status(pipeline: runs.Pipeline, *, generation: int | None, now: dt.datetime) -> dict[str, Any]:
    status = resources.PipelineStatus(
        phase="Ready", spec_hash=pipeline.spec_hash, stages=len(pipeline.spec.stages),
        next_schedule=next_schedule(pipeline.spec, now=now), observed_generation=generation)
    data = status.model_dump(by_alias=True, mode="json", exclude={"conditions", "last_run"})
    data["conditions"] = [condition("Ready", "True", "Synced", "the pipeline is in Kubeline", now=now)]
    return data


def without_nulls(value: Any) -> Any:
    """``value`` without None and "" values: the API server (1.20) turns "" in a status merge patch
    into null, which the schema refuses (an empty field is just left out)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def condition(kind: str, status: str, reason: str, message: str, *, now: dt.datetime) -> dict[str, Any]:
    return resources.Condition(type=kind, status=status, reason=reason,
                               message=message[:MAX_MESSAGE_CHARS],
                               last_transition_time=timestamp(now) or "").model_dump(by_alias=True)


def merge_conditions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``new`` replaces conditions of the same type; an unchanged status keeps its transition time."""
    by_type = {c.get("type"): c for c in old}
    for fresh in new:
        before = by_type.get(fresh["type"])
        if before is not None and before.get("status") == fresh["status"]:
            fresh = {**fresh, "lastTransitionTime": before.get("lastTransitionTime", fresh["lastTransitionTime"])}  # noqa: PLW2901
        by_type[fresh["type"]] = fresh
    return list(by_type.values())


# PipelineRun resources ------------------------------------------------------------------------
def run_inputs(spec: resources.PipelineRunResourceSpec, sources: list[dict[str, bytes]]) -> dict[str, Any]:
    """``inputsFrom`` values (text; JSON objects/arrays/numbers parsed) under the inline ``inputs``."""
    merged: dict[str, Any] = {}
    for data in sources:
        for key, value in data.items():
            text = value.decode("utf-8", "replace")
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
            structured = isinstance(parsed, dict | list | int | float) and not isinstance(parsed, bool)
            merged[key] = parsed if structured else text
    merged.update(spec.inputs)
    return merged


def run_pipeline(pipeline: runs.Pipeline, spec: resources.PipelineRunResourceSpec) -> runs.Pipeline:
    """The pipeline with the run's pod settings (ServiceAccount, nodeSelector, tolerations)."""
    updates: dict[str, Any] = {}
    if spec.service_account_name:
        updates["service_account"] = spec.service_account_name
    if spec.node_selector:
        updates["node_selector"] = {**pipeline.spec.kubernetes.node_selector, **spec.node_selector}
    if spec.tolerations:
        updates["tolerations"] = [*pipeline.spec.kubernetes.tolerations, *spec.tolerations]
    if not updates:
        return pipeline
    kube = pipeline.spec.kubernetes.model_copy(update=updates)
    return runs.Pipeline(name=pipeline.name, spec=pipeline.spec.model_copy(update={"kubernetes": kube}),
                         path=pipeline.path, source=pipeline.source, spec_hash=pipeline.spec_hash)


def trigger_detail(*, namespace: str, name: str, uid: str) -> str:
    return f"{namespace}/{name}#{uid}"


def summarise_outputs(outputs: dict[str, Any]) -> tuple[dict[str, str], bool]:
    """Short JSON texts of the outputs, within ``MAX_OUTPUTS_BYTES``; True when something was cut."""
    summary: dict[str, str] = {}
    used, cut = 0, False
    for key in sorted(outputs):
        text = json.dumps(outputs[key], default=str, sort_keys=True)
        if len(text) > MAX_VALUE_CHARS:
            text, cut = text[:MAX_VALUE_CHARS - 3] + "...", True
        if used + len(key) + len(text) > MAX_OUTPUTS_BYTES:
            return summary, True
        summary[key] = text
        used += len(key) + len(text)
    return summary, cut


def run_status(run: runs.Run, stages: list[runs.StageRun], *, generation: int | None,
               now: dt.datetime, timed_out: bool = False) -> dict[str, Any]:
    """The PipelineRun status for a stored run and its stages."""
    phase = "TimedOut" if timed_out and run.state is states.RunState.CANCELLED else RUN_PHASES[run.state]
    outputs, cut = summarise_outputs(run.outputs)
    stage_status = {
        s.stage_id: resources.StageStatus(
            phase=s.state.value.replace("_", " ").title().replace(" ", ""), attempts=s.attempts,
            start_time=timestamp(s.started_at), completion_time=timestamp(s.finished_at),
            message=(s.error or "")[:MAX_MESSAGE_CHARS])
        for s in stages
    }
    error = (run.error or "")[:MAX_MESSAGE_CHARS]
    if timed_out and not error:
        error = "the run exceeded spec.timeout and was cancelled"
    status = resources.PipelineRunStatus(
        phase=phase, run_id=run.id, pipeline=run.pipeline, start_time=timestamp(run.started_at),
        completion_time=timestamp(run.finished_at), duration=duration_text(run.duration) if run.started_at else None,
        stages=stage_status, outputs=outputs, outputs_truncated=cut, error=error, observed_generation=generation)
    data = status.model_dump(by_alias=True, mode="json", exclude={"conditions"})
    final = phase in FINAL_PHASES
    data["conditions"] = [
        condition("Submitted", "True", "RunCreated", f"Kubeline run {run.id}", now=now),
        condition("Succeeded", "True" if phase == "Succeeded" else ("False" if final else "Unknown"),
                  phase if final else "InProgress", error or f"run is {run.state.value}", now=now),
    ]
    return data
