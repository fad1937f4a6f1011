"""The plan PostgreSQL picks for a batch's one write statement (``storage.sql.pgwrites``) probes
each table's key, whatever the table holds: a full scan of ``stage_runs`` per batch (what the
planner chose when it took every batch for 100 rows) costs more with every run ever stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from kubeline.domain import runs, specs
from kubeline.storage.sql import batches, pgwrites
from kubeline.storage.sql import store as sql_store
from kubeline.storage.sql import tables as T

pytestmark = pytest.mark.postgres
SPEC = specs.PipelineSpec.model_validate({"stages": [{"id": "only", "type": "shell", "command": "x"}]})
COPIES = 5000


def _copies(row: dict[str, Any], key: str, ids: list[str]) -> list[dict[str, Any]]:
    return [{**row, key: new} for new in ids]


def _scans(plan: Any) -> list[tuple[str, str]]:
    """(node type, relation) of every node of an EXPLAIN (FORMAT JSON) plan."""
    found = [(plan.get("Node Type", ""), plan.get("Relation Name", ""))]
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


async def test_a_batch_probes_the_keys_of_runs_stage_runs_and_attempts(postgres_url: str) -> None:
    store = await sql_store.SqlStore.open(postgres_url)
    try:
        first = runs.Run(id=runs.new_id(), pipeline="p", spec=SPEC)
        await store.create_run(first, [runs.StageRun(run_id=first.id, stage_id="only")])
        attempt_id = runs.new_id()

        def fill(conn: sa.Connection) -> None:
            run_row = dict(conn.execute(sa.select(T.runs)).mappings().one())
            stage_row = dict(conn.execute(sa.select(T.stage_runs)).mappings().one())
            ids = [runs.new_id() for _ in range(COPIES)]
            conn.execute(sa.insert(T.runs), _copies(run_row, "id", ids))
            conn.execute(sa.insert(T.stage_runs), _copies(stage_row, "run_id", ids))
            attempt = {c.name: None for c in T.attempts.c} | {
                "run_id": first.id, "stage_id": "only", "number": 1, "state": "running", "executor": "local",
                "handle": {}, "outputs": {}, "error": "", "created_at": run_row["created_at"]}
            conn.execute(sa.insert(T.attempts), [
                {**attempt, "id": new, "run_id": run_id} for new, run_id in [(attempt_id, first.id)] + [
                    (runs.new_id(), run_id) for run_id in ids]])
            conn.exec_driver_sql("ANALYZE")

        await store.database.run(fill, write=True)
        statement = pgwrites.statement(batches._RUN_COLUMNS, batches._STAGE_COLUMNS, batches._ATTEMPT_COLUMNS)

        def explain(conn: sa.Connection) -> Any:
            run_row = dict(conn.execute(sa.select(T.runs).where(T.runs.c.id == first.id)).mappings().one())
            stage_row = dict(conn.execute(sa.select(T.stage_runs).where(T.stage_runs.c.run_id == first.id))
                             .mappings().one())
            attempt_row = dict(conn.execute(sa.select(T.attempts).where(T.attempts.c.id == attempt_id))
                               .mappings().one())
            values = {
                "run_rows": pgwrites.as_json([{"id": first.id, **{c: run_row[c] for c in batches._RUN_COLUMNS}}]),
                "stage_rows": pgwrites.as_json([{"run_id": first.id, "stage_id": "only",
                                                 **{c: stage_row[c] for c in batches._STAGE_COLUMNS}}]),
                "new_attempts": "[]",
                "attempt_rows": pgwrites.as_json([{"id": attempt_id,
                                                   **{c: attempt_row[c] for c in batches._ATTEMPT_COLUMNS}}]),
            }
            # the plan a prepared statement settles on: generic (its parameters unknown)
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            text = str(statement.compile(dialect=conn.dialect))
            for number, name in enumerate(values, 1):
                text = text.replace(f"%({name})s", f"${number}")
            conn.exec_driver_sql(f"PREPARE batch_writes(text, text, text, text) AS {text}".replace("%", "%%"))
            literals = ", ".join("'" + v.replace("'", "''") + "'::text" for v in values.values())
            raw = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE batch_writes({literals})".replace("%", "%%"))
            plan = raw.scalar_one()
            conn.exec_driver_sql("DEALLOCATE batch_writes")
            return json.loads(plan) if isinstance(plan, str) else plan

        [plan] = await store.database.run(explain, write=True)
        scans = _scans(plan["Plan"])
        full = [(node, table) for node, table in scans if node == "Seq Scan"]
        assert full == [], scans
        probed = {table for node, table in scans if node.startswith("Index")}
        assert probed >= {"runs", "stage_runs", "attempts"}, scans
    finally:
        await store.close()
