"""Login through OAuth 2 / OpenID Connect providers (Authlib's OAuth 2 and PKCE parameters, httpx
for the calls, joserfc (Authlib's JOSE library) for ID tokens).

Kinds: ``oidc`` (any issuer, found by its discovery URL), ``google`` and ``microsoft`` (Entra ID,
a tenant's v2.0 issuer) which are OIDC with a known discovery URL, and ``github`` (OAuth 2 plus
its REST API for the user, verified emails and organisations). Every login is the
authorization-code flow with PKCE (S256), a one-time ``state`` kept server-side and bound to the
browser by a cookie, and for OIDC a ``nonce``; an ID token must carry this issuer, this client as
audience, a valid signature from the issuer's JWKS and an unexpired ``exp``.

Configured as JSON in ``KUBELINE_OIDC_PROVIDERS``, e.g.::

    [{"name": "corp", "kind": "oidc", "discovery_url": "https://id.example.com/.well-known/openid-configuration",
      "client_id": "kubeline", "client_secret": "...",
      "roles": {"default": null, "domains": {"example.com": "viewer"},
                "claims": [{"claim": "groups", "value": "kubeline-admins", "role": "admin"}]}}]

``roles`` maps a verified email domain or a claim value (GitHub: an organisation, as claim
``orgs``) to a role; the highest match wins and is applied at every login. Nobody matched and no
``default``: the login becomes a join request an admin approves (no session until then).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Literal

import httpx
import pydantic
from authlib.oauth2.rfc6749 import parameters
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import errors as jose_errors
from joserfc import jwt
from joserfc.jwk import KeySet

from kubeline.auth import roles

GOOGLE_DISCOVERY = "https://accounts.google.com/.well-known/openid-configuration"
MICROSOFT_DISCOVERY = "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
GITHUB = {"authorize_url": "https://github.com/login/oauth/authorize",
          "token_url": "https://github.com/login/oauth/access_token", "api_url": "https://api.github.com"}
LEEWAY = 60  # seconds of clock skew allowed on exp / iat


class LoginFailed(Exception):
    """The provider's answer cannot be trusted or used; the message says why."""


class ClaimRule(pydantic.BaseModel):
    claim: str
    value: str
    role: Literal["viewer", "operator", "admin"]


class RoleMapping(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    default: Literal["viewer", "operator", "admin"] | None = None
    domains: dict[str, Literal["viewer", "operator", "admin"]] = pydantic.Field(default_factory=dict)
    claims: list[ClaimRule] = pydantic.Field(default_factory=list)


class Provider(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str = pydantic.Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    kind: Literal["oidc", "google", "microsoft", "github"] = "oidc"
    label: str = ""
    client_id: str
    client_secret: pydantic.SecretStr | None = None
    discovery_url: str | None = None
    tenant: str | None = pydantic.Field(None, description="Microsoft Entra ID tenant id or domain.")
    authorize_url: str | None = None  # github (defaults to github.com); tests point these elsewhere
    token_url: str | None = None
    api_url: str | None = None
    scopes: list[str] | None = None
    roles: RoleMapping = pydantic.Field(default_factory=RoleMapping)

    @pydantic.model_validator(mode="after")
    def _where(self) -> Provider:
        if self.kind == "oidc" and not self.discovery_url:
            raise ValueError(f"provider {self.name!r}: an oidc provider needs discovery_url "
                             "(https://issuer/.well-known/openid-configuration)")
        if self.kind == "microsoft" and not (self.tenant or self.discovery_url):
            raise ValueError(f"provider {self.name!r}: set tenant (your Entra ID tenant id or domain)")
        return self

    @property
    def discovery(self) -> str | None:
        if self.discovery_url:
            return self.discovery_url
        return {"google": GOOGLE_DISCOVERY, "microsoft": MICROSOFT_DISCOVERY.format(tenant=self.tenant)}.get(self.kind)

    @property
    def scope(self) -> str:
        default = ["read:user", "user:email", "read:org"] if self.kind == "github" else ["openid", "email", "profile"]
        return " ".join(self.scopes or default)


def parse(configured: list[dict[str, Any]]) -> dict[str, Provider]:
    found = {}
    for item in configured:
        provider = Provider.model_validate(item)
        if provider.name in found:
            raise ValueError(f"KUBELINE_OIDC_PROVIDERS: two providers are named {provider.name!r}")
        found[provider.name] = provider
    return found


@dataclasses.dataclass(frozen=True)
class Identity:
    subject: str
    username: str
    email: str | None
    email_verified: bool
    claims: dict[str, Any]


def role_of(provider: Provider, identity: Identity) -> roles.Role | None:
    """The highest role the mapping gives this identity, or None (a join request)."""
    found: list[roles.Role] = []
    if identity.email and identity.email_verified:
        domain = identity.email.rsplit("@", 1)[-1].lower()
        found += [roles.Role.parse(r) for d, r in provider.roles.domains.items() if d.lower() == domain]
    for rule in provider.roles.claims:
        value = identity.claims.get(rule.claim)
        values = value if isinstance(value, list) else [value]
        if rule.value in [str(v) for v in values if v is not None]:
            found.append(roles.Role.parse(rule.role))
    if not found and provider.roles.default:
        found.append(roles.Role.parse(provider.roles.default))
    return max(found) if found else None


class Client:
    """One provider's endpoints (discovered once) and the two legs of the flow."""

    def __init__(self, provider: Provider, *, http: httpx.AsyncClient | None = None) -> None:
        self.provider = provider
        self._metadata: dict[str, Any] | None = None
        self._http = http

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            if self.provider.kind == "github":
                self._metadata = {
                    "authorization_endpoint": self.provider.authorize_url or GITHUB["authorize_url"],
                    "token_endpoint": self.provider.token_url or GITHUB["token_url"]}
            else:
                async with httpx.AsyncClient(timeout=15) as http:
                    answer = await http.get(str(self.provider.discovery))
                if answer.status_code != 200:
                    raise LoginFailed(f"provider {self.provider.name!r}: discovery document "
                                      f"{self.provider.discovery} answered {answer.status_code}")
                self._metadata = answer.json()
        return self._metadata

    async def authorization_url(self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str) -> str:
        meta = await self.metadata()
        extra = {"nonce": nonce} if self.provider.kind != "github" else {}
        url: str = parameters.prepare_grant_uri(
            meta["authorization_endpoint"], client_id=self.provider.client_id, response_type="code",
            redirect_uri=redirect_uri, scope=self.provider.scope, state=state,
            code_challenge=create_s256_code_challenge(code_verifier), code_challenge_method="S256", **extra)
        return url

    async def finish(self, *, redirect_uri: str, code: str, code_verifier: str, nonce: str) -> Identity:
        """Exchange the code (with the PKCE verifier) and tell who logged in."""
        meta = await self.metadata()
        body = parameters.prepare_token_request("authorization_code", code=code, redirect_uri=redirect_uri,
                                                code_verifier=code_verifier, client_id=self.provider.client_id)
        secret = self.provider.client_secret.get_secret_value() if self.provider.client_secret else ""
        async with httpx.AsyncClient(timeout=15) as http:
            answer = await http.post(meta["token_endpoint"], content=body, auth=(self.provider.client_id, secret),
                                     headers={"Accept": "application/json",
                                              "Content-Type": "application/x-www-form-urlencoded"})
            try:
                token = answer.json()
            except ValueError:
                token = {}
            if answer.status_code != 200 or "access_token" not in token:
                why = token.get("error_description") or token.get("error") or answer.text[:200]
                raise LoginFailed(f"provider {self.provider.name!r} refused the code: {why}")
            if self.provider.kind == "github":
                return await self._github_identity(http, str(token["access_token"]))
        id_token = token.get("id_token")
        if not id_token:
            raise LoginFailed(f"provider {self.provider.name!r} sent no ID token (is 'openid' in the scopes?)")
        claims = await self.verify_id_token(str(id_token), nonce=nonce)
        username = str(claims.get("preferred_username") or claims.get("email") or claims["sub"])
        return Identity(subject=str(claims["sub"]), username=username, email=claims.get("email"),
                        email_verified=bool(claims.get("email_verified", self.provider.kind == "microsoft")),
                        claims=claims)

    async def verify_id_token(self, id_token: str, *, nonce: str) -> dict[str, Any]:
        meta = await self.metadata()
        async with httpx.AsyncClient(timeout=15) as http:
            jwks = (await http.get(meta["jwks_uri"])).json()
        try:
            token = jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=["RS256", "ES256", "PS256"])
            jwt.JWTClaimsRegistry(
                leeway=LEEWAY, iss={"essential": True, "value": meta["issuer"]},
                aud={"essential": True, "value": self.provider.client_id}, exp={"essential": True},
                sub={"essential": True}, nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except jose_errors.JoseError as exc:
            raise LoginFailed(f"provider {self.provider.name!r}: the ID token is not valid ({exc})") from None
        if int(token.claims.get("iat", time.time())) > time.time() + LEEWAY:
            raise LoginFailed(f"provider {self.provider.name!r}: the ID token is issued in the future")
        return dict(token.claims)

    async def _github_identity(self, http: httpx.AsyncClient, access_token: str) -> Identity:
        api = (self.provider.api_url or GITHUB["api_url"]).rstrip("/")
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/vnd.github+json"}
        user = (await http.get(f"{api}/user", headers=headers)).json()
        emails = (await http.get(f"{api}/user/emails", headers=headers)).json()
        orgs = (await http.get(f"{api}/user/orgs", headers=headers)).json()
        if not isinstance(user, dict) or "id" not in user:
            raise LoginFailed(f"provider {self.provider.name!r}: GitHub's /user answered {str(user)[:200]}")
        primary = next((e for e in emails if isinstance(e, dict) and e.get("primary") and e.get("verified")), None)
        claims = {"login": user.get("login"), "orgs": [o.get("login") for o in orgs if isinstance(o, dict)]}
        return Identity(subject=str(user["id"]), username=str(user.get("login") or user["id"]),
                        email=primary.get("email") if primary else None, email_verified=primary is not None,
                        claims=claims)
