"""``/api/v1/auth``: password login, logout, who am I, change password.

A login answers with a session cookie (HttpOnly, SameSite=Lax, Secure unless the request came
over plain http to a loopback address) and the session's CSRF token, which the browser sends
back as ``X-CSRF-Token`` on every change. Each login makes a new session id, so a cookie planted
before the login (session fixation) is worthless; logout deletes the session in the store.
"""

from __future__ import annotations

from typing import Annotated

import fastapi

from kubeline.api import access, auth_schemas, deps, security
from kubeline.auth import addresses, roles, service, tokens

router = fastapi.APIRouter(prefix="/auth", tags=["auth"])
Who = Annotated[roles.Principal, access.authenticated()]


def cookie_secure(request: fastapi.Request, kl: deps.KL) -> bool:
    if kl.settings.cookie_secure is not None:
        return kl.settings.cookie_secure
    return request.url.scheme == "https" or not addresses.is_loopback(request.url.hostname or "")


def set_session_cookie(response: fastapi.Response, *, request: fastapi.Request, kl: deps.KL, raw_id: str) -> None:
    response.set_cookie(access.SESSION_COOKIE, raw_id, httponly=True, samesite="lax", path="/",
                        secure=cookie_secure(request, kl), max_age=int(kl.settings.session_max_hours * 3600))


async def me_of(kl: deps.KL, who: roles.Principal, csrf: str | None) -> auth_schemas.MeOut:
    user = await kl.auth.accounts.get_user(who.user_id) if who.user_id else None
    return auth_schemas.MeOut(name=who.name, kind=who.kind, role=who.role.name,
                              user=auth_schemas.UserOut.of(user) if user else None,
                              scope=list(who.scope) if who.scope is not None else None,
                              must_change_password=who.must_change_password, csrf_token=csrf)


@router.post("/login", response_model=auth_schemas.MeOut, responses=deps.problem_responses(401, 403, 429),
             dependencies=[access.public("logging in is how one gets a session")])
async def login(body: auth_schemas.LoginIn, request: fastapi.Request, response: fastapi.Response,
                kl: deps.KL) -> auth_schemas.MeOut:
    """Log in with a local password: sets the session cookie; answers with the CSRF token."""
    security.note(request, username=body.username)
    try:
        user = await kl.auth.check_password(body.username, body.password)
    except service.Denied as exc:
        headers = {"Retry-After": str(max(1, int((exc.retry_after or 0) + 0.999)))} if exc.status == 429 else None
        raise fastapi.HTTPException(exc.status, detail=str(exc), headers=headers) from None
    old = request.cookies.get(access.SESSION_COOKIE)
    if old:
        await kl.auth.end_session(tokens.digest(old))
    started = await kl.auth.start_session(user, ip=security.client_ip(request.scope))
    set_session_cookie(response, request=request, kl=kl, raw_id=started.raw_id)
    who = kl.auth.principal_of(user, session_id=started.session.id_hash)
    request.state.principal = who
    response.headers["Cache-Control"] = "no-store"
    return await me_of(kl, who, started.session.csrf_token)


@router.post("/logout", status_code=204)
async def logout(request: fastapi.Request, who: Who, kl: deps.KL) -> fastapi.Response:
    """End this browser session (the cookie is cleared and the session deleted in the store)."""
    if who.session_id:
        await kl.auth.end_session(who.session_id)
    response = fastapi.Response(status_code=204)
    response.delete_cookie(access.SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=auth_schemas.MeOut)
async def me(request: fastapi.Request, who: Who, kl: deps.KL) -> auth_schemas.MeOut:
    """Who the caller is, with the CSRF token of a browser session."""
    csrf = None
    if who.session_id:
        session = await kl.auth.accounts.get_session(who.session_id)
        csrf = session.csrf_token if session else None
    return await me_of(kl, who, csrf)


@router.post("/password", status_code=204, responses=deps.problem_responses(403, 422))
async def change_password(body: auth_schemas.PasswordIn, who: Who, kl: deps.KL) -> fastapi.Response:
    """Change your password (required after a one-time password); other sessions of yours end."""
    if who.user_id is None or who.kind != "user":
        raise fastapi.HTTPException(403, detail="log in with your password (not a token) to change it")
    try:
        await kl.auth.change_password(who.user_id, current=body.current, new=body.new, keep_session=who.session_id)
    except service.Denied as exc:
        raise fastapi.HTTPException(exc.status, detail=str(exc)) from None
    return fastapi.Response(status_code=204)


@router.post("/invitations/accept", status_code=201, response_model=auth_schemas.MeOut,
             responses=deps.problem_responses(403, 409, 422),
             dependencies=[access.public("an invitation token proves the invitee")])
async def accept_invitation(body: auth_schemas.InvitationAcceptLocal, request: fastapi.Request,
                            response: fastapi.Response, kl: deps.KL) -> auth_schemas.MeOut:
    """Become a user with a local password from an invitation's token (works once); logs you in."""
    security.note(request, username=body.username)
    try:
        user = await kl.auth.accept_invitation(body.token, username=body.username, password=body.password)
    except service.Denied as exc:
        raise fastapi.HTTPException(exc.status, detail=str(exc)) from None
    started = await kl.auth.start_session(user, ip=security.client_ip(request.scope))
    set_session_cookie(response, request=request, kl=kl, raw_id=started.raw_id)
    who = kl.auth.principal_of(user, session_id=started.session.id_hash)
    request.state.principal = who
    return await me_of(kl, who, started.session.csrf_token)
