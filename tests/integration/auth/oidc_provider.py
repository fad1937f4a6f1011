"""A real OpenID Connect provider on 127.0.0.1 for the login tests: a small Starlette app served by
uvicorn in a thread, signing ID tokens with joserfc (Authlib's JOSE library).

It implements what Kubeline uses: discovery, the authorization endpoint (it logs in
``provider.user`` at once, as a provider would after its login page), the token endpoint with
PKCE S256 checked and client authentication (basic or post), JWKS, and GitHub's ``/user``,
``/user/emails`` and ``/user/orgs`` for an access token. ``provider.tamper`` changes the next
ID tokens (claims, or ``sign_with_other_key``) to test what the client must refuse.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import uvicorn
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "kubeline-test"
CLIENT_SECRET = "test-client-secret"


class Provider:
    def __init__(self) -> None:
        self.url = ""
        self.key = RSAKey.generate_key(2048, parameters={"kid": "good", "alg": "RS256", "use": "sig"})
        self.other_key = RSAKey.generate_key(2048, parameters={"kid": "good", "alg": "RS256", "use": "sig"})
        self.user: dict[str, Any] = {"sub": "u-1", "email": "ann@example.com", "email_verified": True,
                                     "preferred_username": "ann", "groups": ["staff"]}
        self.tamper: dict[str, Any] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.seen: list[str] = []  # authorization requests, for assertions

    # endpoints ---------------------------------------------------------------------------------
    async def discovery(self, request: Request) -> Response:
        return JSONResponse({
            "issuer": self.url, "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token", "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"], "code_challenge_methods_supported": ["S256"]})

    async def jwks(self, request: Request) -> Response:
        return JSONResponse(KeySet([self.key]).as_dict(private=False))

    async def authorize(self, request: Request) -> Response:
        q = request.query_params
        self.seen.append(str(request.url))
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code":
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return JSONResponse({"error": "invalid_request", "error_description": "PKCE S256 required"}, 400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"challenge": q["code_challenge"], "redirect_uri": q["redirect_uri"],
                            "nonce": q.get("nonce"), "user": dict(self.user), "at": time.time()}
        return RedirectResponse(f"{q['redirect_uri']}?code={code}&state={q['state']}", status_code=302)

    async def token(self, request: Request) -> Response:
        form = dict(urllib.parse.parse_qsl((await request.body()).decode()))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if request.headers.get("authorization", "").startswith("Basic "):
            decoded = base64.b64decode(request.headers["authorization"][6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
        if client_id != CLIENT_ID or client_secret != CLIENT_SECRET:
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        grant = self.codes.pop(str(form.get("code")), None)  # a code works once
        if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        verifier = str(form.get("code_verifier") or "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["challenge"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE verifier mismatch"}, 400)
        now = int(time.time())
        claims = {"iss": self.url, "aud": CLIENT_ID, "iat": now, "exp": now + 300, **grant["user"]}
        if grant["nonce"]:
            claims["nonce"] = grant["nonce"]
        tamper = dict(self.tamper)
        other = tamper.pop("sign_with_other_key", False)
        claims.update(tamper)
        id_token = jwt.encode({"alg": "RS256", "kid": "good"}, claims, self.other_key if other else self.key)
        access = secrets.token_urlsafe(16)
        self.tokens[access] = grant["user"]
        return JSONResponse({"access_token": access, "token_type": "Bearer", "expires_in": 300,
                             "id_token": id_token, "scope": "openid email profile"})

    def _github_user(self, request: Request) -> dict[str, Any] | None:
        return self.tokens.get(request.headers.get("authorization", "").removeprefix("Bearer ").strip())

    async def gh_user(self, request: Request) -> Response:
        user = self._github_user(request)
        if user is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse({"id": int(user.get("github_id", 4242)), "login": user["preferred_username"]})

    async def gh_emails(self, request: Request) -> Response:
        user = self._github_user(request)
        if user is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse([{"email": user["email"], "primary": True, "verified": user["email_verified"]}])

    async def gh_orgs(self, request: Request) -> Response:
        user = self._github_user(request)
        if user is None:
            return JSONResponse({"message": "Bad credentials"}, status_code=401)
        return JSONResponse([{"login": g} for g in user.get("groups", [])])

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/.well-known/openid-configuration", self.discovery), Route("/jwks", self.jwks),
            Route("/authorize", self.authorize), Route("/token", self.token, methods=["POST"]),
            Route("/user", self.gh_user), Route("/user/emails", self.gh_emails), Route("/user/orgs", self.gh_orgs)])


@contextlib.contextmanager
def running() -> Iterator[Provider]:
    """The provider served by uvicorn on 127.0.0.1 (a free port) in a thread."""
    provider = Provider()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    provider.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(provider.app(), log_config=None, lifespan="off", access_log=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("the test OIDC provider did not start")
        time.sleep(0.02)
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
