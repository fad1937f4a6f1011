"""Git repositories as pipeline sources: their settings and the synced state all replicas share.

A repository's pipelines are served from one commit, ``good_commit``, stored in the database so
that every replica serves the same one (a replica that fetched a newer head does not get ahead
of the others: it proposes the commit, the database takes one, each replica checks it out).
Credentials never live in a URL: ``RepoSpec`` moves any ``user:token@`` out of it (kept in memory
only, as a token) and everything that is logged or stored uses ``redact``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import urllib.parse
from typing import Any

import pydantic

from kubeline.domain import specs

OK, INVALID, UNREACHABLE, BRANCH_MISSING, NEVER = "ok", "invalid", "unreachable", "branch_missing", "never_synced"
_TREE = re.compile(r"/git/(?P<repo>[^/]+)/trees/(?P<sha>[0-9a-f]{40})(?:/|$)")


class RepoSpec(specs.Model):
    """One repository (``KUBELINE_GIT_REPOS`` is a JSON list of these)."""

    name: specs.Name
    url: str = pydantic.Field(description="https://, ssh://, user@host:path or file:// URL, without credentials.")
    branch: str = "main"
    subdir: str = pydantic.Field("", description="Folder of pipelines inside the repository.")
    interval: float = pydantic.Field(60, ge=0, description="Seconds between syncs; 0 = only on demand/webhook.")
    token_secret: str | None = pydantic.Field(None, description="Stored secret holding an HTTPS token.")
    ssh_key_secret: str | None = pydantic.Field(
        None, description="Stored secret holding the SSH private (deploy) key; default GIT_<NAME>_DEPLOY_KEY "
                          "when the URL is SSH.")
    known_hosts: str | None = pydantic.Field(
        None, description="Pinned known_hosts lines for SSH (required for SSH: host keys are never trusted blindly).")
    webhook_secret: str | None = pydantic.Field(
        None, description="Stored secret verifying push webhooks (GitHub HMAC or GitLab token).")
    url_token: pydantic.SecretStr | None = pydantic.Field(None, exclude=True, repr=False)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _credentials_out_of_the_url(cls, value: Any) -> Any:
        if isinstance(value, dict) and isinstance(value.get("url"), str):
            url, token = split_credentials(value["url"])
            if token is not None:
                value = {**value, "url": url, "url_token": token}
        return value

    @pydantic.field_validator("subdir")
    @classmethod
    def _relative_subdir(cls, value: str) -> str:
        value = value.strip("/")
        if ".." in value.split("/"):
            raise ValueError(f"subdir {value!r} leaves the repository; give a folder inside it")
        return value

    @pydantic.field_validator("branch")
    @classmethod
    def _branch_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", value) or value.startswith(("-", "/")) or ".." in value:
            raise ValueError(f"{value!r} is not a branch name")
        return value

    @property
    def is_ssh(self) -> bool:
        return self.url.startswith("ssh://") or bool(re.match(r"^[\w.-]+@[\w.-]+:", self.url))

    @property
    def key_secret_name(self) -> str:
        return self.ssh_key_secret or f"GIT_{re.sub(r'[^A-Za-z0-9]', '_', self.name).upper()}_DEPLOY_KEY"


def split_credentials(url: str) -> tuple[str, str | None]:
    """``https://user:tok@host/x`` -> (``https://host/x``, ``tok``); SSH ``git@host:x`` is kept."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https", "ssh", "git") or "@" not in parts.netloc:
        return url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    if parts.scheme == "ssh" and not password:
        return url, None  # ssh://git@host/x: a user name, not a credential
    token = urllib.parse.unquote(password or user)
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), token


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret and any ``user:password@`` of a URL replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(://)[^/@\s:]+:[^/@\s]+@", r"\1***@", text)


def commit_of(pipeline_path: str | None) -> str | None:
    """The commit a pipeline folder was checked out from (its path is ``.../git/<repo>/trees/<sha>/...``)."""
    match = _TREE.search(pipeline_path or "")
    return match["sha"] if match else None


def source_of(pipeline_path: str | None) -> str | None:
    """The name of the repository a pipeline folder was checked out from (``.../git/<repo>/trees/...``)."""
    match = _TREE.search(pipeline_path or "")
    return match["repo"] if match else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyncState:
    name: str
    url: str
    branch: str
    good_commit: str | None = None
    seen_commit: str | None = None
    status: str = NEVER
    message: str = ""
    problems: list[str] = dataclasses.field(default_factory=list)
    synced_at: dt.datetime | None = None
    updated_at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))
