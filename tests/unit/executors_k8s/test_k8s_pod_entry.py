"""The pod entrypoint's own pieces with real processes: python stages forked in-process, the
upload's plain-HTTP PUT against a server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import Any

import pytest

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
        rc, relay = pod.run_stage([sys.executable, "-u", "main.py", *{list(args)!r}],
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
        print("rc", pod.run_stage([sys.executable, "nope.py"], cwd=pathlib.Path({str(tmp_path)!r}), env={{}})[0])
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
    handler = type("Handler", (_Recorder,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


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


def test_upload_to_nobody_gives_up_at_the_deadline() -> None:
    with pytest.raises(RuntimeError, match=r"cannot reach http://127\.0\.0\.1:9/"):
        pod.upload({"outputs": {}}, url="http://127.0.0.1:9", attempt_id="A1", token="t", deadline=0.3)


def _relayed(tmp_path: pathlib.Path, argv: list[str], source: str = "") -> tuple[int, Any, str, str]:
    """run_stage in a separate interpreter: (rc, the kept log, what reached stdout, stderr)."""
    (tmp_path / "main.py").write_text(textwrap.dedent(source))
    result = tmp_path / "result.json"
    driver = textwrap.dedent(f"""
        import json, os, pathlib, sys
        sys.path.insert(0, {str(pathlib.Path(pod.__file__).parent)!r})
        import pod
        argv = [sys.executable if a == "PY" else a for a in {argv!r}]
        rc, relay = pod.run_stage(argv, cwd=pathlib.Path({str(tmp_path)!r}), env=dict(os.environ))
        pathlib.Path({str(result)!r}).write_text(json.dumps([rc, relay.lines]))
    """)
    proc = subprocess.run([PY, "-c", driver], capture_output=True, timeout=60, check=False, cwd="/",
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stderr.decode()
    rc, lines = json.loads(result.read_text())
    return rc, lines, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


@pytest.mark.parametrize("argv", [["PY", "-u", "main.py"], ["bash", "-c", f"exec {PY} main.py"]],
                         ids=["forked", "exec"])
def test_the_log_reaches_the_pod_log_and_a_timestamped_copy(tmp_path: pathlib.Path, argv: list[str]) -> None:
    rc, lines, out, err = _relayed(tmp_path, argv, """
        import sys, time
        print("one")
        print("two", file=sys.stderr)
        sys.stdout.write("no newline at the end")
    """)
    assert rc == 0
    assert out == "one\nno newline at the end" and err == "two\n"  # passed through unchanged
    assert [(stream, text) for _, stream, text in lines] == [
        ("stdout", "one"), ("stderr", "two"), ("stdout", "no newline at the end")]
    stamps = [at for at, _, _ in lines]
    assert stamps == sorted(stamps) and all(abs(at - stamps[0]) < 30 for at in stamps)


def test_a_long_log_is_passed_through_but_not_kept(tmp_path: pathlib.Path) -> None:
    rc, lines, out, _ = _relayed(tmp_path, ["PY", "main.py"], f"""
        for i in range({pod.LOG_KEPT // 10}):
            print(f"line {{i:05d}}")
    """)
    assert rc == 0 and lines is None  # the executor reads this one from the log API
    assert out.splitlines()[-1] == f"line {pod.LOG_KEPT // 10 - 1:05d}" and len(out.splitlines()) == pod.LOG_KEPT // 10


def test_a_process_left_behind_does_not_hold_the_stage_open(tmp_path: pathlib.Path) -> None:
    import time

    started = time.monotonic()
    rc, lines, _, _ = _relayed(tmp_path, ["bash", "-c", "echo before; (sleep 30; echo late) & exit 4"])
    assert rc == 4
    assert time.monotonic() - started < 20, "waited for the background process's pipe"
    assert [text for _, _, text in lines] == ["before"]


def test_invalid_utf8_is_kept_replaced(tmp_path: pathlib.Path) -> None:
    rc, lines, _, _ = _relayed(tmp_path, ["bash", "-c", "printf 'caf\\xc3\\n\\xff ok\\n'"])
    assert rc == 0
    assert [text for _, _, text in lines] == ["caf\ufffd", "\ufffd ok"]


def test_the_end_waits_until_the_runtime_has_read_the_log_pipe(tmp_path: pathlib.Path) -> None:
    import threading
    import time

    read, write = os.pipe()
    os.write(write, b"x" * 50_000)  # still in the pipe: the reader is slow
    taken = bytearray()

    def slow_reader() -> None:
        time.sleep(0.3)
        while len(taken) < 50_000:
            taken.extend(os.read(read, 4096))

    reader = threading.Thread(target=slow_reader)
    reader.start()
    started = time.monotonic()
    pod.await_log_drained(limit=10, fds=(write,))
    waited = time.monotonic() - started
    reader.join()
    assert len(taken) == 50_000 and waited >= 0.25  # returned once the pipe was empty
    os.write(write, b"left")  # nobody reads: gives up at the limit
    started = time.monotonic()
    pod.await_log_drained(limit=0.2, fds=(write,))
    assert 0.15 < time.monotonic() - started < 5
    with (tmp_path / "f").open("w") as plain:  # not a pipe: nothing to wait for
        pod.await_log_drained(limit=10, fds=(plain.fileno(),))
    os.close(read)
    os.close(write)
