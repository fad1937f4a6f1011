"""Store fixtures: the same contract suite over SQLite and a real PostgreSQL
(the PostgreSQL server fixtures live in tests/integration/conftest.py)."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Any]:
    """The Store under test, once per backend: ``sqlite`` and ``postgres``."""
    from kubeline.storage.sql import SqlStore

    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'kubeline.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    sql_store = await SqlStore.open(url)
    try:
        yield sql_store
    finally:
        await sql_store.close()
