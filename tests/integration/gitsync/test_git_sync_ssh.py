"""Git sync over SSH to a loopback ``sshd`` the test starts (own config, port, host key;
127.0.0.1 only), with a deploy key Kubeline generates and the host key pinned.

openssh-server is installed by the test setup (``kubeline.testing.apt_install``); without it the
test skips with the reason, and fails instead under ``KUBELINE_REQUIRE_SSHD=1`` (``.ci/run``).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from kubeline import testing
from kubeline.domain import repos
from kubeline.storage.sql import SqlStore

from .conftest import GOOD, Origin, make_sync

SSHD = "/usr/sbin/sshd"


def _unavailable(reason: str) -> None:
    if os.environ.get("KUBELINE_REQUIRE_SSHD") == "1":
        pytest.fail(f"sshd required (KUBELINE_REQUIRE_SSHD=1) but unavailable: {reason}")
    pytest.skip(f"sshd unavailable: {reason}")


class Sshd:
    def __init__(self, root: pathlib.Path, port: int) -> None:
        self.root, self.port = root, port
        self.authorized = root / "authorized_keys"
        self.host_key = root / "host_ed25519"

    def known_hosts(self) -> str:
        key_type, key = (self.host_key.with_suffix(".pub")).read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {key_type} {key}\n"


@pytest.fixture
def sshd(tmp_path: pathlib.Path) -> Iterator[Sshd]:
    if not pathlib.Path(SSHD).exists():
        reason = testing.apt_install("openssh-server")
        if reason:
            _unavailable(reason)
    if os.geteuid() != 0:
        _unavailable("the test logs in as the current user over ssh and needs root for sshd's privilege separation")
    root = tmp_path / "sshd"
    root.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Sshd(root, port)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(server.host_key)], check=True)
    server.authorized.touch(mode=0o600)
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {server.host_key}\nPidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {server.authorized}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPubkeyAuthentication yes\n")
    pathlib.Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir sshd requires
    with (root / "sshd.log").open("wb") as log:
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
                                   stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    _unavailable(f"sshd did not start: {(root / 'sshd.log').read_text()[-500:]}")
                time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=10)


def _other_host_key(path: pathlib.Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text()


async def test_ssh_deploy_key_and_pinned_host_key(tmp_path: pathlib.Path, origin: Origin, store: SqlStore,
                                                  sshd: Sshd) -> None:
    first = origin.commit(GOOD)
    url = f"ssh://{os.environ.get('USER', 'root')}@127.0.0.1:{sshd.port}{origin.bare}"
    unpinned = repos.RepoSpec(name="team", url=url, subdir="pipelines")
    state = await make_sync(tmp_path / "u", store, unpinned).sync("team")
    assert state.status == "unreachable" and "no host key is pinned" in state.message

    spec = repos.RepoSpec(name="team", url=url, subdir="pipelines", known_hosts=sshd.known_hosts())
    sync = make_sync(tmp_path / "git", store, spec)
    state = await sync.sync("team")  # no deploy key yet
    assert state.status == "unreachable" and "kubeline git keygen team" in state.message

    public = await sync.generate_key("team")
    assert public.startswith("ssh-ed25519 ") and public.endswith(" kubeline-team")
    assert (await sync.public_key("team")).split()[:2] == public.split()[:2]
    assert "PRIVATE KEY" in await sync.secrets.get("GIT_TEAM_DEPLOY_KEY")
    state = await sync.sync("team")
    assert state.status == "unreachable"  # the key is not authorised on the server yet
    assert "Permission denied" in state.message
    sshd.authorized.write_text(public + "\n")
    state = await sync.sync("team")
    assert (state.status, state.good_commit) == ("ok", first), state.message
    assert {p.name: repos.commit_of(p.path) for p in await store.list_pipelines()} == {"hello": first,
                                                                                       "report": first}

    forged = f"[127.0.0.1]:{sshd.port} " + " ".join(_other_host_key(tmp_path / "other").split()[:2])
    second = origin.commit({"pipelines/hello/main.py": "print(2)\n"})
    mitm = make_sync(tmp_path / "mitm", store, repos.RepoSpec(name="team", url=url, subdir="pipelines",
                                                               known_hosts=forged))
    state = await mitm.sync("team")
    assert state.status == "unreachable" and "Host key verification failed" in state.message
    assert state.good_commit == first and second != first
    assert shutil.which("ssh")
