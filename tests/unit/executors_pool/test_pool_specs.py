"""Worker pool settings: what a pool serves, how an attempt's pool is chosen, and bad input."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from kubeline import bootstrap, settings
from kubeline.domain import errors, pools


def pool(**fields: object) -> pools.PoolSpec:
    return pools.PoolSpec.model_validate({"name": "fast", **fields})


def test_a_pool_naming_nothing_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"names no pipelines and no tags.*add pipelines"):
        pool()


def test_a_pool_serves_only_the_pipelines_and_tags_it_names() -> None:
    named = pool(pipelines=["etl"], tags=["quick"])
    assert named.serves(pipeline="etl", tags=())
    assert named.serves(pipeline="other", tags=("quick",))
    assert not named.serves(pipeline="other", tags=("slow",))
    assert pool(pipelines=["*"]).serves(pipeline="anything", tags=())


def test_choose_takes_the_asked_pool_only_when_it_serves_the_pipeline() -> None:
    a, b = pool(name="a", pipelines=["etl"]), pool(name="b", tags=["quick"])
    assert pools.choose([a, b], pipeline="x", tags=("quick",), asked=None) is b
    assert pools.choose([a, b], pipeline="etl", tags=(), asked="a") is a
    with pytest.raises(ValueError, match="pool 'b' does not serve pipeline 'etl'"):
        pools.choose([a, b], pipeline="etl", tags=(), asked="b")
    with pytest.raises(ValueError, match="'c' is not a configured pool"):
        pools.choose([a, b], pipeline="etl", tags=(), asked="c")
    with pytest.raises(ValueError, match=r"no worker pool serves pipeline .x.*executor: kubernetes"):
        pools.choose([a, b], pipeline="x", tags=(), asked=None)
    with pytest.raises(ValueError, match="no worker pools are configured"):
        pools.choose([], pipeline="x", tags=(), asked=None)


def test_pool_settings_errors_name_the_entry_and_field(tmp_path: object) -> None:
    bad = settings.Settings(home=tmp_path, executors=["kubernetes-pool"], executor="kubernetes-pool",
                            kubernetes_pools=[{"name": "ok", "pipelines": ["*"]}, {"name": "ok", "pipelines": ["*"]},
                                              {"name": "x", "pipelines": ["*"], "slots": 0}])
    with pytest.raises(errors.SpecError) as caught:
        bootstrap.worker_pools(bad)
    text = str(caught.value)
    assert "KUBELINE_KUBERNETES_POOLS[2]" in text and "slots" in text
    assert "'ok' is used twice" in text
    empty = settings.Settings(home=tmp_path, executors=["kubernetes-pool"], executor="kubernetes-pool")
    assert bootstrap.worker_pools(empty) == []  # pools may be WorkerPool resources


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""


def _pipeline(executor: str) -> Any:
    from kubeline.domain import runs, specs

    spec = specs.PipelineSpec.model_validate({"executor": executor, "stages": [{"id": "main", "file": "main.py"}]})
    return runs.Pipeline(name="p", spec=spec, path=None)


async def test_the_pool_executor_runs_only_where_it_is_registered(tmp_path: pathlib.Path) -> None:
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    pooled = settings.Settings(home=tmp_path / "a", executor="kubernetes-pool", executors=["kubernetes-pool"],
                               kubernetes_kubeconfig=tmp_path / "kubeconfig",
                               kubernetes_pools=[{"name": "fast", "pipelines": ["*"]}])
    async with bootstrap.open_kubeline(pooled) as kl:
        assert set(kl.executors) == {"kubernetes-pool"}
        with pytest.raises(errors.SpecError) as refused:
            await kl.engine.submit(_pipeline("local"))
        (problem,) = refused.value.problems
        assert problem.message == ("stage 'main' asks for executor 'local', which this server does not run "
                                   "(it runs: kubernetes-pool)")
    local = settings.Settings(home=tmp_path / "b")
    async with bootstrap.open_kubeline(local) as kl:
        with pytest.raises(errors.SpecError) as refused:
            await kl.engine.submit(_pipeline("kubernetes-pool"))
        (problem,) = refused.value.problems
        assert "asks for executor 'kubernetes-pool', which this server does not run" in problem.message
        assert "KUBELINE_EXECUTORS" in problem.hint
