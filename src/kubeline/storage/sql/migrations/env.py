"""Alembic environment for Kubeline's schema.

Normally run from code (``storage.sql.migrate``), which passes an open connection in
``config.attributes["connection"]``. Run by the ``alembic`` command (to write a new revision:
``alembic -c src/kubeline/storage/sql/migrations/alembic.ini revision --autogenerate -m ...``)
it connects to ``-x url=...`` or the ``sqlalchemy.url`` option, else to Kubeline's configured
database.
"""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context

from kubeline.storage.sql import engines, tables

config = context.config
target_metadata = tables.metadata


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run_on(connection: sa.Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        from kubeline import settings

        url = settings.Settings().database
    return url


async def _run_online() -> None:
    db = engines.open_database(_url())
    try:
        await db.run(_run_on, write=True)
    finally:
        await db.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (shared := config.attributes.get("connection")) is not None:
    _run_on(shared)
else:
    asyncio.run(_run_online())
