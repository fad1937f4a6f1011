"""Operations pages in a real Chromium against a real server: git sources (status, every problem,
sync now, deploy key; no credential on the page), the commit a run ran on its page, and what a
viewer may not do there. The pipelines come from a local bare repository over file://."""

from __future__ import annotations

import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from tests.browser.conftest import BOTH_DATABASES, axe_violations, screenshot, set_theme
from tests.browser.test_pages import api, run_and_wait

from kubeline import settings as settings_
from kubeline import testing

pytestmark = pytest.mark.slow

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1",
           "PATH": "/usr/bin:/bin"}
URL_TOKEN = "s3cr3t-url-token-in-config"  # a test credential that must never reach the page


def git(*args: str, cwd: pathlib.Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


class Origin:
    """A bare repository (the remote, over file://) and a clone that commits and pushes to it."""

    def __init__(self, root: pathlib.Path) -> None:
        self.bare, self.work = root / "origin.git", root / "work"
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        git("init", "--quiet", "--initial-branch=main", str(self.work))
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    def commit(self, files: dict[str, str]) -> str:
        for rel, text in files.items():
            (self.work / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.work / rel).write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "--quiet", "-m", "change", cwd=self.work)
        git("push", "--quiet", "origin", "HEAD:main", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)


@pytest.fixture
def origin(tmp_path: pathlib.Path) -> Origin:
    return Origin(tmp_path / "remote")


@pytest.fixture
def server(tmp_path: pathlib.Path, origin: Origin, database_url: str) -> Iterator[testing.ServerThread]:
    """Pipelines from git only: ``team`` (file://), ``private`` (HTTPS with a token in its URL, no
    such server), ``deploy`` (SSH without a pinned host key)."""
    repos = [
        {"name": "team", "url": f"file://{origin.bare}", "subdir": "pipelines", "interval": 0, "webhook_secret": "HOOK"},
        {"name": "private", "url": f"https://ci:{URL_TOKEN}@127.0.0.1:9/team/p.git", "interval": 3600},
        {"name": "deploy", "url": "ssh://git@127.0.0.1:9/team/p.git", "branch": "release", "interval": 0},
    ]
    (tmp_path / "empty").mkdir()
    config = settings_.Settings(home=tmp_path / "home", database_url=database_url, pipelines_dir=tmp_path / "empty",
                                git_repos=repos, uv_cache_dir=pathlib.Path("/tmp/kubeline-test-venvs/uv-cache"))
    with testing.ServerThread(config) as running:
        yield running


GOOD = {"pipelines/hello/main.py": "print('hello from git')\n",
        "pipelines/report/pipeline.yaml": "stages:\n  - {id: a, type: shell, command: 'echo a'}\n"}
BAD = {"pipelines/report/pipeline.yaml": "stages:\n  - {id: a, type: shel}\n",
       "pipelines/cron/pipeline.json": '{"schedule_cron": "61 * * * *"}', "pipelines/cron/main.py": ""}


def source_card(page: Any, name: str) -> Any:
    return page.get_by_role("region", name=f"Source {name}")


@BOTH_DATABASES
def test_sources_show_status_problems_and_sync_now_and_a_run_shows_its_commit(page, server, origin):
    first = origin.commit(GOOD)
    page.goto("/sources")
    team = source_card(page, "team")
    team.get_by_text("never synced").wait_for()
    assert page.get_by_role("navigation", name="Main").get_by_role("link", name="Sources").count() == 1
    team.get_by_role("button", name="Sync now: team").click()
    team.get_by_test_id("source-commit").get_by_text(first).wait_for()
    assert team.get_by_test_id("source-status").inner_text() == "ok"
    assert "pipelines" in team.inner_text() and "POST /api/v1/git/team/webhook" in team.inner_text()

    # an invalid commit: not served, the last good one stays, every problem is listed
    bad = origin.commit(BAD)
    team.get_by_role("button", name="Sync now: team").click()
    team.get_by_test_id("source-status").get_by_text("invalid commit").wait_for()
    problems = team.get_by_role("list", name="Problems of team")
    assert problems.locator("li").count() == 2, problems.inner_text()
    assert "unknown stage type 'shel'" in problems.inner_text() and "61 * * * *" in problems.inner_text()
    assert first in team.get_by_test_id("source-commit").inner_text()
    assert bad in team.inner_text()  # the branch head, shown as not served

    # an unreachable remote with a token in its configured URL: the status says so, the token never shows
    private = source_card(page, "private")
    assert "every 3600 s" in private.inner_text()
    private.get_by_role("button", name="Sync now: private").click()
    private.get_by_test_id("source-status").get_by_text("unreachable").wait_for()
    assert private.get_by_test_id("source-url").inner_text() == "https://127.0.0.1:9/team/p.git"

    # SSH: generate the deploy key; the public key is shown with a copy button, the private one never
    deploy = source_card(page, "deploy")
    deploy.get_by_text("No deploy key yet").wait_for()
    deploy.get_by_role("button", name="Sync now: deploy").click()
    deploy.get_by_test_id("source-status").get_by_text("unreachable").wait_for()
    assert "no host key is pinned" in deploy.inner_text()
    deploy.get_by_role("status").get_by_text("Sync of deploy done").wait_for()
    deploy.get_by_role("button", name="Generate deploy key").click()
    shown = deploy.get_by_test_id("deploy-key")
    shown.wait_for()
    public = api(server, "GET", "/git/deploy/deploy-key").json()["public_key"]
    assert shown.inner_text().strip() == public and public.startswith("ssh-ed25519 ")
    assert deploy.get_by_role("button", name="Copy public key of deploy").count() == 1
    content = page.content()
    assert URL_TOKEN not in content and "PRIVATE KEY" not in content
    page.evaluate("window.scrollTo(0, 0)")
    for theme in ("light", "dark"):
        set_theme(page, theme)
        assert axe_violations(page) == [], theme
        screenshot(page, f"sources-{theme}")

    # a run of a synced pipeline shows the commit it ran and where it came from
    run = run_and_wait(server, "hello", timeout=120)
    assert (run["state"], run["git_commit"], run["git_source"]) == ("succeeded", first, "team")
    page.goto(f"/runs/{run['id']}")
    line = page.get_by_test_id("git-commit")
    line.get_by_text("branch main").wait_for()
    assert first in line.inner_text() and "team" in line.inner_text() and "pipelines" in line.inner_text()
    line.get_by_role("link", name="team").click()
    page.wait_for_url("**/sources")
    screenshot(page, "sources")


@pytest.fixture
def tab_as(browser: Any) -> Iterator[Any]:
    """A tab of a new user with ``role`` on ``server``, logged in with a password (a session cookie)."""
    contexts: list[Any] = []

    def login(server: testing.ServerThread, username: str, role: str) -> Any:
        password = f"{username}-password-123"
        server.login_as(username, role, password=password)
        context = browser.new_context(viewport={"width": 1280, "height": 720}, base_url=server.url)
        context.set_default_timeout(15_000)
        contexts.append(context)
        context.request.post(f"{server.url}/api/v1/auth/login", data={"username": username, "password": password}).dispose()
        return context.new_page()

    yield login
    for context in contexts:
        context.close()


def test_a_viewer_sees_sources_without_sync_or_key_controls(tab_as, server, origin):
    origin.commit(GOOD)
    assert api(server, "POST", "/git/team/sync").json()["status"] == "ok"
    assert api(server, "POST", "/git/deploy/deploy-key").status_code == 201
    tab = tab_as(server, "vic", "viewer")
    tab.goto("/sources")
    source_card(tab, "team").get_by_test_id("source-status").get_by_text("ok").wait_for()
    source_card(tab, "deploy").get_by_test_id("deploy-key").wait_for()  # viewers may read the public key
    assert tab.get_by_role("navigation", name="Main").get_by_role("link", name="Sources").count() == 1
    assert tab.get_by_role("button", name="Sync now: team").count() == 0
    assert tab.get_by_role("button", name="Replace deploy key").count() == 0
    status = tab.evaluate("""async () => {
        const csrf = (await (await fetch('/api/v1/auth/me')).json()).csrf_token;
        return (await fetch('/api/v1/git/team/sync', {method: 'POST', headers: {'x-csrf-token': csrf}})).status; }""")
    assert status == 403


@pytest.fixture
def plain_server(tmp_path: pathlib.Path) -> Iterator[testing.ServerThread]:
    (tmp_path / "none").mkdir()
    config = settings_.Settings(home=tmp_path / "home2", pipelines_dir=tmp_path / "none")
    with testing.ServerThread(config) as running:
        yield running


def test_empty_states_say_what_to_configure(tab_as, plain_server):
    tab = tab_as(plain_server, "ada", "admin")
    tab.goto("/sources")
    tab.get_by_test_id("no-sources").wait_for()
    assert "KUBELINE_GIT_REPOS" in tab.get_by_test_id("no-sources").inner_text()
    tab.goto("/notifications")
    tab.get_by_test_id("no-deliveries").wait_for()
    assert "KUBELINE_NOTIFICATIONS" in tab.get_by_test_id("no-rules").inner_text()
    assert "no SMTP server" in tab.get_by_test_id("smtp").inner_text()
    tab.goto("/cleanup")
    tab.get_by_test_id("nothing").wait_for()
    assert tab.get_by_role("button", name="Apply cleanup…").count() == 0
