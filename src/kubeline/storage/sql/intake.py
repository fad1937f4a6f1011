"""A run created through the API with its audit row: one statement on PostgreSQL.

``POST /api/v1/runs`` wrote a run in one transaction (``BEGIN``, the run, its stages, its
'queued' event, ``pg_notify``, ``COMMIT``: six round trips) and its audit row in another. Round
trips are most of a request's cost on PostgreSQL (psycopg, asyncio and the server's share of
each), so here all of it is one statement of data-modifying CTEs, run in autocommit: one
statement is atomic on its own (the run exists with its stages, event and audit row, or none of
them), and the wake-up is sent only if it commits. SQLite: the same rows in one transaction
(``transactions.create_run`` plus the audit row).

The statement is built once per number of stages (text with typed bound parameters, so SQLAlchemy
compiles it once and psycopg prepares it once per connection).
"""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from kubeline.domain import runs
from kubeline.storage import wakeups
from kubeline.storage.sql import rows
from kubeline.storage.sql import tables as T
from kubeline.storage.sql import transactions as tx

MAX_STAGES_IN_ONE = 64  # more stages: the plain transaction (a statement per count is kept in a cache)
_RUN_COLUMNS = [c.name for c in T.runs.columns]
_STAGE_COLUMNS = [c.name for c in T.stage_runs.columns]
_EVENT_COLUMNS = [c.name for c in T.events.columns if c.name != "id"]
_AUDIT_COLUMNS = [c.name for c in T.audit_log.columns if c.name != "id"]


_QUOTE = postgresql.dialect().identifier_preparer.quote  # type: ignore[no-untyped-call]


def _values(table: sa.Table, columns: list[str], prefix: str) -> tuple[str, list[sa.BindParameter[Any]]]:
    names = [f"{prefix}{c}" for c in columns]
    return (f"({', '.join(':' + n for n in names)})",
            [sa.bindparam(n, type_=table.c[c].type) for n, c in zip(names, columns, strict=True)])


def _insert(table: sa.Table, columns: list[str], prefixes: list[str]) -> tuple[str, list[sa.BindParameter[Any]]]:
    rows_, binds = zip(*(_values(table, columns, prefix) for prefix in prefixes), strict=True)
    sql = f"INSERT INTO {_QUOTE(table.name)} ({', '.join(_QUOTE(c) for c in columns)}) VALUES {', '.join(rows_)}"  # noqa: S608 - names from the schema, values bound
    return sql, [b for group in binds for b in group]


@functools.lru_cache(maxsize=MAX_STAGES_IN_ONE + 1)
def _statement(stages: int) -> sa.TextClause:
    """Text with typed bound parameters: SQLAlchemy re-compiled the same statement built from
    ``insert().cte()`` on every call (a third of a request's CPU); a text clause compiles once."""
    parts = [("new_run", _insert(T.runs, _RUN_COLUMNS, ["r_"]))]
    if stages:
        parts.append(("new_stages", _insert(T.stage_runs, _STAGE_COLUMNS, [f"s{i}_" for i in range(stages)])))
    parts.append(("new_event", _insert(T.events, _EVENT_COLUMNS, ["e_"])))
    parts.append(("new_audit", _insert(T.audit_log, _AUDIT_COLUMNS, ["a_"])))
    sql = "WITH " + ", ".join(f"{name} AS ({insert})" for name, (insert, _) in parts) + \
          " SELECT pg_notify(:channel, '')"
    binds = [b for _, (_, group) in parts for b in group]
    return sa.text(sql).bindparams(*binds, sa.bindparam("channel", type_=sa.Text))


def one_statement(stages: list[runs.StageRun]) -> bool:
    return len(stages) <= MAX_STAGES_IN_ONE


def create_run_pg(conn: sa.Connection, *, run: runs.Run, stages: list[runs.StageRun], audit: dict[str, Any]) -> None:
    """PostgreSQL, in autocommit: the run, its stages, its event, the audit row and the wake-up."""
    params: dict[str, Any] = {f"r_{k}": v for k, v in rows.run_to_row(run).items()}
    for i, stage in enumerate(stages):
        params.update({f"s{i}_{k}": v for k, v in rows.stage_to_row(stage, position=i).items()})
    event = tx.event_row(run_id=run.id, entity="run", entity_id=run.id, from_state=None, to_state=run.state,
                         reason="", at=run.created_at)
    params.update({f"e_{k}": event[k] for k in _EVENT_COLUMNS})
    params.update({f"a_{k}": audit[k] for k in _AUDIT_COLUMNS})
    params["channel"] = wakeups.Channel.DISPATCH.value
    conn.execute(_statement(len(stages)), params)


def create_run_tx(conn: sa.Connection, *, run: runs.Run, stages: list[runs.StageRun], audit: dict[str, Any]) -> None:
    """Any database, in a transaction: ``transactions.create_run`` (its wake-up too) and the audit row."""
    tx.create_run(conn, run=run, stages=stages)
    conn.execute(sa.insert(T.audit_log), [audit])
