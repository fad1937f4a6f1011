"""Unit-test fixtures: the store is the real one (``SqlStore``) on a temporary SQLite file."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest

from kubeline.storage.sql import store as sql_store
from kubeline.testing import stores


@pytest.fixture(name="sql_store")
async def _sql_store(tmp_path: pathlib.Path) -> AsyncIterator[sql_store.SqlStore]:
    async with stores.sqlite_store(tmp_path / "kubeline.db") as store:
        yield store
