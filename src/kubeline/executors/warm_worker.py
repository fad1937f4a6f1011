"""The warm worker: a pre-started interpreter of a pipeline's venv that forks one attempt per request.

Started by ``warm_pool`` as ``VENV/bin/python warm_worker.py FD`` (FD: its end of a socketpair),
so it runs in the pipeline's own interpreter and imports only the standard library. It never
runs user code itself. Per request (one JSON line) it forks a *supervisor* that mirrors the
``/bin/sh`` wrapper of the local executor, so the executor follows both kinds of attempt with
the same code (``local_run.Attempt``) and a restarted server adopts them the same way::

    worker --fork--> supervisor: setsid, trap TERM/INT, join cgroups (itself and the attempt)
                     --fork--> attempt: stdio -> WORK/stdout|stderr, cd FOLDER, env, sys.argv,
                                        run the script
                     waitpid(attempt) -> WORK/rc (128 + signal when killed, like sh)

Supervisors are pre-forked: a spare (already in its own session, its attempt process forked
too) waits for the next request, so a start costs a few pipe writes, and the worker forks the
next spare while the attempt runs. Requests come pipelined (the ready stages of a fan-out in one
write) and are served in order. For ``local-warm`` a request carries the handle's intent: the
worker makes the work dir and writes ``handle.json`` (the intent with the pids) before it
replies, which is what a restarted server ``find``s the attempt by, and the attempt process
writes its inputs and config and makes its artifacts dir before it runs the script: the
server's event loop creates no file to start an attempt. A request it cannot serve (a missing
folder) gets an error reply and keeps the spare. (The ``kubernetes-pool`` worker prepares its
own work dirs and sends no intent.) The worker holds a pipe to the spare's supervisor and one
to its attempt process: without cgroups to join it writes the request to the attempt itself
(it starts at once, one process wake-up earlier) and then to the supervisor (which only needs
it once the attempt ends); with cgroups only the supervisor gets it, joins them and passes it
on, so all the attempt does counts. The worker replies with the spare's pid and start time
*before* it hands the request over: a worker that dies before replying has started nothing,
so the executor safely retries on another worker; one that dies in the few microseconds
between the reply and the handover leaves a supervisor that kills its attempt and exits
without a status, which the executor reports as LOST (never a double run). Supervisors are
reaped by the kernel (``SIGCHLD`` ignored) and do not depend on the worker: killing a worker
does not touch the attempts it started.

Ending sooner: an attempt that ends by itself writes ``WORK/rc`` just before ``_exit``, and the
reply names the attempt process too (pid and start time, which its supervisor tells the worker
when it forks it), so the executor learns of the end from the attempt's own exit, without
waiting for the supervisor to wake, write ``rc`` and exit (about 2 ms). The supervisor then
writes ``rc`` only when it differs (128 + the signal that killed the attempt, or none written)
and is what a restarted server falls back on.

The attempt runs the script the way ``python -u SCRIPT ARGS`` would: a fresh ``__main__``
module, ``sys.argv``, ``sys.path[0]`` = the script's directory (+ ``PYTHONPATH`` from its env),
uncaught exceptions printed by ``sys.excepthook`` without this module's frames, ``SystemExit``
codes as Python maps them. Shutdown is Python's sequence minus the module teardown: join
non-daemon threads, run ``atexit``, drop ``__main__``'s globals (so their finalizers run, e.g.
an unclosed file is flushed), collect garbage, flush stdio (120 when that fails), ``_exit``.
A full ``Py_FinalizeEx`` in a forked child writes to every inherited object (refcounts, GC
headers), so each page of the worker is copied: measured here 5-10 ms of a ~7 ms attempt.
For the same reason the worker ``gc.freeze()``s what it has imported before it forks.
Even so, the first writes of a fresh fork copy a few hundred pages (refcounts, the objects
parsing, compiling and running a script touch): measured 3.6 ms of a trivial attempt. So a
spare attempt process *rehearses* while it waits for its request (``_rehearse``: parse a
request like its own, compile and run a throwaway script, collect garbage, write to its
/dev/null stdio), which copies those pages off the critical path (then 0.8 ms). The rehearsal
uses only modules the worker imported and leaves nothing behind.
What a started interpreter cannot change afterwards (``-X`` options, ``PYTHONHASHSEED`` and
other startup variables) is why the executor sends such stages to a fresh process instead.
"""

# os.path and open(): the worker keeps its imports to the minimum
# ruff: noqa: PTH100, PTH102, PTH103, PTH104, PTH106, PTH108, PTH112, PTH118, PTH120, PTH123

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
from typing import Any

_RC = ""  # the attempt's WORK/rc, once it runs
_NO_CGROUP = 125  # same codes as the sh supervisor's failures
_NO_CWD = 126


_MAX_FD = 1 << 20


class _Spare:
    """A pre-forked supervisor (already in its own session) waiting for its request."""

    def __init__(self, pid: int, requests: int, attempt: int, status: int) -> None:
        self.pid = pid
        self.start = _start_ticks(pid)
        self.requests = requests  # write end: to the supervisor
        self.attempt = attempt  # write end: to its attempt process
        self.status = status  # read end: the supervisor says its attempt's pid
        self._attempt: tuple[int | None, int | None] | None = None

    def attempt_pid(self) -> tuple[int | None, int | None]:
        """The pid and start time of the spare's attempt process (None: it never said)."""
        if self._attempt is None:
            line = _read_line(self.status)
            os.close(self.status)
            pid = int(line) if line.isdigit() else None
            self._attempt = (pid, None if pid is None else _start_ticks(pid))
        return self._attempt


def main() -> None:
    del sys.path[0]  # this file's directory: user code must not import the executor's modules
    sock = int(sys.argv[1])
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors: reaped by the kernel
    _preload()
    gc.freeze()  # what is imported now is shared with every fork, never scanned there
    _send(sock, {"ready": True, "pid": os.getpid(), "python": sys.version.split()[0]})
    pipes = _serve(sock)
    if pipes is None:
        return
    attempt = _supervise(*pipes)
    _rehearse()
    line = _read_line(attempt)
    if not line:  # the worker and the supervisor are gone: this spare was never handed out
        os._exit(0)
    os.close(attempt)
    _run_attempt(json.loads(line))


def _preload() -> None:
    """Kubeline's own import-light helper (copied into every venv) and the modules it uses."""
    import types  # noqa: F401 - used by every attempt

    with contextlib.suppress(ImportError):  # without the shim, scripts import it themselves
        import kubeline.task  # noqa: F401


def _serve(sock: int) -> tuple[int, int, int, int] | None:
    """Hand each request to a spare supervisor, then fork the next spare while it runs.

    Returns only in a forked supervisor (its pipe ends: see ``_fork_spare``), or None at EOF.
    """
    pending = b""
    spare: _Spare | None = None
    while True:
        if spare is None:
            forked = _fork_spare(sock)
            if isinstance(forked, tuple):
                return forked
            spare = forked
        try:
            chunk = os.read(sock, 1 << 16)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None  # the spare reads EOF and exits
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if spare is None:
                forked = _fork_spare(sock)
                if isinstance(forked, tuple):
                    return forked
                spare = forked
            request = json.loads(line)
            attempt_pid, attempt_start = spare.attempt_pid()
            reply = {"id": request["id"], "pid": spare.pid, "start": spare.start,
                     "attempt_pid": attempt_pid, "attempt_start": attempt_start}
            if "handle" in request:  # local-warm: the work dir is made here (the pool's worker makes its own)
                reply["handle"] = {**request["handle"], "pid": spare.pid, "pgid": spare.pid,
                                   "proc_start": spare.start, "warm_worker": os.getpid(),
                                   "attempt_pid": attempt_pid, "attempt_start": attempt_start}
                refused = _prepare(request, reply["handle"])
                if refused:  # nothing started: the spare waits for the next request
                    _send(sock, {"id": request["id"], "error": refused})
                    continue
            # Reply first: a worker that dies before the reply has started nothing.
            _send(sock, reply)
            # The supervisor's copy first: once the attempt runs it may end, and the executor
            # then kills the supervisor. Either may be gone (killed): the worker goes on.
            with contextlib.suppress(OSError):
                _write_all(spare.requests, line)
            os.close(spare.requests)
            if not request["cgroups"]:  # nothing to join first: straight to the attempt
                with contextlib.suppress(OSError):
                    _write_all(spare.attempt, line + b"\n")
            os.close(spare.attempt)
            spare = None


def _prepare(request: dict[str, Any], handle: dict[str, Any]) -> str:
    """Make the attempt's work dir with its handle (what a restarted server finds it by); the
    reason it cannot start, or "" (see ``local.LocalExecutor._spawn`` for the same steps)."""
    folder = request.get("folder")
    if folder is not None and not os.path.isdir(folder):
        return f"pipeline folder {folder} does not exist"
    work = request["work"]
    try:
        try:
            os.mkdir(work, 0o700)
        except FileExistsError:  # left by a start that crashed before handing out a handle
            _remove_tree(work)
            os.mkdir(work, 0o700)
        _write_new(os.path.join(work, "handle.json"), json.dumps(handle).encode())
    except OSError as exc:
        with contextlib.suppress(OSError):
            _remove_tree(work)
        return f"cannot prepare its work dir {work}: {exc.strerror or exc}"
    return ""


def _remove_tree(path: str) -> None:
    for parent, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(parent, name))
        for name in dirs:
            os.rmdir(os.path.join(parent, name))
    os.rmdir(path)


def _fork_spare(sock: int) -> _Spare | tuple[int, int, int, int]:
    """Fork a supervisor; in it, returns (request read end, attempt read end, attempt write end,
    status write end)."""
    requests, to_supervisor = os.pipe()
    attempt, to_attempt = os.pipe()
    status, to_worker = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(to_supervisor)
        os.close(status)
        os.close(sock)
        return requests, attempt, to_attempt, to_worker
    os.close(requests)
    os.close(attempt)
    os.close(to_worker)
    return _Spare(pid, to_supervisor, to_attempt, status)


def _supervise(requests: int, attempt: int, to_attempt: int, to_worker: int) -> int:
    """The supervisor: returns only in its forked attempt process (the fd of its request)."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # hold none of the worker's pipes
        os.dup2(devnull, fd)
    _close_all_but({requests, attempt, to_attempt, to_worker})
    os.setsid()
    signal.signal(signal.SIGTERM, _ignore)  # the attempt dies, the supervisor records it
    signal.signal(signal.SIGINT, _ignore)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.close(to_attempt)
        os.close(requests)
        os.close(to_worker)
        return attempt
    os.close(attempt)
    _write_all(to_worker, f"{pid}\n".encode())
    os.close(to_worker)
    data = _read_all(requests)
    if not data:  # the worker is gone: this spare was never handed out (or only to the attempt)
        os.kill(pid, signal.SIGKILL)
        os._exit(0)
    request = json.loads(data)
    work = request["work"]
    if request["cgroups"]:
        for path in request["cgroups"]:  # before the attempt gets its request: all it does counts
            try:
                _write(path, f"{os.getpid()}\n")
                _write(path, f"{pid}\n")
            except OSError:
                os.kill(pid, signal.SIGKILL)
                _finish(work, _NO_CGROUP)
        _write_all(to_attempt, data + b"\n")
    os.close(to_attempt)
    _write(os.devnull, "0\n")  # the rc write after the attempt: its pages copied now
    status = -1
    with contextlib.suppress(ChildProcessError):
        _, status = os.waitpid(pid, 0)
    if status == -1:
        _finish(work, 1)
    code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    if not os.WIFSIGNALED(status) and _read_rc(work) == f"{code}\n".encode():
        os._exit(0)  # the attempt wrote this very status as it ended: two file operations less
    _finish(work, code)
    return -1  # not reached


_REHEARSAL = compile(  # what a small script makes Python do: define, call, loop, format
    "def f(n):\n    return n if n < 2 else f(n - 1) + f(n - 2)\n"
    "values = [f(i) for i in range(8)]\ntext = ' '.join(str(v) for v in values)\n",
    "<kubeline-rehearsal>", "exec")


def _rehearse() -> None:
    """Touch, in this fresh fork, the pages an attempt's start and end write (see above)."""
    request = json.loads(json.dumps({"work": "/", "cwd": "/", "argv": ["main.py"],
                                     "env": dict(os.environ), "cgroups": [],
                                     "files": {"inputs.json": "{}", "config.json": "{}"},
                                     "dirs": []}))
    os.path.dirname(os.path.realpath(request["argv"][0]))
    scratch: dict[str, Any] = {"__name__": "__kubeline_rehearsal__", "__builtins__": __builtins__}
    exec(_REHEARSAL, scratch)  # noqa: S102 - a constant of this module
    scratch.clear()
    del request, scratch
    for stream in (sys.stdout, sys.stderr):  # /dev/null until the attempt's files replace it
        with contextlib.suppress(Exception):
            stream.write("")
            stream.flush()
    gc.collect()


def _run_attempt(request: dict[str, Any]) -> None:
    global _RC  # noqa: PLW0603 - where _shutdown writes the exit code
    work = request["work"]
    _RC = os.path.join(work, "rc")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(os.open(os.path.join(work, "stdout"), flags, 0o666), 1)
    os.dup2(os.open(os.path.join(work, "stderr"), flags, 0o666), 2)
    os.closerange(3, _MAX_FD)
    try:  # what the server's loop used to write before the start: done here, off its path
        for name, text in request.get("files", {}).items():
            _write_new(os.path.join(work, name), text.encode())
        for path in request.get("dirs", ()):
            os.makedirs(path, exist_ok=True)
    except OSError as exc:
        sys.stderr.write(f"cannot prepare the attempt: {exc}\n")
        os._exit(_NO_CWD)
    try:
        os.chdir(request["cwd"])
    except OSError as exc:
        sys.stderr.write(f"cannot change to {request['cwd']}: {exc.strerror}\n")
        os._exit(_NO_CWD)
    env: dict[str, str] = request["env"]
    os.environ.clear()
    os.environ.update(env)
    argv: list[str] = request["argv"]
    script = argv[0]
    sys.argv = list(argv)
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[0:0] = [os.path.dirname(os.path.realpath(script)), *extra]
    if env.get("PYTHONDONTWRITEBYTECODE"):
        sys.dont_write_bytecode = True
    main = _new_main(script)
    try:
        code = _execute(script, main)
    except SystemExit as exc:
        code = _exit_code(exc)
    _shutdown(code, main)


def _new_main(script: str) -> Any:
    import types

    main = types.ModuleType("__main__")
    main.__dict__.update({"__file__": os.path.abspath(script), "__cached__": None,
                          "__builtins__": __builtins__})
    sys.modules["__main__"] = main
    return main


def _execute(script: str, main: Any) -> int:
    path = main.__file__
    try:
        with open(path, "rb") as file:
            source = file.read()
    except OSError as exc:
        sys.stderr.write(f"{sys.executable}: can't open file {path!r}: [Errno {exc.errno}] "
                         f"{exc.strerror}\n")
        return 2
    try:
        code = compile(source, path, "exec", dont_inherit=True)
        exec(code, main.__dict__)  # noqa: S102 - running the stage's script is the point
    except SystemExit:
        raise
    except BaseException as exc:  # printed like Python prints an uncaught exception
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    return 0


def _exit_code(exc: SystemExit) -> int:
    """What Python makes of ``sys.exit(x)``: None -> 0, an int as is, anything else printed -> 1."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    with contextlib.suppress(Exception):  # as Python: nothing left to report it to
        sys.stderr.write(f"{exc.code}\n")
    return 1


def _shutdown(code: int, main: Any) -> None:
    threading = sys.modules.get("threading")
    try:
        if threading is not None:
            threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except SystemExit as exc:
        code = _exit_code(exc)
    except BaseException:  # noqa: S110 - Python prints atexit errors itself and goes on
        pass
    main.__dict__.clear()
    gc.collect()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = 120 if code == 0 else code
    if _RC:  # the executor may learn the end from this process's exit (see the module doc)
        with contextlib.suppress(OSError):
            _write(_RC, f"{code}\n")
    os._exit(code)


def _read_rc(work: str) -> bytes:
    try:
        fd = os.open(os.path.join(work, "rc"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        return os.read(fd, 64)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _finish(work: str, code: int) -> None:
    """Write ``rc`` and end. Through a rename: the attempt may have written it already and
    the executor be reading it now (it must never see it empty)."""
    try:
        _write(os.path.join(work, "rc.tmp"), f"{code}\n")
        os.rename(os.path.join(work, "rc.tmp"), os.path.join(work, "rc"))
    finally:
        os._exit(0)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _write_new(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _close_all_but(keep: set[int]) -> None:
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _MAX_FD)


def _read_line(fd: int) -> bytes:
    """One newline-terminated message (without the newline); b'' at EOF before a full line."""
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b""
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)[:-1]


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _send(sock: int, message: dict[str, Any]) -> None:
    _write_all(sock, json.dumps(message).encode() + b"\n")


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    return int(data[data.rfind(b")") + 2:].split()[19])


def _ignore(signum: int, frame: object) -> None:
    return None


if __name__ == "__main__":
    main()
