"""``/api/v1/auth/oidc/{provider}/login|callback`` and ``/api/v1/auth/providers``: log in through
an OAuth/OIDC provider (see ``kubeline.auth.oidc``).

``login`` makes a state, a nonce and a PKCE verifier, keeps them server-side (the state only as a
digest), binds the state to the browser with a short-lived HttpOnly cookie and redirects to the
provider. ``callback`` takes the state once (a forged, replayed, stale or other-browser state is
refused), exchanges the code with the verifier, checks the ID token, and then: a known user gets
a session; an invitation or the role mapping makes the user; anyone else becomes a join request
(403, no session) that an admin approves.
"""

from __future__ import annotations

import datetime as dt
import html
import urllib.parse
from typing import Annotated

import fastapi
import pydantic
from fastapi import responses

from kubeline.api import access, deps, security
from kubeline.api.routes import auth as auth_routes
from kubeline.auth import oidc, records, service, tokens

router = fastapi.APIRouter(prefix="/auth", tags=["auth"])
STATE_COOKIE = "kubeline_oauth"
LOGIN_PROBLEM_COOKIE = "kubeline_login_problem"  # ui/src/pages/Login.tsx reads it
STATE_TTL = dt.timedelta(minutes=10)
Name = Annotated[str, fastapi.Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


class ProviderOut(pydantic.BaseModel):
    name: str
    kind: str
    label: str
    login_url: str


def _providers(request: fastapi.Request) -> dict[str, oidc.Client]:
    clients: dict[str, oidc.Client] | None = getattr(request.app.state, "oidc_clients", None)
    if clients is None:
        kl = request.app.state.kubeline
        clients = {name: oidc.Client(p) for name, p in oidc.parse(kl.settings.oidc_providers).items()}
        request.app.state.oidc_clients = clients
    return clients


def _client(request: fastapi.Request, name: str) -> oidc.Client:
    found = _providers(request).get(name)
    if found is None:
        known = ", ".join(_providers(request)) or "none is configured (KUBELINE_OIDC_PROVIDERS)"
        raise fastapi.HTTPException(404, detail=f"no login provider {name!r} (providers: {known})")
    return found


def _redirect_uri(request: fastapi.Request, kl: deps.KL, name: str) -> str:
    base = (kl.settings.public_url if "public_url" in kl.settings.model_fields_set
            else str(request.base_url)).rstrip("/")
    return f"{base}/api/v1/auth/oidc/{name}/callback"


@router.get("/providers", response_model=list[ProviderOut], dependencies=[access.public("the login page lists them")])
async def list_providers(request: fastapi.Request) -> list[ProviderOut]:
    return [ProviderOut(name=n, kind=c.provider.kind, label=c.provider.label or n,
                        login_url=f"/api/v1/auth/oidc/{n}/login") for n, c in _providers(request).items()]


@router.get("/oidc/{provider}/login", status_code=302, response_class=responses.RedirectResponse,
            responses=deps.problem_responses(404, 502), dependencies=[access.public("starts a provider login")])
async def oidc_login(provider: Name, request: fastapi.Request, kl: deps.KL,
                     invitation: Annotated[str | None, fastapi.Query(max_length=128)] = None) -> fastapi.Response:
    """Redirect to the provider (authorization code + PKCE); ``invitation`` joins with that invitation."""
    client = _client(request, provider)
    state, verifier, nonce = tokens.new_secret(), tokens.new_secret() + tokens.new_secret()[:20], tokens.new_secret()
    await kl.auth.accounts.put_oauth_state(records.OAuthState(
        state_hash=tokens.digest(state), provider=provider, code_verifier=verifier[:128], nonce=nonce[:64],
        invitation=tokens.digest(invitation) if invitation else None, created_at=dt.datetime.now(dt.UTC)))
    try:
        url = await client.authorization_url(redirect_uri=_redirect_uri(request, kl, provider), state=state,
                                             nonce=nonce[:64], code_verifier=verifier[:128])
    except (oidc.LoginFailed, OSError) as exc:
        raise fastapi.HTTPException(502, detail=str(exc)) from None
    answer = responses.RedirectResponse(url, status_code=302)
    answer.set_cookie(STATE_COOKIE, state, httponly=True, samesite="lax", path="/api/v1/auth/oidc",
                      secure=auth_routes.cookie_secure(request, kl), max_age=int(STATE_TTL.total_seconds()))
    return answer


@router.get("/oidc/{provider}/callback", status_code=302, response_class=responses.RedirectResponse,
            responses=deps.problem_responses(400, 403, 404, 502),
            dependencies=[access.public("the provider's redirect (state + PKCE checked)", audit_reads=True)])
async def oidc_callback(  # noqa: PLR0917 - query parameters
    provider: Name, request: fastapi.Request, kl: deps.KL,
    code: Annotated[str | None, fastapi.Query(max_length=2048)] = None,
    state: Annotated[str | None, fastapi.Query(max_length=256)] = None,
    error: Annotated[str | None, fastapi.Query(max_length=256)] = None,
) -> fastapi.Response:
    """Finish a provider login: a session cookie and a redirect to ``/``, or why not.

    A browser arrives here by a navigation (the provider's redirect): a refusal then sends it
    back to the login page, which says why in words, instead of showing a problem+json document
    raw; the answer keeps the refusal's status. Other clients get the problem as usual.
    """
    try:
        return await _finish(provider, request, kl, code=code, state=state, error=error)
    except fastapi.HTTPException as exc:
        if request.headers.get("sec-fetch-mode") != "navigate":
            raise
        return _back_to_login(request, kl, status=exc.status_code, detail=str(exc.detail))


def _back_to_login(request: fastapi.Request, kl: deps.KL, *, status: int, detail: str) -> fastapi.Response:
    """An answer with the refusal's status that sends the browser to the login page, which reads
    the reason from a short-lived cookie (LOGIN_PROBLEM_COOKIE, not HttpOnly: the page shows it
    and removes it) and shows it; without the refresh, this page says it itself."""
    text = html.escape(detail)
    page = ('<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=/">'
            f'<title>Login refused</title></head><body><p>{text}</p><p><a href="/">Back to the login page</a></p>'
            '</body></html>')
    answer = responses.HTMLResponse(page, status_code=status)
    answer.set_cookie(LOGIN_PROBLEM_COOKIE, urllib.parse.quote(detail), max_age=60, path="/", samesite="lax",
                      secure=auth_routes.cookie_secure(request, kl))
    return answer


async def _finish(provider: str, request: fastapi.Request, kl: deps.KL, *,
                  code: str | None, state: str | None, error: str | None) -> fastapi.Response:
    client = _client(request, provider)
    security.note(request, provider=provider)
    if error:
        raise fastapi.HTTPException(400, detail=f"the provider answered {error!r}; try logging in again")
    cookie = request.cookies.get(STATE_COOKIE, "")
    if not code or not state or not cookie or not tokens.same(cookie, state):
        raise fastapi.HTTPException(400, detail="the login state is missing or belongs to another browser: "
                                                "start again at /api/v1/auth/oidc/" + provider + "/login")
    kept = await kl.auth.accounts.take_oauth_state(tokens.digest(state),
                                                   newer_than=dt.datetime.now(dt.UTC) - STATE_TTL)
    if kept is None or kept.provider != provider:
        raise fastapi.HTTPException(400, detail="this login state is unknown, used already or expired: start again")
    try:
        identity = await client.finish(redirect_uri=_redirect_uri(request, kl, provider), code=code,
                                       code_verifier=kept.code_verifier, nonce=kept.nonce)
    except oidc.LoginFailed as exc:
        raise fastapi.HTTPException(403, detail=str(exc)) from None
    security.note(request, subject=identity.subject, username=identity.username)
    try:
        found = await kl.auth.provider_login(provider=provider, subject=identity.subject, username=identity.username,
                                             email=identity.email, role=oidc.role_of(client.provider, identity),
                                             invitation_hash=kept.invitation)
    except service.Denied as exc:
        raise fastapi.HTTPException(exc.status, detail=str(exc)) from None
    if isinstance(found, records.JoinRequest):
        raise fastapi.HTTPException(403, detail=f"{identity.username!r} is not a user here yet: a request to join "
                                                f"({found.id}) waits for an admin; log in again once approved")
    started = await kl.auth.start_session(found, ip=security.client_ip(request.scope))
    request.state.principal = kl.auth.principal_of(found, session_id=started.session.id_hash)
    answer = responses.RedirectResponse("/", status_code=302)
    auth_routes.set_session_cookie(answer, request=request, kl=kl, raw_id=started.raw_id)
    answer.delete_cookie(STATE_COOKIE, path="/api/v1/auth/oidc")
    return answer
