"""Migrations are code: one head, schema == declared metadata, upgrade/downgrade/upgrade works."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import autogenerate, migration, script

from kubeline.storage.sql import SqlStore, engines, migrate, tables


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    else:
        yield request.getfixturevalue("empty_postgres_url")


def test_single_head() -> None:
    heads = script.ScriptDirectory.from_config(migrate.alembic_config()).get_heads()
    assert len(heads) == 1, f"several Alembic heads {heads}: merge them with `alembic merge`"
    assert migrate.head_revision() == heads[0]


async def _schema_diff(url: str) -> list[object]:
    db = engines.open_database(url)
    try:
        return await db.run(
            lambda conn: autogenerate.compare_metadata(
                migration.MigrationContext.configure(conn, opts={"compare_type": True}),
                tables.metadata,
            ),
            write=False,
        )
    finally:
        await db.dispose()


async def _table_names(url: str) -> set[str]:
    db = engines.open_database(url)
    try:
        return await db.run(lambda conn: set(sa.inspect(conn).get_table_names()), write=False)
    finally:
        await db.dispose()


async def test_migrations_produce_exactly_the_declared_schema(empty_url: str) -> None:
    await migrate.upgrade(empty_url)
    assert await _schema_diff(empty_url) == []


async def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    assert await migrate.current_revision(empty_url) is None
    assert not await migrate.is_current(empty_url)
    await migrate.upgrade(empty_url)
    assert await migrate.is_current(empty_url)
    assert set(tables.metadata.tables) <= await _table_names(empty_url)
    await migrate.downgrade(empty_url, revision="base")
    assert await migrate.current_revision(empty_url) is None
    assert await _table_names(empty_url) <= {"alembic_version"}
    await migrate.upgrade(empty_url)
    assert await migrate.current_revision(empty_url) == migrate.head_revision()
    assert await _schema_diff(empty_url) == []


async def test_open_without_migrate_reports_not_current(empty_url: str) -> None:
    store = await SqlStore.open(empty_url, migrate=False)
    try:
        assert await store.current_revision() is None
        assert not await store.is_current()
    finally:
        await store.close()
    store = await SqlStore.open(empty_url)
    try:
        assert await store.is_current()
    finally:
        await store.close()


async def test_replicas_migrating_at_once(empty_url: str) -> None:
    await asyncio.gather(*(migrate.upgrade(empty_url) for _ in range(3)))
    assert await migrate.is_current(empty_url)


async def test_in_memory_sqlite_store_migrates_itself() -> None:
    store = await SqlStore.open("sqlite+aiosqlite://")
    try:
        assert await store.is_current()
        assert await store.list_runs() == []
    finally:
        await store.close()
