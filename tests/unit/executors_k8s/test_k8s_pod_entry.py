"""The pod entrypoint's own pieces with real processes: python stages forked in-process, the
upload's plain-HTTP PUT against a server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from kubeline import testing
from kubeline.runtime import pod

PY = sys.executable


def test_only_plain_python_scripts_on_this_interpreter_run_in_process() -> None:
    assert pod.in_process_script([PY, "-u", "main.py", "--x"]) == "main.py"
    assert pod.in_process_script([PY, "job.py"]) == "job.py"
    assert pod.in_process_script([PY, "-m", "kubeline.components", "sql"]) is None
    assert pod.in_process_script(["/other/venv/bin/python", "-u", "main.py"]) is None
    assert pod.in_process_script([PY, "-u", "main.ipynb"]) is None
    assert pod.in_process_script(["bash", "-c", "x.py"]) is None


def _run(tmp_path: pathlib.Path, source: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """run_stage in a separate interpreter (the fork must not happen inside pytest)."""
    (tmp_path / "main.py").write_text(textwrap.dedent(source))
    driver = textwrap.dedent(f"""
        import pathlib, sys
        sys.path.insert(0, {str(pathlib.Path(pod.__file__).parent)!r})
        import pod
        rc = pod.run_stage([sys.executable, "-u", "main.py", *{list(args)!r}],
                           cwd=pathlib.Path({str(tmp_path)!r}), env={env or {"STAGE": "yes"}!r})
        print("rc", rc, flush=True)
    """)
    proc = subprocess.run([PY, "-c", driver], capture_output=True, text=True, timeout=60, check=False,
                          cwd="/")
    assert proc.returncode == 0, proc.stderr
    *_, last = proc.stdout.strip().splitlines()
    return int(last.split()[1]), proc.stdout + proc.stderr


def test_a_forked_stage_looks_like_a_fresh_python(tmp_path: pathlib.Path) -> None:
    rc, out = _run(tmp_path, """
        import os, sys, json
        print(json.dumps({"name": __name__, "argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ),
                          "path0": sys.path[0], "file": __file__}))
    """, "a", "b")
    assert rc == 0
    seen = json.loads(out.splitlines()[0])
    assert seen == {"name": "__main__", "argv": ["main.py", "a", "b"], "cwd": str(tmp_path),
                    "env": {"STAGE": "yes"}, "path0": str(tmp_path), "file": str(tmp_path / "main.py")}


@pytest.mark.parametrize(("source", "code", "text"), [
    ("import sys\nsys.exit(3)\n", 3, ""),
    ("import sys\nsys.exit('bad input')\n", 1, "bad input"),
    ("raise ValueError('boom')\n", 1, "ValueError: boom"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", 137, ""),
    ("import atexit\natexit.register(print, 'bye')\n", 0, "bye"),
])
def test_forked_stage_exit_codes(tmp_path: pathlib.Path, source: str, code: int, text: str) -> None:
    rc, out = _run(tmp_path, source)
    assert rc == code
    assert text in out
    assert "pod.py" not in out  # tracebacks show the stage's frames, not the entrypoint's


def test_a_missing_script_is_exit_2(tmp_path: pathlib.Path) -> None:
    driver = textwrap.dedent(f"""
        import pathlib, sys
        sys.path.insert(0, {str(pathlib.Path(pod.__file__).parent)!r})
        import pod
        print("rc", pod.run_stage([sys.executable, "nope.py"], cwd=pathlib.Path({str(tmp_path)!r}), env={{}}))
    """)
    proc = subprocess.run([PY, "-c", driver], capture_output=True, text=True, timeout=60, check=False)
    assert proc.stdout.strip().endswith("rc 2")
    assert "can't open file" in proc.stderr


class _Recorder(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: list[dict[str, Any]] = []  # made fresh per test by the fixture

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append({"path": self.path, "auth": self.headers["Authorization"], "body": body,
                                "encoding": self.headers["Content-Encoding"]})
        answer = b'{"detail": "nope"}' if self.status >= 400 else b"{}"
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, type[_Recorder]]]:
    with testing.http_server(_Recorder, seen=[]) as served:
        yield served


def test_upload_puts_gzipped_outputs_with_the_token(recorder: tuple[str, type[_Recorder]]) -> None:
    import gzip

    url, handler = recorder
    pod.upload({"outputs": {"n": 1}, "route": None}, url=url + "/", attempt_id="A1", token="t0k")
    (seen,) = handler.seen
    assert seen["path"] == "/api/v1/attempts/A1/io"
    assert seen["auth"] == "Bearer t0k" and seen["encoding"] == "gzip"
    assert json.loads(gzip.decompress(seen["body"])) == {"outputs": {"n": 1}, "route": None}


def test_upload_refused_says_what_the_server_answered(recorder: tuple[str, type[_Recorder]]) -> None:
    url, handler = recorder
    handler.status = 401
    with pytest.raises(RuntimeError, match=r"answered 401: \{\"detail\": \"nope\"\}"):
        pod.upload({"outputs": {}}, url=url, attempt_id="A1", token="t")


def test_upload_to_nobody_gives_up_within_seconds_saying_why() -> None:
    with pytest.raises(RuntimeError, match=r"could not reach the Kubeline API at http://127\.0\.0\.1:9 from "
                                           r"the pod: connection refused"):
        pod.upload({"outputs": {}}, url="http://127.0.0.1:9", attempt_id="A1", token="t", unreachable=0.3)


def test_an_unknown_host_is_named_as_such() -> None:
    with pytest.raises(RuntimeError, match=r"at http://kubeline\.invalid:8080 from the pod: name not found"):
        pod.upload({"outputs": {}}, url="http://kubeline.invalid:8080", attempt_id="A1", token="t",
                   unreachable=0.0)
