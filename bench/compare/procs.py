"""Peer servers as process groups: started with ``setsid``, stopped by signalling the whole group
(Airflow's scheduler may ignore SIGTERM while its LocalExecutor workers live, so SIGKILL follows)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Group:
    """A command in its own session; its output goes to ``log``."""

    def __init__(self, argv: list[str], *, env: Mapping[str, str], log: pathlib.Path, cwd: pathlib.Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 15.0) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group even if the leader exited
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._out.close()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, group: Group | None = None,
             every: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail with the server's log tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if group is not None and not group.alive():
            raise RuntimeError(f"{what}: the server exited ({group.proc.returncode}); log tail:\n{group.tail()}")
        with contextlib.suppress(Exception):
            found = check()
            if found:
                return found
        time.sleep(every)
    tail = f"; log tail:\n{group.tail()}" if group is not None else ""
    raise TimeoutError(f"{what}: not done after {timeout:.0f}s{tail}")


def http_json(url: str, *, method: str = "GET", body: Any = None, timeout: float = 30.0) -> Any:
    import json

    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"loopback only: {url}")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for attempt in range(5):  # a busy SQLite server answers 503 now and then: retry a few times
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
