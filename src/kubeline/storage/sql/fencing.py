"""Fencing: writes made on behalf of a leased run carry the lease generation they were given.

Every claim and adoption bumps ``runs.lease_generation``. A driver's write runs, inside its own
transaction and before anything else, one conditional UPDATE of the run's row (``WHERE id = :run
AND lease_generation = :gen``). When it matches no row the generation moved on (another replica
adopted the run) and the transaction raises ``errors.LeaseLostError`` before it changes anything.

Why an UPDATE and not a read: on PostgreSQL it takes the run's row lock until the commit, so an
adoption (``FOR UPDATE SKIP LOCKED``) either commits first (then this UPDATE, re-evaluated on the
new row version, matches nothing) or skips the run until this write committed; a plain SELECT
would let the two interleave. SQLite has one writer at a time (``BEGIN IMMEDIATE``), so the same
statement is just a check there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from kubeline.domain import errors
from kubeline.storage import base, changes
from kubeline.storage.sql import tables as T

_T = TypeVar("_T")

_GUARD = (
    sa.update(T.runs)
    .where(T.runs.c.id == sa.bindparam("fence_run"), T.runs.c.lease_generation == sa.bindparam("fence_gen"))
    .values(lease_generation=T.runs.c.lease_generation)
)
_HOLDER = sa.select(T.runs.c.owner, T.runs.c.lease_generation).where(T.runs.c.id == sa.bindparam("fence_run"))


def check(conn: sa.Connection, fence: base.Fence) -> None:
    """Raise ``LeaseLostError`` (or not-found) unless the run is still at ``fence.generation``;
    holds the run's row lock for the rest of the transaction."""
    matched = conn.execute(_GUARD, {"fence_run": fence.run_id, "fence_gen": fence.generation}).rowcount
    if matched == 1:
        return
    holder = conn.execute(_HOLDER, {"fence_run": fence.run_id}).first()
    if holder is None:
        raise changes.run_not_found(fence.run_id)
    raise errors.LeaseLostError(run_id=fence.run_id, generation=fence.generation,
                                current=int(holder.lease_generation), owner=holder.owner)


def guarded(fn: Callable[[sa.Connection], _T], fence: base.Fence | None) -> Callable[[sa.Connection], _T]:
    """``fn`` preceded, in its transaction, by the fence's check (``fn`` itself when no fence)."""
    if fence is None:
        return fn

    def run(conn: sa.Connection) -> _T:
        check(conn, fence)
        return fn(conn)

    return run
