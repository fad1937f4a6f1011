"""A kubeconfig whose API server cannot be reached is a clear error within seconds, not a hang."""

from __future__ import annotations

import asyncio
import pathlib
import time

import pytest

from kubeline.domain import errors
from kubeline.executors.kubernetes import kube, watches

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u, namespace: team}}]
current-context: x
"""


async def test_an_unreachable_api_server_fails_the_first_watch_in_seconds(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    client = kube.Kube(kube.load_client(path))
    watch = watches.NamespaceWatch(kube_=client, namespace="team", loop=asyncio.get_running_loop(),
                                   on_event=lambda *_: None, on_listed=lambda *_: None)
    started = time.monotonic()
    watch.start()
    try:
        with pytest.raises(errors.ExecutorError, match=r"cannot reach the Kubernetes API server at "
                                                       r"https://127\.0\.0\.1:9 \(Connection refused\); check "
                                                       r"the kubeconfig's server"):
            await watch.ready()
    finally:
        watch.stop()
        client.close()
    assert time.monotonic() - started < 10
