"""A real ``dockerd`` (Debian's ``docker.io``) for the Docker executor tests, never the system one.

The session starts its own daemon in a temp dir (``--bridge=none --iptables=false``: no network
changes on the machine; its own socket, data root and exec root) and loads the worker image
``kubeline-worker:dev`` from the docker-archive that ``scripts/cluster/images.sh`` writes
(``~/.cache/kubeline/images/kubeline-worker-dev.tar``, built with ``scripts/local-cluster
load-image`` when missing, or ``$KUBELINE_WORKER_IMAGE_TAR``). Nothing is pulled. Where the daemon cannot start (no ``dockerd``, not root, no cgroups) or the
image tarball is missing, the tests are skipped with the reason, unless
``KUBELINE_REQUIRE_DOCKER=1``, which turns the skip into a failure. The daemon is stopped at
the end of the session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubeline import testing
from kubeline.executors import base, docker
from kubeline.logs import LogStore

IMAGE = "kubeline-worker:dev"
_ids = itertools.count()


@dataclasses.dataclass(frozen=True)
class Daemon:
    url: str
    root: pathlib.Path

    def client(self) -> Any:
        import docker as docker_sdk

        return docker_sdk.APIClient(base_url=self.url, version="auto")


def _unavailable(reason: str) -> None:
    if os.environ.get("KUBELINE_REQUIRE_DOCKER") == "1":
        pytest.fail(f"dockerd required (KUBELINE_REQUIRE_DOCKER=1) but unavailable: {reason}")
    pytest.skip(f"dockerd unavailable: {reason}")


def _image_tar() -> pathlib.Path:
    explicit = os.environ.get("KUBELINE_WORKER_IMAGE_TAR")
    if explicit:
        return pathlib.Path(explicit)
    return pathlib.Path.home() / ".cache" / "kubeline" / "images" / "kubeline-worker-dev.tar"


@pytest.fixture(scope="session")
def docker_daemon() -> Iterator[Daemon]:
    def find() -> str | None:
        return shutil.which("dockerd") or next(
            (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.access(p, os.X_OK)), None)

    dockerd = find()
    if dockerd is None:
        problem = testing.apt_install("docker.io")  # Debian's dockerd; started below on its own socket
        dockerd = find()
        if dockerd is None:
            _unavailable(f"no dockerd on PATH: {problem or 'docker.io installed without dockerd'}")
    if os.geteuid() != 0:
        _unavailable("dockerd needs root here (the tests run it on a socket of their own)")
    tar = _image_tar()
    if not tar.is_file() and "KUBELINE_WORKER_IMAGE_TAR" not in os.environ:  # a fresh machine: build it
        repo = pathlib.Path(__file__).resolve().parents[3]
        build = subprocess.run([str(repo / "scripts" / "local-cluster"), "load-image"], capture_output=True,
                               text=True, check=False, timeout=1800)
        if build.returncode != 0:
            _unavailable(f"cannot build the worker image: {build.stderr[-1500:]}")
    if not tar.is_file():
        _unavailable(f"no worker image tarball at {tar} (build it: scripts/local-cluster load-image)")
    root = pathlib.Path(tempfile.mkdtemp(prefix="kl-dockerd-"))  # short: the socket path is capped
    socket = root / "docker.sock"
    log = (root / "dockerd.log").open("wb")
    process = subprocess.Popen(
        [str(dockerd), "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
         "--pidfile", str(root / "pid"), "--host", f"unix://{socket}", "--bridge=none",
         "--iptables=false", "--ip-masq=false"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    daemon = Daemon(url=f"unix://{socket}", root=root)
    try:
        client = None
        for _ in range(600):
            if process.poll() is not None:
                tail = (root / "dockerd.log").read_text(errors="replace")[-1500:]
                _unavailable(f"dockerd exited with {process.returncode}: {tail}")
            if socket.exists():
                with contextlib.suppress(Exception):
                    client = daemon.client()
                    client.ping()
                    break
            time.sleep(0.1)
        else:
            _unavailable("dockerd did not answer within 60 s")
        assert client is not None
        with tar.open("rb") as data:
            client.load_image(data)
        if not client.images(name=IMAGE):
            _unavailable(f"{tar} does not hold {IMAGE}")
        client.close()
        yield daemon
    finally:
        testing.stop_processes([process])
        log.close()
        shutil.rmtree(root, ignore_errors=True)


class Harness:
    def __init__(self, tmp_path: pathlib.Path, daemon: Daemon, executor: docker.DockerExecutor) -> None:
        self.tmp_path = tmp_path
        self.daemon = daemon
        self.executor = executor
        self.store = LogStore(tmp_path / "logs")

    def new_executor(self, **kwargs: Any) -> docker.DockerExecutor:
        values: dict[str, Any] = {"work_dir": self.tmp_path / "work", "artifacts_dir": self.tmp_path / "art",
                                  "base_url": self.daemon.url, "network": "none", "log_line_limit": 1024,
                                  "kill_grace": 1.0}
        values.update(kwargs)
        return docker.DockerExecutor(**values)

    def spec(self, code: str | None = None, *, argv: tuple[str, ...] | None = None, **kwargs: Any) -> base.AttemptSpec:
        n = next(_ids)
        values: dict[str, Any] = {
            "attempt_id": f"att-{os.getpid()}-{n}", "run_id": "run-1", "pipeline": "p", "stage_id": f"s{n}",
            "number": 1, "stage_type": "python", "folder": None, "argv": argv or ("python", "-c", code),
            "runtime": base.Runtime.KUBELINE, "python_version": "3.11", "requirements": None}
        values.update(kwargs)
        return base.AttemptSpec(**values)

    def sink(self, spec: base.AttemptSpec, secrets: tuple[str, ...] = ()) -> Any:
        return self.store.sink(run_id=spec.run_id, stage_id=spec.stage_id, attempt=spec.number, secrets=secrets)

    async def run(self, spec: base.AttemptSpec, secrets: tuple[str, ...] = ()) -> base.AttemptResult:
        handle = await self.executor.start(spec, self.sink(spec, secrets))
        return await self.executor.wait(handle)

    def log(self, spec: base.AttemptSpec) -> list[tuple[str, str]]:
        return [(line.stream, line.text) for line in self.store.read(spec.run_id, stage_id=spec.stage_id)]


@pytest.fixture
async def harness(tmp_path: pathlib.Path, docker_daemon: Daemon) -> Any:
    h = Harness(tmp_path, docker_daemon, None)  # type: ignore[arg-type]
    h.executor = h.new_executor()
    yield h
    await h.executor.close()
