"""Helpers of the replica tests: pipelines, an in-test Kubeline on the tests' database, waiting
for runs to end, and raw queries."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import time
from collections.abc import AsyncIterator
from typing import Any

from kubeline import bootstrap, settings
from kubeline.domain import runs, specs, states
from kubeline.storage.sql import engines


def pipeline(name: str, spec: dict[str, Any]) -> runs.Pipeline:
    return runs.Pipeline(name=name, spec=specs.PipelineSpec.model_validate(spec), source="api")


@contextlib.asynccontextmanager
async def app(env: dict[str, str], **extra: Any) -> AsyncIterator[bootstrap.Kubeline]:
    config = settings.Settings(home=pathlib.Path(env["KUBELINE_HOME"]), database_url=env["KUBELINE_DATABASE_URL"],
                               **extra)
    async with bootstrap.open_kubeline(config) as kl:
        yield kl


async def wait_until_final(kl: bootstrap.Kubeline, ids: list[str], *, within: float) -> list[runs.Run]:
    deadline = time.monotonic() + within
    while True:
        found = [await kl.store.get_run(i) for i in ids]
        if all(states.is_final(r.state) for r in found) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.3)


async def query(url: str, statement: Any) -> list[Any]:
    db = engines.open_database(url)
    try:
        return await db.run(lambda conn: list(conn.execute(statement)), write=False)
    finally:
        await db.dispose()


def lines_of(path: pathlib.Path) -> list[str]:
    """The non-empty lines of a file the stages append to (none yet: no file)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line]
