"""The kubernetes-pool executor on the real cluster: warm worker pods, attempts forked in them.

The test process is "a laptop with a kubeconfig": it reaches the pool pods only through the API
server's pod proxy (the default), as the Job path needs nothing but the kubeconfig either.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import textwrap
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes import client

from kubeline import bootstrap, settings
from kubeline.domain import states
from kubeline.pipelines import loader

from .support import Cluster, wait_until

pytestmark = pytest.mark.slow


def pipeline(root: pathlib.Path, name: str, files: dict[str, str]) -> pathlib.Path:
    folder = root / name
    folder.mkdir(parents=True)
    for rel, text in files.items():
        (folder / rel).write_text(textwrap.dedent(text))
    return folder


@contextlib.asynccontextmanager
async def kubeline(cluster: Cluster, namespace: str, home: pathlib.Path, image: str, *,
                   pools: list[dict[str, Any]], **overrides: Any) -> AsyncIterator[bootstrap.Kubeline]:
    assert cluster.kubeconfig is not None
    values: dict[str, Any] = {
        "home": home, "executor": "kubernetes-pool", "executors": ["kubernetes-pool"],
        "kubernetes_namespace": namespace, "kubernetes_kubeconfig": cluster.kubeconfig,
        "kubernetes_image": image, "kubernetes_pools": pools, "secret_key": None, **overrides}
    async with bootstrap.open_kubeline(settings.Settings(**values)) as kl:
        yield kl


async def run_folder(kl: bootstrap.Kubeline, folder: pathlib.Path) -> Any:
    found = loader.load_folder(folder)
    await kl.store.upsert_pipeline(found)
    run = await kl.engine.submit(found)
    return await kl.engine.execute(run.id)


def texts(kl: bootstrap.Kubeline, run_id: str, *, streams: tuple[str, ...] = ("stdout", "stderr")) -> list[str]:
    return [line.text for line in kl.logs.read(run_id) if line.stream in streams]


CHAIN = {
    "main.py": """
        import os
        from kubeline import task
        stage = task.stage()
        before = task.inputs().get("n", 0)
        print("stage", stage, "got", before, "uid", os.getuid())
        task.set_output("n", before + 1)
    """,
}


def chain_yaml(stages: int, *, extra: str = "") -> str:
    lines = [extra, "executor: kubernetes-pool", "stages:"]
    for i in range(stages):
        dep = f", dependsOn: [s{i - 1}], inputs: {{n: '${{stages.s{i - 1}.outputs.n}}'}}" if i else ""
        lines.append(f"  - {{id: s{i}, type: python, file: main.py{dep}}}")
    return "\n".join(lines) + "\n"


async def test_a_chain_of_ten_runs_on_a_hardened_pool(cluster: Cluster, namespace: str, worker_image: str,
                                                      api_client: Any, tmp_path: pathlib.Path) -> None:
    folder = pipeline(tmp_path, "chain", {**CHAIN, "pipeline.yaml": chain_yaml(10)})
    async with kubeline(cluster, namespace, tmp_path / "home", worker_image,
                        pools=[{"name": "chain", "pipelines": ["chain"]}]) as kl:
        first = await run_folder(kl, folder)
        assert first.state is states.RunState.SUCCEEDED, [a.error for a in await kl.store.list_attempts(first.id)]
        started = time.perf_counter()
        run = await run_folder(kl, folder)
        warm = time.perf_counter() - started
        assert run.state is states.RunState.SUCCEEDED
        attempts = await kl.store.list_attempts(run.id)
        assert len(attempts) == 10
        assert {a.stage_id: a.outputs for a in attempts}["s9"] == {"n": 10}
        logged = texts(kl, run.id, streams=("stdout",))
        assert [t.split(" uid ")[0] for t in logged] == [f"stage s{i} got {i}" for i in range(10)]
        assert all(t.endswith("uid 1000") for t in logged)
        print(f"10 chained stages on a warm pool: {warm:.3f}s")
    apps = client.AppsV1Api(api_client)
    deployment = apps.read_namespaced_deployment("kl-pool-chain", namespace)
    container = deployment.spec.template.spec.containers[0]
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.run_as_non_root is True
    assert container.security_context.capabilities.drop == ["ALL"]
    assert deployment.spec.template.spec.automount_service_account_token is False


async def test_an_attempt_cannot_read_the_pool_token(cluster: Cluster, namespace: str, worker_image: str,
                                                    tmp_path: pathlib.Path) -> None:
    """The worker (PID 1) has the token in its environment: it is not dumpable, so an attempt
    (same uid) cannot read /proc/1/environ; the fork server and the attempts never had it."""
    folder = pipeline(tmp_path, "snoop", {
        "main.py": """
            import os
            from kubeline import task
            found = []
            for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
                try:
                    with open(f"/proc/{pid}/environ", "rb") as file:
                        if b"KUBELINE_POOL_TOKEN" in file.read():
                            found.append(pid)
                except OSError:
                    pass
            task.set_output("leaked", found)
            task.set_output("env", sorted(k for k in os.environ if "TOKEN" in k))
        """,
        "pipeline.yaml": "executor: kubernetes-pool\n"})
    async with kubeline(cluster, namespace, tmp_path / "home", worker_image,
                        pools=[{"name": "snoop", "pipelines": ["snoop"]}]) as kl:
        run = await run_folder(kl, folder)
        (attempt,) = await kl.store.list_attempts(run.id)
    assert run.state is states.RunState.SUCCEEDED, attempt.error
    assert attempt.outputs == {"leaked": [], "env": []}


async def test_a_server_in_the_cluster_talks_to_the_pod_ips(local_cluster: Cluster, namespace: str,
                                                            worker_image: str, tmp_path: pathlib.Path) -> None:
    """KUBELINE_KUBERNETES_POOL_CONNECT=pod-ip (this machine is the local cluster's node, so it
    reaches pod IPs as a server pod would)."""
    folder = pipeline(tmp_path, "direct", {**CHAIN, "pipeline.yaml": chain_yaml(3)})
    async with kubeline(local_cluster, namespace, tmp_path / "home", worker_image,
                        pools=[{"name": "direct", "pipelines": ["direct"]}], kubernetes_pool_connect="pod-ip") as kl:
        run = await run_folder(kl, folder)
        attempts = await kl.store.list_attempts(run.id)
    assert run.state is states.RunState.SUCCEEDED, [a.error for a in attempts]
    assert {a.stage_id: a.outputs for a in attempts}["s2"] == {"n": 3}


async def test_a_pool_serves_only_the_pipelines_it_names(cluster: Cluster, namespace: str, worker_image: str,
                                                         tmp_path: pathlib.Path) -> None:
    folder = pipeline(tmp_path, "stranger", {**CHAIN, "pipeline.yaml": chain_yaml(1)})
    async with kubeline(cluster, namespace, tmp_path / "home", worker_image,
                        pools=[{"name": "chain", "pipelines": ["chain"]}]) as kl:
        run = await run_folder(kl, folder)
        assert run.state is states.RunState.FAILED
        (attempt,) = await kl.store.list_attempts(run.id)
        assert "no worker pool serves pipeline 'stranger'" in attempt.error


async def test_a_stage_asking_for_another_python_is_refused_by_the_pool(
        cluster: Cluster, namespace: str, worker_image: str, tmp_path: pathlib.Path) -> None:
    folder = pipeline(tmp_path, "newer", {**CHAIN, "pipeline.yaml": chain_yaml(1, extra='python_version: "3.9"')})
    async with kubeline(cluster, namespace, tmp_path / "home", worker_image,
                        pools=[{"name": "chain", "pipelines": ["chain", "newer"]}]) as kl:
        run = await run_folder(kl, folder)
        (attempt,) = await kl.store.list_attempts(run.id)
    assert run.state is states.RunState.FAILED
    assert attempt.failure is states.FailureKind.START_FAILED
    assert "the stage asks for Python 3.9 and this pool's pods run 3." in attempt.error


async def test_an_unschedulable_pool_says_why_and_fails_at_the_pending_timeout(
        cluster: Cluster, namespace: str, worker_image: str, tmp_path: pathlib.Path) -> None:
    folder = pipeline(tmp_path, "nowhere", {**CHAIN, "pipeline.yaml": chain_yaml(1)})
    pools = [{"name": "nowhere", "pipelines": ["nowhere"], "nodeSelector": {"kubeline.dev/no-such-node": "x"}}]
    async with kubeline(cluster, namespace, tmp_path / "home", worker_image, pools=pools,
                        kubernetes_pending_timeout=6) as kl:
        import asyncio

        from kubeline import metrics

        started = time.monotonic()
        running = asyncio.ensure_future(run_folder(kl, folder))
        registry = metrics.Metrics()
        for _ in range(100):  # what an HPA scales the pool on: the waiting attempt
            await registry.refresh(store=kl.store, engine=kl.engine)
            if 'kubeline_pool_attempts{pool="nowhere",state="waiting"} 1.0' in registry.render().decode():
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"no waiting attempt in /metrics: {registry.render().decode()}")
        run = await running
        assert run.state is states.RunState.FAILED
        assert time.monotonic() - started >= 6
        (attempt,) = await kl.store.list_attempts(run.id)
        assert attempt.failure is states.FailureKind.START_FAILED
        assert "no pod of worker pool 'nowhere' took it within 6s" in attempt.error
        assert "Unschedulable" in attempt.error and "node(s) didn't match" in attempt.error
        assert any("Unschedulable" in t for t in texts(kl, run.id, streams=("system",)))


async def test_a_pool_pod_killed_mid_attempt_is_lost_and_retried(
        cluster: Cluster, namespace: str, worker_image: str, api_client: Any, tmp_path: pathlib.Path) -> None:
    folder = pipeline(tmp_path, "victim", {
        "main.py": """
            import os, time
            from kubeline import task
            print("attempt", task.attempt(), flush=True)
            if task.attempt() == 1:
                time.sleep(120)
            task.set_output("done", task.attempt())
        """,
        "pipeline.yaml": "executor: kubernetes-pool\nretries: {attempts: 2, delay: 0}\n"})
    core = client.CoreV1Api(api_client)
    async with kubeline(cluster, namespace, tmp_path / "home", worker_image,
                        pools=[{"name": "victim", "pipelines": ["victim"], "drainSeconds": 1}]) as kl:
        found = loader.load_folder(folder)
        await kl.store.upsert_pipeline(found)
        run = await kl.engine.submit(found)
        import asyncio

        execution = asyncio.ensure_future(kl.engine.execute(run.id))

        def running_pod() -> str | None:
            for line in kl.logs.read(run.id):
                if line.text.startswith("running on pod "):
                    return line.text.split()[3]
            return None

        await asyncio.to_thread(wait_until, lambda: running_pod() is not None and any(
            t == "attempt 1" for t in texts(kl, run.id)), timeout=120, what="the first attempt running")
        pod = running_pod()
        assert pod is not None
        core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
        run = await asyncio.wait_for(execution, 180)
        attempts = await kl.store.list_attempts(run.id)
        assert run.state is states.RunState.SUCCEEDED, [a.error for a in attempts]
        assert [a.number for a in attempts] == [1, 2]
        assert attempts[0].failure is states.FailureKind.LOST
        assert attempts[0].error.startswith(f"worker pod lost: pod {pod} of pool 'victim'")
        assert attempts[1].outputs == {"done": 2}


async def test_a_workerpool_resource_declares_a_pool(cluster: Cluster, namespace: str, worker_image: str,
                                                     api_client: Any, kubectl: Any, tmp_path: pathlib.Path) -> None:
    from kubeline.operator import crds

    crd = crds.render()["workerpools.yaml"]
    kubectl("apply", "-f", "-", input=crd)  # additive and idempotent on the shared cluster
    kubectl("wait", "--for=condition=Established", "crd/workerpools.kubeline.dev", "--timeout=60s")
    resource = textwrap.dedent(f"""
        apiVersion: kubeline.dev/v1
        kind: WorkerPool
        metadata: {{name: tagged, namespace: {namespace}}}
        spec: {{replicas: 1, slots: 2, tags: [quick]}}
    """)
    kubectl("apply", "-f", "-", input=resource)
    folder = pipeline(tmp_path, "tagged-one", {**CHAIN, "pipeline.yaml": chain_yaml(2, extra="tags: [quick]")})
    async with kubeline(cluster, namespace, tmp_path / "home", worker_image, pools=[]) as kl:
        run = await run_folder(kl, folder)
        attempts = await kl.store.list_attempts(run.id)
        assert run.state is states.RunState.SUCCEEDED, [a.error for a in attempts]
        assert any("of worker pool tagged" in t for t in texts(kl, run.id, streams=("system",)))
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment("kl-pool-tagged", namespace)
    assert deployment.spec.template.spec.containers[0].name == "worker"


TICKS = {
    "main.py": """
        import time
        from kubeline import task
        for i in range(12):
            print("tick", i, flush=True)
            time.sleep(0.5)
        task.set_output("ticks", 12)
    """,
    "pipeline.yaml": "executor: kubernetes-pool\n",
}


async def _until_logged(kl: bootstrap.Kubeline, run_id: str, text: str, *, within: float = 120) -> None:
    import asyncio

    deadline = time.monotonic() + within
    while text not in texts(kl, run_id):
        assert time.monotonic() < deadline, f"{text!r} not logged within {within:.0f}s"
        await asyncio.sleep(0.1)


async def test_a_restarted_server_adopts_the_running_attempt_with_its_whole_log(
        cluster: Cluster, namespace: str, worker_image: str, tmp_path: pathlib.Path) -> None:
    import asyncio

    folder = pipeline(tmp_path, "adopted", TICKS)
    pools = [{"name": "adopt", "pipelines": ["adopted"]}]
    home = tmp_path / "home"
    async with kubeline(cluster, namespace, home, worker_image, pools=pools, lease_seconds=2) as first:
        found = loader.load_folder(folder)
        await first.store.upsert_pipeline(found)
        run = await first.engine.submit(found)
        driving = asyncio.create_task(first.engine.execute(run.id))
        await _until_logged(first, run.id, "tick 3")
        driving.cancel()  # the first server goes away; the attempt keeps running in its pod
        with contextlib.suppress(asyncio.CancelledError):
            await driving
    async with kubeline(cluster, namespace, home, worker_image, pools=pools, lease_seconds=2) as second:
        final = await asyncio.wait_for(second.engine.execute(run.id), 90)
        attempts = await second.store.list_attempts(run.id)
        lines = texts(second, run.id)
    assert final.state is states.RunState.SUCCEEDED, [a.error for a in attempts]
    assert len(attempts) == 1 and attempts[0].outputs == {"ticks": 12}
    assert [t for t in lines if t.startswith("tick")] == [f"tick {i}" for i in range(12)]


async def test_a_pool_whose_deployment_was_deleted_is_made_again(
        cluster: Cluster, namespace: str, worker_image: str, api_client: Any, tmp_path: pathlib.Path) -> None:
    folder = pipeline(tmp_path, "phoenix", {**CHAIN, "pipeline.yaml": chain_yaml(1)})
    apps = client.AppsV1Api(api_client)
    async with kubeline(cluster, namespace, tmp_path / "home", worker_image,
                        pools=[{"name": "phoenix", "pipelines": ["phoenix"], "drainSeconds": 1}]) as kl:
        assert (await run_folder(kl, folder)).state is states.RunState.SUCCEEDED
        apps.delete_namespaced_deployment("kl-pool-phoenix", namespace, propagation_policy="Foreground")
        core = client.CoreV1Api(api_client)
        await asyncio.to_thread(wait_until, lambda: not core.list_namespaced_pod(
            namespace, label_selector="kubeline.dev/pool=phoenix").items, timeout=60, what="the pool's pods gone")
        run = await run_folder(kl, folder)
        attempts = await kl.store.list_attempts(run.id)
    assert run.state is states.RunState.SUCCEEDED, [a.error for a in attempts]


async def test_scale_down_drains_a_pod_after_its_running_attempt(
        cluster: Cluster, namespace: str, worker_image: str, api_client: Any, tmp_path: pathlib.Path) -> None:
    import asyncio

    folder = pipeline(tmp_path, "drained", TICKS)
    apps = client.AppsV1Api(api_client)
    async with kubeline(cluster, namespace, tmp_path / "home", worker_image,
                        pools=[{"name": "drain", "pipelines": ["drained"], "drainSeconds": 60}]) as kl:
        found = loader.load_folder(folder)
        await kl.store.upsert_pipeline(found)
        run = await kl.engine.submit(found)
        driving = asyncio.create_task(kl.engine.execute(run.id))
        await _until_logged(kl, run.id, "tick 1")
        apps.patch_namespaced_deployment_scale("kl-pool-drain", namespace, {"spec": {"replicas": 0}})
        final = await asyncio.wait_for(driving, 120)
        attempts = await kl.store.list_attempts(run.id)
    assert final.state is states.RunState.SUCCEEDED, [a.error for a in attempts]
    assert len(attempts) == 1 and attempts[0].outputs == {"ticks": 12}
    core = client.CoreV1Api(api_client)
    await asyncio.to_thread(wait_until, lambda: not core.list_namespaced_pod(
        namespace, label_selector="kubeline.dev/pool=drain").items, timeout=60, what="the drained pod gone")


async def test_an_attempt_exhausting_the_pods_memory_fails_as_oom_and_the_pool_goes_on(
        cluster: Cluster, namespace: str, worker_image: str, tmp_path: pathlib.Path) -> None:
    folder = pipeline(tmp_path, "hungry", {
        "main.py": """
            print("allocating", flush=True)
            hog = bytearray(400 * 1024 * 1024)
            for i in range(0, len(hog), 4096):
                hog[i] = 1
            print("survived?", flush=True)
        """,
        "pipeline.yaml": "executor: kubernetes-pool\n"})
    after = pipeline(tmp_path, "after-oom", {**CHAIN, "pipeline.yaml": chain_yaml(1)})
    pools = [{"name": "small", "pipelines": ["hungry", "after-oom"], "resources": {"limits": {"memory": "128Mi"}}}]
    async with kubeline(cluster, namespace, tmp_path / "home", worker_image, pools=pools) as kl:
        run = await run_folder(kl, folder)
        (attempt,) = await kl.store.list_attempts(run.id)
        assert run.state is states.RunState.FAILED
        assert attempt.failure is states.FailureKind.OOM, attempt.error
        assert "exceeded the memory of its pool pod" in attempt.error
        assert "survived?" not in texts(kl, run.id)
        next_run = await run_folder(kl, after)  # the pool still serves
        assert next_run.state is states.RunState.SUCCEEDED


async def test_a_worker_that_dies_takes_its_attempts_which_are_retried(
        cluster: Cluster, namespace: str, worker_image: str, kubectl: Any, tmp_path: pathlib.Path) -> None:
    """The pod's worker ends (here: SIGTERM to PID 1; an OOM kill of the worker is the same): the
    container restarts, every attempt it held is LOST with the reason and retried, once each."""
    import asyncio

    body = """
        import time
        from kubeline import task
        print(task.stage(), "attempt", task.attempt(), flush=True)
        if task.attempt() == 1:
            time.sleep(120)
        task.set_output("attempt", task.attempt())
    """
    folder = pipeline(tmp_path, "shared", {
        "a.py": body, "b.py": body,
        "pipeline.yaml": "executor: kubernetes-pool\nretries: {attempts: 2, delay: 0}\n"
                         "stages:\n  - {id: a, file: a.py}\n  - {id: b, file: b.py}\n"})
    async with kubeline(cluster, namespace, tmp_path / "home", worker_image,
                        pools=[{"name": "shared", "pipelines": ["shared"], "slots": 2}]) as kl:
        found = loader.load_folder(folder)
        await kl.store.upsert_pipeline(found)
        run = await kl.engine.submit(found)
        driving = asyncio.create_task(kl.engine.execute(run.id))
        await _until_logged(kl, run.id, "a attempt 1")
        await _until_logged(kl, run.id, "b attempt 1")
        pods = {t.split()[3] for t in texts(kl, run.id, streams=("system",)) if t.startswith("running on pod ")}
        assert len(pods) == 1
        kubectl("exec", "-n", namespace, pods.pop(), "--", "python3", "-c", "import os, signal; os.kill(1, signal.SIGTERM)")
        final = await asyncio.wait_for(driving, 180)
        attempts = await kl.store.list_attempts(run.id)
    assert final.state is states.RunState.SUCCEEDED, [a.error for a in attempts]
    by_stage = {s: sorted((a.number, a.failure) for a in attempts if a.stage_id == s) for s in ("a", "b")}
    assert by_stage == {s: [(1, states.FailureKind.LOST), (2, None)] for s in ("a", "b")}
    assert all(a.error.startswith("worker pod lost: pod ") for a in attempts if a.number == 1)


def test_the_worker_pool_component_passes_server_dry_run(kubectl: Any, namespace: str, tmp_path: pathlib.Path) -> None:
    import shutil
    import subprocess
    import sys

    import yaml

    deploy = pathlib.Path(__file__).resolve().parents[2] / "deploy"
    copy = tmp_path / "deploy"
    shutil.copytree(deploy, copy)
    secrets = subprocess.run([str(pathlib.Path(sys.executable).parent / "kubeline"), "k8s", "secrets"],
                             capture_output=True, text=True, check=True).stdout
    (copy / "overlays" / "staging" / "secrets.env").write_text(secrets)
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    (wrapper / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../deploy/overlays/staging"],
        "components": ["../deploy/components/worker-pool", "../deploy/components/k8s-1.20"]}))
    kubectl("apply", "-f", str(deploy / "base" / "crds" / "workerpools.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/workerpools.kubeline.dev", "--timeout=60s")
    docs = [d for d in yaml.safe_load_all(kubectl("kustomize", str(wrapper)).stdout) if d]
    kept = []
    for doc in docs:
        if doc["kind"] in ("Namespace", "CustomResourceDefinition", "ServiceMonitor"):
            continue
        doc["metadata"]["namespace"] = namespace
        kept.append(doc)
    assert {"WorkerPool", "HorizontalPodAutoscaler"} <= {d["kind"] for d in kept}
    proc = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(kept), check=False)
    assert proc.returncode == 0, proc.stderr
    assert 'workerpool.kubeline.dev/default created (server dry run)' in proc.stdout
