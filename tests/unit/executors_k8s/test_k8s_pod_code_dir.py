"""The pod entrypoint with a plan's ``code_dir`` (code on a volume or in the image): the stage
runs there and nothing is unpacked; a missing code dir is a setup failure that says why.
``main`` runs in a separate interpreter against an upload server on 127.0.0.1."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from kubeline import testing
from kubeline.runtime import pod

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"  # the pod's own python: no venv


class _Uploads(http.server.BaseHTTPRequestHandler):
    bodies: list[Any] = []  # made fresh per test by the fixture

    def do_PUT(self) -> None:
        type(self).bodies.append(json.loads(gzip.decompress(self.rfile.read(int(self.headers["Content-Length"])))))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def uploads() -> Iterator[tuple[str, list[Any]]]:
    with testing.http_server(_Uploads, bodies=[]) as (url, handler):
        yield url, handler.bodies


def _main(tmp_path: pathlib.Path, *, url: str, code_dir: pathlib.Path) -> subprocess.CompletedProcess[str]:
    bundle, work = tmp_path / "bundle", tmp_path / "work"
    bundle.mkdir()
    plan = {"argv": ["python", "-u", "main.py"], "runtime": "pipeline", "python_version": PYTHON_VERSION,
            "requirements": False, "extra_packages": [], "has_code": False, "code_dir": str(code_dir),
            "memory_limit": None}
    (bundle / "plan.json").write_text(json.dumps(plan))
    (bundle / "inputs.json").write_text("{}")
    driver = textwrap.dedent(f"""
        import json, pathlib, sys
        sys.path.insert(0, {str(pathlib.Path(pod.__file__).parent)!r})
        import pod
        pod.terminate = lambda message: print("terminate", json.dumps(message), flush=True)  # not /dev here
        sys.exit(pod.main())
    """)
    env = {"PATH": os.environ["PATH"], "KUBELINE_BUNDLE": str(bundle), "KUBELINE_WORK": str(work),
           "KUBELINE_OUTPUTS": str(work / "io" / "outputs.json"), "KUBELINE_URL": url,
           "KUBELINE_ATTEMPT_ID": "A1", "KUBELINE_ATTEMPT_TOKEN": "t0k"}
    return subprocess.run([sys.executable, "-c", driver], env=env, capture_output=True, text=True, timeout=60,
                          check=False, cwd="/")


def test_the_stage_runs_in_the_code_dir_and_nothing_is_unpacked(
        tmp_path: pathlib.Path, uploads: tuple[str, list[Any]]) -> None:
    url, bodies = uploads
    code = tmp_path / "volume" / "pipelines" / "sales" / "abc"
    code.mkdir(parents=True)
    (code / "data.txt").write_text("from the volume")
    (code / "main.py").write_text(textwrap.dedent("""
        import json, os, pathlib
        pathlib.Path(os.environ["KUBELINE_OUTPUTS"]).write_text(json.dumps(
            {"cwd": os.getcwd(), "data": pathlib.Path("data.txt").read_text()}))
    """))
    proc = _main(tmp_path, url=url, code_dir=code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert bodies == [{"outputs": {"cwd": str(code), "data": "from the volume"}, "route": None}]
    assert list((tmp_path / "work" / "code").iterdir()) == []
    assert sorted(p.name for p in code.iterdir()) == ["data.txt", "main.py"]


def test_a_code_dir_missing_from_the_pod_is_a_setup_failure(
        tmp_path: pathlib.Path, uploads: tuple[str, list[Any]]) -> None:
    url, bodies = uploads
    proc = _main(tmp_path, url=url, code_dir=pathlib.Path("/opt/not-in-this-image"))
    assert proc.returncode == pod.SETUP_FAILED
    assert "the code dir /opt/not-in-this-image is not in the pod (kubernetes.codePath" in proc.stderr
    assert '"setup_error"' in proc.stdout
    assert bodies == []
