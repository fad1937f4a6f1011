"""The pool pod's worker, run here as the pod runs it (its shipped files in one folder, a real
HTTP server on 127.0.0.1, real forks): token, results, timeout, cancel, draining."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pathlib
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from kubeline.executors import kubernetes_pool_manifests as pm
from kubeline.runtime import worker

TOKEN = "pool-token-for-tests"


class Pod:
    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str, path: str, body: Any = None, *, token: str = TOKEN) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method, data=data,
                                         headers={worker.TOKEN_HEADER: token})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def finish(self, attempt_id: str) -> tuple[dict[str, Any], list[list[Any]]]:
        lines: list[list[Any]] = []
        after = 0
        while True:
            status, body = self.call("GET", f"/v1/attempts/{attempt_id}?after={after}&wait=10")
            assert status == 200, body
            lines += body["lines"]
            after = body["next"]
            if body["state"] != "running":
                return body, lines


def packed(files: dict[str, str]) -> tuple[str, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(raw.getvalue()).decode(), hashlib.sha256(raw.getvalue()).hexdigest()


@pytest.fixture
def pod(tmp_path: pathlib.Path) -> Iterator[Pod]:
    shipped = tmp_path / "pool"
    shipped.mkdir()
    for name, text in pm.worker_files().items():
        (shipped / name).write_text(text)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"PATH": os.environ.get("PATH", ""), "KUBELINE_WORK": str(tmp_path / "work"),
           "KUBELINE_POOL_PORT": str(port), "KUBELINE_POOL_SLOTS": "3", worker.TOKEN_ENV: TOKEN}
    proc = subprocess.Popen([sys.executable, str(shipped / "worker.py")], env=env, stderr=subprocess.PIPE)
    work = tmp_path / "work" / "attempts"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "the worker did not listen within 20 s"
                time.sleep(0.05)
        yield Pod(port)
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        # the worker killed what still ran (as a container's end does): no attempt outlives it
        deadline = time.monotonic() + 5
        while any(_alive_in(folder) for folder in (work.iterdir() if work.is_dir() else [])):
            assert time.monotonic() < deadline, "an attempt outlived its worker"
            time.sleep(0.05)


def _alive_in(work: pathlib.Path) -> bool:
    """Whether a process still runs with ``work`` (an attempt's dir) as its working directory's parent
    (attempts run in the code dir; their stdout file is open in ``work``)."""
    target = str(work / "stdout")
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return True
            except OSError:
                continue
    return False


def test_every_route_but_healthz_needs_the_pool_token(pod: Pod) -> None:
    assert pod.call("GET", "/healthz", token="")[0] == 200
    for method, path, body in (("GET", "/v1/attempts", None), ("POST", "/v1/attempts", {"attempt_id": "a"}),
                               ("GET", "/v1/attempts/a", None), ("DELETE", "/v1/attempts/a", None)):
        status, answer = pod.call(method, path, body, token="wrong")
        assert status == 401 and worker.TOKEN_HEADER in answer["error"], (method, path)
    assert pod.call("GET", "/v1/attempts", token="")[0] == 401


def test_an_attempt_runs_in_its_code_with_its_inputs_and_hands_back_outputs(pod: Pod) -> None:
    code, digest = packed({"main.py": (
        "import json, os, sys\n"
        "inputs = json.load(open(os.environ['KUBELINE_INPUTS']))\n"
        "print('hello', inputs['who'], os.environ['COLOUR'], sys.argv[1:])\n"
        "print('to stderr', file=sys.stderr)\n"
        "assert 'KUBELINE_POOL_TOKEN' not in os.environ and 'pool-token' not in open('/proc/self/environ').read()\n"
        "json.dump({'n': len(inputs['who'])}, open(os.environ['KUBELINE_OUTPUTS'], 'w'))\n"
        "open(os.environ['KUBELINE_ROUTE_FILE'], 'w').write('next')\n")})
    request = {"attempt_id": "a1", "argv": ["main.py", "x"], "inputs": {"who": "pool"}, "env": {"COLOUR": "red"},
               "code": code, "code_sha256": digest}
    status, started = pod.call("POST", "/v1/attempts", request)
    assert status == 201 and started["state"] == "running"
    assert pod.call("POST", "/v1/attempts", request)[0] == 200  # the same attempt again: not a second run
    body, lines = pod.finish("a1")
    assert (body["failure"], body["exit_code"], body["outputs"], body["route"]) == (None, 0, {"n": 4}, "next")
    assert sorted((stream, text) for _, stream, text in lines) == [("stderr", "to stderr"),
                                                                    ("stdout", "hello pool red ['x']")]
    assert pod.call("GET", "/v1/attempts", None)[1]["attempts"] == {"a1": "finished"}
    assert pod.call("DELETE", "/v1/attempts/a1")[1] == {"state": "forgotten"}
    assert pod.call("GET", "/v1/attempts/a1")[0] == 404


def test_lines_the_executor_has_read_are_dropped_and_a_reader_from_zero_resumes_after_them(pod: Pod) -> None:
    code, digest = packed({"talk.py": "for i in range(5):\n    print('line', i)\n"})
    pod.call("POST", "/v1/attempts", {"attempt_id": "talk", "argv": ["talk.py"], "code": code, "code_sha256": digest})
    deadline = time.monotonic() + 20
    while pod.call("GET", "/v1/attempts/talk?after=0&wait=1")[1]["state"] == "running":
        assert time.monotonic() < deadline
    status, first = pod.call("GET", "/v1/attempts/talk?after=0")
    assert [text for _, _, text in first["lines"]] == [f"line {i}" for i in range(5)]
    status, again = pod.call("GET", "/v1/attempts/talk?after=3")
    assert status == 200 and [text for _, _, text in again["lines"]] == ["line 3", "line 4"]
    status, adopted = pod.call("GET", "/v1/attempts/talk?after=0")  # e.g. a restarted server
    assert [text for _, _, text in adopted["lines"]] == ["line 3", "line 4"] and adopted["next"] == 5


def test_failures_say_why(pod: Pod) -> None:
    code, digest = packed({"boom.py": "raise SystemExit(3)\n", "bad.py": "import json, os\n"
                           "open(os.environ['KUBELINE_OUTPUTS'], 'w').write('[1]')\n",
                           "slow.py": "import time\nprint('started', flush=True)\ntime.sleep(60)\n"})
    common = {"code": code, "code_sha256": digest}
    pod.call("POST", "/v1/attempts", {"attempt_id": "boom", "argv": ["boom.py"], **common})
    pod.call("POST", "/v1/attempts", {"attempt_id": "bad", "argv": ["bad.py"], **common})
    pod.call("POST", "/v1/attempts", {"attempt_id": "late", "argv": ["slow.py"], "timeout": 0.5, **common})
    pod.call("POST", "/v1/attempts", {"attempt_id": "stop", "argv": ["slow.py"], **common})
    assert pod.finish("boom")[0]["error"] == "exited with code 3"
    bad = pod.finish("bad")[0]
    assert bad["failure"] == "failed" and "not an object" in bad["error"]
    late = pod.finish("late")[0]
    assert late["failure"] == "timed_out" and "timeout of 0.5s" in late["error"]
    time.sleep(0.3)
    assert pod.call("DELETE", "/v1/attempts/stop")[0] == 202
    stopped, lines = pod.finish("stop")
    assert stopped["failure"] == "cancelled" and lines[0][1:] == ["stdout", "started"]


def test_bad_requests_are_refused_with_the_reason(pod: Pod) -> None:
    code, _ = packed({"main.py": "pass\n"})
    status, body = pod.call("POST", "/v1/attempts", {"attempt_id": "x", "argv": ["main.py"], "code": code,
                                                     "code_sha256": "0" * 64})
    assert status == 500 and "does not match its code_sha256" in body["error"]
    assert pod.call("POST", "/v1/attempts", {"attempt_id": "../x", "argv": ["main.py"]})[0] == 400
    status, body = pod.call("GET", "/v1/attempts/x?after=zero")
    assert status in (400, 404)


def test_a_pod_runs_at_most_its_slots_and_only_its_python(pod: Pod) -> None:
    code, digest = packed({"slow.py": "import time\ntime.sleep(60)\n"})
    for i in range(3):
        status, _ = pod.call("POST", "/v1/attempts", {"attempt_id": f"s{i}", "argv": ["slow.py"], "code": code,
                                                      "code_sha256": digest})
        assert status == 201
    status, body = pod.call("POST", "/v1/attempts", {"attempt_id": "s3", "argv": ["slow.py"], "code": code,
                                                     "code_sha256": digest})
    assert status == 429 and "all 3 slots of this pool pod are busy" in body["error"]
    for i in range(3):
        pod.call("DELETE", f"/v1/attempts/s{i}")
    assert pod.finish("s0")[0]["failure"] == "cancelled"
    status, body = pod.call("POST", "/v1/attempts", {"attempt_id": "old", "argv": ["slow.py"],
                                                     "python_version": "2.7", "code": code, "code_sha256": digest})
    assert status == 409 and "asks for Python 2.7" in body["error"] and "executor: kubernetes" in body["error"]
    mine = ".".join(str(part) for part in sys.version_info[:2])
    status, _ = pod.call("POST", "/v1/attempts", {"attempt_id": "same", "argv": ["slow.py"], "python_version": mine,
                                                  "code": code, "code_sha256": digest})
    assert status == 201


def test_a_draining_pod_takes_no_new_attempt(pod: Pod, tmp_path: pathlib.Path) -> None:
    (tmp_path / "work" / worker.DRAIN_FILE).touch()
    status, body = pod.call("POST", "/v1/attempts", {"attempt_id": "d", "argv": ["main.py"]})
    assert status == 503 and "draining" in body["error"]
