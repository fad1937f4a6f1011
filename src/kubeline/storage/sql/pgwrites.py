"""A batch's writes on PostgreSQL in one statement (``batches``: step 3).

A batch writes the rows its groups changed: the runs, stages and attempts moved, the attempts
created, then (the transaction's tail) the events and wake-ups. As an ``executemany`` per table,
psycopg binds every row's parameters one by one in Python, and each table is a round trip of its
own. Here each table's rows go as one JSON text (one ``json.dumps``, in C) that the statement
unpacks with ``json_to_recordset``, and the writes of every table are data-modifying CTEs of one
statement whose text never changes (prepared once per connection): one round trip for the
batch's writes, whatever its size. The CTEs touch different rows (an attempt is inserted or
updated, never both), so sharing one snapshot changes nothing.

The column types of the record definitions come from ``tables``, so they follow the schema.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from kubeline.storage.sql import tables as T

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]
_QUOTE = _DIALECT.identifier_preparer.quote
_WRITES = ("run_rows", "stage_rows", "new_attempts", "attempt_rows")  # the CTEs, and their parameters


def _record(table: sa.Table, columns: Sequence[str]) -> str:
    """The ``AS v(col type, ...)`` definition list of ``columns`` of ``table``."""
    return ", ".join(f"{_QUOTE(name)} {table.c[name].type.compile(dialect=_DIALECT)}" for name in columns)


def _rows(name: str, table: sa.Table, columns: Sequence[str]) -> str:
    """The rows of parameter ``name`` as a subquery ``v``. ``json_to_recordset`` alone is estimated
    at 100 rows whatever it holds, and against that the planner joined ``stage_runs`` (a two-column
    key) by hashing the whole table: a full scan per batch. The no-op ``LIMIT json_array_length``
    gives it the true count where the parameter is known (a custom plan) and a tenth of 100
    otherwise (a generic plan, the LIMIT not being a constant): index probes either way."""
    return (f"(SELECT * FROM json_to_recordset(CAST(:{name} AS json)) AS r({_record(table, columns)})"  # noqa: S608 - names from the schema, values bound
            f" LIMIT json_array_length(CAST(:{name} AS json))) AS v")


def _update(name: str, table: sa.Table, keys: Sequence[str], columns: Sequence[str]) -> str:
    sets = ", ".join(f"{_QUOTE(c)} = v.{_QUOTE(c)}" for c in columns)
    match = " AND ".join(f"{_QUOTE(table.name)}.{_QUOTE(k)} = v.{_QUOTE(k)}" for k in keys)
    return (f"{name} AS (UPDATE {_QUOTE(table.name)} SET {sets} FROM {_rows(name, table, [*keys, *columns])}"  # noqa: S608 - names from the schema, values bound
            f" WHERE {match} RETURNING 1)")


def _insert(name: str, table: sa.Table) -> str:
    columns = [c.name for c in table.c]
    listed = ", ".join(_QUOTE(c) for c in columns)
    return (f"{name} AS (INSERT INTO {_QUOTE(table.name)} ({listed}) SELECT {listed}"  # noqa: S608 - names from the schema, values bound
            f" FROM {_rows(name, table, columns)} RETURNING 1)")


@functools.cache
def statement(run_columns: tuple[str, ...], stage_columns: tuple[str, ...],
              attempt_columns: tuple[str, ...]) -> sa.TextClause:
    """The one statement of a batch's writes (the column lists are the batch's, fixed per process):
    parameters ``run_rows``, ``stage_rows``, ``new_attempts``, ``attempt_rows`` (``as_json``)."""
    parts = [
        _update("run_rows", T.runs, ["id"], run_columns),
        _update("stage_rows", T.stage_runs, ["run_id", "stage_id"], stage_columns),
        _insert("new_attempts", T.attempts),
        _update("attempt_rows", T.attempts, ["id"], attempt_columns),
    ]
    counts = ", ".join(f"(SELECT count(*) FROM {name})" for name in _WRITES)  # noqa: S608 - our CTE names
    return sa.text(f"WITH {', '.join(parts)} SELECT {counts}")


def as_json(rows: Iterable[dict[str, Any]]) -> str:
    return json.dumps(list(rows), separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return (value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value).isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value")
