"""Benchmark: a chain of 10 trivial `python` stages on the Kubernetes executor, against 10 bare
Jobs (same image, same hardened pod, `python3 -c pass`) created and awaited one after another
with the Kubernetes client — the floor.

    KUBECONFIG=~/.cache/kubeline/cluster/kubeconfig .venv/bin/python bench/k8s_chain.py \
        [--stages 10] [--rounds 5] [--delivery log|upload] [--pool-connect proxy|pod-ip|none] \
        [--fanout 100] [--pool-replicas 4] [--pool-slots 8]

With a pool side (default), every round also runs the same chain on a worker pool
(``kubernetes-pool``: attempts forked in warm pods; target <= 0.5 s for 10 stages) and a
fan-out of ``--fanout`` trivial stages + a join on ``--pool-replicas`` pods (target <= 2 s for
100 on 4), interleaved with the Job sides; see bench/k8s_pool.py.

Both sides move in 1 s steps of the kubelet's relist, so one run says little: each round runs
both sides, in alternating order (interleaved), and the figures are the median and spread
(min-max) over the rounds, per side and of the per-stage overhead above the floor (target
<= 100 ms as a median). ``--delivery log`` (default) is a laptop with only a kubeconfig (each
pod hands its result back in its log); ``upload`` starts an API server the pods upload to, at
--node-ip. Needs scripts/local-cluster (or any cluster whose pods reach this host at --node-ip
for ``upload``) and the worker image. Also prints p50/p99 of Job-created -> pod-running
(measured by watch, client side, on bare Jobs). Uses its own namespace, deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pathlib
import secrets
import statistics
import tempfile
import time
from typing import Any

import k8s_pool  # bench/k8s_pool.py, beside this file
from kubernetes import client, config, watch

from kubeline import bootstrap, settings, testing
from kubeline.domain import states
from kubeline.executors.kubernetes import manifests
from kubeline.pipelines import loader


def make_pipeline(root: pathlib.Path, stages: int) -> pathlib.Path:
    folder = root / "chain"
    folder.mkdir()
    (folder / "main.py").write_text("pass\n")
    lines = ["stages:"]
    for i in range(stages):
        dep = f", dependsOn: [s{i - 1}]" if i else ""
        lines.append(f"  - {{id: s{i}, type: python, file: main.py{dep}}}")
    (folder / "pipeline.yaml").write_text("\n".join(lines) + "\n")
    return folder


def bare_job(namespace: str, image: str, name: str) -> dict[str, Any]:
    pod = {"restartPolicy": "Never", "enableServiceLinks": False, "automountServiceAccountToken": False,
           "terminationGracePeriodSeconds": 5,
           "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
           "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                           "command": ["python3", "-c", "pass"],
                           "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                               "capabilities": {"drop": ["ALL"]}}}]}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": namespace,
                                                                  "labels": {"bench": "floor"}},
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 60, "template": {"spec": pod}}}


def floor(api: client.ApiClient, namespace: str, image: str, count: int) -> tuple[float, list[float]]:
    """Create and await ``count`` Jobs one after another; (total seconds, created->running list)."""
    batch, core = client.BatchV1Api(api), client.CoreV1Api(api)
    to_running: list[float] = []
    start = time.perf_counter()
    for i in range(count):
        name = f"floor-{i}-{secrets.token_hex(3)}"
        created = time.perf_counter()
        batch.create_namespaced_job(namespace, bare_job(namespace, image, name))
        running = None
        stream = watch.Watch()
        for event in stream.stream(core.list_namespaced_pod, namespace, label_selector=f"job-name={name}",
                                   timeout_seconds=120):
            pod = event["object"]
            statuses = pod.status.container_statuses or []
            state = statuses[0].state if statuses else None
            if running is None and state is not None and (state.running or state.terminated):
                running = time.perf_counter() - created
            if pod.status.phase in ("Succeeded", "Failed"):
                stream.stop()
        to_running.append(running if running is not None else float("nan"))
    return time.perf_counter() - start, to_running


async def chain(rig_settings: settings.Settings, folder: pathlib.Path) -> float:
    async with bootstrap.open_kubeline(rig_settings) as kl:
        pipeline = loader.load_folder(folder)
        await kl.store.upsert_pipeline(pipeline)
        run = await kl.engine.submit(pipeline)
        start = time.perf_counter()
        final = await kl.engine.execute(run.id)
        elapsed = time.perf_counter() - start
        if final.state is not states.RunState.SUCCEEDED:
            raise SystemExit(f"chain run {run.id} ended {final.state}: {final.error}")
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of both sides (at least 5)")
    parser.add_argument("--samples", type=int, default=10, help="bare Jobs for the created->running percentiles")
    parser.add_argument("--delivery", choices=("log", "upload"), default="log")
    parser.add_argument("--image", default=os.environ.get("KUBELINE_E2E_IMAGE", "kubeline-worker:dev"))
    parser.add_argument("--node-ip", default="10.244.0.1", help="where pods reach this host (upload)")
    parser.add_argument("--pool-connect", choices=("proxy", "pod-ip", "none"), default="proxy",
                        help="how the pool side reaches its pods (none: no pool side)")
    parser.add_argument("--fanout", type=int, default=100, help="stages of the pool's fan-out + join (0: none)")
    parser.add_argument("--pool-replicas", type=int, default=4)
    parser.add_argument("--pool-slots", type=int, default=8, help="attempts per pool pod at once")
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("--rounds: at least 5 (one round says little: both sides move in 1 s steps)")
    kubeconfig = pathlib.Path(os.environ.get("KUBECONFIG", pathlib.Path.home() / ".kube/config"))
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core = client.CoreV1Api(api)
    namespace = f"bench-chain-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    chains: list[float] = []
    floors: list[float] = []
    pool_chains: list[float] = []
    fanouts: list[float] = []
    pool: k8s_pool.PoolSide | None = None
    try:
        while not _token_ready(core, namespace):  # 1.20: pods need the default SA's token Secret
            time.sleep(0.2)
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            root = pathlib.Path(tmp)
            folder = make_pipeline(root, args.stages)
            api_url = None
            if args.delivery == "upload":
                api_url = stack.enter_context(testing.ServerThread(
                    settings.Settings(home=root / "home", secret_key=None), role="api", host=args.node_ip)).upload_url
            rig = settings.Settings(home=root / "home", secret_key=None, executor="kubernetes",
                                    kubernetes_namespace=namespace, kubernetes_kubeconfig=kubeconfig,
                                    kubernetes_image=args.image, kubernetes_api_url=api_url)
            floor(api, namespace, args.image, 2)  # warm-up: image and pod sandbox caches
            asyncio.run(chain(rig, folder))  # warm-up
            pool_folder = fanout_folder = None
            if args.pool_connect != "none":
                pool = k8s_pool.PoolSide(home=root / "pool-home", namespace=namespace, kubeconfig=kubeconfig,
                                         image=args.image, connect=args.pool_connect,
                                         replicas=args.pool_replicas, slots=args.pool_slots)
                pool_folder = k8s_pool.pooled_copy(folder, root)
                fanout_folder = k8s_pool.make_fanout(root, args.fanout) if args.fanout else None
                pool.run(pool_folder)  # warm-up: creates the pool, waits for a pod
                pool.wait_ready(args.pool_replicas)
                if fanout_folder is not None:
                    pool.run(fanout_folder)
            for round_ in range(args.rounds):
                sides = [lambda: chains.append(asyncio.run(chain(rig, folder))),
                         lambda: floors.append(floor(api, namespace, args.image, args.stages)[0])]
                if pool is not None and pool_folder is not None:
                    sides.append(lambda: pool_chains.append(pool.run(pool_folder)))
                    if fanout_folder is not None:
                        sides.append(lambda: fanouts.append(pool.run(fanout_folder)))
                for side in sides[round_ % len(sides):] + sides[:round_ % len(sides)]:  # rotated: interleaved
                    side()
                said = f"round {round_ + 1}: chain {chains[-1]:.2f}s, floor {floors[-1]:.2f}s"
                if pool_chains:
                    said += f", pool chain {pool_chains[-1]:.3f}s"
                if fanouts:
                    said += f", pool fan-out {fanouts[-1]:.3f}s"
                print(said, flush=True)
            _, samples = floor(api, namespace, args.image, args.samples)
    finally:
        if pool is not None:
            pool.close()
        core.delete_namespace(namespace, propagation_policy="Background")
    overheads = [(c - f) / args.stages * 1000 for c, f in zip(chains, floors, strict=True)]
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    print(f"{args.rounds} interleaved rounds, {args.stages} stages, result delivery: {args.delivery}")
    print(f"chain on the Kubernetes executor: {_spread(chains, 's')}")
    print(f"floor, {args.stages} bare Jobs created and awaited in a loop: {_spread(floors, 's')}")
    print(f"overhead above the floor per stage: {_spread(overheads, ' ms', digits=0)} (target: median <= 100 ms)")
    if pool_chains:
        print(f"chain on a worker pool ({args.pool_connect}): {_spread(pool_chains, 's', digits=3)} "
              "(target: <= 0.5 s for 10 stages)")
    if fanouts:
        print(f"fan-out of {args.fanout} + join on {args.pool_replicas} pool pods x {args.pool_slots} slots: "
              f"{_spread(fanouts, 's', digits=3)} (target: <= 2 s for 100 on 4)")
    print(f"Job created -> pod running over {len(samples)} bare Jobs: p50 {statistics.median(samples) * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms")
    print(f"(a Kubeline pod also has emptyDirs (the kubelet's mount loop), unpacks its inline bundle and forks "
          f"the stage; no Secret without secret env or upload URL; {manifests.ATTEMPT_LABEL} labels)")
    print("note: a stage ends once its log is read to its end markers and result lines; the kubelet "
          "serves a container's log only after the relist that saw it run, and the floor waits for the "
          "pod status of a relist too: both move in 1 s steps, and a pod that runs longer is more often "
          "caught running by a relist (one more second)")


def _spread(values: list[float], unit: str, *, digits: int = 2) -> str:
    return (f"median {statistics.median(values):.{digits}f}{unit}, spread {min(values):.{digits}f}-"
            f"{max(values):.{digits}f}{unit} (stdev {statistics.stdev(values):.{digits}f})")


def _token_ready(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        return bool(core.read_namespaced_service_account("default", namespace).secrets)
    except client.exceptions.ApiException:
        return False


if __name__ == "__main__":
    main()
