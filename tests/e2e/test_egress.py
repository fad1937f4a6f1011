"""What pods may reach outside the cluster: the package registry yes, private addresses no.

The guard test never sends its probe off this machine, even if the guard were broken: it first
routes the probe range into a network namespace of its own (a veth pair), with a listener
there, and only then lets a pod try to connect.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from .support import Cluster, Pods

PROBE_NETNS = "kl-e2e-probe"
HOST_IF, NS_IF = "kl-probe-h", "kl-probe-n"
HOST_ADDR, PROBE_ADDR, PROBE_PORT = "192.168.254.1", "192.168.254.2", 8080


def _sh(*args: str, check: bool = True) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _remove_probe_network() -> None:
    _sh("ip", "link", "del", HOST_IF, check=False)
    _sh("ip", "netns", "del", PROBE_NETNS, check=False)


@pytest.fixture
def probe_target(local_cluster: Cluster) -> Iterator[subprocess.Popen[str]]:
    """A listener at PROBE_ADDR:PROBE_PORT inside a netns that the probe range is routed to."""
    _remove_probe_network()
    _sh("ip", "netns", "add", PROBE_NETNS)
    listener = None
    try:
        _sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        _sh("ip", "link", "set", NS_IF, "netns", PROBE_NETNS)
        _sh("ip", "addr", "add", f"{HOST_ADDR}/24", "dev", HOST_IF)
        _sh("ip", "link", "set", HOST_IF, "up")
        _sh("ip", "-n", PROBE_NETNS, "addr", "add", f"{PROBE_ADDR}/24", "dev", NS_IF)
        _sh("ip", "-n", PROBE_NETNS, "link", "set", NS_IF, "up")
        _sh("ip", "-n", PROBE_NETNS, "link", "set", "lo", "up")
        # Safety first: the probe address must now be routed into our namespace.
        route = _sh("ip", "route", "get", PROBE_ADDR)
        assert f"dev {HOST_IF}" in route, f"probe address not routed to the test netns: {route}"

        listener = subprocess.Popen(
            ["ip", "netns", "exec", PROBE_NETNS, sys.executable, "-m", "http.server",
             "--bind", PROBE_ADDR, str(PROBE_PORT)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:  # control: the host itself reaches the listener
            try:
                with socket.create_connection((PROBE_ADDR, PROBE_PORT), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the probe listener in the test netns did not come up")
                time.sleep(0.1)
        yield listener
    finally:
        if listener is not None:
            listener.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                listener.wait(timeout=5)
        _remove_probe_network()


def _guard_rejects(range_: str) -> int:
    """Packets the egress guard has rejected for destinations in range_."""
    out = _sh("iptables", "-w", "5", "-L", "KUBELINE-EGRESS", "-n", "-v", "-x")
    for line in out.splitlines():
        if "REJECT" in line and range_ in line:
            return int(line.split()[0])
    pytest.fail(f"no REJECT rule for {range_} in chain KUBELINE-EGRESS:\n{out}")


PROBE = textwrap.dedent(
    f"""
    import socket
    try:
        socket.create_connection(("{PROBE_ADDR}", {PROBE_PORT}), timeout=5).close()
        print("connected")
    except ConnectionRefusedError:
        print("refused")
    except OSError as exc:
        print("error", exc)
    """
)


def test_egress_guard_rejects_private_addresses(
    namespace: str, pods: Pods, probe_target: subprocess.Popen[str]
) -> None:
    before = _guard_rejects("192.168.0.0/16")
    started = time.monotonic()
    result = pods.run(namespace, name="probe", code=PROBE)
    assert result.phase == "Succeeded", result.logs
    assert result.logs.strip() == "refused", result.logs
    assert _guard_rejects("192.168.0.0/16") > before, "the REJECT did not come from the guard"
    assert time.monotonic() - started < 60

    probe_target.terminate()
    _, served = probe_target.communicate(timeout=5)
    assert not re.search(r'"GET|code 400', served), f"the listener was reached: {served}"


INSTALL_FROM_REGISTRY = textwrap.dedent(
    """
    import subprocess, sys
    subprocess.run(["uv", "pip", "install", "--quiet", "--no-cache", "--python", sys.executable,
                    "--target", "/tmp/pkgs", "six"], check=True)
    sys.path.insert(0, "/tmp/pkgs")
    import six
    print("six", six.__version__)
    """
)


def test_pod_installs_from_package_registry(namespace: str, pods: Pods) -> None:
    result = pods.run(namespace, name="pip", code=INSTALL_FROM_REGISTRY, timeout=120)
    assert result.phase == "Succeeded", result.logs
    assert result.logs.strip().splitlines()[-1].startswith("six 1.")
