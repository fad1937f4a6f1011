"""Path traversal in pipeline and run names and in log downloads finds nothing, as any caller."""

from __future__ import annotations

import pytest

NAMES = ["..", "../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc", "hello/../../x", "/etc/passwd"]


@pytest.mark.parametrize("name", NAMES)
def test_traversal_in_names_finds_nothing(api_server, name) -> None:
    with api_server.http() as admin:
        for path in (f"/api/v1/pipelines/{name}", f"/api/v1/pipelines/{name}/spec", f"/api/v1/runs/{name}",
                     f"/api/v1/runs/{name}/logs", f"/api/v1/runs/{name}/outputs"):
            answer = admin.get(path)
            assert answer.status_code in (404, 405), (path, answer.status_code, answer.text[:200])
            assert "root:" not in answer.text


def test_traversal_in_a_log_download_stage(api_server) -> None:
    with api_server.http() as admin:
        run = admin.post("/api/v1/runs", json={"pipeline": "hello"}).json()
        for stage in ("../../../../etc/passwd", "..", "greet/../../x"):
            answer = admin.get(f"/api/v1/runs/{run['id']}/logs", params={"stage": stage})
            assert answer.status_code == 404 and "has no stage" in answer.json()["detail"], stage
