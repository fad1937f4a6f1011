"""A worker pool with requirements on the real cluster: its pods install them once at start (an
init container, uv, into an emptyDir; the root filesystem stays read-only), a pipeline with the
same requirements runs on it, one with other requirements fails at its start naming both hashes.
The package comes from PyPI, as for the Job executor's requirements test (the local cluster's
pods may reach the public package registries and nothing else)."""

from __future__ import annotations

import pathlib
import textwrap
from typing import Any

import pytest
from kubernetes import client

from kubeline import bootstrap, settings
from kubeline.domain import pools, states
from kubeline.pipelines import loader

from .support import Cluster

pytestmark = pytest.mark.slow

MAIN = """
    import os, six
    from kubeline import task
    print("six", six.__version__, "from", six.__file__, flush=True)
    try:
        open("/opt/kubeline/written", "w")
        task.set_output("root_writable", True)
    except OSError:
        task.set_output("root_writable", False)
    task.set_output("six", six.__version__)
"""


def pipeline(root: pathlib.Path, name: str, requirements: str) -> pathlib.Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(textwrap.dedent(MAIN))
    (folder / "requirements.txt").write_text(requirements)
    (folder / "pipeline.yaml").write_text("executor: kubernetes-pool\ntags: [deps]\n")
    return folder


@pytest.mark.timeout(400)
async def test_a_pool_with_requirements_serves_the_pipelines_that_have_the_same(
        cluster: Cluster, namespace: str, worker_image: str, api_client: Any, tmp_path: pathlib.Path) -> None:
    assert cluster.kubeconfig is not None
    values: dict[str, Any] = {
        "home": tmp_path / "home", "executor": "kubernetes-pool", "executors": ["kubernetes-pool"],
        "kubernetes_namespace": namespace, "kubernetes_kubeconfig": cluster.kubeconfig,
        "kubernetes_image": worker_image, "secret_key": None, "kubernetes_pending_timeout": 240,
        "kubernetes_pools": [{"name": "plain", "tags": ["deps"]},
                             {"name": "six", "tags": ["deps"], "requirements": ["six==1.16.0"]}]}
    same = loader.load_folder(pipeline(tmp_path, "same", "six==1.16.0  # the pool's\n"))
    other = loader.load_folder(pipeline(tmp_path, "other", "six==1.15.0\n"))
    async with bootstrap.open_kubeline(settings.Settings(**values)) as kl:
        for found in (same, other):
            await kl.store.upsert_pipeline(found)
        run = await kl.engine.execute((await kl.engine.submit(same)).id)
        (attempt,) = await kl.store.list_attempts(run.id)
        assert run.state is states.RunState.SUCCEEDED, attempt.error
        assert attempt.outputs == {"six": "1.16.0", "root_writable": False}
        system = [line.text for line in kl.logs.read(run.id) if line.stream == "system"]
        assert any("of worker pool six" in t for t in system), system
        printed = [line.text for line in kl.logs.read(run.id) if line.stream == "stdout"]
        assert any(t.startswith("six 1.16.0 from /kubeline/packages/") for t in printed), printed

        failed = await kl.engine.execute((await kl.engine.submit(other)).id)
        (refused,) = await kl.store.list_attempts(failed.id)
    assert failed.state is states.RunState.FAILED
    assert refused.failure is states.FailureKind.START_FAILED
    wanted, has = pools.requirements_hash("six==1.15.0"), pools.requirements_hash("six==1.16.0")
    assert f"its requirements (requirements.txt, hash {wanted}) are not those of worker pool 'plain'" in refused.error
    assert "give the pool the same requirements" in refused.error
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment("kl-pool-six", namespace)
    assert deployment.metadata.annotations["kubeline.dev/requirements-hash"] == has
    (installer,) = deployment.spec.template.spec.init_containers
    assert installer.security_context.read_only_root_filesystem is True
