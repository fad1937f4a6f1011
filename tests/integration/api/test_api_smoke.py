from __future__ import annotations


def test_smoke(client):
    assert client.health().status == "ok"
    assert {p.name for p in client.pipelines()} >= {"hello", "flaky", "slow", "chatty"}
    run = client.create_run("hello", {"name": "ann", "count": 2})
    final = client.wait(run.id, timeout=60)
    assert final.state.value == "succeeded", final
    assert "hello ann 2" in client.logs(run.id)
