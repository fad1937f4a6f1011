"""API tokens (hashed, shown once, expiry, revocation, roles capped by the owner), invitations,
the script runner switch, the /metrics token, the audit API and the bind refusal without auth."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

import httpx
import pytest
import sqlalchemy as sa

from kubeline import server as server_
from kubeline import settings as settings_
from kubeline import testing
from kubeline.storage import sql


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _table(url: str, table: str) -> list[dict]:
    async def read() -> list[dict]:
        store = await sql.SqlStore.open(url)
        try:
            return await store.database.run(
                lambda conn: [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {table}")).mappings()],
                write=False)
        finally:
            await store.close()

    return asyncio.run(read())


def test_tokens_are_hashed_shown_once_and_end(api_server, auth_settings) -> None:
    viewer = api_server.login_as("val", "viewer")
    with httpx.Client(base_url=api_server.url, headers=_bearer(viewer)) as http:
        too_high = http.post("/api/v1/tokens", json={"name": "x", "role": "admin"})
        assert too_high.status_code == 403 and "viewer role" in too_high.json()["detail"]
        assert http.post("/api/v1/tokens", json={"name": "svc", "kind": "service"}).status_code == 403
        made = http.post("/api/v1/tokens", json={"name": "short", "expires_in_days": 0.00002})  # ~1.7 s
        assert made.status_code == 201
        secret, token_id = made.json()["secret"], made.json()["token"]["id"]
        assert secret.startswith("klt_")
        listed = http.get("/api/v1/tokens").json()
        assert {t["name"] for t in listed} == {"val test token", "short"} and secret not in str(listed)
    assert httpx.get(f"{api_server.url}/api/v1/runs", headers=_bearer(secret)).status_code == 200
    rows = _table(auth_settings.database, "api_tokens")
    assert hashlib.sha256(secret.encode()).hexdigest() in {r["token_hash"] for r in rows}
    assert not any(secret in str(r) for r in rows)
    used = next(r for r in rows if r["id"] == token_id)
    assert used["last_used_at"] is not None
    import time

    time.sleep(2)
    expired = httpx.get(f"{api_server.url}/api/v1/runs", headers=_bearer(secret))
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    with httpx.Client(base_url=api_server.url, headers=_bearer(viewer)) as http:
        own = next(t for t in http.get("/api/v1/tokens").json() if t["name"] == "val test token")
        assert http.delete(f"/api/v1/tokens/{own['id']}").status_code == 204
        revoked = http.get("/api/v1/runs")
        assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    unknown = httpx.get(f"{api_server.url}/api/v1/runs", headers=_bearer("klt_made_up"))
    assert unknown.status_code == 401 and "unknown API token" in unknown.json()["detail"]


def test_a_token_follows_its_owner(api_server) -> None:
    token = api_server.login_as("olga", "operator")
    with api_server.http() as admin:
        user = next(u for u in admin.get("/api/v1/users").json() if u["username"] == "olga")
        assert httpx.post(f"{api_server.url}/api/v1/runs", json={"pipeline": "hello"},
                          headers=_bearer(token)).status_code == 201
        admin.patch(f"/api/v1/users/{user['id']}", json={"role": "viewer"}).raise_for_status()
        assert httpx.post(f"{api_server.url}/api/v1/runs", json={"pipeline": "hello"},
                          headers=_bearer(token)).status_code == 403
        admin.put(f"/api/v1/users/{user['id']}/grants",
                  json=[{"target": "tag:team-a", "role": "operator"}]).raise_for_status()
        assert httpx.post(f"{api_server.url}/api/v1/runs", json={"pipeline": "hello"},  # hello has tag team-a
                          headers=_bearer(token)).status_code == 201
        assert httpx.post(f"{api_server.url}/api/v1/runs", json={"pipeline": "other"},
                          headers=_bearer(token)).status_code == 403
        admin.patch(f"/api/v1/users/{user['id']}", json={"disabled": True}).raise_for_status()
        assert httpx.get(f"{api_server.url}/api/v1/runs", headers=_bearer(token)).status_code == 401
        last = [u for u in admin.get("/api/v1/users").json() if u["role"] == "admin"]
        assert len(last) == 1  # the first admin; service tokens are no users
        refused = admin.patch(f"/api/v1/users/{last[0]['id']}", json={"role": "viewer"})
        assert refused.status_code == 409 and "last admin" in refused.json()["detail"]


def test_invitations_work_once_and_expire(api_server) -> None:
    with api_server.http() as admin:
        made = admin.post("/api/v1/invitations", json={"role": "operator"}).json()
        stale = admin.post("/api/v1/invitations", json={"role": "admin", "expires_in_hours": 0.0003}).json()
    accept = "/api/v1/auth/invitations/accept"
    with httpx.Client(base_url=api_server.url) as browser:
        me = browser.post(accept, json={"token": made["token"], "username": "ivan", "password": "ivan's long password"})
        assert me.status_code == 201 and me.json()["role"] == "operator"
        assert browser.get("/api/v1/runs").status_code == 200
    with httpx.Client(base_url=api_server.url) as other:
        twice = other.post(accept, json={"token": made["token"], "username": "ivy", "password": "ivy's long password"})
        assert twice.status_code == 403 and "used already or expired" in twice.json()["detail"]
        import time

        time.sleep(1.2)
        late = other.post(accept, json={"token": stale["token"], "username": "ivy", "password": "ivy's long password"})
        assert late.status_code == 403
        assert other.post("/api/v1/auth/login", json={"username": "ivy", "password": "ivy's long password"}
                          ).status_code == 401


def test_scripts_are_off_unless_enabled_and_need_an_operator(auth_settings) -> None:
    off = auth_settings.model_copy(update={"scripts_enabled": False})
    with testing.ServerThread(off, role="api") as server, server.http() as admin:
        answer = admin.post("/api/v1/scripts", json={"code": "print(1)"})
        assert answer.status_code == 404 and "KUBELINE_SCRIPTS_ENABLED" in answer.json()["detail"]
        viewer = server.login_as("vic", "viewer")
        assert httpx.post(f"{server.url}/api/v1/scripts", json={"code": "print(1)"},
                          headers=_bearer(viewer)).status_code == 403


def test_metrics_token(auth_settings) -> None:
    guarded = auth_settings.model_copy(update={"metrics_token": settings_.pydantic.SecretStr("scrape-me")})
    with testing.ServerThread(guarded, role="api") as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers=_bearer("nope")).status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers=_bearer("scrape-me")).status_code == 200
    with testing.ServerThread(auth_settings, role="api") as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 200  # open unless a token is set


def test_audit_log_records_changes_and_filters(api_server) -> None:
    operator = api_server.login_as("opal", "operator")
    with httpx.Client(base_url=api_server.url, headers=_bearer(operator)) as http:
        run = http.post("/api/v1/runs", json={"pipeline": "hello"}).json()
        http.post(f"/api/v1/runs/{run['id']}/cancel")
        assert http.put("/api/v1/secrets/DB_PASSWORD", json={"value": "s3cr3t-value"}).status_code == 403
    with api_server.http() as admin:
        assert admin.put("/api/v1/secrets/DB_PASSWORD", json={"value": "s3cr3t-value"}).status_code == 204
        mine = admin.get("/api/v1/audit", params={"actor": "token:opal/opal test token"}).json()["items"]
        assert [(e["action"], e["outcome"]) for e in mine][:3] == [("put_secret", 403), ("cancel_run", 200),
                                                                    ("create_run", 201)]
        assert mine[0]["ip"] == "127.0.0.1" and mine[1]["target"] == f"POST /api/v1/runs/{run['id']}/cancel"
        every = admin.get("/api/v1/audit", params={"limit": 1000}).json()["items"]
        assert not any("s3cr3t-value" in str(e) for e in every)
        since = admin.get("/api/v1/audit", params={"since": (dt.datetime.now(dt.UTC)
                                                              + dt.timedelta(hours=1)).isoformat()}).json()
        assert since["items"] == []
        page = admin.get("/api/v1/audit", params={"limit": 2}).json()
        older = admin.get("/api/v1/audit", params={"limit": 2, "before_id": page["next"]}).json()
        assert older["items"][0]["id"] < page["items"][-1]["id"]
    viewer = api_server.login_as("vince", "viewer")
    assert httpx.get(f"{api_server.url}/api/v1/audit", headers=_bearer(viewer)).status_code == 403


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::"])
def test_no_auth_is_refused_off_loopback(auth_settings, host) -> None:
    no_auth = auth_settings.model_copy(update={"auth_enabled": False})
    with pytest.raises(server_.InsecureBind, match="refusing to listen"):
        server_.check_bind(no_auth, host)
    with pytest.raises(server_.InsecureBind, match="--insecure-no-auth"):
        server_.check_bind(auth_settings, host, insecure_no_auth=True)
    server_.check_bind(auth_settings, host)
    server_.check_bind(no_auth, "127.0.0.1")


def test_insecure_no_auth_on_loopback_says_so(auth_settings, capfd) -> None:
    no_auth = auth_settings.model_copy(update={"auth_enabled": False})
    with testing.ServerThread(no_auth, role="api") as server:
        assert "AUTHENTICATION IS DISABLED" in capfd.readouterr().err
        assert httpx.get(f"{server.url}/api/v1/secrets").status_code == 200


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # replicas share PostgreSQL
def test_another_replica_honours_a_revocation_and_an_owner_change_at_once(auth_settings) -> None:
    """Replicas cache who a token is (a few seconds); a revocation or a change of the owner made
    through another replica reaches them by NOTIFY, well before that cache would expire."""
    import time

    def answers(url: str, token: str, *, want: int) -> int:
        deadline = time.monotonic() + 1.0  # NOTIFY latency, far below the cache's TOKEN_CACHE_SECONDS
        while True:
            status = httpx.post(f"{url}/api/v1/runs", json={"pipeline": "hello"}, headers=_bearer(token)).status_code
            if status == want or time.monotonic() > deadline:
                return status
            time.sleep(0.05)

    with testing.ServerThread(auth_settings, role="api") as one, \
            testing.ServerThread(auth_settings, role="api") as two:
        token = one.login_as("rita", "operator")
        assert answers(two.url, token, want=201) == 201  # two has it cached now
        with one.http() as admin:
            user = next(u for u in admin.get("/api/v1/users").json() if u["username"] == "rita")
            admin.patch(f"/api/v1/users/{user['id']}", json={"role": "viewer"}).raise_for_status()
            assert answers(two.url, token, want=403) == 403
            admin.patch(f"/api/v1/users/{user['id']}", json={"role": "operator"}).raise_for_status()
            assert answers(two.url, token, want=201) == 201
        with httpx.Client(base_url=one.url, headers=_bearer(token)) as rita:
            own = next(t for t in rita.get("/api/v1/tokens").json() if t["name"] == "rita test token")
            assert rita.delete(f"/api/v1/tokens/{own['id']}").status_code == 204
        assert answers(two.url, token, want=401) == 401


def test_each_run_created_has_exactly_one_audit_row_written_with_it(api_server, auth_settings) -> None:
    """POST /api/v1/runs writes the run and its audit row together (one statement on PostgreSQL);
    a refused POST still gets its row from the middleware, and no run."""
    operator = api_server.login_as("abe", "operator")
    viewer = api_server.login_as("vic", "viewer")
    with httpx.Client(base_url=api_server.url, headers=_bearer(operator)) as http:
        made = [http.post("/api/v1/runs", json={"pipeline": "hello"}) for _ in range(3)]
        assert [r.status_code for r in made] == [201, 201, 201]
        bad = http.post("/api/v1/runs", json={"pipeline": "hello", "schedule_id": "nope"})
        assert bad.status_code == 404
    assert httpx.post(f"{api_server.url}/api/v1/runs", json={"pipeline": "hello"},
                      headers=_bearer(viewer)).status_code == 403
    audit = [r for r in _table(auth_settings.database, "audit_log") if r["action"] == "create_run"]
    by_actor = {actor: [(r["outcome"], r["target"], r["ip"]) for r in audit if r["actor"] == actor]
                for actor in ("token:abe/abe test token", "token:vic/vic test token")}
    assert sorted(by_actor["token:abe/abe test token"]) == [(201, "POST /api/v1/runs", "127.0.0.1")] * 3 + [
        (404, "POST /api/v1/runs", "127.0.0.1")]
    assert by_actor["token:vic/vic test token"] == [(403, "POST /api/v1/runs", "127.0.0.1")]
    run_ids = {r["id"] for r in _table(auth_settings.database, "runs")}
    assert {r.json()["id"] for r in made} <= run_ids and len(run_ids) == 3
    events = _table(auth_settings.database, "events")
    assert sorted(e["entity_id"] for e in events if e["to_state"] == "queued") == sorted(run_ids)
