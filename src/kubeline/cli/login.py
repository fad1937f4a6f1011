"""``kubeline login`` / ``kubeline logout``: an API token for a server, kept for the CLI and
``kubeline.client`` in ``$KUBELINE_HOME/credentials.json`` (mode 0600).

With a password, login opens a session, changes a one-time password when the server asks for
it, makes a personal token (90 days, the user's role) and ends the session: the password is
never stored. ``--token`` stores a token made elsewhere (after checking it works).
"""

from __future__ import annotations

import socket
from typing import Annotated

import httpx
import typer

from kubeline import credentials
from kubeline import settings as settings_

TOKEN_DAYS = 90


def _url(url: str | None) -> str:
    found = url or settings_.Settings().url
    if not found:
        raise typer.BadParameter("give the server URL (or set KUBELINE_URL)", param_hint="URL")
    return found.rstrip("/")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _detail(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("detail") or answer.text)
    except ValueError:
        return answer.text[:300]


def login(
    url: Annotated[str | None, typer.Argument(help="Server URL (default KUBELINE_URL).")] = None,
    username: Annotated[str | None, typer.Option("--username", "-u", help="Local user name.")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Store this API token instead (checked first).")] = None,
) -> None:
    """Log in to a Kubeline server and keep an API token for the CLI."""
    base = _url(url)
    with httpx.Client(base_url=base, timeout=30) as http:
        if token:
            me = http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
            if me.status_code != 200:
                raise _fail(f"the server refused the token: {_detail(me)}")
            path = credentials.store(base, token)
            typer.echo(f"logged in to {base} as {me.json()['name']} (token kept in {path})")
            return
        name = username or typer.prompt("username")
        password = typer.prompt("password", hide_input=True)
        answer = http.post("/api/v1/auth/login", json={"username": name, "password": password})
        if answer.status_code != 200:
            raise _fail(_detail(answer))
        me = answer.json()
        csrf = {"X-CSRF-Token": me["csrf_token"]}
        if me.get("must_change_password"):
            typer.echo("this password must be changed now")
            new = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
            changed = http.post("/api/v1/auth/password", json={"current": password, "new": new}, headers=csrf)
            if changed.status_code != 204:
                raise _fail(_detail(changed))
        made = http.post("/api/v1/tokens", headers=csrf, json={
            "name": f"kubeline CLI on {socket.gethostname()}"[:128], "role": me["role"],
            "expires_in_days": TOKEN_DAYS})
        http.post("/api/v1/auth/logout", headers=csrf)
        if made.status_code != 201:
            raise _fail(f"could not make a token: {_detail(made)}")
        path = credentials.store(base, made.json()["secret"])
    typer.echo(f"logged in to {base} as {name} ({me['role']}); a {TOKEN_DAYS}-day token is kept in {path}")


def logout(url: Annotated[str | None, typer.Argument(help="Server URL (default KUBELINE_URL).")] = None) -> None:
    """Forget the token kept for a server (revoke it in the server with DELETE /api/v1/tokens/ID)."""
    base = _url(url)
    typer.echo(f"forgot the token for {base}" if credentials.forget(base) else f"no token kept for {base}")
