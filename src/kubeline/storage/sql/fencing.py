"""Fencing: writes made on behalf of a leased run carry the lease generation they were given.

Every claim and adoption bumps ``runs.lease_generation``. A driver's writes are state moves, and
every state move goes through ``batches``: a batch first locks the run rows of its groups
(``SELECT ... FOR UPDATE``, sorted by id) and ``check`` compares each group's fence with the
locked row. When the generation moved on (another replica adopted the run), that group raises
``errors.LeaseLostError`` and writes nothing; the other groups of the batch go on.

Why a locking read: on PostgreSQL it holds the run's row lock until the commit, so an adoption
(``FOR UPDATE SKIP LOCKED``) either committed first (then the read, which waits for it, sees the
new generation) or skips the run until this write committed; a plain read would let the two
interleave. SQLite has one writer at a time (``BEGIN IMMEDIATE``), so the read is just a check.
"""

from __future__ import annotations

from typing import Any

from kubeline.domain import errors
from kubeline.storage import base, changes


def check(fence: base.Fence, row: dict[str, Any] | None) -> None:
    """Raise ``LeaseLostError`` (or not-found) unless ``row`` (the run's, locked) is still at the
    fence's generation."""
    if row is None:
        raise changes.run_not_found(fence.run_id)
    if row["lease_generation"] != fence.generation:
        raise errors.LeaseLostError(run_id=fence.run_id, generation=fence.generation,
                                    current=int(row["lease_generation"]), owner=row["owner"])
