"""The operator loop (``runner.run_operator``, real kopf) in its own process: a stop signal that
kopf's handlers took while it started stops the process, and a leader that lost its Lease stops
acting (then leads again when the Lease is free). Both bugs let two replicas act at once: the
first kept a terminating pod leading until the kubelet's SIGKILL, the second kept kopf running
after another replica had taken over."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent


@pytest.fixture
def kubeconfig(tmp_path: pathlib.Path) -> pathlib.Path:
    """A kubeconfig naming a port on this machine that nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: not-a-real-token}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
""")
    return path


def run(mode: str, kubeconfig: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HERE / "operator_process.py"), mode], capture_output=True, text=True,
                          timeout=150, env={**os.environ, "KUBECONFIG": str(kubeconfig)})


def test_a_stop_signal_taken_by_kopf_while_it_starts_stops_the_process(kubeconfig: pathlib.Path) -> None:
    proc = run("signal", kubeconfig)
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1:] == ["stopped"], proc.stdout + proc.stderr[-3000:]
    assert "the operator took this process's stop signal: stopping" in proc.stderr
    assert proc.stderr.count("terminate' succeeded") == 1, "kopf was started again after the signal"


def test_a_leader_that_lost_its_lease_stops_acting_then_leads_again(kubeconfig: pathlib.Path) -> None:
    proc = run("lease", kubeconfig)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("stepped down "), proc.stdout
    # renewals every 0.5 s, the deadline 2 s: the next failed renewal (0.5 s) ends it; a loaded machine gets 5 s
    assert float(lines[0].split()[-1]) < 5, proc.stdout
    assert lines[1:] == ["leader again"], proc.stdout + proc.stderr[-3000:]
