"""Browser tests: Playwright for Python driving Debian's Chromium (headless, ``--no-sandbox``)
against a real ``kubeline server`` (SQLite, local executor) started here on 127.0.0.1; the tests
marked ``BOTH_DATABASES`` also against a real PostgreSQL (the integration conftest's).

Chromium comes from apt (``kubeline.testing.apt_install("chromium")``): Playwright cannot
download its own browsers here. Without it, or without the built UI, the tests skip with the
reason, and fail instead under ``KUBELINE_REQUIRE_BROWSER=1`` (``.ci/run`` sets it).
Screenshots of the main pages go to ``build/screenshots/`` (untracked: a test run leaves the
checkout clean); ``KUBELINE_SCREENSHOTS=docs/screenshots`` writes the README's images instead.
"""

from __future__ import annotations

import os
import pathlib
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from kubeline import settings as settings_
from kubeline import testing
from kubeline.ui import serve

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / os.environ.get("KUBELINE_SCREENSHOTS", "build/screenshots")
AXE = ROOT / "ui" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM = "/usr/bin/chromium"

PIPELINES = {
    "etl": """
        description: Nightly import, three stages
        tags: [nightly, sales]
        inputs: {day: {type: string, default: today}, rows: {type: integer, default: 3}}
        triggers: {webhook: {enabled: true}}
        schedules: [{cron: "0 2 * * *", timezone: Europe/Berlin}]
        stages:
          - {id: fetch, type: shell, command: 'for i in $(seq 1 $rows); do printf "\\033[32mfetched\\033[0m row %s for %s\\n" $i "$day"; sleep 0.3; done; echo "{\\"rows\\": $rows}" > $KUBELINE_OUTPUTS'}
          - {id: clean, type: shell, dependsOn: [fetch], command: 'echo cleaning; echo "{\\"ok\\": true, \\"nested\\": {\\"a\\": [1, 2]}}" > $KUBELINE_OUTPUTS'}
          - {id: report, type: shell, dependsOn: [clean], command: 'echo report done'}
    """,
    "flaky": """
        description: Fails until the mark file exists
        stages:
          - {id: first, type: shell, command: 'echo first ok'}
          - {id: second, type: shell, dependsOn: [first], command: 'echo checking >&2; test -f $MARK || { echo "error: mark file missing" >&2; exit 3; }'}
    """,
    "slow": """
        description: Sleeps a minute
        stages:
          - {id: wait, type: shell, command: 'echo started; sleep 60'}
    """,
}


def _unavailable(reason: str) -> None:
    if os.environ.get("KUBELINE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"a browser is required (KUBELINE_REQUIRE_BROWSER=1) but: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not pathlib.Path(CHROMIUM).exists():
        problem = testing.apt_install("chromium")
        if not pathlib.Path(CHROMIUM).exists():
            _unavailable(f"Chromium unavailable: {problem or 'apt-get installed nothing at ' + CHROMIUM}")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _unavailable("playwright is not installed (pip install -e .[dev])")
    if not serve.is_built():
        _unavailable("the web UI is not built (run ./scripts/bootstrap, which needs npm)")
    if not AXE.exists():
        _unavailable(f"axe-core missing at {AXE} (run ./scripts/bootstrap)")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    """Module-scoped: Playwright's sync API holds an event loop in this thread while it runs, so
    it must stop before the asyncio tests of other folders run."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium_path, headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield launched
        launched.close()


NOTEBOOK_CELLS = [
    ("markdown", "# Report"),
    ("code", "rows = [1, 2, 3]\nprint('rows read:', len(rows))"),
    ("code", "sum(rows) * 7"),
    ("code", "raise ValueError('bad row 2')"),
    ("code", "print('never')"),
]


def write_pipelines(root: pathlib.Path, *, mark: pathlib.Path) -> pathlib.Path:
    for name, spec in PIPELINES.items():
        (root / name).mkdir(parents=True)
        (root / name / "pipeline.yaml").write_text(textwrap.dedent(spec).replace("$MARK", str(mark)))
    import nbformat

    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_markdown_cell(src) if kind == "markdown" else nbformat.v4.new_code_cell(src)
                  for kind, src in NOTEBOOK_CELLS]
    (root / "report").mkdir()
    nbformat.write(book, root / "report" / "main.ipynb")
    return root


@pytest.fixture
def mark(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "mark"


def _postgres_fixtures() -> Any:
    """The integration suite's real PostgreSQL (a session server, a fresh database per test), reused
    as is: loaded from its conftest under another name, so its other fixtures stay there."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("kubeline_browser_pg", ROOT / "tests" / "integration" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_pg = _postgres_fixtures()
postgres_server = _pg.postgres_server
postgres_url = _pg.postgres_url
# The tests that take ``BOTH_DATABASES`` also run against PostgreSQL (the others: SQLite only).
BOTH_DATABASES = pytest.mark.parametrize(
    "database_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'kubeline.db'}"


@pytest.fixture
def server(tmp_path: pathlib.Path, mark: pathlib.Path, database_url: str) -> Iterator[testing.ServerThread]:
    config = settings_.Settings(home=tmp_path / "home", database_url=database_url,
                                pipelines_dir=write_pipelines(tmp_path / "pipelines", mark=mark),
                                uv_cache_dir=pathlib.Path("/tmp/kubeline-test-venvs/uv-cache"))
    with testing.ServerThread(config) as running:
        yield running


@pytest.fixture(params=["light", "dark"])
def theme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def page(browser: Any, server: testing.ServerThread) -> Iterator[Any]:
    """A tab logged in as an admin user (session cookie from the password login, as a person gets)."""
    context = browser.new_context(viewport={"width": 1280, "height": 720}, base_url=server.url)
    context.set_default_timeout(15_000)
    password = "browser-test-password"
    server.login_as("ada", "admin", password=password)
    context.request.post(f"{server.url}/api/v1/auth/login",
                         data={"username": "ada", "password": password}).dispose()
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def set_theme(page: Any, theme: str) -> None:
    page.evaluate("t => { localStorage.setItem('kubeline-theme', t); document.documentElement.dataset.theme = t; }", theme)


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations of the page as it is now."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"][:5]]}
            for v in result if v["impact"] in ("serious", "critical")]


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
