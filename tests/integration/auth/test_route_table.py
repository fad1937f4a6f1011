"""Every operation of the served OpenAPI, called as anonymous, viewer, operator, admin and a token
limited to another pipeline: each answers as its declared access rule says.

A new route fails here until it declares who may call it (see ``kubeline.api.access``); the
failure says what to add. Public routes are a short reviewed list (``PUBLIC``).
"""

from __future__ import annotations

import re

import httpx
import pytest

from kubeline.api import access
from kubeline.auth import roles

Role = roles.Role
PUBLIC = {  # (method, path): why it may be called without a login
    ("GET", "/healthz"): "liveness probe",
    ("GET", "/readyz"): "readiness probe",
    ("GET", "/metrics"): "Prometheus; KUBELINE_METRICS_TOKEN protects it",
    ("POST", "/api/v1/hooks/{pipeline}/{trigger}"): "HMAC-signed webhooks",
    ("PUT", "/api/v1/attempts/{attempt_id}/io"): "the per-attempt token of a stage pod",
    ("POST", "/api/v1/git/{name}/webhook"): "a push event signed with the repository's webhook secret",
    ("POST", "/api/v1/auth/login"): "password login",
    ("POST", "/api/v1/auth/invitations/accept"): "the invitation token",
    ("GET", "/api/v1/auth/providers"): "the login page lists them",
    ("GET", "/api/v1/auth/oidc/{provider}/login"): "starts a provider login",
    ("GET", "/api/v1/auth/oidc/{provider}/callback"): "the provider's redirect (state + PKCE checked)",
}
VIEWER_WRITES = {  # (method, path): why a viewer may call it though it is not a GET
    ("POST", "/api/v1/pipelines/validate"): "checks a posted spec; stores nothing",
    ("POST", "/api/v1/tokens"): "personal tokens, with a role up to one's own",
    ("DELETE", "/api/v1/tokens/{token_id}"): "revokes one's own tokens",
}
ADMIN_ONLY = re.compile(r"^/api/v1/(secrets|users|invitations|join-requests|audit|settings)\b")
IDENTITIES = ("anonymous", "viewer", "operator", "admin", "scoped")
HOW_TO = ("declare who may call it: add `dependencies=[access.requires(Role.viewer)]` (or Role.operator / "
          "Role.admin; with `pipeline=access.pipeline_path()` / `access.run_path()` / `access.pipeline_body()` "
          "when it acts on one pipeline) to its decorator - see kubeline/api/access.py")


def _rules(app) -> dict[tuple[str, str], tuple[access.Rule | None, str]]:  # type: ignore[no-untyped-def]
    return {(e.method, e.path): (e.rule, e.where) for e in access.route_table(app)}


def _fill(path: str, run_id: str) -> str:
    values = {"run_id": run_id, "name": "hello", "pipeline": "hello"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "NOPE_1"), path)


def _expected(rule: access.Rule, who: str) -> str:
    """'denied-401', 'denied-403' or 'allowed' for a call about pipeline 'hello'."""
    if rule.public:
        return "public"
    if who == "anonymous":
        return "denied-401"
    if rule.role is None:
        return "allowed"
    if who == "scoped":
        return "allowed" if rule.filtered else "denied-403"  # it may touch only "other"
    have = {"viewer": Role.viewer, "operator": Role.operator, "admin": Role.admin}[who]
    return "allowed" if have >= rule.role else "denied-403"


def test_every_route_declares_a_rule_that_fits_the_policy(api_server) -> None:
    spec = httpx.get(f"{api_server.url}/api/v1/openapi.json").json()
    rules = _rules(api_server.app)
    problems = []
    for path, item in spec["paths"].items():
        for method in item:
            rule, where = rules[(method.upper(), path)]
            key = (method.upper(), path)
            if rule is None:
                problems.append(f"{method.upper()} {path} ({where}) has no access rule: {HOW_TO}")
            elif rule.public and key not in PUBLIC:
                problems.append(f"{method.upper()} {path} ({where}) is public: open routes are reviewed; if it must "
                                "be, add it with the reason to PUBLIC in tests/integration/auth/test_route_table.py")
            elif key in PUBLIC and not rule.public:
                problems.append(f"{method.upper()} {path} is listed in PUBLIC but declares {rule.describe()}")
            elif not rule.public and rule.role is not None:
                if method.upper() != "GET" and rule.role < Role.operator and key not in VIEWER_WRITES:
                    problems.append(f"{method.upper()} {path} ({where}) changes state but needs only "
                                    f"{rule.role.name}: use Role.operator or Role.admin (or, if it changes "
                                    "nothing, add it with the reason to VIEWER_WRITES in this test)")
                if ADMIN_ONLY.match(path) and method.upper() != "GET" and rule.role is not Role.admin:
                    problems.append(f"{method.upper()} {path} ({where}) must need Role.admin")
    assert not problems, "\n".join(problems)


def test_routes_left_out_of_the_openapi_declare_rules_too(api_server) -> None:
    hidden = [e for e in access.route_table(api_server.app) if e.api and e.rule is None]
    assert not hidden, "\n".join(f"{e.method} {e.path} ({e.where}): {HOW_TO}" for e in hidden)


@pytest.mark.slow
def test_every_operation_answers_each_identity_as_declared(api_server, identities) -> None:
    spec = httpx.get(f"{api_server.url}/api/v1/openapi.json").json()
    rules = _rules(api_server.app)
    with api_server.http() as admin:
        run = admin.post("/api/v1/runs", json={"pipeline": "hello"})
        assert run.status_code == 201, run.text
        run_id = run.json()["id"]
    tokens = {"viewer": identities.viewer, "operator": identities.operator, "admin": identities.admin,
              "scoped": identities.scoped}
    wrong, calls = [], 0
    operations = [(m.upper(), p) for p, item in spec["paths"].items() for m in item]
    for method, path in operations:
        rule, where = rules[(method, path)]
        assert rule is not None, f"{method} {path} ({where}): {HOW_TO}"
        url = _fill(path, run_id)
        for who in IDENTITIES:
            expected = _expected(rule, who)
            headers = {"Authorization": f"Bearer {tokens[who]}"} if who in tokens else {}
            body = {} if method in ("POST", "PUT", "PATCH") else None
            with httpx.Client(base_url=api_server.url, timeout=30) as http, \
                    http.stream(method, url, headers=headers, json=body) as answer:
                status = answer.status_code
                text = answer.read().decode(errors="replace")[:200] if status in (401, 403) else ""
            calls += 1
            if expected == "public":
                continue
            if expected == "denied-401" and (status != 401 or "WWW-Authenticate" not in answer.headers):
                wrong.append(f"{who:9} {method} {url}: {status}, expected 401 ({rule.describe()})")
            elif expected == "denied-403" and status != 403:
                wrong.append(f"{who:9} {method} {url}: {status}, expected 403 ({rule.describe()})")
            elif expected == "allowed" and status in (401, 403):
                wrong.append(f"{who:9} {method} {url}: {status} {text}, expected access ({rule.describe()})")
    print(f"route table: {len(operations)} operations x {len(IDENTITIES)} identities = {calls} calls")
    assert calls == len(operations) * len(IDENTITIES) and len(operations) >= 40
    assert not wrong, "\n".join(wrong)


def test_filtered_lists_show_a_scoped_token_only_its_pipelines(api_server, identities) -> None:
    scoped = {"Authorization": f"Bearer {identities.scoped}"}
    with api_server.http() as admin:
        for pipeline in ("hello", "other"):
            assert admin.post("/api/v1/runs", json={"pipeline": pipeline}).status_code == 201
    with httpx.Client(base_url=api_server.url, headers=scoped) as http:
        assert [p["name"] for p in http.get("/api/v1/pipelines").json()["items"]] == ["other"]
        assert {r["pipeline"] for r in http.get("/api/v1/runs").json()["items"]} == {"other"}
        assert http.get("/api/v1/pipelines/other").status_code == 200
        denied = http.get("/api/v1/pipelines/hello")
        assert denied.status_code == 403 and "pipeline 'hello'" in denied.json()["detail"]
        assert http.post("/api/v1/runs", json={"pipeline": "other"}).status_code == 201
        assert http.post("/api/v1/runs", json={"pipeline": "hello"}).status_code == 403
        assert http.get("/api/v1/secrets").status_code == 403
