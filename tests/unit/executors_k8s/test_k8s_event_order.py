"""The Job's Complete event can arrive before its pod's: the log is read all the same, and an
attempt without secret env or upload URL has no Secret (its pod would wait for the kubelet's
Secret watch)."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest
from kubernetes import client

from kubeline.domain import specs
from kubeline.executors import base
from kubeline.executors.kubernetes import executor, kube, logs, manifests, tracking
from kubeline.runtime import pod as pod_entry
from kubeline.runtime import results

TOKEN = "frame-key"


class ListSink:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write(self, stream: str, text: str, *, at: float | None = None) -> None:
        self.lines.append((stream, text))

    def close(self) -> None:
        pass


class LogResponse:
    """What ``Kube.stream`` returns, serving a fixed pod log."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, amount: int, *, decode_content: bool) -> Any:
        yield self.data

    def release_conn(self) -> None:
        pass


class LogKube(kube.Kube):
    """The executor's one seam to the API, serving one pod log (no cluster in unit tests)."""

    def __init__(self, log: bytes) -> None:
        super().__init__(client.ApiClient())
        self.log = log
        self.opened: list[str] = []

    def stream(self, path: str, *, query: list[tuple[str, Any]], read_timeout: float | None = None) -> Any:
        self.opened.append(path)
        return LogResponse(self.log)


def _log() -> bytes:
    lines = ["hello", f"{pod_entry.end_marker(TOKEN, 'stderr')} result 1",
             f"{pod_entry.end_marker(TOKEN, 'stdout')} result 1",
             *results.lines(TOKEN, results.encode({"outputs": {"rows": 3}, "route": None}))]
    return "".join(f"2026-12-05T10:00:00.{i:06d}Z {text}\n" for i, text in enumerate(lines)).encode()


async def test_a_complete_job_before_its_pod_event_still_has_its_log_read() -> None:
    fake = LogKube(_log())
    ex = executor.KubernetesExecutor(kube_=fake, defaults=manifests.Defaults(), attempts=None)
    sink = ListSink()
    handle = {"attempt_id": "a1", "namespace": "ns", "job": "kl-a1",
              "end_markers": [pod_entry.end_marker(TOKEN, s) for s in ("stdout", "stderr")],
              "result_tag": results.line_tag(TOKEN)}
    tracked = tracking.Tracked(handle=handle, sink=sink, position=logs.Position())
    tracked.apply("pods", "ADDED", {"metadata": {"name": "kl-a1-x", "uid": "1", "resourceVersion": "5"},
                                    "status": {"phase": "Pending", "containerStatuses": [
                                        {"name": "main", "state": {"waiting": {"reason": "ContainerCreating"}}}]}})
    tracked.apply("jobs", "MODIFIED", {"metadata": {"name": "kl-a1", "resourceVersion": "7"}, "status": {
        "conditions": [{"type": "Complete", "status": "True"}]}})
    tracked.finished = True  # wait() judged the Job before the pod's Succeeded event came
    try:
        await asyncio.wait_for(ex._follow_logs(tracked), 5)
        await asyncio.sleep(0)
        assert fake.opened == ["/api/v1/namespaces/ns/pods/kl-a1-x/log"]
        assert sink.lines == [("stdout", "hello")]
        assert tracked.follower is not None and tracked.follower.reader.body()["outputs"] == {"rows": 3}
    finally:
        await ex.close()


def _spec(**overrides: object) -> base.AttemptSpec:
    values: dict[str, object] = {
        "attempt_id": "0190abcdef12aa11bb22cc", "run_id": "0190abcdef00ffeeddccbb", "pipeline": "p",
        "stage_id": "s", "number": 1, "stage_type": "python", "folder": pathlib.Path("/p"),
        "argv": ("python", "main.py"), "runtime": base.Runtime.PIPELINE, "python_version": "3.11",
        "requirements": None, "env": {"REGION": "eu"}, "secret_env": frozenset(), "env_from": {},
        "inputs": {}, "config": {}, "timeout": None, "resources": specs.Resources()}
    values.update(overrides)
    return base.AttemptSpec(**values)  # type: ignore[arg-type]


def _token_env(job: manifests.Job) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return next(item for item in container["env"] if item["name"] == manifests.TOKEN_KEY)


def test_a_secret_only_for_secret_env_or_an_upload_url() -> None:
    plain, with_url = manifests.Defaults(), manifests.Defaults(api_url="http://kubeline:8081")
    assert not manifests.needs_secret(_spec(), defaults=plain)
    assert manifests.needs_secret(_spec(), defaults=with_url)
    secret_env = _spec(env={"DB": "pw"}, secret_env=frozenset({"DB"}))
    assert manifests.needs_secret(secret_env, defaults=plain)
    assert _token_env(manifests.job(_spec(), defaults=plain, frame_key=TOKEN)) == {
        "name": manifests.TOKEN_KEY, "value": TOKEN}
    assert _token_env(manifests.job(secret_env, defaults=plain)) == {
        "name": manifests.TOKEN_KEY, "valueFrom": {"secretKeyRef": {"name": "kl-0190abcdef12aa11bb22cc",
                                                                    "key": manifests.TOKEN_KEY}}}


def test_a_token_that_authorizes_an_upload_never_goes_in_the_job() -> None:
    with pytest.raises(ValueError, match="use its Secret"):
        manifests.job(_spec(), defaults=manifests.Defaults(api_url="http://kubeline:8081"), frame_key=TOKEN)
