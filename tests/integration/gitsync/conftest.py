"""Real git repositories for sync tests: a bare ``origin`` (file://) and a clone to push from."""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import AsyncIterator

import pytest
from cryptography import fernet

from kubeline.domain import repos
from kubeline.gitsync import service
from kubeline.secrets import service as secret_service
from kubeline.storage.sql import SqlStore, gitsyncs

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
           "PATH": "/usr/bin:/bin"}


def git(*args: str, cwd: pathlib.Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True,
                          timeout=60)
    return done.stdout.strip()


GOOD = {"pipelines/hello/main.py": "print('hello')\n",
        "pipelines/report/pipeline.yaml": "stages:\n  - {id: a, type: shell, command: 'echo a'}\n"}


class Origin:
    """A bare repository and a work clone; ``commit`` writes files, commits and pushes."""

    def __init__(self, root: pathlib.Path) -> None:
        self.bare = root / "origin.git"
        self.work = root / "work"
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        git("init", "--quiet", "--initial-branch=main", str(self.work))
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def commit(self, files: dict[str, str | None], *, message: str = "change", push: str = "main",
               force: bool = False) -> str:
        for rel, text in files.items():
            path = self.work / rel
            if text is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "--quiet", "-m", message, cwd=self.work)
        git("push", "--quiet", *(["--force"] if force else []), "origin", f"HEAD:{push}", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


@pytest.fixture
def origin(tmp_path: pathlib.Path) -> Origin:
    return Origin(tmp_path / "remote")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    opened = await SqlStore.open(database_url)
    try:
        yield opened
    finally:
        await opened.close()


KEY = fernet.Fernet(fernet.Fernet.generate_key())


def make_sync(root: pathlib.Path, store: SqlStore, *specs: repos.RepoSpec) -> service.GitSync:
    key = KEY
    return service.GitSync(root=root, specs=list(specs), table=gitsyncs.GitSyncs(store.database), store=store,
                           secrets=secret_service.SecretService(store=store, key=key))
