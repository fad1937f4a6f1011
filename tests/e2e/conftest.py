"""End-to-end tests against a real Kubernetes cluster.

Which cluster: the one `$KUBECONFIG` names, if set (kind, minikube, a real cluster all work);
otherwise this repository's own single-node cluster, started with `scripts/local-cluster up`
(cached, so a warm start takes seconds) and left running for the next session.

When no cluster can be had, every e2e test is skipped with the reason, except when
`KUBELINE_REQUIRE_CLUSTER=1` (CI sets it): then they fail with that reason instead.
On the local cluster the images the selected tests use (the worker image; the server and
PostgreSQL images for the tests that deploy the manifests) are built again from this checkout
when the cluster's copy is missing or was built from other sources (`scripts/local-cluster
image-status`: a hash of src/, pyproject.toml and the recipe recorded when built), or always
with `KUBELINE_E2E_REBUILD_IMAGE=1`.

The cluster is acquired once, after collection and outside any test's timeout, and only if an
e2e test was selected. Tests talk to it with the official `kubernetes` client and `kubectl`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import Cluster, Pods, exists, wait_until

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LOCAL_CLUSTER = REPO / "scripts" / "local-cluster"
LOCAL_NODE_NAME = "kubeline-node"
WORKER_IMAGE = os.environ.get("KUBELINE_E2E_IMAGE", "kubeline-worker:dev")
REQUIRE = os.environ.get("KUBELINE_REQUIRE_CLUSTER") == "1"


_CLUSTER = Cluster()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if any(item.path.is_relative_to(HERE) for item in session.items):
        _acquire_cluster(_CLUSTER, deploy_images=any("deploy_images" in getattr(item, "fixturenames", ())
                                                     for item in session.items))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for note in _CLUSTER.notes:
        terminalreporter.write_line(f"e2e: {note}")


def _run(cmd: list[str], *, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except FileNotFoundError:
        return 127, f"{cmd[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, f"{' '.join(cmd)}: timed out after {timeout:.0f}s"
    return proc.returncode, proc.stdout + proc.stderr


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _acquire_cluster(cluster: Cluster, *, deploy_images: bool = False) -> None:
    env_kubeconfig = os.environ.get("KUBECONFIG")
    if env_kubeconfig:
        cluster.kubeconfig = Path(env_kubeconfig.split(os.pathsep)[0])
        if not cluster.kubeconfig.is_file():
            cluster.unavailable = f"$KUBECONFIG names {cluster.kubeconfig}, which does not exist"
            return
        cluster.notes.append(f"using $KUBECONFIG={env_kubeconfig}")
    else:
        if os.geteuid() != 0:
            cluster.unavailable = (
                "no $KUBECONFIG, and scripts/local-cluster needs root to start a cluster "
                "(run `sudo scripts/local-cluster up` and export its KUBECONFIG)"
            )
            return
        started = time.monotonic()
        code, out = _run([str(LOCAL_CLUSTER), "up"], timeout=20 * 60)
        if code != 0:
            cluster.unavailable = f"scripts/local-cluster up failed (exit {code}):\n{_tail(out)}"
            return
        code, out = _run([str(LOCAL_CLUSTER), "env"], timeout=30)
        if code != 0 or "KUBECONFIG=" not in out:
            cluster.unavailable = f"scripts/local-cluster env failed:\n{_tail(out)}"
            return
        cluster.kubeconfig = Path(out.strip().split("KUBECONFIG=", 1)[1].splitlines()[0])
        cluster.notes.append(f"local cluster up in {time.monotonic() - started:.0f}s, KUBECONFIG={cluster.kubeconfig}")

    code, out = _run(["kubectl", "get", "nodes", "-o", "json"], timeout=30, env=cluster.env())
    if code != 0:
        cluster.unavailable = f"cluster not reachable with {cluster.kubeconfig}:\n{_tail(out)}"
        return
    node_names = {n["metadata"]["name"] for n in json.loads(out)["items"]}
    cluster.local = LOCAL_NODE_NAME in node_names and os.geteuid() == 0
    if cluster.local:
        # Built here, outside any test's timeout: a cold build of all three takes minutes.
        cluster.image_problem = _ensure_local_images(cluster, ["worker"])
        if deploy_images:
            _ensure_deploy_images(cluster)


def _ensure_deploy_images(cluster: Cluster) -> None:
    cluster.deploy_image_problem = _ensure_local_images(cluster, ["server", "postgres"])
    cluster.deploy_images_checked = True


def _ensure_local_images(cluster: Cluster, kinds: list[str]) -> str | None:
    """Build and import the images `kinds` (worker, server, postgres) when the cluster's copy is
    missing or stale (built from other sources: another checkout, an older commit); returns
    what went wrong, if anything."""
    # KUBELINE_E2E_REBUILD_IMAGE=1 rebuilds them whatever their state.
    rebuild = os.environ.get("KUBELINE_E2E_REBUILD_IMAGE") == "1"
    started = time.monotonic()
    code, out = _run([str(LOCAL_CLUSTER), "load-image", *([] if rebuild else ["--if-stale"]), *kinds],
                     timeout=40 * 60)
    if code != 0:
        return f"scripts/local-cluster load-image {' '.join(kinds)} failed (exit {code}):\n{_tail(out)}"
    built = [line.split("] imported ", 1)[1] for line in out.splitlines() if "] imported " in line]
    if built:
        cluster.notes.append(f"built and imported {', '.join(built)} in {time.monotonic() - started:.0f}s")
    return None


def _server_minor(api_client: Any) -> int:
    from kubernetes import client

    minor = client.VersionApi(api_client).get_code().minor
    return int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"KUBELINE_REQUIRE_CLUSTER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    if _CLUSTER.unavailable:
        _unavailable(_CLUSTER.unavailable)
    if _CLUSTER.kubeconfig is None:  # collection_finish did not run (e.g. plugin disabled)
        _acquire_cluster(_CLUSTER)
        if _CLUSTER.unavailable:
            _unavailable(_CLUSTER.unavailable)
    return _CLUSTER


@pytest.fixture(scope="session")
def local_cluster(cluster: Cluster) -> Cluster:
    """The cluster, when it is scripts/local-cluster's own on this machine (root needed)."""
    if not cluster.local:
        pytest.skip("needs scripts/local-cluster's own cluster on this machine (as root)")
    return cluster


@pytest.fixture(scope="session")
def worker_image(cluster: Cluster) -> str:
    if cluster.image_problem:
        _unavailable(cluster.image_problem)
    return WORKER_IMAGE


@pytest.fixture(scope="session")
def deploy_images(local_cluster: Cluster, worker_image: str) -> Cluster:
    """kubeline-server:dev and kubeline-postgres:dev built from this checkout, for the tests that
    apply deploy/overlays/dev (built before the tests start, see _ensure_local_images)."""
    if not local_cluster.deploy_images_checked:  # collection_finish did not see it asked for
        _ensure_deploy_images(local_cluster)
    if local_cluster.deploy_image_problem:
        _unavailable(local_cluster.deploy_image_problem)
    return local_cluster


@pytest.fixture(scope="session")
def api_client(cluster: Cluster) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope="module")
def namespace(request: pytest.FixtureRequest, api_client: Any) -> Iterator[str]:
    """A fresh namespace per test module, deleted (with all it holds) afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(api_client)
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    name = f"e2e-{module}-{secrets.token_hex(3)}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods can only be created once the namespace's default ServiceAccount exists and, before
    # Kubernetes 1.24, once its token Secret does too (else: 500 "No API token found").
    needs_token_secret = _server_minor(api_client) < 24

    def default_sa_ready() -> bool:
        if not exists(lambda: core.read_namespaced_service_account("default", name)):
            return False
        return not needs_token_secret or bool(core.read_namespaced_service_account("default", name).secrets)

    wait_until(default_sa_ready, timeout=30, what=f"ServiceAccount default (and its token) in {name}")
    yield name
    with contextlib.suppress(Exception):
        core.delete_namespace(name, propagation_policy="Background", grace_period_seconds=0)


@pytest.fixture(scope="session")
def kubectl(cluster: Cluster) -> Callable[..., subprocess.CompletedProcess[str]]:
    """kubectl against the test cluster: kubectl("get", "pods", "-n", ns, input=..., check=...)."""

    def run(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["kubectl", *args],
            input=input,
            capture_output=True,
            text=True,
            env=cluster.env(),
            timeout=90,
            check=False,
        )
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def pods(api_client: Any, worker_image: str) -> Pods:
    return Pods(api_client, worker_image)
