"""What the web UI relies on: the stats and system endpoints, the run's DAG, the truthful OpenAPI
document (and the UI's client generated from it), and the UI served without shadowing the API."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_stats_count_runs_by_day_outcome_and_hour(client, server):
    ok = client.wait(httpx.post(headers=server.headers, url=f"{server.url}/api/v1/runs", json={"pipeline": "hello"}).json()["id"], timeout=60)
    bad = client.wait(httpx.post(headers=server.headers, url=f"{server.url}/api/v1/runs", json={"pipeline": "flaky"}).json()["id"], timeout=60)
    assert ok.state.value == "succeeded" and bad.state.value == "failed"
    stats = httpx.get(headers=server.headers, url=f"{server.url}/api/v1/stats", params={"days": 3}).json()
    assert stats["total"] == 2 and "truncated" not in stats
    assert stats["failure_rate"] == 0.5
    assert len(stats["days"]) == 3 and stats["days"][-1]["succeeded"] == 1 and stats["days"][-1]["failed"] == 1
    assert sum(map(sum, stats["heatmap"])) == 2 and len(stats["heatmap"]) == 7
    assert {s["pipeline"] for s in stats["slowest"]} == {"hello", "flaky"}
    assert stats["recent"]["hello"][0]["id"] == ok.id
    assert stats["queued"] == 0 and stats["running"] == 0
    # the dashboard's call: the same counts, no last runs
    lean = httpx.get(headers=server.headers, url=f"{server.url}/api/v1/stats", params={"days": 3, "recent": 0}).json()
    assert lean["recent"] == {} and {k: v for k, v in lean.items() if k != "recent"} == \
        {k: v for k, v in stats.items() if k != "recent"}
    one = httpx.get(headers=server.headers, url=f"{server.url}/api/v1/stats", params={"days": 3, "recent": 1}).json()
    assert {name: len(runs) for name, runs in one["recent"].items()} == {"hello": 1, "flaky": 1}
    for wrong in (-1, 51, "x"):
        answer = httpx.get(headers=server.headers, url=f"{server.url}/api/v1/stats", params={"days": 3, "recent": wrong})
        assert answer.status_code == 422 and "recent" in answer.text, (wrong, answer.text)
    bad_days = httpx.get(headers=server.headers, url=f"{server.url}/api/v1/stats", params={"days": 0})
    assert bad_days.status_code == 422 and "days" in bad_days.json()["detail"]


def test_system_names_executors_and_never_the_database_url(server, settings):
    system = httpx.get(headers=server.headers, url=f"{server.url}/api/v1/system").json()
    assert system["database"] in ("sqlite", "postgresql")
    assert system["default_executor"] == "local"
    assert "local" in {e["name"] for e in system["executors"]}
    assert all(isinstance(v, bool) for e in system["executors"] for v in e["capabilities"].values())
    assert str(settings.database_url) not in json.dumps(system)
    assert system["queued"] == 0 and system["running"] == 0  # counted by GROUP BY, not by loading runs
    assert "scheduler_lag" in system and "last_fire_at" in system


def test_a_single_run_carries_its_dag(client, server):
    run_id = httpx.post(headers=server.headers, url=f"{server.url}/api/v1/runs", json={"pipeline": "flaky"}).json()["id"]
    client.wait(run_id, timeout=60)
    run = httpx.get(headers=server.headers, url=f"{server.url}/api/v1/runs/{run_id}").json()
    assert run["dag"] == {"first": [], "second": ["first"]}
    assert httpx.get(headers=server.headers, url=f"{server.url}/api/v1/runs").json()["items"][0]["dag"] is None


def test_errors_are_documented_as_problem_json(server):
    document = httpx.get(headers=server.headers, url=f"{server.url}/api/v1/openapi.json").json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (method, path, status)
            if "requestBody" in operation:
                assert {"400", "413"} <= operation["responses"].keys(), (method, path)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_405_allows_every_method_of_the_path(server):
    response = httpx.request("PATCH", f"{server.url}/api/v1/secrets/A_NAME", headers=server.headers)
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, PUT"


def test_the_ui_client_is_generated_from_the_current_document(server):
    """ui/openapi.json and ui/src/api/schema.d.ts are this server's document; `scripts/ui-client` remakes them."""
    live = httpx.get(headers=server.headers, url=f"{server.url}/api/v1/openapi.json").json()
    committed = json.loads((ROOT / "ui" / "openapi.json").read_text())
    assert committed == live, "the API changed: run scripts/ui-client and commit ui/openapi.json and ui/src/api/schema.d.ts"
    generator = ROOT / "ui" / "node_modules" / ".bin" / "openapi-typescript"
    if not generator.exists() or not shutil.which("node"):
        pytest.skip("openapi-typescript is not installed (scripts/bootstrap installs it with npm)")
    fresh = subprocess.run([str(generator), "openapi.json"], cwd=ROOT / "ui", capture_output=True, text=True,
                           check=True, timeout=120).stdout
    assert fresh == (ROOT / "ui" / "src" / "api" / "schema.d.ts").read_text(), \
        "ui/src/api/schema.d.ts is stale: run scripts/ui-client"


def test_the_ui_is_served_without_shadowing_the_api(server):
    from kubeline.ui import serve

    page = httpx.get(headers=server.headers, url=f"{server.url}/runs/some-run")
    assert page.headers["content-type"].startswith("text/html")
    if serve.is_built():
        assert page.status_code == 200 and '<div id="root">' in page.text
    else:
        assert page.status_code == 503 and "scripts/bootstrap" in page.text
    unknown = httpx.get(headers=server.headers, url=f"{server.url}/api/v1/no-such-thing")
    assert unknown.status_code == 404 and unknown.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(headers=server.headers, url=f"{server.url}/healthz").json()["status"] == "ok"
    assert httpx.get(headers=server.headers, url=f"{server.url}/metrics").headers["content-type"].startswith("text/plain")
    assert httpx.post(headers=server.headers, url=f"{server.url}/runs/x").status_code in (404, 405)
