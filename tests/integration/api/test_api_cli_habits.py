"""The CLI as kubectl/Argo users expect it, through Typer's CliRunner against a real server:
``-o table|wide|json|yaml``, whole ids, ``runs --watch`` fed by the server's run stream,
``open``, and log lines in one format, one per line, unwrapped when piped."""

from __future__ import annotations

import io
import json
import logging
import os
import pathlib
import stat
import threading
import time

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from kubeline import server_logs
from kubeline.api import schemas
from kubeline.cli import main, output, render

pytestmark = pytest.mark.slow


@pytest.fixture
def cli(server, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    for key in list(os.environ):
        if key.startswith("KUBELINE_") or key in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KUBELINE_URL", server.url)
    monkeypatch.setenv("KUBELINE_TOKEN", server.token)
    monkeypatch.setenv("KUBELINE_HOME", str(tmp_path / "cli-home"))
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(main.app, list(args), catch_exceptions=False)
        assert result.exit_code == code, f"exit {result.exit_code}\n{result.output}"
        return result.output

    return invoke


@pytest.fixture
def finished_run(client):  # type: ignore[no-untyped-def]
    created = client.create_run("hello", {"name": "ops", "count": 2})
    return client.wait(created.id, timeout=60)


@pytest.mark.parametrize("command", [["runs"], ["status", "{run}"]])
def test_json_and_yaml_are_the_api_objects(cli, client, finished_run, command):
    args = [part.format(run=finished_run.id) for part in command]
    as_json = json.loads(cli(*args, "-o", "json"))
    as_yaml = yaml.safe_load(cli(*args, "--output", "yaml"))
    assert as_json == as_yaml
    if command == ["runs"]:
        assert [item["id"] for item in as_json] == [r.id for r in client.runs().items]
        schemas.RunOut.model_validate(as_json[0])
    else:
        assert as_json == client.run(finished_run.id).model_dump(mode="json")
        assert as_json["outputs"] == {"greet": {"greeted": "ops"}}


def test_table_and_wide(cli, finished_run):
    table = cli("runs")
    assert finished_run.id in table and "PIPELINE" in table and "INPUTS" not in table
    wide = cli("runs", "-o", "wide")
    assert "INPUTS" in wide and '"name": "ops"' in wide
    status = cli("status", finished_run.id, "-o", "wide")
    attempt = finished_run.attempts[0].id if finished_run.attempts else ""
    assert "greet" in status and "EXECUTOR" in status and attempt in status


def test_unknown_format_is_refused_with_the_choices(server, monkeypatch):
    monkeypatch.setenv("KUBELINE_URL", server.url)
    result = CliRunner().invoke(main.app, ["runs", "-o", "xml"])
    assert result.exit_code == 2
    assert "table" in result.output and "json" in result.output


def test_ids_are_never_cut_on_a_narrow_terminal(finished_run):
    for width in (60, 30):
        buffer = io.StringIO()
        narrow = Console(file=buffer, width=width, force_terminal=True, color_system=None)
        rows = [finished_run.model_copy(update={"error": "a long error " * 10})]
        output.print_table(output.table(rows, columns=render.RUN_COLUMNS), to=narrow)
        assert finished_run.id in buffer.getvalue(), buffer.getvalue()
        assert "…" not in buffer.getvalue().split(finished_run.id)[0].splitlines()[-1]


def test_piped_table_is_not_folded(finished_run):
    buffer = io.StringIO()
    piped = Console(file=buffer, width=80, color_system=None)
    rows = [finished_run.model_copy(update={"error": "word " * 40})]
    output.print_table(output.table(rows, columns=render.RUN_COLUMNS), to=piped)
    assert ("word " * 40).strip() in buffer.getvalue()  # the whole error on one line


def test_logs_are_one_unwrapped_line_each_in_the_download_format(cli, client, tmp_path):
    long_text = "x" * 300
    created = client.create_run("hello", {"name": long_text, "count": 1})
    client.wait(created.id, timeout=60)
    printed = cli("logs", created.id)
    followed = cli("logs", created.id, "--follow")
    downloaded = client.logs(created.id)
    assert f"hello {long_text} 1" in printed
    assert printed == downloaded
    wanted = [line for line in downloaded.splitlines() if f"hello {long_text}" in line]
    assert wanted and all(line in followed.splitlines() for line in wanted)


def test_watch_shows_new_runs_pushed_by_the_server(cli, client):
    before = client.create_run("hello", {"count": 1})
    client.wait(before.id, timeout=60)
    seen: list[str] = []

    def later() -> None:
        time.sleep(1.5)
        seen.append(client.create_run("hello", {"name": "watched", "count": 1}).id)

    thread = threading.Thread(target=later)
    thread.start()
    started = time.monotonic()
    printed = cli("runs", "--watch", "-o", "json", "--timeout", "6")
    thread.join()
    assert time.monotonic() - started < 15
    items = [json.loads(line) for line in printed.splitlines() if line.strip()]
    assert items[0]["id"] == before.id or any(i["id"] == before.id for i in items)
    states_of_new = [i["state"] for i in items if i["id"] == seen[0]]
    assert states_of_new, printed  # the new run arrived without asking again
    assert states_of_new[-1] in ("queued", "running", "succeeded")
    table = cli("runs", "--watch", "--timeout", "2")
    assert table.splitlines()[0].split("\t")[:2] == ["RUN", "PIPELINE"] and seen[0] in table


def test_watch_without_a_server_says_how(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBELINE_URL", raising=False)
    monkeypatch.setenv("KUBELINE_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(main.app, ["runs", "--watch"])
    assert result.exit_code == 1 and "KUBELINE_URL" in result.output


def test_open_prints_the_page_and_opens_a_browser_when_there_is_one(cli, server, finished_run, tmp_path,
                                                                     monkeypatch):
    printed = cli("open", finished_run.id)
    assert printed.strip() == f"{server.url}/runs/{finished_run.id}"
    opened = tmp_path / "opened"
    browser = tmp_path / "browser.sh"
    browser.write_text(f"#!/bin/sh\necho \"$1\" > {opened}\n")
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("BROWSER", str(browser))
    cli("open", finished_run.id)
    assert opened.read_text().strip() == f"{server.url}/runs/{finished_run.id}"
    opened.unlink()
    cli("open", finished_run.id, "--no-browser")
    assert not opened.exists()
    assert "not found" in cli("open", "01NOSUCHRUN0000000000000000", code=1).lower()


def test_server_logs_text_on_a_terminal_and_json_otherwise(monkeypatch):
    record = logging.LogRecord("kubeline.engine", logging.INFO, __file__, 1, "run %s succeeded", ("r1",), None)
    record.run_id = "r1"
    text = server_logs.TextFormatter().format(record)
    assert "INFO" in text and "kubeline.engine: run r1 succeeded" in text and "run_id=r1" in text
    assert json.loads(server_logs.JsonFormatter().format(record))["run_id"] == "r1"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        for stream, expect_json in ((io.StringIO(), True), (Tty(), False)):
            monkeypatch.setattr("sys.stderr", stream)
            server_logs.configure(level="info")
            logging.getLogger("kubeline.test").info("hello %s", "there", extra={"pipeline": "p"})
            line = stream.getvalue().strip().splitlines()[-1]
            if expect_json:
                assert json.loads(line)["message"] == "hello there"
            else:
                assert line.endswith("kubeline.test: hello there  pipeline=p")
        with pytest.raises(ValueError, match="not one of"):
            server_logs.configure(fmt="xml")
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_kubeline", False):
                root.removeHandler(handler)
        for handler in saved[0]:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(saved[1])


def test_secrets_and_pipelines_listings_take_o(tmp_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith("KUBELINE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("KUBELINE_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    assert runner.invoke(main.app, ["secrets", "set", "DB_PASSWORD", "--value", "s3cret"]).exit_code == 0
    listed = runner.invoke(main.app, ["secrets", "list", "-o", "json"])
    assert json.loads(listed.output) == [{"name": "DB_PASSWORD"}]
    assert "s3cret" not in listed.output
    folder = tmp_path / "pipes" / "tiny"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text("print('hi')\n")
    done = runner.invoke(main.app, ["pipelines", "--dir", str(tmp_path / "pipes"), "-o", "yaml"])
    assert done.exit_code == 0, done.output
    assert yaml.safe_load(done.output)[0]["name"] == "tiny"
    assert pathlib.Path(tmp_path / "home").exists()
