"""``/api/v1/git``: repositories pipelines are synced from: status, sync now, deploy key, push webhook.

The push webhook accepts GitHub's format (``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>``)
and GitLab's (``X-Gitlab-Token: <secret>``), with the secret stored under the repository's
``webhook_secret``; a push to another branch is acknowledged and ignored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import Annotated

import fastapi
import pydantic

from kubeline.api import access, deps
from kubeline.auth import roles
from kubeline.domain import errors, repos
from kubeline.gitsync import service

Role = roles.Role
router = fastapi.APIRouter(prefix="/git", tags=["git"])
MAX_WEBHOOK_BYTES = 1024 * 1024


class SyncOut(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(json_schema_extra={"examples": [{
        "name": "team", "url": "https://git.example.org/team/pipelines.git", "branch": "main",
        "good_commit": "3f2a9c0d1b2e4f56a7b8c9d0e1f2a3b4c5d6e7f8",
        "seen_commit": "3f2a9c0d1b2e4f56a7b8c9d0e1f2a3b4c5d6e7f8",
        "served_here": "3f2a9c0d1b2e4f56a7b8c9d0e1f2a3b4c5d6e7f8", "status": "ok", "message": "serving 3f2a9c0d1b2e",
        "problems": [], "synced_at": "2026-01-01T02:00:00Z", "subdir": "pipelines", "interval": 60.0,
        "last_sync_at": "2026-01-01T02:05:00Z", "next_sync_at": "2026-01-01T02:06:00Z", "ssh": False,
        "deploy_key_secret": None, "webhook": True}]})

    name: str
    url: str = pydantic.Field(description="Without credentials.")
    branch: str
    good_commit: str | None = pydantic.Field(description="The commit every replica serves.")
    seen_commit: str | None = pydantic.Field(description="The branch head at the last sync.")
    served_here: str | None = pydantic.Field(description="The commit this replica has checked out.")
    status: str = pydantic.Field(description="ok, invalid, unreachable, branch_missing or never_synced.")
    message: str
    problems: list[str] = pydantic.Field(description="Why the last commit seen is not served (every problem).")
    synced_at: str | None = pydantic.Field(description="When the served commit last changed.")
    subdir: str = pydantic.Field("", description="Folder of pipelines inside the repository.")
    interval: float = pydantic.Field(0, description="Seconds between syncs; 0 = only on demand or by webhook.")
    last_sync_at: dt.datetime | None = pydantic.Field(None, description="When a sync last ran (whatever it found).")
    next_sync_at: dt.datetime | None = pydantic.Field(
        None, description="When the next interval sync is due (none without an interval; soon if never synced).")
    ssh: bool = pydantic.Field(False, description="Fetched over SSH with a deploy key.")
    deploy_key_secret: str | None = pydantic.Field(
        None, description="SSH: the stored secret holding the private deploy key (its value is never returned).")
    webhook: bool = pydantic.Field(False, description="Whether signed push webhooks are accepted.")

    @classmethod
    def of(cls, state: repos.SyncState, *, served_here: str | None, spec: repos.RepoSpec) -> SyncOut:
        ran = state.updated_at if state.status != repos.NEVER else None
        due = (ran or dt.datetime.now(dt.UTC)) + dt.timedelta(seconds=spec.interval) if spec.interval else None
        return cls(name=state.name, url=state.url, branch=state.branch, good_commit=state.good_commit,
                   seen_commit=state.seen_commit, served_here=served_here, status=state.status,
                   message=state.message, problems=state.problems,
                   synced_at=state.synced_at.isoformat() if state.synced_at else None,
                   subdir=spec.subdir, interval=spec.interval, last_sync_at=ran, next_sync_at=due, ssh=spec.is_ssh,
                   deploy_key_secret=spec.key_secret_name if spec.is_ssh else None, webhook=bool(spec.webhook_secret))


def _out(git: service.GitSync, state: repos.SyncState) -> SyncOut:
    return SyncOut.of(state, served_here=git.current(state.name), spec=git.spec(state.name))


class SyncList(pydantic.BaseModel):
    items: list[SyncOut]


class KeyOut(pydantic.BaseModel):
    public_key: str = pydantic.Field(description="Add it to the repository as a read-only deploy key.")
    secret: str = pydantic.Field(description="The stored secret holding the private key (never returned).")


class HookOut(pydantic.BaseModel):
    synced: bool
    reason: str = ""
    state: SyncOut | None = None


def _git(kl: deps.KL) -> service.GitSync:
    if kl.git is None:
        raise errors.NotFoundError("no git repositories are configured (set KUBELINE_GIT_REPOS)")
    return kl.git


@router.get("", response_model=SyncList, dependencies=[access.requires(Role.viewer)])
async def list_syncs(kl: deps.KL) -> SyncList:
    """Every configured repository with the commit served and the last sync's outcome."""
    if kl.git is None:
        return SyncList(items=[])
    return SyncList(items=[_out(kl.git, s) for s in await kl.git.states()])


@router.get("/{name}", response_model=SyncOut, responses=deps.problem_responses(404),
            dependencies=[access.requires(Role.viewer)])
async def get_sync(name: str, kl: deps.KL) -> SyncOut:
    git = _git(kl)
    return _out(git, await git.state(name))


@router.post("/{name}/sync", response_model=SyncOut, responses=deps.problem_responses(404),
             dependencies=[access.requires(Role.operator)])
async def sync_now(name: str, kl: deps.KL) -> SyncOut:
    """Fetch, validate and (if valid) serve the branch head now; the status says what happened."""
    git = _git(kl)
    return _out(git, await git.sync(name))


@router.post("/{name}/deploy-key", response_model=KeyOut, status_code=201, responses=deps.problem_responses(404, 409),
             dependencies=[access.requires(Role.admin)])
async def generate_deploy_key(name: str, kl: deps.KL) -> KeyOut:
    """Generate an ed25519 key pair: the private key is stored as a secret, the public key returned."""
    git = _git(kl)
    return KeyOut(public_key=await git.generate_key(name), secret=git.spec(name).key_secret_name)


@router.get("/{name}/deploy-key", response_model=KeyOut, responses=deps.problem_responses(404),
            dependencies=[access.requires(Role.viewer)])
async def get_deploy_key(name: str, kl: deps.KL) -> KeyOut:
    git = _git(kl)
    return KeyOut(public_key=await git.public_key(name), secret=git.spec(name).key_secret_name)


@router.post("/{name}/webhook", response_model=HookOut, responses=deps.problem_responses(401, 404, 413),
             dependencies=[access.public("a push event proves itself with the repository's webhook secret")])
async def push_webhook(
    name: str, request: fastapi.Request, kl: deps.KL,
    hub_signature: Annotated[str | None, fastapi.Header(alias="X-Hub-Signature-256")] = None,
    gitlab_token: Annotated[str | None, fastapi.Header(alias="X-Gitlab-Token")] = None,
) -> HookOut:
    """A signed push event (GitHub or GitLab); a push to the synced branch syncs it now."""
    git = _git(kl)
    spec = git.spec(name)
    body = await request.body()
    if len(body) > MAX_WEBHOOK_BYTES:
        raise fastapi.HTTPException(413, "push event larger than 1 MiB")
    if not spec.webhook_secret:
        raise fastapi.HTTPException(401, f"repository {name!r} has no webhook_secret: webhooks are refused")
    secret = await kl.secrets.get(spec.webhook_secret)
    if hub_signature is not None:
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(expected, hub_signature)
    elif gitlab_token is not None:
        valid = hmac.compare_digest(secret.encode(), gitlab_token.encode())
    else:
        valid = False
    if not valid:
        raise fastapi.HTTPException(401, "signature missing or wrong: send X-Hub-Signature-256 (GitHub) or "
                                         "X-Gitlab-Token (GitLab) made with the repository's webhook secret")
    try:
        event = json.loads(body or b"{}")
    except ValueError:
        raise fastapi.HTTPException(400, "the push event is not JSON") from None
    ref = event.get("ref") if isinstance(event, dict) else None
    if ref != f"refs/heads/{spec.branch}":
        return HookOut(synced=False, reason=f"push to {ref!r}, not refs/heads/{spec.branch}: ignored")
    state = await git.sync(name)
    return HookOut(synced=True, state=_out(git, state))
