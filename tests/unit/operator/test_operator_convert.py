"""CR <-> spec conversion: folders from resources, readable problems, small statuses."""

from __future__ import annotations

import datetime as dt
import json
import pathlib

import pytest

from kubeline.domain import errors, runs, specs, states
from kubeline.operator import convert, resources

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def _spec(**extra: object) -> resources.PipelineResourceSpec:
    return convert.parse_pipeline_spec({"stages": [{"id": "main", "type": "python", "file": "main.py"}], **extra},
                                       where="Pipeline ns/p")


def test_build_pipeline_writes_a_folder_per_version(tmp_path: pathlib.Path) -> None:
    spec = _spec(schedule="0 2 * * *", env={"A": "1"})
    files = {"main.py": b"print('hi')\n"}
    first = convert.build_pipeline(name="p", namespace="ns", spec=spec, files=files, home=tmp_path)
    assert first.source == "kubernetes" and first.name == "p"
    assert first.spec.schedules[0].cron == "0 2 * * *"
    assert convert.owner_namespace(first) == "ns"
    folder = pathlib.Path(first.path or "")
    assert (folder / "main.py").read_text() == "print('hi')\n"
    assert json.loads((folder / "pipeline.json").read_text())["env"] == {"A": "1"}
    again = convert.build_pipeline(name="p", namespace="ns", spec=spec, files=files, home=tmp_path)
    assert again.path == first.path
    changed = convert.build_pipeline(name="p", namespace="ns", spec=spec, files={"main.py": b"print(2)\n"},
                                     home=tmp_path)
    assert changed.path != first.path and pathlib.Path(first.path or "").is_dir()  # old runs keep their files


def test_the_resource_spec_wins_over_a_pipeline_yaml_in_the_source(tmp_path: pathlib.Path) -> None:
    spec = convert.parse_pipeline_spec({"timeout": 30}, where="w")
    files = {"pipeline.yaml": b"timeout: 10\ndescription: from the folder\n", "main.py": b"print(1)\n"}
    pipeline = convert.build_pipeline(name="p", namespace="ns", spec=spec, files=files, home=tmp_path)
    assert pipeline.spec.timeout == 30
    assert pipeline.spec.description == "from the folder"
    assert [s.id for s in pipeline.spec.stages] == ["main"]


def test_problems_name_the_resource_and_the_spec_field(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.SpecError) as bad:
        convert.parse_pipeline_spec({"stages": [{"id": "a", "dependsOn": ["b"]}], "timeout": "soon"},
                                    where="Pipeline ns/p")
    text = str(bad.value)
    assert "Pipeline ns/p: spec.timeout" in text
    spec = convert.parse_pipeline_spec({"stages": [{"id": "a", "type": "python", "file": "a.py",
                                                    "dependsOn": ["lode"]}]}, where="w")
    with pytest.raises(errors.SpecError) as missing:
        convert.build_pipeline(name="p", namespace="ns", spec=spec, files={}, home=tmp_path)
    text = str(missing.value)
    assert "Pipeline ns/p: spec.stages" in text and "lode" in text and "a.py" in text


def test_source_files_map_double_underscore_to_folders_and_refuse_escapes() -> None:
    assert convert.source_files({"lib__util.py": b"x"}) == {"lib/util.py": b"x"}
    with pytest.raises(errors.InvalidInputError):
        convert.source_files({"..__etc__passwd": b"x"})


def test_run_status_is_small_and_complete() -> None:
    spec = specs.PipelineSpec.model_validate({"stages": [{"id": "a"}, {"id": "b", "dependsOn": ["a"]}]})
    started = NOW - dt.timedelta(seconds=75)
    run = runs.Run(id="r1", pipeline="p", spec=spec, state=states.RunState.SUCCEEDED, started_at=started,
                   finished_at=NOW, outputs={"small": 1, "big": "x" * 10_000})
    stage_rows = [runs.StageRun(run_id="r1", stage_id="a", state=states.StageState.SUCCEEDED, attempts=1,
                                started_at=started, finished_at=NOW),
                  runs.StageRun(run_id="r1", stage_id="b", state=states.StageState.TIMED_OUT, attempts=2)]
    status = convert.run_status(run, stage_rows, generation=3, now=NOW)
    assert status["phase"] == "Succeeded" and status["runId"] == "r1" and status["duration"] == "1m15s"
    assert status["startTime"] == "2025-01-02T03:02:50Z" and status["completionTime"] == "2025-01-02T03:04:05Z"
    assert status["stages"]["a"]["phase"] == "Succeeded" and status["stages"]["b"]["phase"] == "TimedOut"
    assert status["outputs"]["small"] == "1" and len(status["outputs"]["big"]) <= convert.MAX_VALUE_CHARS
    assert status["outputsTruncated"] is True
    assert {c["type"]: c["status"] for c in status["conditions"]} == {"Submitted": "True", "Succeeded": "True"}
    assert len(json.dumps(status)) < 8192
    cancelled = runs.Run(id="r2", pipeline="p", spec=spec, state=states.RunState.CANCELLED)
    assert convert.run_status(cancelled, [], generation=1, now=NOW, timed_out=True)["phase"] == "TimedOut"


def test_outputs_summary_has_a_total_budget() -> None:
    summary, cut = convert.summarise_outputs({f"k{i}": "v" * 150 for i in range(100)})
    assert cut and sum(len(k) + len(v) for k, v in summary.items()) <= convert.MAX_OUTPUTS_BYTES


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    old = [convert.condition("Ready", "True", "Synced", "ok", now=NOW - dt.timedelta(hours=1))]
    merged = convert.merge_conditions(old, [convert.condition("Ready", "True", "Synced", "ok", now=NOW)])
    assert merged[0]["lastTransitionTime"] == "2025-01-02T02:04:05Z"
    flipped = convert.merge_conditions(old, [convert.condition("Ready", "False", "Bad", "no", now=NOW)])
    assert flipped[0]["lastTransitionTime"] == "2025-01-02T03:04:05Z"


def test_run_inputs_and_pod_overrides() -> None:
    spec = convert.parse_run_spec({"pipelineRef": "p", "inputs": {"a": "inline"}, "serviceAccountName": "sa",
                                   "nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "k"}]}, where="w")
    inputs = convert.run_inputs(spec, [{"a": b"from-cm", "n": b"3", "obj": b'{"x": 1}', "t": b"true"}])
    assert inputs == {"a": "inline", "n": 3, "obj": {"x": 1}, "t": "true"}
    pipeline = runs.Pipeline(name="p", spec=specs.PipelineSpec.model_validate({"stages": [{"id": "a"}]}))
    moved = convert.run_pipeline(pipeline, spec)
    assert moved.spec.kubernetes.service_account == "sa"
    assert moved.spec.kubernetes.node_selector == {"disk": "ssd"}
    assert moved.spec.kubernetes.tolerations == [{"key": "k"}]
    with pytest.raises(errors.SpecError, match=r"spec\.pipelineRef"):
        convert.parse_run_spec({"inputs": {}}, where="PipelineRun ns/r")


def test_status_patches_leave_out_empty_values() -> None:
    assert convert.without_nulls({"a": None, "b": "", "c": {"d": None, "e": "x"}, "f": [{"g": ""}], "h": 0}) == {
        "c": {"e": "x"}, "f": [{}], "h": 0}


def test_a_waiting_run_says_why_in_words() -> None:
    from kubeline import k8s
    from kubeline.operator import resources

    status = resources.PipelineRunStatus.model_validate({"phase": "Pending", "conditions": [
        {"type": "Submitted", "status": "False", "reason": "PipelineNotFound",
         "message": "Pipeline team/etl (spec.pipelineRef) does not exist; waiting for it"},
        {"type": "Succeeded", "status": "Unknown", "reason": "PipelineNotFound", "message": "x"}]})
    assert k8s.problems(status) == ("PipelineNotFound: Pipeline team/etl (spec.pipelineRef) does not exist; "
                                    "waiting for it")
    assert k8s.problems(resources.PipelineRunStatus()) == ""


def test_no_kubeconfig_says_what_is_missing(tmp_path: pathlib.Path) -> None:
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    proc = subprocess.run([str(pathlib.Path(sys.executable).parent / "kubeline"), "k8s", "list"], env=env,
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 1
    text = " ".join(proc.stderr.split())
    assert f"no usable kubeconfig at {tmp_path / 'none'}" in text and "not running in a pod" in text
    assert "Service host/port" not in text


def test_followed_log_lines_print_as_the_log_download_does() -> None:
    import datetime as dt

    from kubeline import k8s

    at = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
    data = {"at": "2026-01-02T03:04:05.678901Z", "stream": "stdout", "text": "hello  world", "stage_id": "fetch",
            "attempt": 2, "cursor": "x"}
    assert k8s.follow_line(data) == f"{at.isoformat()} fetch#2 stdout hello  world"  # services.log_text's format


def test_an_api_problem_reads_as_its_detail_not_a_dump() -> None:
    from kubernetes.client.exceptions import ApiException

    from kubeline import k8s
    from kubeline.domain import errors

    exc = ApiException(status=404, reason="Not Found")
    exc.body = '{"type": "about:blank", "status": 404, "detail": "run r1 not found"}'
    translated = k8s.translate(exc, what="logs of run r1")
    assert isinstance(translated, errors.NotFoundError)
    assert str(translated) == "logs of run r1 not found: run r1 not found"
