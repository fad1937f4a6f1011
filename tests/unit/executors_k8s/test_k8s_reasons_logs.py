"""Pure parts of the Kubernetes executor: failure reasons, log resume/dedupe, the code bundle."""

from __future__ import annotations

import collections
import gzip
import io
import os
import pathlib
import tarfile
from typing import Any

import pytest

from kubeline.domain import errors, states
from kubeline.executors.kubernetes import bundles, logs, reasons

F = states.FailureKind


def _pod(*, state: dict[str, Any] | None = None, phase: str = "Pending", **status: object) -> dict[str, Any]:
    statuses = [{"name": "main", "state": state}] if state is not None else []
    return {"metadata": {"name": "p", "uid": "1", "resourceVersion": "5"},
            "status": {"phase": phase, "containerStatuses": statuses, **status}}


def _judge(seen: reasons.Seen, *, now: float = 100.0, deadline: float = 400.0) -> reasons.Verdict:
    return reasons.judge(seen, now=now, pending_deadline=deadline, pending_timeout=300,
                         timeout=30, memory_limit="64Mi")


JOB = {"metadata": {"name": "j"}, "status": {}}


def test_success_exit_and_oom() -> None:
    done = _judge(reasons.Seen(job=JOB, pod=_pod(state={"terminated": {"exitCode": 0}})))
    assert done.result is not None and done.result.succeeded
    failed = _judge(reasons.Seen(job=JOB, pod=_pod(state={"terminated": {"exitCode": 3}})))
    assert failed.result is not None and failed.result.failure is F.EXIT_CODE
    assert failed.result.error == "exited with code 3"
    oom = _judge(reasons.Seen(job=JOB, pod=_pod(state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})))
    assert oom.result is not None and oom.result.failure is F.OOM
    assert oom.result.error == "exceeded its memory limit of 64Mi"
    child_oom = _judge(reasons.Seen(job=JOB, pod=_pod(state={"terminated": {
        "exitCode": 137, "message": '{"exit_code": 137, "oom": true}'}})))
    assert child_oom.result is not None and child_oom.result.failure is F.OOM


def test_deadline_is_a_timeout_even_when_the_pod_was_killed_first() -> None:
    killed = _pod(state={"terminated": {"exitCode": 143}})
    killed["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    waiting = _judge(reasons.Seen(job=JOB, pod=killed))
    assert waiting.result is None and waiting.waiting_for_job
    job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    timed_out = _judge(reasons.Seen(job=job, pod=killed))
    assert timed_out.result is not None and timed_out.result.failure is F.TIMEOUT
    assert timed_out.result.error == "exceeded its timeout of 30s"


@pytest.mark.parametrize(("reason", "message"), [
    ("ImagePullBackOff", "m"), ("ErrImageNeverPull", "m"),
    ("CreateContainerConfigError", 'secret "db" not found')])
def test_pods_that_cannot_start_fail_at_once_and_are_deleted(reason: str, message: str) -> None:
    verdict = _judge(reasons.Seen(job=JOB, pod=_pod(state={"waiting": {"reason": reason, "message": message}})))
    assert verdict.result is not None and verdict.result.failure is F.START_FAILED
    assert verdict.delete and verdict.result.error == f"{reason}: {message}"


def test_a_transient_config_error_waits_for_the_pending_deadline() -> None:
    pod = _pod(state={"waiting": {"reason": "CreateContainerConfigError",
                                  "message": "failed to sync secret cache: timed out waiting for the condition"}})
    assert _judge(reasons.Seen(job=JOB, pod=pod)).result is None
    late = _judge(reasons.Seen(job=JOB, pod=pod), now=401.0)
    assert late.result is not None and "failed to sync secret cache" in late.result.error


def test_the_objects_a_config_error_may_miss_are_named_with_who_needs_them() -> None:
    pod = {"spec": {"containers": [{"name": "main", "env": [
        {"name": "A", "value": "plain"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "t"}}},
        {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "maybe", "key": "t", "optional": True}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "KUBELINE_TOKEN", "valueFrom": {"secretKeyRef": {"name": "kl-own", "key": "token"}}}],
        "envFrom": [{"secretRef": {"name": "bulk"}}]}, {"name": "sidecar", "env": [
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "not-ours", "key": "x"}}}]}],
        "volumes": [{"name": "certs", "secret": {"secretName": "tls", "items": [{"key": "ca.crt", "path": "ca"}]}},
                    {"name": "code", "emptyDir": {}}]}}
    refs = reasons.references(pod, skip="kl-own")
    assert [(r.kind, r.name, r.key, r.where) for r in refs] == [
        ("secrets", "db", "t", "env TOKEN"), ("configmaps", "settings", "mode", "env MODE"),
        ("secrets", "bulk", None, "envFrom"), ("secrets", "tls", "ca.crt", "volume certs")]
    db, settings = refs[0], refs[1]
    assert reasons.reference_problem(db, None, namespace="ns") == 'env TOKEN: secret "db" not found in namespace "ns"'
    assert reasons.reference_problem(db, {"data": {"u": "eA=="}}, namespace="ns") == 'env TOKEN: secret "db" has no key "t"'
    assert reasons.reference_problem(db, {"data": {"t": "eA=="}}, namespace="ns") is None
    assert reasons.reference_problem(settings, {"binaryData": {"mode": "eA=="}}, namespace="ns") is None
    assert reasons.reference_problem(refs[2], {"data": {}}, namespace="ns") is None  # whole object: exists


def test_only_a_config_error_without_a_named_cause_asks_for_the_references() -> None:
    def seen(message: str, reason: str = "CreateContainerConfigError") -> reasons.Seen:
        return reasons.Seen(job=JOB, pod=_pod(state={"waiting": {"reason": reason, "message": message}}))
    syncing = seen("failed to sync secret cache: timed out waiting for the condition")
    assert reasons.config_waiting(syncing)
    assert not reasons.config_waiting(seen('secret "db" not found'))  # judged at once already
    assert not reasons.config_waiting(seen("m", reason="ContainerCreating"))
    verdict = reasons.cannot_start(syncing, 'env TOKEN: secret "db" not found in namespace "ns"')
    assert verdict.result is not None and verdict.delete and verdict.result.failure is F.START_FAILED
    assert verdict.result.error == 'CreateContainerConfigError: env TOKEN: secret "db" not found in namespace "ns"'


def test_unschedulable_fails_at_the_pending_deadline_with_the_schedulers_words() -> None:
    pod = _pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                            "message": "0/1 nodes are available: 1 Insufficient cpu."}])
    assert _judge(reasons.Seen(job=JOB, pod=pod)).result is None
    late = _judge(reasons.Seen(job=JOB, pod=pod), now=401.0)
    assert late.result is not None and late.delete
    assert late.result.error == "did not start within 300s: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."
    assert _judge(reasons.Seen(), now=401.0).result is not None


def test_evicted_node_lost_and_deleted_pods() -> None:
    evicted = _judge(reasons.Seen(job=JOB, pod=_pod(phase="Failed", reason="Evicted", message="low memory")))
    assert evicted.result is not None and evicted.result.error == "the pod was evicted: low memory"
    lost = _judge(reasons.Seen(job=JOB, pod=_pod(phase="Unknown", state={"running": {}})))
    assert lost.result is not None and lost.result.failure is F.LOST
    gone = _judge(reasons.Seen(job=JOB, pod=_pod(state={"running": {}}), pod_gone=True))
    assert gone.result is not None and gone.result.failure is F.LOST and gone.delete
    running = _judge(reasons.Seen(job=JOB, pod=_pod(state={"running": {}})), now=1000.0)
    assert running.result is None and running.started  # the pending deadline no longer applies


def test_position_skips_replayed_lines_and_keeps_equal_new_ones() -> None:
    position = logs.Position()
    assert [position.take(at, t) for at, t in [(1, "a"), (2, "b"), (2, "b")]] == [True, True, True]
    position.rewind(["b", "b"])  # a reconnect replays from the same second
    assert [position.take(at, t) for at, t in [(1, "a"), (2, "b"), (2, "b"), (2, "b"), (3, "c")]] == [
        False, False, False, True, True]


def test_timestamps_parse_to_microseconds() -> None:
    clock = logs._Clock()
    assert logs.split_line(b"2024-01-02T03:04:05.123456789Z hello world", clock) == (
        1704164645_123456, "hello world")
    assert logs.split_line(b"2024-01-02T03:04:05Z ", clock) == (1704164645_000000, "")
    assert logs.split_line(b"2024-01-02T03:04:05.5Z x", clock) == (1704164645_500000, "x")


def test_position_from_the_log_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "1.log"
    path.write_text("2024-01-02T03:04:05.000001Z stdout one\n"
                    "2024-01-02T03:04:05.000002Z stdout two\n"
                    "2024-01-02T03:04:05.000002Z stdout two\n"
                    "2024-01-02T03:09:00.000000Z system attempt 1 adopted after a restart\n")
    position = logs.position_from_file(path)
    assert position.last_us == 1704164645_000002
    assert position.texts == collections.Counter({"two": 2})
    assert position.since_time() == "2024-01-02T03:04:05Z"
    assert logs.position_from_file(tmp_path / "missing.log").last_us == -1


def test_bundle_is_deterministic_and_skips_caches(tmp_path: pathlib.Path) -> None:
    (tmp_path / "main.py").write_text("print(1)\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("X = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"junk")
    (tmp_path / "escape").symlink_to("/etc/passwd")
    first = bundles.pack(tmp_path)
    assert first == bundles.pack(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(first))) as tar:
        assert sorted(tar.getnames()) == ["main.py", "pkg", "pkg/mod.py"]


def test_bundle_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(errors.ExecutorError, match="does not exist"):
        bundles.pack(tmp_path / "nope")
    (tmp_path / "data.bin").write_bytes(os.urandom(4096))
    with pytest.raises(errors.ExecutorError, match="more than the 1 KiB"):
        bundles.pack(tmp_path, limit=1024)


def test_a_failed_job_seen_before_its_pods_end_waits_for_the_pods_reason() -> None:
    failed = {**JOB, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "backoff limit"}]}}
    assert _judge(reasons.Seen(job=failed, pod=_pod(phase="Running", state={"running": {}}))).result is None
    oom = _judge(reasons.Seen(job=failed, pod=_pod(state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})))
    assert oom.result is not None and oom.result.failure is F.OOM
    unseen = _judge(reasons.Seen(job=failed))
    assert unseen.result is not None and "BackoffLimitExceeded" in unseen.result.error


def test_position_skips_only_a_replay() -> None:
    position = logs.Position()
    assert [position.take(at, t) for at, t in [(5, "a"), (9, "b"), (7, "c")]] == [True, True, True]  # clock step
    position.rewind(["c"])
    assert [position.take(at, t) for at, t in [(5, "a"), (7, "c"), (8, "d"), (6, "e")]] == [False, False, True, True]
