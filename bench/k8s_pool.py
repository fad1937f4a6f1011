"""The worker-pool side of bench/k8s_chain.py: the same chain (and a fan-out + join) on a pool.

One Kubeline stays open for every round (a server is long-lived and a pool is warm: that is the
point of a pool; its first attempt creates the pool and waits for its pods, in the warm-up round).
It talks to the pool pods as a laptop does, through the API server's pod proxy (``--pool-connect
proxy``, default) or, as a server in the cluster does, straight to the pod IPs (``pod-ip``).
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import time
from typing import Any

from kubeline import bootstrap, settings
from kubeline.domain import states
from kubeline.pipelines import loader


def make_fanout(root: pathlib.Path, stages: int) -> pathlib.Path:
    """``stages`` independent trivial stages and a join that depends on all of them."""
    folder = root / "fanout"
    folder.mkdir()
    (folder / "main.py").write_text("pass\n")
    lines = ["executor: kubernetes-pool", "stages:"]
    lines += [f"  - {{id: f{i}, type: python, file: main.py}}" for i in range(stages)]
    deps = ", ".join(f"f{i}" for i in range(stages))
    lines.append(f"  - {{id: join, type: python, file: main.py, dependsOn: [{deps}]}}")
    (folder / "pipeline.yaml").write_text("\n".join(lines) + "\n")
    return folder


def pooled_copy(folder: pathlib.Path, root: pathlib.Path) -> pathlib.Path:
    """The chain's folder with ``executor: kubernetes-pool``."""
    target = root / "chain-pool"
    target.mkdir()
    (target / "main.py").write_text((folder / "main.py").read_text())
    (target / "pipeline.yaml").write_text("executor: kubernetes-pool\n" + (folder / "pipeline.yaml").read_text())
    return target


class PoolSide:
    """An open Kubeline with the kubernetes-pool executor, driven from its own event loop."""

    def __init__(self, *, home: pathlib.Path, namespace: str, kubeconfig: pathlib.Path, image: str,
                 connect: str, replicas: int, slots: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.stack = contextlib.AsyncExitStack()
        self.settings = settings.Settings(
            home=home, secret_key=None, executor="kubernetes-pool", executors=["kubernetes-pool"],
            kubernetes_namespace=namespace, kubernetes_kubeconfig=kubeconfig, kubernetes_image=image,
            kubernetes_pool_connect=connect, max_concurrent_attempts=replicas * slots,
            kubernetes_pools=[{"name": "bench", "pipelines": ["*"], "replicas": replicas, "slots": slots,
                               "drainSeconds": 5}])
        self.kl: bootstrap.Kubeline = self.loop.run_until_complete(
            self.stack.enter_async_context(bootstrap.open_kubeline(self.settings)))

    def run(self, folder: pathlib.Path) -> float:
        """Seconds from the run's start to its end (it must succeed)."""
        return self.loop.run_until_complete(self._run(folder))

    async def _run(self, folder: pathlib.Path) -> float:
        pipeline = loader.load_folder(folder)
        await self.kl.store.upsert_pipeline(pipeline)
        run = await self.kl.engine.submit(pipeline)
        start = time.perf_counter()
        final = await self.kl.engine.execute(run.id)
        elapsed = time.perf_counter() - start
        if final.state is not states.RunState.SUCCEEDED:
            errors = [a.error for a in await self.kl.store.list_attempts(run.id) if a.error][:3]
            raise SystemExit(f"pool run {run.id} ended {final.state}: {final.error} {errors}")
        return elapsed

    def wait_ready(self, replicas: int, timeout: float = 180.0) -> None:
        """Until the pool has ``replicas`` ready pods (the fan-out is measured on all of them)."""
        executor: Any = self.kl.executors["kubernetes-pool"]
        pool = executor.pools["bench"]
        deadline = time.monotonic() + timeout

        async def count() -> int:
            from kubeline.executors import kubernetes_pool_client

            return sum(kubernetes_pool_client.ready(p) for p in await executor._pods(pool, fresh=True))

        while self.loop.run_until_complete(count()) < replicas:
            if time.monotonic() > deadline:
                raise SystemExit(f"the bench pool has fewer than {replicas} ready pods after {timeout:.0f}s")
            time.sleep(0.5)

    def close(self) -> None:
        self.loop.run_until_complete(self.stack.aclose())
        self.loop.close()
