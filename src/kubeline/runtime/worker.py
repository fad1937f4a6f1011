"""The worker of a ``kubernetes-pool`` pod: runs attempts sent to it, forked from a warm interpreter.

A pool is a Deployment; each of its pods runs this module (standard library only: the executor
ships its source, with ``warm_worker.py`` and ``results.py`` beside it, in the pool's ConfigMap,
so a server and an older worker image never disagree). It starts one ``warm_worker`` (the fork
server of the ``local-warm`` executor, started with a clean environment) and serves a small
HTTP API on ``PORT`` that only the executor calls, with the pool token in ``TOKEN_HEADER``
(compared in constant time; every route but ``/healthz`` refuses without it):

- ``POST /v1/attempts``: start one (idempotent per attempt id): code (a packed folder, unpacked
  once per content hash), inputs, config, env, script argv, timeout; its own work dir;
- ``GET /v1/attempts/ID?after=N&wait=S``: its log lines from N on, state, exit code, result;
  answers as soon as there is something new (a long poll: works the same through the API
  server's pod proxy, which buffers streamed answers, as over the pod IP);
- ``DELETE /v1/attempts/ID``: cancel a running attempt (its whole process group), or forget a
  finished one (its work dir is removed: the executor has its result);
- ``GET /v1/attempts``: what this pod holds (adoption after a server restart, draining).

The pod's connections are all inbound: it needs no route to the server, so a laptop reaches it
through the API server's pod proxy and an in-cluster server over the pod IP, and a
NetworkPolicy may deny pool pods all egress. The worker marks itself not dumpable, so the
attempts (same uid) cannot read its environment (the token) from ``/proc``.

Draining (scale-down, rollout): the preStop hook runs ``worker.py drain``: the pod takes no new
attempt (503) and the hook returns once every attempt it holds has finished and been collected,
so Kubernetes sends SIGTERM only then (within ``terminationGracePeriodSeconds``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.server
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PORT = 8790
TOKEN_HEADER = "X-Kubeline-Pool-Token"  # noqa: S105 - a header name (the API server proxy drops Authorization)
TOKEN_ENV = "KUBELINE_POOL_TOKEN"  # noqa: S105 - a variable name
MAX_LINES = 5000  # per answer
MAX_LINE = 64 * 1024
MAX_WAIT = 25.0
KILL_GRACE = 5.0
COLLECT_GRACE = 30.0  # seconds a finished attempt is held for its executor when draining
RETAIN = 3600.0  # seconds a finished attempt nobody collected (its server died) is kept
DRAIN_FILE = "draining"
_HERE = pathlib.Path(__file__).resolve().parent


class Attempt:
    def __init__(self, *, attempt_id: str, work: pathlib.Path, timeout: float | None) -> None:
        self.id = attempt_id
        self.work = work
        self.lines: list[list[Any]] = []  # from line number ``base`` on
        self.base = 0  # lines before it were read by the executor (it asked for later ones): dropped
        self.state = "running"
        self.exit_code: int | None = None
        self.failure: str | None = None
        self.error = ""
        self.outputs: dict[str, Any] = {}
        self.route: str | None = None
        self.pid = 0
        self.attempt_pid: int | None = None
        self.started = time.time()
        self.finished_at: float | None = None
        self.deadline = self.started + timeout if timeout else None
        self.cancelled = False
        self.changed = threading.Condition()

    def view(self, after: int) -> dict[str, Any]:
        start = max(after, self.base)
        lines = self.lines[start - self.base:start - self.base + MAX_LINES]
        return {"id": self.id, "state": self.state, "exit_code": self.exit_code, "failure": self.failure,
                "error": self.error, "lines": lines, "next": start + len(lines),
                "outputs": self.outputs if self.state != "running" else {},
                "route": self.route, "started": self.started}


class Worker:
    def __init__(self, *, root: pathlib.Path, token: str) -> None:
        self.root = root
        self.token = token.encode()
        self.attempts: dict[str, Attempt] = {}
        self.lock = threading.Lock()
        self.fork_lock = threading.Lock()
        self.codes: dict[str, pathlib.Path] = {}
        self.oom_kills = _oom_kills()
        (root / "attempts").mkdir(parents=True, exist_ok=True)
        (root / "code").mkdir(parents=True, exist_ok=True)
        self.sock, self.warm = _start_warm_worker()
        self.ids = 0
        self.slots = int(os.environ.get("KUBELINE_POOL_SLOTS") or 0)  # across every server replica

    # starting -------------------------------------------------------------------------
    def start(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        attempt_id = str(request.get("attempt_id", ""))
        if not attempt_id or "/" in attempt_id or attempt_id.startswith("."):
            return 400, {"error": "attempt_id missing or not a plain name"}
        self._prune()
        with self.lock:
            known = self.attempts.get(attempt_id)
            if known is not None:
                return 200, known.view(len(known.lines))
            refused = self._refusal(request)
            if refused is not None:
                return refused
            work = self.root / "attempts" / attempt_id
            attempt = Attempt(attempt_id=attempt_id, work=work, timeout=request.get("timeout"))
            self.attempts[attempt_id] = attempt
        try:
            self._launch(attempt, request)
        except Exception as exc:
            with self.lock:
                self.attempts.pop(attempt_id, None)
            shutil.rmtree(work, ignore_errors=True)
            return 500, {"error": f"cannot start the attempt on pool pod {socket.gethostname()}: {exc}"}
        threading.Thread(target=self._follow, args=(attempt,), daemon=True).start()
        return 201, attempt.view(0)

    def _prune(self) -> None:
        """Drop finished attempts no executor collected within ``RETAIN`` s (their server died
        and no other adopted them), so a long-lived pod does not fill its memory and emptyDir."""
        now = time.time()
        with self.lock:
            stale = [a for a in self.attempts.values() if a.finished_at is not None and now - a.finished_at > RETAIN]
            for attempt in stale:
                self.attempts.pop(attempt.id, None)
        for attempt in stale:
            shutil.rmtree(attempt.work, ignore_errors=True)

    def _refusal(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """Why this pod takes no new attempt now (draining, full: another pod may; another Python:
        none of the pool will), or None."""
        if (self.root / DRAIN_FILE).exists():
            return 503, {"error": "this pool pod is draining (scale-down or rollout); use another"}
        wanted = str(request.get("python_version") or "").split(".")
        have = [str(part) for part in sys.version_info[:3]]
        if wanted != [""] and wanted != have[:len(wanted)]:
            return 409, {"error": f"the stage asks for Python {'.'.join(wanted)} and this pool's pods run "
                                  f"{'.'.join(have)}: use a pool whose image has it, or executor: kubernetes"}
        running = sum(1 for a in self.attempts.values() if a.state == "running")
        if self.slots and running >= self.slots:
            return 429, {"error": f"all {self.slots} slots of this pool pod are busy; use another"}
        return None

    def _launch(self, attempt: Attempt, request: dict[str, Any]) -> None:
        work = attempt.work
        shutil.rmtree(work, ignore_errors=True)
        for sub in ("io", "artifacts", "tmp"):
            (work / sub).mkdir(parents=True, mode=0o700)
        for name in ("stdout", "stderr"):
            (work / name).touch()
        code = self._code(request)
        (work / "inputs.json").write_text(json.dumps(request.get("inputs") or {}))
        (work / "config.json").write_text(json.dumps(request.get("config") or {}))
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE")}
        env.update({"HOME": str(work / "tmp"), "TMPDIR": str(work / "tmp"), "PYTHONUNBUFFERED": "1",
                    "KUBELINE_INPUTS": str(work / "inputs.json"), "KUBELINE_CONFIG": str(work / "config.json"),
                    "KUBELINE_OUTPUTS": str(work / "io" / "outputs.json"),
                    "KUBELINE_ROUTE_FILE": str(work / "io" / "route"),
                    "KUBELINE_ARTIFACTS_DIR": str(work / "artifacts")})
        env.update({str(k): str(v) for k, v in (request.get("env") or {}).items()})
        argv = [str(a) for a in request.get("argv") or []]
        if not argv:
            raise ValueError("nothing to run (empty argv)")
        script = argv[0] if argv[0].startswith("/") else str(code / argv[0])
        message = {"work": str(work), "cwd": str(code), "argv": [script, *argv[1:]], "env": env, "cgroups": []}
        with self.fork_lock:
            self.ids += 1
            _send(self.sock, {**message, "id": self.ids})
            line = _read_line(self.sock)
        if not line:
            raise RuntimeError(f"the warm interpreter of this pod died ({self.warm.poll()}); the pod restarts it")
        reply = json.loads(line)
        attempt.pid = int(reply["pid"])
        attempt.attempt_pid = reply.get("attempt_pid")

    def _code(self, request: dict[str, Any]) -> pathlib.Path:
        """The pipeline folder, unpacked once per content hash (read-only for attempts)."""
        digest = str(request.get("code_sha256") or "none")
        if not digest.isalnum():
            raise ValueError("code_sha256 is not a hex digest")
        target = self.root / "code" / digest
        with self.lock:
            if digest in self.codes:
                return target
        data = request.get("code")
        if data is None:
            target.mkdir(exist_ok=True)
        else:
            import base64
            import io
            import tarfile

            raw = base64.b64decode(data)
            if hashlib.sha256(raw).hexdigest() != digest:
                raise ValueError("the code bundle does not match its code_sha256")
            staging = self.root / "code" / f".{digest}.{os.getpid()}.{threading.get_ident()}"
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
                _extract(tar, staging)
            with contextlib.suppress(OSError):
                staging.rename(target)
            shutil.rmtree(staging, ignore_errors=True)
        with self.lock:
            self.codes[digest] = target
        return target

    # following ------------------------------------------------------------------------
    def _follow(self, attempt: Attempt) -> None:
        """Copy the attempt's stdout/stderr into its lines; notice its exit (the rc file the
        attempt itself or its warm worker writes), its deadline and a cancel."""
        files = {name: (attempt.work / name).open("rb") for name in ("stdout", "stderr")}
        pending = dict.fromkeys(files, b"")
        rc_path = attempt.work / "rc"
        pause = 0.002
        exited = _exit_waiter(attempt.attempt_pid)
        try:
            while True:
                rc_seen = rc_path.exists()
                got = self._read_new(attempt, files, pending)
                if rc_seen:
                    self._read_new(attempt, files, pending, final=True)
                    self._finish(attempt, _read_rc(rc_path))
                    return
                if attempt.deadline is not None and time.time() > attempt.deadline and not attempt.cancelled:
                    attempt.failure = "timed_out"
                    attempt.error = f"exceeded its timeout of {attempt.deadline - attempt.started:g}s"
                    self.kill(attempt)
                if not _alive(attempt.pid) and not rc_path.exists():
                    self._read_new(attempt, files, pending, final=True)
                    self._finish(attempt, None)
                    return
                pause = 0.002 if got else min(pause * 2, 0.05)
                exited(pause)
        finally:
            exited(None)
            for file in files.values():
                file.close()

    def _read_new(self, attempt: Attempt, files: dict[str, Any], pending: dict[str, bytes],
                  *, final: bool = False) -> bool:
        new: list[list[Any]] = []
        for name, file in files.items():
            data = file.read()
            if not data and not (final and pending[name]):
                continue
            text = pending[name] + data
            parts = text.split(b"\n")
            pending[name] = parts.pop()
            if final and pending[name]:
                parts.append(pending[name])
                pending[name] = b""
            now = time.time()
            for part in parts:
                for start in range(0, max(len(part), 1), MAX_LINE):
                    new.append([now, name, part[start:start + MAX_LINE].decode("utf-8", "replace")])
        if new:
            with attempt.changed:
                attempt.lines.extend(new)
                attempt.changed.notify_all()
        return bool(new)

    def _finish(self, attempt: Attempt, code: int | None) -> None:
        oom = _oom_kills()
        if code is None:
            attempt.failure = attempt.failure or "lost"
            attempt.error = attempt.error or "its process ended without an exit status"
        elif attempt.cancelled and attempt.failure is None:
            attempt.failure, attempt.error = "cancelled", "cancelled"
        elif code == 137 and oom > self.oom_kills and attempt.failure is None:
            attempt.failure = "oom"
            attempt.error = "exceeded the memory of its pool pod (killed by the kernel's OOM killer)"
        elif code != 0 and attempt.failure is None:
            attempt.failure, attempt.error = "failed", f"exited with code {code}"
        self.oom_kills = oom
        if code == 0 and attempt.failure is None:
            try:
                body = _results().collect(attempt.work / "io")
                attempt.outputs, attempt.route = body["outputs"], body["route"]
            except ValueError as exc:
                attempt.failure, attempt.error = "failed", str(exc)
        with attempt.changed:
            attempt.exit_code = code
            attempt.finished_at = time.time()
            attempt.state = "finished"
            attempt.changed.notify_all()

    def kill(self, attempt: Attempt) -> None:
        """SIGTERM to the attempt's process group, SIGKILL after a grace period."""
        attempt.cancelled = attempt.cancelled or attempt.failure is None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(attempt.pid, signal.SIGTERM)

        def later() -> None:
            time.sleep(KILL_GRACE)
            if attempt.state == "running":
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(attempt.pid, signal.SIGKILL)

        threading.Thread(target=later, daemon=True).start()

    # reading, cancelling, forgetting ---------------------------------------------------
    def read(self, attempt_id: str, *, after: int, wait: float) -> tuple[int, dict[str, Any]]:
        attempt = self.attempts.get(attempt_id)
        if attempt is None:
            return 404, {"error": f"attempt {attempt_id} is not on pool pod {socket.gethostname()}"}
        until = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
        with attempt.changed:
            if after > attempt.base:  # the executor has every line before ``after``: memory stays bounded
                drop = min(after - attempt.base, len(attempt.lines))
                del attempt.lines[:drop]
                attempt.base += drop
            while attempt.base + len(attempt.lines) <= after and attempt.state == "running":
                left = until - time.monotonic()
                if left <= 0:
                    break
                attempt.changed.wait(left)
        return 200, attempt.view(after)

    def delete(self, attempt_id: str) -> tuple[int, dict[str, Any]]:
        attempt = self.attempts.get(attempt_id)
        if attempt is None:
            return 404, {"error": f"attempt {attempt_id} is not on pool pod {socket.gethostname()}"}
        if attempt.state == "running":
            self.kill(attempt)
            return 202, {"state": "cancelling"}
        with self.lock:
            self.attempts.pop(attempt_id, None)
        shutil.rmtree(attempt.work, ignore_errors=True)
        return 200, {"state": "forgotten"}

    def summary(self) -> dict[str, Any]:
        """What this pod holds; ``held``: attempts running, or finished and not yet collected by
        an executor (for ``COLLECT_GRACE`` s: one that died is not waited for forever)."""
        now = time.time()
        attempts = list(self.attempts.values())
        held = [a.id for a in attempts if a.finished_at is None or now - a.finished_at < COLLECT_GRACE]
        return {"pod": socket.gethostname(), "draining": (self.root / DRAIN_FILE).exists(),
                "attempts": {a.id: a.state for a in attempts}, "held": held}


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "kubeline-pool-worker"
    protocol_version = "HTTP/1.1"
    worker: Worker

    def setup(self) -> None:
        super().setup()
        # headers and body leave in two writes: without this, Nagle holds the body for the
        # client's delayed ACK (40 ms per answer)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _allowed(self) -> bool:
        given = (self.headers.get(TOKEN_HEADER) or "").encode()
        if hmac.compare_digest(given, self.worker.token):
            return True
        self._answer(401, {"error": f"a pool token is required in {TOKEN_HEADER}"})
        return False

    def _route(self) -> tuple[str, dict[str, str]]:
        path, _, query = self.path.partition("?")
        params = dict(part.partition("=")[::2] for part in query.split("&") if part)
        return path.rstrip("/"), params

    def do_GET(self) -> None:
        path, params = self._route()
        if path == "/healthz":
            self._answer(200, {"ok": True})
            return
        if not self._allowed():
            return
        if path == "/v1/attempts":
            self._answer(200, self.worker.summary())
        elif path.startswith("/v1/attempts/"):
            try:
                after, wait = int(params.get("after", "0")), float(params.get("wait", "0"))
            except ValueError:
                self._answer(400, {"error": "after must be an integer and wait a number"})
                return
            self._answer(*self.worker.read(path.rsplit("/", 1)[1], after=after, wait=wait))
        else:
            self._answer(404, {"error": f"no route {path}"})

    def do_POST(self) -> None:
        path, _ = self._route()
        if not self._allowed():
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length))
        except ValueError:
            self._answer(400, {"error": "the body is not JSON"})
            return
        if path == "/v1/attempts" and isinstance(request, dict):
            self._answer(*self.worker.start(request))
        else:
            self._answer(404, {"error": f"no route POST {path}"})

    def do_DELETE(self) -> None:
        path, _ = self._route()
        if not self._allowed():
            return
        if path.startswith("/v1/attempts/"):
            self._answer(*self.worker.delete(path.rsplit("/", 1)[1]))
        else:
            self._answer(404, {"error": f"no route DELETE {path}"})


def _extract(tar: Any, target: pathlib.Path) -> None:
    """Every member inside ``target``, no devices or links out (PEP 706's data filter where the
    image's Python has it, the same checks by hand where not)."""
    import tarfile

    if hasattr(tarfile, "data_filter"):
        tar.extractall(target, filter="data")
        return
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    for member in tar.getmembers():
        if not (target / member.name).resolve().is_relative_to(root) or member.isdev() or member.islnk() \
                or (member.issym() and not (target / member.name).parent.joinpath(member.linkname).resolve()
                    .is_relative_to(root)):
            raise ValueError(f"code bundle: refusing {member.name!r}")
    tar.extractall(target)  # noqa: S202 - members checked above


def _start_warm_worker() -> tuple[socket.socket, subprocess.Popen[bytes]]:
    """The fork server, with an environment that holds no token (its forks see it in /proc)."""
    ours, theirs = socket.socketpair()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBELINE_")}
    proc = subprocess.Popen([sys.executable, str(_HERE / "warm_worker.py"), str(theirs.fileno())],
                            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env, cwd="/",
                            start_new_session=True)
    theirs.close()
    line = _read_line(ours)
    if not line.startswith(b"{"):
        raise SystemExit(f"kubeline pool worker: the warm interpreter did not start (exit {proc.poll()})")
    return ours, proc


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message).encode() + b"\n")


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    return data[:-1]


def _read_rc(path: pathlib.Path) -> int | None:
    """The exit status in ``rc``: the attempt writes it in place just before it exits, so it may
    be seen empty for a moment (its warm worker then renames its own copy over it)."""
    until = time.monotonic() + 1.0
    while True:
        try:
            text = path.read_text().strip()
        except OSError:
            text = ""
        if text.lstrip("-").isdigit():
            return int(text)
        if time.monotonic() > until:
            return None
        time.sleep(0.001)


def _exit_waiter(pid: int | None) -> Any:
    """``wait(seconds)``: sleep that long, or less when the attempt process exits (a pidfd:
    its end is seen at once, while its output is still read every few milliseconds);
    ``wait(None)`` releases it."""
    fd = -1
    if pid:
        with contextlib.suppress(OSError, AttributeError):
            fd = os.pidfd_open(pid)
    if fd < 0:
        return lambda seconds: time.sleep(seconds) if seconds else None
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN)

    def wait(seconds: float | None) -> None:
        nonlocal fd
        if seconds is None:
            if fd >= 0:
                os.close(fd)
                fd = -1
            return
        if fd >= 0 and poller.poll(seconds * 1000):
            poller.unregister(fd)
            os.close(fd)
            fd = -1
            return
        if fd < 0:
            time.sleep(seconds)

    return wait


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _oom_kills() -> int:
    """OOM kills in this container's memory cgroup so far (v2 ``memory.events``, v1 ``oom_control``)."""
    for path, key in (("/sys/fs/cgroup/memory.events", "oom_kill"),
                      ("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill")):
        with contextlib.suppress(OSError, ValueError):
            for line in pathlib.Path(path).read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    return 0


def _results() -> Any:
    sys.path.insert(0, str(_HERE))
    try:
        import kubeline_results  # type: ignore[import-not-found]

        return kubeline_results
    except ImportError:
        from kubeline.runtime import results

        return results
    finally:
        sys.path.remove(str(_HERE))


def _not_dumpable() -> None:
    """Attempts run as this uid: keep them from reading the token out of ``/proc/PID/environ``."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4


def drain(root: pathlib.Path, *, port: int, token: str, limit: float) -> int:
    """The preStop hook: no new attempts, then wait until every attempt here has been collected."""
    (root / DRAIN_FILE).touch()
    import urllib.request

    until = time.monotonic() + limit
    while time.monotonic() < until:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/attempts", headers={TOKEN_HEADER: token})
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
                held = json.loads(answer.read())["held"]
        except OSError:
            return 0
        if not held:
            return 0
        time.sleep(0.5)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = pathlib.Path(os.environ.get("KUBELINE_WORK", "/kubeline/work"))
    port = int(os.environ.get("KUBELINE_POOL_PORT", str(PORT)))
    token = os.environ.pop(TOKEN_ENV, "")
    if not token:
        print(f"kubeline pool worker: {TOKEN_ENV} is not set (the pool's Secret)", file=sys.stderr)
        return 2
    _not_dumpable()  # the drain hook too: it holds the token while it waits
    if args[:1] == ["drain"]:
        return drain(root, port=port, token=token, limit=float(args[1]) if len(args) > 1 else 3600.0)
    worker = Worker(root=root, token=token)
    handler = type("BoundHandler", (Handler,), {"worker": worker})
    server = http.server.ThreadingHTTPServer(("", port), handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"kubeline pool worker {socket.gethostname()} serving on port {port}", file=sys.stderr, flush=True)
    server.serve_forever(poll_interval=0.5)
    for attempt in list(worker.attempts.values()):  # as the container's end would: none outlives the worker
        if attempt.state == "running":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(attempt.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
