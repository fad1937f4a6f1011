"""Alembic, driven from code: ``upgrade`` for ``SqlStore.open`` and ``kubeline db upgrade``,
``current_revision``/``is_current`` for ``/readyz``.

The migration scripts live in ``migrations/`` next to this module and run on a connection we
hand them (Alembic's connection-sharing recipe), so the async engine, the SQLite pragmas and the
in-memory database are the same ones the store uses. On PostgreSQL an advisory lock makes
replicas that start together migrate one after the other; on SQLite ``BEGIN IMMEDIATE`` does.
"""

from __future__ import annotations

import functools
import pathlib

import sqlalchemy as sa
from alembic import command, config, migration, script

from kubeline.storage.sql import engines

MIGRATIONS_DIR = pathlib.Path(__file__).parent / "migrations"
_LOCK_KEY = 0x6B75_6265_6C69_6E65 >> 1  # "kubeline", kept inside a signed bigint


def alembic_config() -> config.Config:
    cfg = config.Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """The single head of the migration scripts (a test keeps there from being more than one)."""
    head = script.ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migration scripts found"
    return head


async def upgrade(url: str | sa.URL, *, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (creating tables on a new database)."""
    db = engines.open_database(url)
    try:
        await upgrade_database(db, revision=revision)
    finally:
        await db.dispose()


async def downgrade(url: str | sa.URL, *, revision: str) -> None:
    """Migrate down to ``revision`` (``"base"`` drops every Kubeline table)."""
    db = engines.open_database(url)
    try:
        await db.run(functools.partial(_migrate, action="downgrade", revision=revision), write=True)
    finally:
        await db.dispose()


async def upgrade_database(db: engines.Database, *, revision: str = "head") -> None:
    await db.run(functools.partial(_migrate, action="upgrade", revision=revision), write=True)


async def current_revision(url: str | sa.URL) -> str | None:
    """The revision the database is at; ``None`` for a database never migrated."""
    db = engines.open_database(url)
    try:
        return await database_revision(db)
    finally:
        await db.dispose()


async def database_revision(db: engines.Database) -> str | None:
    return await db.run(
        lambda conn: migration.MigrationContext.configure(conn).get_current_revision(),
        write=False,
    )


async def is_current(url: str | sa.URL) -> bool:
    """True when the database is at the head revision (else: ``kubeline db upgrade``)."""
    return await current_revision(url) == head_revision()


def _migrate(conn: sa.Connection, *, action: str, revision: str) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    if action == "upgrade":
        command.upgrade(cfg, revision)
    else:
        command.downgrade(cfg, revision)
