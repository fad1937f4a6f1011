"""Run pipelines through the engine on the cluster, with an API server the pods can reach.

``Rig`` = a Kubeline API server (role ``api``, in a thread, bound to the node IP so pods reach
it) plus, per test, an in-process Kubeline whose engine drives runs with the Kubernetes
executor. Both share one data dir (SQLite file): the server that receives a pod's outputs is
not the one whose executor started the Job, as with several replicas.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pathlib
import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kubeline import bootstrap, settings, testing
from kubeline.domain import runs
from kubeline.pipelines import loader

from .support import Cluster

REPO = pathlib.Path(__file__).resolve().parents[2]
NODE_IP = "10.244.0.1"  # scripts/local-cluster's node: pods reach host servers here


@dataclasses.dataclass
class Rig:
    home: pathlib.Path
    namespace: str
    kubeconfig: pathlib.Path
    image: str
    api_url: str
    folders: pathlib.Path

    def settings(self, **overrides: Any) -> settings.Settings:
        values: dict[str, Any] = {
            "home": self.home, "executor": "kubernetes", "kubernetes_namespace": self.namespace,
            "kubernetes_kubeconfig": self.kubeconfig, "kubernetes_image": self.image,
            "kubernetes_api_url": self.api_url, "kubernetes_ttl_seconds": 600,
            "secret_key": None, "uv_cache_dir": pathlib.Path("/tmp/kubeline-test-venvs/uv-cache"),
        }
        values.update(overrides)
        return settings.Settings(**values)

    @contextlib.asynccontextmanager
    async def kubeline(self, **overrides: Any) -> AsyncIterator[bootstrap.Kubeline]:
        async with bootstrap.open_kubeline(self.settings(**overrides)) as kl:
            yield kl

    def pipeline(self, name: str, files: dict[str, str]) -> pathlib.Path:
        folder = self.folders / name
        folder.mkdir(parents=True)
        for rel, text in files.items():
            (folder / rel).write_text(textwrap.dedent(text))
        return folder


async def submit(kl: bootstrap.Kubeline, folder: pathlib.Path, **kwargs: Any) -> runs.Run:
    pipeline = loader.load_folder(folder)
    await kl.store.upsert_pipeline(pipeline)
    return await kl.engine.submit(pipeline, **kwargs)


async def run_folder(kl: bootstrap.Kubeline, folder: pathlib.Path, **kwargs: Any) -> runs.Run:
    run = await submit(kl, folder, **kwargs)
    return await kl.engine.execute(run.id)


def log_lines(kl: bootstrap.Kubeline, run_id: str, *, stage: str | None = None,
              streams: tuple[str, ...] = ("stdout", "stderr")) -> list[str]:
    return [line.text for line in kl.logs.read(run_id, stage_id=stage) if line.stream in streams]


async def only_attempt(kl: bootstrap.Kubeline, run_id: str) -> runs.Attempt:
    attempts = await kl.store.list_attempts(run_id)
    assert len(attempts) == 1, attempts
    return attempts[0]


@pytest.fixture(scope="module")
def rig(cluster: Cluster, namespace: str, worker_image: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    home = tmp_path_factory.mktemp("k8s-home")
    api_settings = settings.Settings(home=home, secret_key=None)
    with testing.ServerThread(api_settings, role="api", host=NODE_IP) as server:
        assert cluster.kubeconfig is not None
        yield Rig(home=home, namespace=namespace, kubeconfig=cluster.kubeconfig, image=worker_image,
                  api_url=server.upload_url, folders=tmp_path_factory.mktemp("k8s-pipelines"))


