"""A worker pool's demand (attempts on it + work queued for it), the pods it needs, the delayed
scale-down, and the counts the database gives for it (GROUP BY on the SQL store)."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest

from kubeline import metrics
from kubeline.domain import pool_scaling, pools, runs, specs, states
from kubeline.engine import engine as engine_
from kubeline.logs import store as log_store
from kubeline.storage.sql import store as sql_store_
from kubeline.testing import executors as fake


def pool(**fields: Any) -> pools.PoolSpec:
    return pools.PoolSpec.model_validate({"name": "fast", **fields})


def spec(raw: dict[str, Any]) -> specs.PipelineSpec:
    return specs.PipelineSpec.model_validate(raw)


AUTO = pools.Autoscale.model_validate({"minReplicas": 1, "maxReplicas": 5})


def test_pods_are_the_demand_over_the_slots_within_the_bounds() -> None:
    assert [pool_scaling.desired(n, slots=4, autoscale=AUTO) for n in (0, 1, 4, 5, 9, 100)] == [1, 1, 1, 2, 3, 5]
    zero = pools.Autoscale.model_validate({"minReplicas": 0, "maxReplicas": 2})
    assert pool_scaling.desired(0, slots=4, autoscale=zero) == 0


def test_autoscale_bounds_are_checked_and_bound_the_first_replicas() -> None:
    with pytest.raises(ValueError, match=r"minReplicas \(3\) is above maxReplicas \(2\); lower minReplicas"):
        pool(tags=["t"], autoscale={"minReplicas": 3, "maxReplicas": 2})
    assert pool(tags=["t"], replicas=1, autoscale={"minReplicas": 2, "maxReplicas": 4}).initial_replicas == 2
    assert pool(tags=["t"], replicas=9, autoscale={"minReplicas": 0, "maxReplicas": 4}).initial_replicas == 4
    assert pool(tags=["t"], replicas=3).initial_replicas == 3


def test_an_invalid_workerpool_spec_is_said_in_one_line_with_its_fields() -> None:
    with pytest.raises(ValueError) as caught:
        pools.PoolSpec.model_validate({"name": "x", "slots": 0, "tags": ["t"]})
    assert pools.describe_invalid(caught.value) == "spec.slots: Input should be greater than or equal to 1"
    with pytest.raises(ValueError) as caught:
        pools.PoolSpec.model_validate({"name": "x"})
    assert pools.describe_invalid(caught.value).startswith("spec: pool 'x' names no pipelines and no tags")


def test_scale_up_is_at_once_and_scale_down_waits_for_the_whole_delay() -> None:
    stabilizer = pool_scaling.Stabilizer()
    assert stabilizer.decide(recommended=3, current=1, now=0.0, delay=10) == 3  # up at once
    assert stabilizer.decide(recommended=1, current=3, now=2.0, delay=10) == 3  # lower: not yet
    assert stabilizer.decide(recommended=2, current=3, now=9.0, delay=10) == 3
    assert stabilizer.decide(recommended=1, current=3, now=11.0, delay=10) == 2  # highest of the window
    assert stabilizer.decide(recommended=1, current=2, now=19.5, delay=10) == 1
    assert stabilizer.decide(recommended=4, current=1, now=20.0, delay=10) == 4


def test_a_new_leader_waits_a_whole_window_before_its_first_scale_down() -> None:
    stabilizer = pool_scaling.Stabilizer()
    assert stabilizer.decide(recommended=0, current=4, now=100.0, delay=30) == 4
    assert stabilizer.decide(recommended=0, current=4, now=129.0, delay=30) == 4
    assert stabilizer.decide(recommended=0, current=4, now=130.0, delay=30) == 0


def test_queued_runs_count_their_first_stages_on_the_pool_that_will_run_them() -> None:
    fast, slow = pool(name="fast", tags=["quick"]), pool(name="slow", pipelines=["etl"])
    fan = spec({"executor": "kubernetes-pool", "tags": ["quick"], "stages": [
        {"id": f"s{i}", "file": "main.py"} for i in range(6)] + [
        {"id": "join", "file": "main.py", "dependsOn": [f"s{i}" for i in range(6)]}]})
    mixed = spec({"stages": [  # the pipeline runs as Jobs; one stage names the pool slow
        {"id": "a", "file": "a.py"},
        {"id": "b", "file": "b.py", "executor": "kubernetes-pool", "kubernetes": {"pool": "slow"}},
        {"id": "c", "file": "c.py", "executor": "kubernetes-pool", "dependsOn": ["b"]}]})
    limited = spec({"executor": "kubernetes-pool", "tags": ["quick"], "parallelism": 2,
                    "stages": [{"id": f"s{i}", "file": "main.py"} for i in range(5)]})
    stranger = spec({"executor": "kubernetes-pool"})  # no pool serves it: it fails at its start
    found = pool_scaling.attribute(
        queued_runs={"fan": 3, "etl": 2, "limited": 1, "stranger": 7, "deleted": 4},
        held={"fast": 5, "gone": 2}, unsent={("fan", "join"): 1, ("etl", "c"): 2},
        pipelines={"fan": fan, "etl": mixed, "limited": limited, "stranger": stranger},
        pools_=[fast, slow], default_executor="kubernetes")
    assert found == {"fast": pool_scaling.Demand(active=5, queued=3 * 6 + 1 + 2),
                     "slow": pool_scaling.Demand(active=0, queued=2 * 1 + 2)}
    assert found["fast"].total == 26
    assert found["fast"].split(capacity=4) == (4, 1)


class PoolFake(fake.FakeExecutor):
    """Stands for kubernetes-pool in the engine: its handles name the pool, as the real one's do."""

    name = "kubernetes-pool"

    def __init__(self, specs_: list[pools.PoolSpec], outcomes: dict[str, Any]) -> None:
        super().__init__(outcomes)
        self.specs = specs_

    def pool_specs(self) -> list[pools.PoolSpec]:
        return self.specs

    async def start(self, spec: Any, sink: Any) -> dict[str, Any]:
        handle = await super().start(spec, sink)
        return {**handle, "pool": pools.choose(self.specs, pipeline=spec.pipeline, tags=spec.tags, asked=None).name}


class Secrets:
    async def resolve(self, names: list[str]) -> dict[str, str]:
        return {}

    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]:
        return dict(encrypted_env)


async def test_the_store_counts_queued_runs_and_live_attempts_per_pool_and_metrics_export_it(
        tmp_path: pathlib.Path, sql_store: sql_store_.SqlStore) -> None:
    fast = pool(name="fast", pipelines=["work"], slots=2)
    executor = PoolFake([fast], {"a": fake.Outcome(hang=True), "b": fake.Outcome(hang=True)})
    engine = engine_.Engine(store=sql_store, executors={"kubernetes-pool": executor},
                            logs=log_store.LogStore(tmp_path / "logs"), secrets=Secrets(),
                            default_executor="kubernetes-pool", poll_interval=0.05)
    work = runs.Pipeline(name="work", source="api", spec=spec({"stages": [
        {"id": "a", "file": "a.py"}, {"id": "b", "file": "b.py"}, {"id": "c", "file": "c.py", "dependsOn": ["a"]}]}))
    other = runs.Pipeline(name="other", source="api", spec=spec({"executor": "local"}))
    await sql_store.upsert_pipeline(work)
    await sql_store.upsert_pipeline(other)
    driven = await engine.submit(work)
    for _ in range(3):
        await engine.submit(work)
    await engine.submit(other)
    driving = asyncio.ensure_future(engine.execute(driven.id))
    try:
        for _ in range(200):
            if len(executor.running) == 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # the "running" transactions
        counts = await sql_store.executor_demand(executor="kubernetes-pool")
        assert counts.queued_runs == {"work": 3, "other": 1}
        assert counts.held == {"fast": 2}
        assert counts.unsent == {}
        assert set(counts.pipelines) == {"work", "other"}
        registry = metrics.Metrics()
        await registry.refresh(store=sql_store, engine=engine)
        assert 'kubeline_pool_demand{pool="fast"} 8.0' in registry.render().decode()  # 2 held + 3 runs x 2 roots
    finally:
        await engine.cancel(driven.id)
        await asyncio.wait_for(driving, 10)
    final = await sql_store.get_run(driven.id)
    assert final.state is states.RunState.CANCELLED
    assert (await sql_store.executor_demand(executor="kubernetes-pool")).held == {}


def test_a_status_condition_keeps_its_transition_time_while_its_status_stays() -> None:
    from kubeline.executors import kubernetes_pool_controller as controller

    def status(ready: str) -> pools.PoolStatus:
        return pools.PoolStatus(conditions=[pools.Condition(type="Ready", status=ready, reason="PodsReady"),
                                            pools.Condition(type="Invalid", status="False", reason="SpecValid")])

    before = {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                             {"type": "Invalid", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    body = controller._with_times(status("True"), generation=3, before=before)
    ready, invalid = body["conditions"]
    assert body["observedGeneration"] == 3
    assert ready["lastTransitionTime"] == "2026-01-01T00:00:00Z"  # unchanged: the same status is not rewritten
    assert invalid["lastTransitionTime"] != "2026-01-01T00:00:00Z"  # True -> False: now
    assert all(c["message"] for c in body["conditions"])  # never empty (an empty one reaches the API as null)
    assert "desiredReplicas" not in body


async def test_only_the_replica_holding_the_lease_acts(sql_store: sql_store_.SqlStore) -> None:
    """The second replica's round stops at the Lease: it reads nothing and scales nothing (its
    executor is never touched: None here would fail at the first use)."""
    from kubeline.executors import kubernetes_pool_controller as controller
    from kubeline.operator import leader
    from kubeline.testing import leases

    shared = leases.MemoryLeases()
    first = leader.LeaderElection(leases=shared, identity="replica-1")
    assert await first.try_acquire_or_renew()
    second = controller.PoolController(executor=None, store=sql_store, default_executor="kubernetes-pool",  # type: ignore[arg-type]
                                       election=leader.LeaderElection(leases=shared, identity="replica-2"))
    assert await second.tick() is False
    assert second.observed == {}
