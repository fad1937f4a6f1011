import contextlib
import pathlib
import textwrap
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kubeline import bootstrap, settings
from kubeline.pipelines import loader


@pytest.fixture
def home(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "home"


@pytest.fixture
def open_app(
    home: pathlib.Path, database_url: str
) -> Callable[[], contextlib.AbstractAsyncContextManager[bootstrap.Kubeline]]:
    """Kubeline on SQLite and on a real PostgreSQL (``database_url`` is parametrised)."""
    # a shared venv/uv cache across tests keeps them fast; each test has its own DB and logs
    shared = pathlib.Path("/tmp/kubeline-test-venvs")

    @contextlib.asynccontextmanager
    async def _open() -> AsyncIterator[bootstrap.Kubeline]:
        config = settings.Settings(home=home, secret_key=None, uv_cache_dir=shared / "uv-cache",
                                   database_url=database_url)
        async with bootstrap.open_kubeline(config) as app:
            yield app

    return _open


@pytest.fixture
def make_pipeline(tmp_path: pathlib.Path) -> Callable[..., pathlib.Path]:
    def _make(name: str, files: dict[str, str]) -> pathlib.Path:
        folder = tmp_path / "pipelines" / name
        folder.mkdir(parents=True)
        for rel, text in files.items():
            (folder / rel).write_text(textwrap.dedent(text))
        return folder

    return _make


async def _run_folder(app: bootstrap.Kubeline, folder: pathlib.Path, **kwargs: Any) -> Any:
    pipeline = loader.load_folder(folder)
    await app.store.upsert_pipeline(pipeline)
    run = await app.engine.submit(pipeline, **kwargs)
    return await app.engine.execute(run.id)


def _log_text(app: bootstrap.Kubeline, run_id: str, stage: str | None = None) -> str:
    return "\n".join(f"{line.stream} {line.text}" for line in app.logs.read(run_id, stage_id=stage))


@pytest.fixture
def run_folder() -> Callable[..., Any]:
    return _run_folder


@pytest.fixture
def log_text() -> Callable[..., str]:
    return _log_text
