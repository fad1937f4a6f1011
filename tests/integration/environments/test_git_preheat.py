"""A git sync pre-heats the venvs of the commit it serves (the hook wired by bootstrap)."""

from __future__ import annotations

import pathlib
import subprocess

from kubeline import bootstrap
from kubeline import settings as settings_

from .conftest import offline

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
           "PATH": "/usr/bin:/bin"}


def git(*args: str, cwd: pathlib.Path | None = None) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True, timeout=60)


async def test_a_synced_commit_is_preheated(tmp_path: pathlib.Path, database_url: str, wheelhouse: pathlib.Path):
    bare, work = tmp_path / "origin.git", tmp_path / "work"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    git("init", "--quiet", "--initial-branch=main", str(work))
    folder = work / "pipelines" / "synced"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text("import kl_demo\n")
    (folder / "requirements.txt.lock").write_text(offline(wheelhouse, "kl-base==1.0", "kl-demo==1.0"))
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "first", cwd=work)
    git("push", "--quiet", str(bare), "HEAD:main", cwd=work)

    settings = settings_.Settings(home=tmp_path / "home", database_url=database_url, uv_cache_dir=tmp_path / "uv",
                                  git_repos=[{"name": "team", "url": f"file://{bare}", "subdir": "pipelines",
                                              "interval": 0}])
    async with bootstrap.open_kubeline(settings) as kl:
        assert kl.git is not None and kl.environments is not None
        state = await kl.git.sync("team")
        assert state.status == "ok"
        pipeline = await kl.store.get_pipeline("synced")
        assert kl.environments.busy or kl.environments.state(pipeline).state == "ready"
        await kl.environments.idle()
        found = kl.environments.state(pipeline)
        assert found.state == "ready"
        _, packages = await kl.environments.packages(found.venvs[0])
        assert {(p.name, p.version) for p in packages} == {("kl-base", "1.0"), ("kl-demo", "1.0")}
