"""Pipeline folders too large for a ConfigMap, on the real cluster: copied to the code claim and
mounted read-only (the Fast-Flow layout: one PVC with the copies and the uv cache), or baked into
the image (``kubernetes.codePath``).

The local cluster has no storage provisioner and this test process runs on its node, so the
code claim is a PVC bound to a ``hostPath`` PersistentVolume of a temp dir here, and that dir is
the server's ``KUBELINE_KUBERNETES_CODE_DIR``: what the server writes there, pods read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from kubeline.domain import states

from .k8s_executor_support import REPO, Rig, log_lines, rig, run_folder
from .support import Cluster, wait_until

__all__ = ["rig"]  # the module-scoped fixture

pytestmark = pytest.mark.slow

DATA_BYTES = 1_500_000  # random, so it packs to more than the 900 KiB a ConfigMap may carry
IMAGE_CODE_PATH = "/opt/kubeline/lib/python3.11/site-packages/kubeline"  # the worker image's own package


@pytest.fixture(scope="module")
def code_claim(local_cluster: Cluster, api_client: Any, namespace: str) -> Iterator[tuple[str, pathlib.Path]]:
    """(PVC name, the dir it is bound to on this machine), removed afterwards."""
    core = client.CoreV1Api(api_client)
    shared = pathlib.Path(tempfile.mkdtemp(prefix="kubeline-e2e-code-"))
    shared.chmod(0o755)  # pods run as uid 1000: they read the copies and write the uv cache
    (shared / "uv-cache").mkdir()
    (shared / "uv-cache").chmod(0o777)
    claim, volume = "kubeline-code", f"{namespace}-code"
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(shared), "type": "Directory"}}})
    try:
        core.create_namespaced_persistent_volume_claim(namespace, {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": volume,
                     "resources": {"requests": {"storage": "1Gi"}}}})
        wait_until(lambda: core.read_namespaced_persistent_volume_claim(claim, namespace).status.phase == "Bound",
                   timeout=60, what=f"PVC {claim} to bind to the hostPath PV {volume}")
        yield claim, shared
    finally:
        with contextlib.suppress(Exception):  # held by finished pods until the namespace goes
            core.delete_namespaced_persistent_volume_claim(claim, namespace)
        with contextlib.suppress(Exception):
            core.delete_persistent_volume(volume)
        shutil.rmtree(shared, ignore_errors=True)


def _large_pipeline(rig: Rig, name: str, files: dict[str, str]) -> tuple[pathlib.Path, str]:
    folder = rig.pipeline(name, files)
    data = os.urandom(DATA_BYTES)
    (folder / "data.bin").write_bytes(data)
    return folder, hashlib.sha256(data).hexdigest()


async def test_a_large_folder_runs_from_the_code_claim(rig: Rig, api_client: Any,
                                                       code_claim: tuple[str, pathlib.Path]) -> None:
    claim, shared = code_claim
    folder, digest = _large_pipeline(rig, "large", {
        "main.py": """
            import hashlib, os, pathlib
            from kubeline import task
            data = pathlib.Path("data.bin").read_bytes()
            try:
                pathlib.Path("scratch.txt").write_text("x")
                code_writable = True
            except OSError:
                code_writable = False
            (pathlib.Path(os.environ["UV_CACHE_DIR"]) / f"written-by-{task.stage()}").write_text(task.run_id())
            print("hashed", len(data), "bytes")
            task.set_output("sha256", hashlib.sha256(data).hexdigest())
            task.set_output("cwd", os.getcwd())
            task.set_output("code_writable", code_writable)
        """,
        "pipeline.yaml": """
            python_version: "3.11"
            stages:
              - {id: first, file: main.py}
              - {id: second, file: main.py, dependsOn: [first]}
        """,
    })
    async with rig.kubeline(kubernetes_code_claim=claim, kubernetes_code_dir=shared) as kl:
        run = await run_folder(kl, folder)
        attempts = await kl.store.list_attempts(run.id)
        assert run.state is states.RunState.SUCCEEDED, (run.error, [a.error for a in attempts],
                                                        log_lines(kl, run.id, streams=("stdout", "stderr", "system")))
        assert len(attempts) == 2
        for attempt in attempts:
            assert attempt.outputs == {"sha256": digest, "cwd": "/kubeline/code", "code_writable": False}
        assert f"hashed {DATA_BYTES} bytes" in log_lines(kl, run.id, stage="first")
        system = log_lines(kl, run.id, stage="first", streams=("system",))
        assert any(f"mounted read-only from PVC {claim}, pipelines/large/" in line for line in system), system
    (copy,) = (shared / "pipelines" / "large").iterdir()  # both attempts mounted the same copy
    assert (copy / "data.bin").read_bytes() == (folder / "data.bin").read_bytes()
    assert not (copy / "scratch.txt").exists()
    assert (shared / "uv-cache" / "written-by-first").read_text() == run.id
    job = client.BatchV1Api(api_client).read_namespaced_job(attempts[0].handle["job"], rig.namespace)
    pod = job.spec.template.spec
    (code_volume,) = [v for v in pod.volumes if v.name == "code"]
    assert code_volume.persistent_volume_claim.claim_name == claim
    mounts = {m.mount_path: m for m in pod.containers[0].volume_mounts if m.name == "code"}
    assert mounts["/kubeline/code"].sub_path == f"pipelines/large/{copy.name}"
    assert mounts["/kubeline/code"].read_only is True
    assert mounts["/kubeline/uv-cache"].sub_path == "uv-cache" and not mounts["/kubeline/uv-cache"].read_only
    assert not any(v.config_map for v in pod.volumes)  # the small rest travelled inline in the Job


async def test_a_folder_baked_into_the_image_is_not_sent(rig: Rig, api_client: Any) -> None:
    """``codePath`` names the worker image's own kubeline package (there in any worker image built
    from this repo; ``python3 -P``: its modules named like the stdlib's must not shadow them); the
    local folder is too large to send, so the run proves nothing was sent."""
    script = ("import os, pathlib\n"
              "from kubeline import task\n"
              "task.set_output('cwd', os.getcwd())\n"
              "task.set_output('first_line', pathlib.Path('task.py').read_text().splitlines()[0])\n")
    folder, _ = _large_pipeline(rig, "baked", {"pipeline.yaml": f"""
        python_version: "3.11"
        kubernetes: {{codePath: {IMAGE_CODE_PATH}}}
        stages:
          - {{id: main, type: shell, command: [python3, -P, -c, {json.dumps(script)}]}}
    """})
    async with rig.kubeline() as kl:  # no code claim: the folder could not be sent at all
        run = await run_folder(kl, folder)
        (attempt,) = await kl.store.list_attempts(run.id)
        assert run.state is states.RunState.SUCCEEDED, (run.error, attempt.error,
                                                        log_lines(kl, run.id, streams=("stdout", "stderr")))
    first_line = (REPO / "src" / "kubeline" / "task.py").read_text().splitlines()[0]
    assert attempt.outputs == {"cwd": IMAGE_CODE_PATH, "first_line": first_line}
    job = client.BatchV1Api(api_client).read_namespaced_job(attempt.handle["job"], rig.namespace)
    assert [v.name for v in job.spec.template.spec.volumes] == ["work", "tmp", "uv-cache"]
