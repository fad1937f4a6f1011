"""The ticker on the SQL store (temporary SQLite files) with a fake clock: fires, replicas, enable/disable, catch-up."""

from __future__ import annotations

import datetime as dt
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kubeline.domain import runs, specs
from kubeline.engine import engine as engine_
from kubeline.logs import store as log_store
from kubeline.scheduler import ticker as ticker_
from kubeline.storage.sql import store as sql_store_
from kubeline.testing import executors as fake
from kubeline.testing import stores

T0 = dt.datetime(2024, 1, 1, 10, 0, 30, tzinfo=dt.UTC)


class Secrets:
    async def resolve(self, names: list[str]) -> dict[str, str]:
        return {}

    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]:
        return {}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def pipeline(schedule: dict[str, Any], *, name: str = "p", enabled: bool = True) -> runs.Pipeline:
    spec = specs.PipelineSpec.model_validate({
        "enabled": enabled, "inputs": {"day": {"type": "string", "default": "today"}},
        "schedules": [{"id": "s", **schedule}], "stages": [{"id": "a", "type": "shell", "command": "x"}]})
    return runs.Pipeline(name=name, spec=spec, source="api")


@pytest.fixture
async def setup(tmp_path: pathlib.Path) -> AsyncIterator[Any]:
    opened: list[sql_store_.SqlStore] = []

    async def _setup(p: runs.Pipeline, replicas: int = 1) -> tuple[sql_store_.SqlStore, Clock, list[ticker_.Ticker]]:
        store = await stores.open_sqlite(tmp_path / f"kubeline-{len(opened)}.db")
        opened.append(store)
        await store.upsert_pipeline(p)
        clock = Clock()
        lags: list[float] = []
        tickers = []
        for _ in range(replicas):
            engine = engine_.Engine(store=store, executors={"local": fake.FakeExecutor()},
                                    logs=log_store.LogStore(tmp_path / "logs"), secrets=Secrets())
            tickers.append(ticker_.Ticker(store=store, engine=engine, clock=clock, refresh=0, on_lag=lags.append))
        return store, clock, tickers

    yield _setup
    for store in opened:
        await store.close()


async def test_a_cron_fire_makes_one_run_with_the_schedule_inputs(setup: Any) -> None:
    store, clock, [ticker] = await setup(pipeline({"cron": "* * * * *", "inputs": {"day": "yesterday"}}))
    assert await ticker.tick() == []  # first sight: nothing from the past
    clock.advance(seconds=31)  # 10:01:01
    [run] = await ticker.tick()
    assert run.triggered_by.kind is runs.TriggerKind.SCHEDULE
    assert run.triggered_by.detail == "s@2024-01-01T10:01:00Z"
    assert run.schedule_id == "s" and run.inputs == {"day": "yesterday"}
    assert await ticker.tick() == []  # same fire, not again
    [fire] = await store.list_fires("p/s")
    assert fire.run_id == run.id and fire.fire_time == T0.replace(minute=1, second=0)


async def test_replicas_fire_each_time_once(setup: Any) -> None:
    store, clock, tickers = await setup(pipeline({"cron": "* * * * *"}), replicas=3)
    for t in tickers:
        await t.tick()
    for _ in range(5):
        clock.advance(minutes=1)
        for t in tickers:
            await t.tick()
    made = await store.list_runs()
    assert len(made) == 5
    assert sorted(r.triggered_by.detail for r in made) == [
        f"s@2024-01-01T10:0{m}:00Z" for m in range(1, 6)]


async def test_disable_and_enable_through_the_store(setup: Any) -> None:
    store, clock, [ticker] = await setup(pipeline({"interval": 60}))
    await ticker.tick()
    await store.set_schedule_enabled("p/s", False)
    clock.advance(minutes=1)
    assert await ticker.tick() == []
    await store.set_schedule_enabled("p/s", None)  # back to the spec
    clock.advance(seconds=1)
    assert len(await ticker.tick()) == 1  # 10:01:00 is still within the grace period


async def test_disabled_pipelines_and_schedules_never_fire(setup: Any) -> None:
    for p in (pipeline({"interval": 60}, enabled=False), pipeline({"interval": 60, "enabled": False})):
        store, clock, [ticker] = await setup(p)
        await ticker.tick()
        clock.advance(minutes=3)
        assert await ticker.tick() == []
        assert await store.list_runs() == []


@pytest.mark.parametrize(("policy", "count"), [("none", 0), ("latest", 1), ("all", 3)])
async def test_catch_up_after_downtime(setup: Any, policy: str, count: int) -> None:
    _store, clock, [ticker] = await setup(pipeline({"cron": "0 * * * *", "catchup": policy, "catchup_limit": 3}))
    await ticker.tick()
    clock.advance(hours=5, minutes=10)  # the scheduler was down: fires 11:00 .. 15:00 missed
    made = await ticker.tick()
    assert [r.triggered_by.detail[-9:-4] for r in made] == ["13:00", "14:00", "15:00"][3 - count:]


async def test_a_fire_whose_run_cannot_be_made_is_recorded_not_retried(setup: Any) -> None:
    store, clock, [ticker] = await setup(pipeline({"interval": 60, "inputs": {"nope": 1}}))
    await ticker.tick()
    clock.advance(minutes=1)
    assert await ticker.tick() == []
    [fire] = await store.list_fires("p/s")
    assert fire.run_id == ticker_.NO_RUN
    assert await ticker.tick() == []


async def test_entries_show_the_effective_state(setup: Any) -> None:
    store, _clock, _ = await setup(pipeline({"interval": 60}))
    [entry] = await ticker_.entries(store)
    assert entry.enabled and entry.key == "p/s"
    await store.set_schedule_enabled("p/s", False)
    [entry] = await ticker_.entries(store, pipeline="p")
    assert not entry.enabled
