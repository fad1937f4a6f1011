"""Schemathesis against the live server's OpenAPI document: no input makes a 5xx.

Bounded: a few examples per operation, loopback only, an ``api``-role server (nothing is
dispatched, so generated scripts never run)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from kubeline import testing

pytestmark = pytest.mark.slow


@pytest.fixture
def api_server(settings):  # type: ignore[no-untyped-def]
    with testing.ServerThread(settings, role="api") as running:
        yield running


def test_no_server_errors(api_server):
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{api_server.url}/api/v1/openapi.json")
    failures: list[str] = []
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:  # type: ignore[no-untyped-def]
            nonlocal count
            count += 1
            if case.path.endswith("/scripts"):
                case.query = {**(case.query or {}), "wait": "false"}  # no dispatcher here: waiting is by design
            try:
                response = case.call(base_url=api_server.url, timeout=15)
            except Exception as exc:  # a hang or a dropped connection is a failure too
                failures.append(f"{case.method} {case.formatted_path}: {type(exc).__name__}: {exc}")
                return
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{response.text[:300]}")

        check()
    assert count > 50
    assert not failures, "\n".join(failures[:10])
