"""The SQL adapter of the Store port: SQLite (default, in the data dir) and PostgreSQL.

``SqlStore.open(url)`` connects and migrates; ``upgrade``/``current_revision``/``is_current``
drive the Alembic migrations from code (``kubeline db upgrade``, ``/readyz``).
"""

from __future__ import annotations

from kubeline.storage.sql.migrate import (
    current_revision,
    downgrade,
    head_revision,
    is_current,
    upgrade,
)
from kubeline.storage.sql.store import SqlStore

__all__ = ["SqlStore", "current_revision", "downgrade", "head_revision", "is_current", "upgrade"]
