"""Schemathesis against the live server's OpenAPI document: the document tells the truth.

Every check is on (``--checks all``: no 5xx, documented status codes and content types, response
bodies and SSE events match their schemas, schema-valid requests accepted, invalid ones refused,
``Allow`` on 405), over every phase (examples, coverage, fuzzing, stateful). Bounded: a few
examples per operation, loopback only, an ``api``-role server (nothing is dispatched, so generated
scripts never run). The web UI's typed client is generated from this document, so a lie here
would be a bug there.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from kubeline import testing

pytestmark = pytest.mark.slow
CONFIG = pathlib.Path(__file__).with_name("schemathesis.toml")


@pytest.fixture
def api_server(settings):  # type: ignore[no-untyped-def]
    with testing.ServerThread(settings, role="api") as running:
        yield running


@pytest.mark.timeout(600)
def test_openapi_document_matches_the_server(api_server, tmp_path):
    st = pathlib.Path(sys.executable).with_name("st")
    result = subprocess.run(
        [str(st), "--config-file", str(CONFIG), "run", f"{api_server.url}/api/v1/openapi.json",
         "--header", f"Authorization: Bearer {api_server.token}",
         "--checks", "all", "--max-examples", "8", "--seed", "1", "--no-color", "--workers", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=560, check=False)
    report = result.stdout + result.stderr
    assert "generated" in report, report[-3000:]
    failures = report[report.find("FAILURES"):report.find("SUMMARY")] if "FAILURES" in report else report
    assert result.returncode == 0, failures[:12000]
