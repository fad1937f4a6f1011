"""Running ``git`` for a sync: credentials through the environment, never the command line or URL.

An HTTPS token goes in as an ``http.extraHeader`` set by ``GIT_CONFIG_*`` variables (not visible
in ``ps``); an SSH key and the pinned host keys go into 0600 files of a private temp dir, used by
``ssh -o StrictHostKeyChecking=yes``. Every message that leaves is passed through ``redact``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import pathlib
import tempfile
from collections.abc import AsyncIterator

from kubeline.domain import repos

TIMEOUT = 60.0


class GitError(Exception):
    """A git command failed; ``status`` is a ``repos`` status, the message is redacted."""

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status


@contextlib.asynccontextmanager
async def auth_env(*, spec: repos.RepoSpec, token: str | None, ssh_key: str | None) -> AsyncIterator[dict[str, str]]:
    """The environment of git commands talking to ``spec``'s remote."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SSH_AUTH_SOCK"))}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="/bin/false", LC_ALL="C")
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                   GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")
    with tempfile.TemporaryDirectory(prefix="kubeline-git-") as scratch:
        if spec.is_ssh:
            key = pathlib.Path(scratch) / "key"
            hosts = pathlib.Path(scratch) / "known_hosts"
            for path, text in ((key, ssh_key or ""), (hosts, spec.known_hosts or "")):
                path.touch(mode=0o600)
                path.write_text(text if text.endswith("\n") else text + "\n")
            env["GIT_SSH_COMMAND"] = (
                f"ssh -F /dev/null -i {key} -o IdentitiesOnly=yes -o UserKnownHostsFile={hosts} "
                "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes "
                "-o ConnectTimeout=10")
        yield env


async def run(*args: str, cwd: pathlib.Path | None = None, env: dict[str, str] | None = None,
              secrets: tuple[str | None, ...] = (), limit: float = TIMEOUT) -> str:
    """``git ARGS``'s stdout; ``GitError`` with redacted stderr when it fails or times out."""
    process = await asyncio.create_subprocess_exec(
        "git", *args, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise GitError(f"git {args[0]} did not finish in {limit:g}s", status=repos.UNREACHABLE) from None
    if process.returncode != 0:
        text = err.decode(errors="replace").strip()
        raise GitError(repos.redact(text, *secrets) or f"git {args[0]} exited {process.returncode}",
                       status=repos.UNREACHABLE)
    return out.decode(errors="replace")


async def fetch(*, mirror: pathlib.Path, spec: repos.RepoSpec, env: dict[str, str],
                secrets: tuple[str | None, ...]) -> str:
    """Fetch the branch into the local mirror; its head commit. ``GitError`` says why not."""
    if not await asyncio.to_thread((mirror / "HEAD").exists):
        await asyncio.to_thread(mirror.mkdir, parents=True, exist_ok=True)
        await run("init", "--bare", "--quiet", str(mirror))
    ref = f"refs/kubeline/{spec.branch}"
    try:
        await run("-C", str(mirror), "fetch", "--quiet", "--no-tags", "--force", "--", spec.url,
                  f"+refs/heads/{spec.branch}:{ref}", env=env, secrets=secrets)
    except GitError as exc:
        text = str(exc)
        if "couldn't find remote ref" in text or "could not find remote ref" in text:
            raise GitError(f"branch {spec.branch!r} does not exist on {spec.url} (deleted or renamed?)",
                           status=repos.BRANCH_MISSING) from None
        raise GitError(f"cannot fetch {spec.url}: {_gist(text)}", status=repos.UNREACHABLE) from None
    return (await run("-C", str(mirror), "rev-parse", f"{ref}^{{commit}}")).strip()


_BOILERPLATE = ("Please make sure you have the correct access rights", "and the repository exists")


def _gist(stderr: str) -> str:
    """git's error lines without its generic advice, on one line."""
    if "Host key verification failed" in stderr:
        return ("Host key verification failed: the server's host key is not the pinned one (known_hosts); "
                "if the key really changed, check it out of band and update known_hosts")
    lines = [line.strip() for line in stderr.splitlines()]
    return " / ".join(line for line in lines if line and not line.startswith(_BOILERPLATE)) or "git failed"


async def has_commit(mirror: pathlib.Path, sha: str) -> bool:
    try:
        await run("-C", str(mirror), "cat-file", "-e", f"{sha}^{{commit}}")
    except GitError:
        return False
    return True


async def is_ancestor(mirror: pathlib.Path, older: str, newer: str) -> bool:
    try:
        await run("-C", str(mirror), "merge-base", "--is-ancestor", older, newer)
    except GitError:
        return False
    return True


async def archive(mirror: pathlib.Path, sha: str, *, target: pathlib.Path) -> None:
    """Write the tree of ``sha`` to ``target`` (a new folder), without any ``.git``."""
    import io
    import tarfile

    process = await asyncio.create_subprocess_exec(
        "git", "-C", str(mirror), "archive", "--format=tar", sha, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL)
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    if process.returncode != 0:
        raise GitError(f"cannot read commit {sha[:12]}: {err.decode(errors='replace').strip()}",
                       status=repos.UNREACHABLE)

    def extract() -> None:
        target.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(out)) as tar:
            tar.extractall(target, filter="data")
    await asyncio.to_thread(extract)
