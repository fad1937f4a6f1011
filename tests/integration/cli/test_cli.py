"""`kubeline` as a user runs it: a real process, a fresh KUBELINE_HOME, the example pipelines."""

from __future__ import annotations

import functools
import http.server
import json
import os
import pathlib
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "pipelines"
KUBELINE = pathlib.Path(sys.executable).parent / "kubeline"


@pytest.fixture
def cli(tmp_path: pathlib.Path):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELINE_")}
    env.update(KUBELINE_HOME=str(tmp_path / "home"), KUBELINE_UV_CACHE_DIR="/tmp/kubeline-test-venvs/uv-cache",
               COLUMNS="200")

    def _cli(*args: str, stdin: str | None = None, check: int | None = 0, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(KUBELINE), *args], env=env, capture_output=True, text=True, input=stdin,
                              timeout=timeout, cwd=tmp_path)
        if check is not None:
            assert done.returncode == check, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        return done

    return _cli


@pytest.fixture
def json_server() -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(EXAMPLES / "multi-stage"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sample-data.json"
    server.shutdown()
    server.server_close()


def test_validate_examples(cli):
    assert "6 pipeline(s) valid" in cli("validate", str(EXAMPLES)).stdout


def test_validate_reports_problems_with_exit_1(cli, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "main.py").write_text("")
    (bad / "pipeline.yaml").write_text("stages:\n  - {id: a, dependsOn: [b]}\n  - {id: b, dependsOn: [a]}\nschedules: [{cron: nope}]\n")
    done = cli("validate", str(bad), check=1)
    assert "cycle" in done.stdout and "a -> b -> a" in done.stdout and "cron" in done.stdout


@pytest.mark.parametrize("example", ["hello", "fastflow-compat", "flaky-retry", "with-requirements", "notebook-params"])
def test_examples_run(cli, example):
    done = cli("run", str(EXAMPLES / example))
    assert "succeeded" in done.stdout


def test_multi_stage_example_against_a_local_server(cli, json_server, tmp_path):
    done = cli("run", str(EXAMPLES / "multi-stage"), "--input", f"url={json_server}", "--follow")
    assert "succeeded" in done.stdout
    assert "summarise.result" in done.stdout
    assert "cell" in done.stdout  # per-cell progress of the notebook stage was followed live


def test_failed_run_exit_code_and_logs(cli, tmp_path):
    folder = tmp_path / "boom"
    folder.mkdir()
    (folder / "main.py").write_text("print('about to fail')\nraise RuntimeError('broken on purpose')\n")
    done = cli("run", str(folder), check=1)
    assert "broken on purpose" in done.stderr or "failed" in done.stdout
    run_id = next(line.split()[1] for line in done.stderr.splitlines() if line.startswith("run "))
    logs = cli("logs", run_id).stdout
    assert "about to fail" in logs and "RuntimeError: broken on purpose" in logs
    assert run_id in cli("runs").stdout
    assert "failed" in cli("status", run_id).stdout


def test_timed_out_run_exits_124(cli, tmp_path):
    folder = tmp_path / "sleepy"
    folder.mkdir()
    (folder / "main.py").write_text("import time\ntime.sleep(60)\n")
    (folder / "pipeline.yaml").write_text("timeout: 1\n")
    cli("run", str(folder), check=124)


def test_unknown_pipeline_and_bad_input(cli):
    done = cli("run", "no-such-pipeline", check=1)
    assert "no pipeline folder or known pipeline named 'no-such-pipeline'" in done.stderr
    done = cli("run", str(EXAMPLES / "multi-stage"), check=1)
    assert "input 'url' is required" in done.stderr
    done = cli("run", str(EXAMPLES / "hello"), "--input", "oops", check=1)
    assert "KEY=VALUE" in done.stderr


def test_secrets_roundtrip_and_masking(cli, tmp_path):
    done = cli("secrets", "set", "API_TOKEN", stdin="hunter2-secret\n")
    assert "generated a new secret key" in done.stderr
    assert json.loads(cli("secrets", "list", "-o", "json").stdout) == [{"name": "API_TOKEN"}]
    assert "API_TOKEN" in cli("secrets", "list").stdout
    folder = tmp_path / "uses-secret"
    folder.mkdir()
    (folder / "main.py").write_text("import os\nprint('token', os.environ['API_TOKEN'])\n")
    (folder / "pipeline.yaml").write_text("secrets: [API_TOKEN]\n")
    done = cli("run", str(folder), "--follow")
    assert "token ***" in done.stdout and "hunter2-secret" not in done.stdout
    key = (tmp_path / "home" / "secret.key")
    assert key.stat().st_mode & 0o777 == 0o600
    assert b"hunter2" not in (tmp_path / "home" / "kubeline.db").read_bytes()
    cli("secrets", "delete", "API_TOKEN")
    assert json.loads(cli("secrets", "list", "-o", "json").stdout) == []
    done = cli("secrets", "set", "bad-name", stdin="x", check=1)
    assert "bad-name" in done.stderr


def test_cancel_from_another_process(cli, tmp_path):
    folder = tmp_path / "forever"
    folder.mkdir()
    (folder / "main.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(600)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELINE_")}
    env["KUBELINE_HOME"] = str(tmp_path / "home")
    runner = subprocess.Popen([str(KUBELINE), "run", str(folder)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        run_id = ""
        assert runner.stderr is not None
        for line in runner.stderr:
            if line.startswith("run "):
                run_id = line.split()[1]
                break
        import time

        deadline = time.monotonic() + 60
        while "up" not in cli("logs", run_id).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        cli("cancel", run_id)
        assert runner.wait(timeout=60) == 130
    finally:
        runner.kill()
        runner.communicate()
    assert "cancelled" in cli("status", run_id).stdout


def test_pipelines_lists_folder_and_known_pipelines(cli):
    done = cli("pipelines", "--dir", str(EXAMPLES))
    for name in ("hello", "multi-stage", "notebook-params"):
        assert name in done.stdout


def test_validate_prints_notices_without_failing(cli, tmp_path):
    folder = tmp_path / "daemon"
    folder.mkdir()
    (folder / "main.py").write_text("print(1)\n")
    (folder / "pipeline.json").write_text('{"restart_on_crash": true, "webhook_key": ""}')
    done = cli("validate", str(folder))
    assert "notice(s): read but not acted on" in done.stdout and "restart_on_crash" in done.stdout
    assert "1 pipeline(s) valid" in done.stdout
