"""The Job's Complete event can arrive before its pod's: the log is read all the same, and an
attempt without secret env or upload URL has no Secret (its pod would wait for the kubelet's
Secret watch). After the container exited, the runtime may still be copying the last lines into
the log file: a log whose end markers are due is read until they come, and only a killed
entrypoint's log (no markers will come) is complete after half a second of nothing new."""

from __future__ import annotations

import asyncio
import pathlib
import time
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


def _followed(fake: LogKube, token: str) -> tuple[executor.KubernetesExecutor, ListSink, tracking.Tracked]:
    """An executor over ``fake`` and the attempt ``a1`` it tracks (with ``token``'s end markers)."""
    ex = executor.KubernetesExecutor(kube_=fake, defaults=manifests.Defaults(), attempts=None)
    sink = ListSink()
    handle = {"attempt_id": "a1", "namespace": "ns", "job": "kl-a1",
              "end_markers": [pod_entry.end_marker(token, s) for s in ("stdout", "stderr")],
              "result_tag": results.line_tag(token)}
    return ex, sink, tracking.Tracked(handle=handle, sink=sink, position=logs.Position())


async def test_a_complete_job_before_its_pod_event_still_has_its_log_read() -> None:
    fake = LogKube(_log())
    ex, sink, tracked = _followed(fake, TOKEN)
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


# the rest of a log after the container's exit ------------------------------------------------------------
REST_TOKEN = "rest-key"


class LaggingLog(LogKube):
    """A log API whose file holds ``first`` until ``lag`` seconds after the first read, then
    ``first + rest`` (the runtime copying the pipes' last bytes late); every read answers from
    the start, as one since the last line's second does."""

    def __init__(self, first: bytes, rest: bytes, *, lag: float) -> None:
        super().__init__(first)
        self.first, self.rest, self.lag = first, rest, lag
        self.since: float | None = None

    def stream(self, path: str, *, query: list[tuple[str, Any]], read_timeout: float | None = None) -> Any:
        self.since = self.since or time.monotonic()
        late = time.monotonic() - self.since >= self.lag
        return LogResponse(self.first + (self.rest if late else b""))


def _lines(texts: list[str], start: int = 0) -> bytes:
    return "".join(f"2026-12-05T10:00:{(start + i) // 1_000_000:02d}.{(start + i) % 1_000_000:06d}Z {t}\n"
                   for i, t in enumerate(texts)).encode()


def _terminated(code: int, reason: str) -> dict[str, Any]:
    return {"metadata": {"name": "kl-a1-x", "uid": "1", "resourceVersion": "9"}, "status": {
        "phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [
            {"name": manifests.CONTAINER, "state": {"terminated": {"exitCode": code, "reason": reason}}}]}}


async def _read_rest(api: LaggingLog, pod: dict[str, Any]) -> tuple[ListSink, tracking.Tracked]:
    ex, sink, tracked = _followed(api, REST_TOKEN)
    tracked.apply("pods", "MODIFIED", pod)
    try:
        await asyncio.wait_for(ex._follow_logs(tracked), 30)
        await asyncio.sleep(0)
    finally:
        await ex.close()
    return sink, tracked


async def test_a_log_whose_end_markers_are_due_is_read_until_they_come() -> None:
    body = [str(i) for i in range(1000)]
    tail = [*body[900:], f"{pod_entry.end_marker(REST_TOKEN, 'stderr')} {results.UPLOADED}",
            f"{pod_entry.end_marker(REST_TOKEN, 'stdout')} {results.UPLOADED}"]
    api = LaggingLog(_lines(body[:900]), _lines(tail, start=900), lag=2.0)  # 4x the old 0.5 s of patience
    sink, tracked = await _read_rest(api, _terminated(0, "Completed"))
    assert [text for stream, text in sink.lines] == body
    assert tracked.follower is not None and tracked.follower.ended


async def test_a_killed_entrypoints_log_is_complete_after_half_a_second_of_nothing_new() -> None:
    api = LaggingLog(_lines(["started", "allocating"]), _lines(["never read"], start=2), lag=3.0)
    sink, tracked = await _read_rest(api, _terminated(137, "OOMKilled"))
    # done before the late line came (3 s): no wait for markers that cannot come
    assert [text for _, text in sink.lines] == ["started", "allocating"]
    assert tracked.follower is not None and not tracked.follower.ended
