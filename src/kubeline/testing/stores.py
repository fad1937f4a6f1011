"""The one store, for tests: ``SqlStore`` on a temporary SQLite file.

There is no second (in-memory) store: a fake store drifts from the real one and hides its bugs
(it hid head-of-line blocking in the claim query). Migrating a fresh database to head costs
about as much as a small test, so the first call per process migrates a template file and every
later call copies it (as procrastinate's tests copy a template database).
"""

from __future__ import annotations

import atexit
import contextlib
import pathlib
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator

from kubeline.storage.sql import migrate
from kubeline.storage.sql import store as sql_store

_template_lock = threading.Lock()
_templates: dict[str, pathlib.Path] = {}


def sqlite_url(path: pathlib.Path) -> str:
    return f"sqlite:///{path}"


async def _template() -> pathlib.Path:
    head = migrate.head_revision()
    with _template_lock:
        found = _templates.get(head)
    if found is not None:
        return found
    folder = pathlib.Path(tempfile.mkdtemp(prefix="kubeline-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / "template.db"
    store = await sql_store.SqlStore.open(sqlite_url(path))
    await store.close()  # the last connection out checkpoints the WAL into the file
    with _template_lock:
        _templates[head] = path
    return path


async def open_sqlite(path: pathlib.Path) -> sql_store.SqlStore:
    """A migrated ``SqlStore`` on a new SQLite file at ``path`` (which must not exist yet)."""
    template = await _template()
    _copy_new(template, path)
    return await sql_store.SqlStore.open(sqlite_url(path), migrate=False)


def _copy_new(template: pathlib.Path, path: pathlib.Path) -> None:
    if path.exists():
        raise FileExistsError(f"{path} exists: give open_sqlite a new file (e.g. under tmp_path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, path)


@contextlib.asynccontextmanager
async def sqlite_store(path: pathlib.Path) -> AsyncIterator[sql_store.SqlStore]:
    """``open_sqlite`` closed on the way out."""
    store = await open_sqlite(path)
    try:
        yield store
    finally:
        await store.close()
