"""``GitSync``: keep each repository's pipelines at the commit all replicas agreed on.

A sync fetches the branch into a local bare mirror, writes the head commit's tree aside
(``trees/<sha>``, complete before anything points at it), validates every pipeline in it, and
only then proposes the commit to the database (compare-and-set, ``storage.sql.gitsyncs``). Each
replica serves the database's ``good_commit``: it loads the pipelines of that tree into the store
(their path names the commit, so every run records the commit it ran) and switches the
``current`` symlink with one rename. A commit that fails validation, a deleted branch, an
unreachable remote or missing credentials leave the last good commit served and say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable

from kubeline.domain import errors, repos, runs
from kubeline.gitsync import git
from kubeline.pipelines import loader
from kubeline.secrets import service as secret_service
from kubeline.storage import base as storage_base
from kubeline.storage.sql import gitsyncs

KEEP_TREES = 5  # older checkouts are deleted (runs copy what they need when they start)


@dataclasses.dataclass
class GitSync:
    root: pathlib.Path
    specs: list[repos.RepoSpec]
    table: gitsyncs.GitSyncs
    store: storage_base.Store
    secrets: secret_service.SecretService
    loaded: Callable[[list[runs.Pipeline]], object] | None = None  # told the pipelines a commit serves (pre-heating)

    def __post_init__(self) -> None:
        self._locks = {s.name: asyncio.Lock() for s in self.specs}

    def spec(self, name: str) -> repos.RepoSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        known = ", ".join(s.name for s in self.specs) or "none (set KUBELINE_GIT_REPOS)"
        raise errors.NotFoundError(f"git repository {name!r} is not configured; configured: {known}")

    async def states(self) -> list[repos.SyncState]:
        stored = {s.name: s for s in await self.table.list()}
        return [stored.get(s.name) or repos.SyncState(name=s.name, url=s.url, branch=s.branch)
                for s in self.specs]

    async def state(self, name: str) -> repos.SyncState:
        spec = self.spec(name)
        return await self.table.get(name) or repos.SyncState(name=name, url=spec.url, branch=spec.branch)

    def current(self, name: str) -> str | None:
        """The commit this replica serves (its ``current`` symlink)."""
        link = self.root / name / "current"
        return link.readlink().name if link.is_symlink() else None

    async def sync(self, name: str) -> repos.SyncState:
        spec = self.spec(name)
        async with self._locks[name]:
            return await self._sync(spec)

    async def adopt(self, name: str) -> repos.SyncState | None:
        """Serve the database's commit if this replica serves another one (another replica synced)."""
        spec = self.spec(name)
        async with self._locks[name]:
            state = await self.table.get(name)
            if state is not None and state.good_commit and state.good_commit != self.current(name):
                await self._activate(spec, state.good_commit)
            return state

    async def _sync(self, spec: repos.RepoSpec) -> repos.SyncState:
        before = await self.table.get(spec.name)
        good = before.good_commit if before else None
        seen = before.seen_commit if before else None
        serving = f"serving {good[:12]}" if good else "nothing served yet"
        try:
            token, key = await self._credentials(spec)
            async with git.auth_env(spec=spec, token=token, ssh_key=key) as env:
                head = await git.fetch(mirror=self._mirror(spec), spec=spec, env=env, secrets=(token,))
        except git.GitError as exc:
            state = await self.table.record(spec=spec, status=exc.status, message=f"{exc}; {serving}",
                                            seen_commit=seen, problems=[])
            if good and good != self.current(spec.name):
                with contextlib.suppress(git.GitError):  # this replica cannot fetch it either: nothing to switch
                    await self._activate(spec, good)
            return state
        notes = []
        if seen and seen != head and await git.has_commit(self._mirror(spec), seen) \
                and not await git.is_ancestor(self._mirror(spec), seen, head):
            notes.append(f"force-pushed: {seen[:12]} is not an ancestor of {head[:12]}")
        if head == good:
            state = await self.table.record(spec=spec, status=repos.OK, seen_commit=head, problems=[],
                                            message="; ".join([f"up to date at {head[:12]}", *notes]))
            await self._activate(spec, head)
            return state
        tree = await self._tree(spec, head)
        problems = await asyncio.to_thread(_problems, tree, spec=spec, sha=head)
        if problems:
            state = await self.table.record(
                spec=spec, status=repos.INVALID, seen_commit=head, problems=problems,
                message="; ".join([f"commit {head[:12]} not served: {len(problems)} problem(s); {serving}", *notes]))
            if good:
                await self._activate(spec, good)
            return state
        state = await self.table.record(spec=spec, status=repos.OK, seen_commit=head, problems=[],
                                        message="; ".join([f"serving {head[:12]}", *notes]),
                                        propose=head, based_on=good)
        if state.good_commit:
            await self._activate(spec, state.good_commit)  # ours, or the commit another replica won with
        return state

    async def _credentials(self, spec: repos.RepoSpec) -> tuple[str | None, str | None]:
        token = spec.url_token.get_secret_value() if spec.url_token else None
        key = None
        try:
            if spec.token_secret:
                token = await self.secrets.get(spec.token_secret)
            if spec.is_ssh:
                if not spec.known_hosts:
                    raise git.GitError(
                        f"{spec.url} is SSH but no host key is pinned: set known_hosts for {spec.name!r} "
                        "(the output of ssh-keyscan HOST, checked out of band)", status=repos.UNREACHABLE)
                key = await self.secrets.get(spec.key_secret_name)
        except (errors.NotFoundError, errors.SecretError) as exc:
            raise git.GitError(
                f"credentials for {spec.name!r}: {exc} (for SSH: kubeline git keygen {spec.name}, then add the "
                "public key to the repository as a read-only deploy key)", status=repos.UNREACHABLE) from None
        return token, key

    def _mirror(self, spec: repos.RepoSpec) -> pathlib.Path:
        return self.root / spec.name / "mirror.git"

    async def _tree(self, spec: repos.RepoSpec, sha: str) -> pathlib.Path:
        tree = self.root / spec.name / "trees" / sha
        if not tree.is_dir():
            tree.parent.mkdir(parents=True, exist_ok=True)
            scratch = pathlib.Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=tree.parent))
            try:
                await git.archive(self._mirror(spec), sha, target=scratch / "tree")
                (scratch / "tree").rename(tree)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        return tree

    async def _activate(self, spec: repos.RepoSpec, sha: str) -> None:
        if not await git.has_commit(self._mirror(spec), sha):
            token, key = await self._credentials(spec)
            async with git.auth_env(spec=spec, token=token, ssh_key=key) as env:
                await git.fetch(mirror=self._mirror(spec), spec=spec, env=env, secrets=(token,))
        tree = await self._tree(spec, sha)
        found = await asyncio.to_thread(loader.discover, tree / spec.subdir)
        for pipeline in found.pipelines:
            await self.store.upsert_pipeline(pipeline)
        if self.loaded is not None:
            self.loaded(found.pipelines)
        names = {p.name for p in found.pipelines}
        marker = f"/git/{spec.name}/trees/"
        for stale in await self.store.list_pipelines():
            if stale.name not in names and marker in (stale.path or ""):
                await self.store.delete_pipeline(stale.name)
        link = self.root / spec.name / "current"
        temporary = link.with_name(f".current-{os.getpid()}")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(tree)
        temporary.replace(link)  # one rename: readers see the old tree or the new one
        await asyncio.to_thread(_prune, tree.parent, keep=tree)

    async def generate_key(self, name: str) -> str:
        """Make an ed25519 deploy key pair, store the private key as a secret, return the public key."""
        spec = self.spec(name)
        with tempfile.TemporaryDirectory(prefix="kubeline-keygen-") as scratch:
            path = pathlib.Path(scratch) / "key"
            process = await asyncio.create_subprocess_exec(
                "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"kubeline-{name}", "-f", str(path),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _, err = await process.communicate()
            if process.returncode != 0:
                raise errors.ConflictError(f"ssh-keygen failed: {err.decode(errors='replace').strip()}")
            await self.secrets.set(spec.key_secret_name, path.read_text())
            return path.with_suffix(".pub").read_text().strip()

    async def public_key(self, name: str) -> str:
        spec = self.spec(name)
        private = await self.secrets.get(spec.key_secret_name)
        with tempfile.TemporaryDirectory(prefix="kubeline-keygen-") as scratch:
            path = pathlib.Path(scratch) / "key"
            path.touch(mode=0o600)
            path.write_text(private)
            process = await asyncio.create_subprocess_exec(
                "ssh-keygen", "-y", "-f", str(path), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, _ = await process.communicate()
        if process.returncode != 0:
            raise errors.ConflictError(f"stored key {spec.key_secret_name} is not an SSH private key")
        return out.decode().strip()

    async def run_forever(self, *, poll: float = 2.0) -> None:
        """Sync each repository every ``interval`` seconds and adopt commits other replicas agreed on."""
        due = {s.name: 0.0 for s in self.specs}
        loop = asyncio.get_running_loop()
        while True:
            for spec in self.specs:
                try:
                    if spec.interval and loop.time() >= due[spec.name]:
                        due[spec.name] = loop.time() + spec.interval
                        await self.sync(spec.name)
                    else:
                        await self.adopt(spec.name)
                except (git.GitError, errors.KubelineError, OSError):
                    pass  # recorded in the sync state where it could be; tried again next round
            await asyncio.sleep(poll)


def _problems(tree: pathlib.Path, *, spec: repos.RepoSpec, sha: str) -> list[str]:
    folder = tree / spec.subdir
    if not folder.is_dir():
        return [f"{spec.subdir or '.'}: no such folder in commit {sha[:12]} (fix 'subdir' of {spec.name!r})"]
    try:
        found = loader.discover(folder)
    except errors.KubelineError as exc:
        return [str(exc)]
    return [str(p) for p in found.problems]


def _prune(trees: pathlib.Path, *, keep: pathlib.Path) -> None:
    old = sorted((p for p in trees.iterdir() if p.is_dir() and not p.name.startswith(".") and p != keep),
                 key=lambda p: p.stat().st_mtime, reverse=True)
    for path in old[KEEP_TREES - 1:]:
        shutil.rmtree(path, ignore_errors=True)


def commit_of(pipeline: runs.Pipeline) -> str | None:
    return repos.commit_of(pipeline.path)
