"""http_request against a real HTTP server on 127.0.0.1 (in a thread), in-process and via -m."""

from __future__ import annotations

import collections.abc
import http.server
import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

import pytest

from kubeline.components import base, http_request
from kubeline.domain import components

BIG = http_request.MAX_BODY_BYTES + 1024


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/json":
            self._send(
                200, json.dumps({"items": [1, 2], "query": self.path}).encode(), "application/json"
            )
        elif path == "/problem":
            self._send(200, b'{"title": "x"}', "application/problem+json; charset=utf-8")
        elif path == "/text":
            self._send(200, "héllo".encode(), "text/plain; charset=utf-8")
        elif path == "/broken-json":
            self._send(200, b"{not json", "application/json")
        elif path == "/fail":
            self._send(500, b'{"error": "database down"}', "application/json")
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/json")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/huge-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(BIG))
            self.end_headers()
            self.wfile.write(b"x" * 1024)
        elif path == "/huge-streamed":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()  # no Content-Length: the body runs until the connection closes
            self.close_connection = True
            chunk = b"x" * 65536
            try:
                for _ in range(BIG // len(chunk) + 2):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/slow":
            time.sleep(2)
            self._send(200, b"late", "text/plain")
        else:
            self._send(404, b"not found", "text/plain")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        echo = {
            "body": body.decode(),
            "type": self.headers.get("Content-Type"),
            "token": self.headers.get("X-Token"),
        }
        self._send(201, json.dumps(echo).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> collections.abc.Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def fetch(config: dict[str, object]) -> tuple[dict[str, object], list[str]]:
    lines: list[str] = []
    model = components.HttpRequestConfig.model_validate(config)
    return http_request.run(config=model, inputs={}, log=lines.append), lines


def test_json_body_is_parsed(server: str) -> None:
    outputs, lines = fetch({"url": f"{server}/json", "params": {"day": "1"}})
    assert outputs["status"] == 200
    assert outputs["body"] == {"items": [1, 2], "query": "/json?day=1"}
    headers = outputs["headers"]
    assert isinstance(headers, dict) and headers["content-type"] == "application/json"
    assert lines[0].startswith(f"GET {server}/json")
    assert "-> 200 OK" in lines[1]


def test_json_suffix_types_and_text(server: str) -> None:
    assert fetch({"url": f"{server}/problem"})[0]["body"] == {"title": "x"}
    assert fetch({"url": f"{server}/text"})[0]["body"] == "héllo"


def test_broken_json_is_kept_as_text_with_a_warning(server: str) -> None:
    outputs, lines = fetch({"url": f"{server}/broken-json"})
    assert outputs["body"] == "{not json"
    assert any("does not parse" in line for line in lines)


def test_post_json_and_body(server: str) -> None:
    outputs, _ = fetch(
        {"url": f"{server}/echo", "method": "POST", "json": {"a": 1}, "headers": {"X-Token": "t"}}
    )
    assert outputs["status"] == 201
    assert outputs["body"] == {"body": '{"a":1}', "type": "application/json", "token": "t"}
    outputs, _ = fetch({"url": f"{server}/echo", "method": "POST", "body": "plain"})
    body = outputs["body"]
    assert isinstance(body, dict) and body["body"] == "plain"
    with pytest.raises(base.ComponentError, match="give 'json' or 'body', not both"):
        fetch({"url": f"{server}/echo", "method": "POST", "body": "x", "json": {}})


def test_error_status_fails_unless_expected(server: str) -> None:
    with pytest.raises(base.ComponentError) as caught:
        fetch({"url": f"{server}/fail"})
    message = str(caught.value)
    assert message.startswith(f"GET {server}/fail returned 500")
    assert "(expected 2xx)" in message and "database down" in message
    outputs, _ = fetch({"url": f"{server}/fail", "expect_status": [500]})
    assert outputs["status"] == 500
    assert outputs["body"] == {"error": "database down"}
    with pytest.raises(base.ComponentError, match=r"returned 200 OK \(expected 201\)"):
        fetch({"url": f"{server}/json", "expect_status": [201]})


def test_redirects(server: str) -> None:
    assert fetch({"url": f"{server}/redirect"})[0]["status"] == 200
    with pytest.raises(base.ComponentError, match="returned 302"):
        fetch({"url": f"{server}/redirect", "follow_redirects": False})


@pytest.mark.parametrize(
    ("path", "detail"), [("/huge-declared", "bytes declared"), ("/huge-streamed", "received")]
)
def test_huge_bodies_are_refused(server: str, path: str, detail: str) -> None:
    with pytest.raises(base.ComponentError, match=f"larger than the 10 MB limit .*{detail}"):
        fetch({"url": f"{server}{path}"})


def test_connection_refused_and_timeout(server: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(
            base.ComponentError, match=f"GET http://127.0.0.1:{port}/x: could not connect"
        ):
            fetch({"url": f"http://127.0.0.1:{port}/x"})
    with pytest.raises(base.ComponentError, match=r"timed out after 0.3s \(ReadTimeout\)"):
        fetch({"url": f"{server}/slow", "timeout": 0.3})
    with pytest.raises(base.ComponentError, match="needs an http:// or https:// scheme"):
        fetch({"url": "ftp://127.0.0.1/x"})


def run_module(
    tmp_path: pathlib.Path, name: str, config: object, inputs: object = None
) -> tuple[subprocess.CompletedProcess[str], dict[str, object] | None]:
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "inputs.json").write_text(json.dumps(inputs or {}))
    outputs = tmp_path / "outputs.json"
    env = {
        **os.environ,
        "KUBELINE_CONFIG": str(tmp_path / "config.json"),
        "KUBELINE_INPUTS": str(tmp_path / "inputs.json"),
        "KUBELINE_OUTPUTS": str(outputs),
    }
    result = subprocess.run(
        [sys.executable, "-m", "kubeline.components", name],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, (json.loads(outputs.read_text()) if outputs.exists() else None)


def test_module_entry_writes_outputs(server: str, tmp_path: pathlib.Path) -> None:
    result, outputs = run_module(tmp_path, "http_request", {"url": f"{server}/json"})
    assert result.returncode == 0, result.stderr
    assert outputs is not None and outputs["body"] == {"items": [1, 2], "query": "/json"}
    assert "http_request: wrote outputs body, headers, status" in result.stdout


def test_module_entry_fails_with_one_line(server: str, tmp_path: pathlib.Path) -> None:
    result, outputs = run_module(tmp_path, "http_request", {"url": f"{server}/fail"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: GET {server}/fail returned 500")
    assert outputs is None
    result, _ = run_module(tmp_path, "http_request", {"method": "GET", "urll": "x"})
    assert result.returncode == 1
    assert (
        "invalid stage config: config.url: Field required; config.urll: Extra inputs"
        in result.stderr
    )


def test_module_entry_json_transform_and_usage(tmp_path: pathlib.Path) -> None:
    result, outputs = run_module(
        tmp_path, "json_transform", {"expression": "length(rows)"}, inputs={"rows": [1, 2, 3]}
    )
    assert result.returncode == 0, result.stderr
    assert outputs == {"result": 3}
    result, _ = run_module(tmp_path, "nope", {})
    assert result.returncode == 2 and "usage: python -m kubeline.components" in result.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELINE_")}
    result = subprocess.run(
        [sys.executable, "-m", "kubeline.components", "json_transform"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "KUBELINE_CONFIG is not set" in result.stderr
