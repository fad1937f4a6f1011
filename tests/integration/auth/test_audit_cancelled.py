"""A ``POST /api/v1/runs`` whose request is cancelled while its run commits (the client went
away) keeps exactly the one audit row written with the run: the middleware adds no second
row (outcome 500) for it. In-process app, real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import pathlib
import re
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from kubeline import bootstrap, settings, testing
from kubeline.api import app as app_
from kubeline.domain import runs, specs
from kubeline.storage.sql import tables

HELLO = runs.Pipeline(name="hello", source="api", spec=specs.PipelineSpec.model_validate(
    {"stages": [{"id": "greet", "type": "shell", "command": "echo hello"}]}))
_RUN_INSERT = re.compile(r"\bINSERT INTO runs\b", re.IGNORECASE)  # alone, or in a CTE with its audit row


async def _rows(kl: Any, table: sa.Table) -> list[dict[str, Any]]:
    return await kl.store.database.run(lambda c: [dict(r._mapping) for r in c.execute(sa.select(table))],
                                       write=False)


async def test_a_request_cancelled_as_its_run_commits_has_one_audit_row(tmp_path: pathlib.Path,
                                                                        database_url: str) -> None:
    config = settings.Settings(home=tmp_path / "home", database_url=database_url)
    async with bootstrap.open_kubeline(config) as kl:
        await kl.store.upsert_pipeline(HELLO)
        transport = httpx.ASGITransport(app=app_.create_app(kl))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1",
                                     headers=await testing.admin_headers(kl)) as http:
            request = asyncio.ensure_future(http.post("/api/v1/runs", json={"pipeline": "hello"}))

            def cancel_once_the_run_is_written(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                if _RUN_INSERT.search(statement) and not request.done():
                    request.cancel()  # delivered at the request's next await: after the commit

            sa.event.listen(sa.engine.Engine, "after_cursor_execute", cancel_once_the_run_is_written)
            try:
                with pytest.raises(asyncio.CancelledError):
                    await request
            finally:
                sa.event.remove(sa.engine.Engine, "after_cursor_execute", cancel_once_the_run_is_written)
        made = await _rows(kl, tables.runs)
        audit = [r for r in await _rows(kl, tables.audit_log) if r["action"] == "create_run"]
        await kl.engine.shutdown()
    assert len(made) == 1  # the run was committed before the cancel reached the request
    assert [(r["outcome"], r["target"]) for r in audit] == [(201, "POST /api/v1/runs")]
