"""The warm worker: a pre-started interpreter of a pipeline's venv that forks one attempt per request.

Started by ``warm_pool`` as ``VENV/bin/python warm_worker.py FD`` (FD: its end of a socketpair),
so it runs in the pipeline's own interpreter and imports only the standard library. It never
runs user code itself. Per request (one JSON line) it hands out an *attempt process*, one fork
of itself per attempt, which the executor follows like the ``/bin/sh`` wrapper of the local
executor (``local_run.Attempt``), and a restarted server adopts the same way::

    worker --fork--> attempt: setsid, join cgroups, stdio -> WORK/stdout|stderr, cd FOLDER,
                              env, sys.argv, run the script, WORK/rc as it ends
    worker on SIGCHLD: WORK/rc = 128 + signal when one killed it (or when it wrote none), reap

The attempt processes are pre-forked: a spare (already in its own session) waits for the next
request, so a start costs a pipe write, and the worker forks the next spare while the attempt
runs. Requests come pipelined (the ready stages of a fan-out in one write) and are served in
order. For ``local-warm`` a request carries the handle's intent: the worker makes the work dir
and writes ``handle.json`` (the intent with the pid) before it replies, which is what a
restarted server ``find``s the attempt by, and the attempt process writes its inputs and config
and makes its artifacts dir before it runs the script: the server's event loop creates no file
to start an attempt. A request it cannot serve (a missing folder) gets an error reply and keeps
the spare. (The ``kubernetes-pool`` worker prepares its own work dirs and sends no intent.)
The worker replies with the spare's pid and start time *before* it hands the request over: a
worker that dies before replying has started nothing, so the executor safely retries on another
worker; a spare whose worker dies before the handover reads EOF and exits without a status,
which the executor reports as LOST (never a double run).

One process per attempt: it used to run under a supervisor of its own (forked per attempt,
waiting for it to write ``rc``), two forks and two exits per attempt, about 3 ms of CPU here.
The worker is that supervisor now, for all its attempts at once: it is their parent, and on
``SIGCHLD`` it reads the status without reaping (``waitid`` with ``WNOWAIT``), writes ``rc``
when it differs from what the attempt wrote as it ended (128 + the signal that killed it, or
none written), and only then reaps. So an exit
status is in ``rc`` before the process is gone: the executor, woken by the attempt's pidfd,
reads ``rc``, else the status of the zombie (``local_limits.exit_status``), else ``rc`` again.
A worker that dies (killed, or its server gone) does not take its attempts with it: they run
on, and one that ends by itself still writes its ``rc``; only a signal that kills an attempt
after its worker is gone leaves no status (LOST, unless the server sees the zombie first).

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
uses only modules the worker imported and leaves nothing behind. A spare forked for a request
that is already waiting (the second and later ready stages of a fan-out, served back to back)
skips it: nothing is off the critical path there, and it costs ~0.5 ms of CPU per attempt.
For ``local-warm`` (started with a second fd, ``FD OFFERS_FD``) the worker keeps one spare
*offered* to the server: the spare's end of a socketpair goes to the server over OFFERS_FD
(SCM_RIGHTS) with its pid and start time, so a start is one write of the request to it (the
spare makes the work dir and ``handle.json`` itself), and the server tells the worker with a
one-way ``taken`` note. Such an attempt also writes its exit code on that socket right after
``rc`` as it ends, so the server need not wait for the teardown of its memory (~1 ms); a kill
that lands once the attempt wrote ``rc`` (the executor's group kill racing its exit) leaves
``rc`` as it is. Requests that find no offered spare come through the worker as above.
A request the server marks ``hold`` (``WarmExecutor.start_held``: the engine has not recorded
the attempt yet) is prepared up to its script, read and compiled, and then waits on the same
socket for ``go``, sent once the attempt is recorded; anything else (EOF: the record failed, or
the server is gone) and it removes its work dir and artifacts dir and ends having run nothing
of the stage, with no ``rc`` (nothing a restarted server could find as started).
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
_NOTE = -1  # an offered attempt's end of its channel to the server: its exit code, as it ends
_NOTE_CHANNEL: Any = None  # that end as a socket object, made while the spare waited
_NO_CGROUP = 125  # same codes as the sh supervisor's failures
_NO_CWD = 126
_ATTEMPTS: dict[int, str] = {}  # in the worker: pid -> work dir of the attempts it handed out
_OFFERED: set[int] = set()  # in the worker: spares offered to the server, not yet known taken
_ENDED: dict[int, tuple[int, int]] = {}  # offered spares reaped before the worker knew them taken


_MAX_FD = 1 << 20
_UNREAD = bytearray()  # in a spare: what its request pipe brought past the line read


class _Spare:
    """A pre-forked attempt process (already in its own session) waiting for its request."""

    def __init__(self, pid: int, requests: int) -> None:
        self.pid = pid
        self.start = _start_ticks(pid)
        self.requests = requests  # write end: to the spare


def main() -> None:
    del sys.path[0]  # this file's directory: user code must not import the executor's modules
    sock = int(sys.argv[1])
    offers = int(sys.argv[2]) if len(sys.argv) > 2 else None  # FD [OFFERS_FD]
    signal.signal(signal.SIGCHLD, _reap)
    _preload()
    if offers is not None:
        import socket  # noqa: F401 - for _offer, imported before the freeze
    gc.freeze()  # what is imported now is shared with every fork, never scanned there
    _send(sock, {"ready": True, "pid": os.getpid(), "python": sys.version.split()[0]})
    served = _serve(sock, offers)
    if served is None:
        return
    requests, wanted = served
    channel = _channel(requests)
    if not wanted:  # nothing waits for this spare yet: it has time to rehearse
        _rehearse()
    line = _read_line(requests)
    if not line:  # the worker (or the server it was offered to) is gone: never handed out
        os._exit(0)
    request = json.loads(line)
    if request.get("prepare"):  # handed over by the server itself: it hears the end here
        global _NOTE, _NOTE_CHANNEL  # what _shutdown and _fail write to
        _NOTE, _NOTE_CHANNEL = requests, channel
        if _prepare(request, request["handle"]):
            os._exit(_NO_CWD)  # no work dir to say more in: the executor reports it LOST
    else:
        if channel is not None:
            channel.detach()  # the fd is closed below, and its number may be the user's later
        os.close(requests)
    _run_attempt(request)


def _preload() -> None:
    """Kubeline's own import-light helper (copied into every venv) and the modules it uses, and
    those every attempt imports as it ends: a first import in the attempt was ~0.17 ms of it
    (``atexit``: the import machinery writes to pages the fork still shares)."""
    import atexit  # noqa: F401 - _shutdown
    import types  # noqa: F401 - _new_main

    with contextlib.suppress(ImportError):  # without the shim, scripts import it themselves
        import kubeline.task  # noqa: F401


def _serve(sock: int, offers: int | None) -> tuple[int, bool] | None:
    """Hand each request to a spare, then fork the next spare while it runs; with ``offers``
    (local-warm), keep one spare offered to the server instead, and fork a spare per request.

    Returns only in a forked spare (the read end of its request pipe, and whether a request
    waits for it already), or None at EOF.
    """
    pending = b""
    spare: _Spare | None = None
    offered = False  # with offers: the server holds a spare of this worker
    while True:
        if (spare is None) if offers is None else not offered:
            forked = _fork_spare(sock, duplex=offers is not None)
            if isinstance(forked, int):
                return forked, False
            if offers is None:
                spare = forked
            elif not _offer(offers, forked):
                return None  # the server is gone
            offered = True
        try:
            chunk = os.read(sock, 1 << 16)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None  # the spare reads EOF and exits
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            if "taken" in request:  # the server handed the offered spare a request itself
                _taken(request["taken"], request["work"])
                offered = False
                continue
            if spare is None:
                forked = _fork_spare(sock)
                if isinstance(forked, int):
                    return forked, True
                spare = forked
            if _hand_out(sock, request=request, line=line, spare=spare):
                spare = None


def _hand_out(sock: int, *, request: dict[str, Any], line: bytes, spare: _Spare) -> bool:
    """Reply to ``request`` and hand it to ``spare``; False when it is refused (the spare
    waits for the next request)."""
    reply = {"id": request["id"], "pid": spare.pid, "start": spare.start,
             "attempt_pid": spare.pid, "attempt_start": spare.start}
    if "handle" in request:  # local-warm: the work dir is made here (the pool's worker makes its own)
        reply["handle"] = {**request["handle"], "pid": spare.pid, "pgid": spare.pid,
                           "proc_start": spare.start, "warm_worker": os.getpid(),
                           "attempt_pid": spare.pid, "attempt_start": spare.start}
        refused = _prepare(request, reply["handle"])
        if refused:  # nothing started
            _send(sock, {"id": request["id"], "error": refused})
            return False
    _ATTEMPTS[spare.pid] = request["work"]  # from now on its end is recorded in rc
    # Reply first: a worker that dies before the reply has started nothing.
    _send(sock, reply)
    with contextlib.suppress(OSError):  # the spare may be gone (killed): the worker goes on
        _write_all(spare.requests, line + b"\n")
    os.close(spare.requests)
    return True


def _offer(offers: int, spare: _Spare) -> bool:
    """Give the server the spare's request pipe (SCM_RIGHTS) with its pid and start: a start
    then costs the server one pipe write, and no round trip through this worker."""
    import socket

    _OFFERED.add(spare.pid)
    try:
        with socket.socket(fileno=os.dup(offers)) as channel:
            socket.send_fds(channel, [json.dumps({"pid": spare.pid, "start": spare.start})
                                      .encode()], [spare.requests])
    except OSError:
        return False
    finally:
        os.close(spare.requests)  # the server's copy is the only writer: it gone, the spare exits
    return True


def _taken(pid: int, work: str | None) -> None:
    """The server handed the offered spare ``pid`` the attempt of ``work`` (None: it found the
    spare gone): from now on its end is recorded in ``rc``, also if it ended already."""
    if work is not None:
        _ATTEMPTS[pid] = work
    _OFFERED.discard(pid)
    ended = _ENDED.pop(pid, None)
    if ended is not None and _ATTEMPTS.pop(pid, None) is not None and work is not None:
        _settle(work, *ended)


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


def _fork_spare(sock: int, *, duplex: bool = False) -> _Spare | int:
    """Fork a spare attempt process; in it, returns the read end of its request pipe
    (``duplex``: a socket, on which it also tells the server its end)."""
    if duplex:
        import socket

        ours, theirs = socket.socketpair()
        requests, to_spare = ours.detach(), theirs.detach()
    else:
        requests, to_spare = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(to_spare)
        os.close(sock)
        _ATTEMPTS.clear()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # hold none of the worker's pipes
            os.dup2(devnull, fd)
        _close_all_but({requests})
        os.setsid()  # its own session and process group: what a timeout or cancel kills
        return requests
    os.close(requests)
    return _Spare(pid, to_spare)


def _reap(signum: int, frame: object) -> None:
    """SIGCHLD in the worker: for each ended attempt, its status into ``rc`` (unless it wrote
    that very status as it ended), then reap it; anything else is just reaped."""
    while True:
        try:
            ended = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return
        if ended is None or not ended.si_pid:
            return
        work = _ATTEMPTS.pop(ended.si_pid, None)
        if work is not None:
            _settle(work, ended.si_code, ended.si_status)
        elif ended.si_pid in _OFFERED:  # the server may have handed it a request: known soon
            _ENDED[ended.si_pid] = (ended.si_code, ended.si_status)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(ended.si_pid, 0)


def _settle(work: str, si_code: int, si_status: int) -> None:
    """An ended attempt's status into its ``rc``, unless it wrote that very status itself."""
    if si_code == os.CLD_EXITED:
        if _read_rc(work) != f"{si_status}\n".encode():
            _record_rc(work, si_status)
    elif not _read_rc(work):  # killed (or dumped core): as sh reports it; but once the attempt
        _record_rc(work, 128 + si_status)  # wrote rc it had ended (a kill racing its exit)


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
    os.environ["KUBELINE_REHEARSAL"] = "1"  # the environment's first change copies its array
    del os.environ["KUBELINE_REHEARSAL"]
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
    for path in request["cgroups"]:  # first: all the attempt does counts
        try:
            _write(path, f"{os.getpid()}\n")
        except OSError:
            _fail(_NO_CGROUP)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(os.open(os.path.join(work, "stdout"), flags, 0o666), 1)
    os.dup2(os.open(os.path.join(work, "stderr"), flags, 0o666), 2)
    _close_all_but({_NOTE} if _NOTE >= 0 else set())
    try:  # what the server's loop used to write before the start: done here, off its path
        for name, text in request.get("files", {}).items():
            _write_new(os.path.join(work, name), text.encode())
        for path in request.get("dirs", ()):
            os.makedirs(path, exist_ok=True)
    except OSError as exc:
        sys.stderr.write(f"cannot prepare the attempt: {exc}\n")
        _fail(_NO_CWD)
    try:
        os.chdir(request["cwd"])
    except OSError as exc:
        sys.stderr.write(f"cannot change to {request['cwd']}: {exc.strerror}\n")
        _fail(_NO_CWD)
    env: dict[str, str] = request["env"]
    _set_environ(env)
    argv: list[str] = request["argv"]
    script = argv[0]
    sys.argv = list(argv)
    extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[0:0] = [os.path.dirname(os.path.realpath(script)), *extra]
    if env.get("PYTHONDONTWRITEBYTECODE"):
        sys.dont_write_bytecode = True
    main = _new_main(script)
    compiled = _compiled(main.__file__)
    if request.get("hold") and _NOTE >= 0 and _read_line(_NOTE) != b"go":
        _abandon(request)  # the server did not record the attempt: nothing of the stage ran
    try:
        code = compiled if isinstance(compiled, int) else _execute(compiled, main)
    except SystemExit as exc:
        code = _exit_code(exc)
    _shutdown(code, main)


def _abandon(request: dict[str, Any]) -> None:
    """End a held attempt the server let go of: its work dir and its (empty) artifacts dir go,
    no ``rc`` is written (a restarted server finds no such attempt: it never started)."""
    with contextlib.suppress(OSError):
        _remove_tree(request["work"])
    for path in request.get("dirs", ()):
        with contextlib.suppress(OSError):
            os.rmdir(path)
    os._exit(0)


def _set_environ(env: dict[str, str]) -> None:
    """Make the process's environment ``env``, changing only what differs from the worker's
    (a clear and a refill set every variable again: ~0.24 ms of the start, each a write to
    pages the fork still shares)."""
    for key in [key for key in os.environ if key not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def _new_main(script: str) -> Any:
    import types

    main = types.ModuleType("__main__")
    main.__dict__.update({"__file__": os.path.abspath(script), "__cached__": None,
                          "__builtins__": __builtins__})
    sys.modules["__main__"] = main
    return main


def _compiled(path: str) -> Any:
    """The script's code object, or the exit code Python gives a script it cannot read (2) or
    compile (1, the error printed as Python prints it)."""
    try:
        with open(path, "rb") as file:
            source = file.read()
    except OSError as exc:
        sys.stderr.write(f"{sys.executable}: can't open file {path!r}: [Errno {exc.errno}] "
                         f"{exc.strerror}\n")
        return 2
    try:
        return compile(source, path, "exec", dont_inherit=True)
    except BaseException as exc:
        return _uncaught(exc)


def _execute(code: Any, main: Any) -> int:
    try:
        exec(code, main.__dict__)  # noqa: S102 - running the stage's script is the point
    except SystemExit:
        raise
    except BaseException as exc:
        return _uncaught(exc)
    return 0


def _uncaught(exc: BaseException) -> int:
    """Print ``exc`` like Python prints an uncaught exception (without this module's frame)."""
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)
    return 130 if isinstance(exc, KeyboardInterrupt) else 1


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
            _note(code)
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


def _fail(code: int) -> None:
    """End an attempt that could not start its script, with ``code`` in its ``rc``."""
    with contextlib.suppress(OSError):
        _write(_RC, f"{code}\n")
        _note(code)
    os._exit(code)


def _channel(requests: int) -> Any:
    """A socket object of an offered spare's request socket (None for a pipe), made while it
    waits: made at the end, it was ~50 us of every attempt's (several system calls)."""
    import stat

    if not stat.S_ISSOCK(os.fstat(requests).st_mode):
        return None
    import socket

    return socket.socket(fileno=requests)


def _note(code: int) -> None:
    """Tell the server the end (``rc`` is written): it need not wait for this process's exit,
    the teardown of a forked interpreter's memory (~1 ms)."""
    if _NOTE >= 0 and _NOTE_CHANNEL is not None:
        import socket

        with contextlib.suppress(OSError):
            _NOTE_CHANNEL.send(f"{code}\n".encode(), socket.MSG_NOSIGNAL)  # no SIGPIPE: server gone


def _record_rc(work: str, code: int) -> None:
    """Write an ended attempt's ``rc`` (in the worker). Through a rename: the attempt may have
    written it already and the executor be reading it now (it must never see it empty)."""
    with contextlib.suppress(OSError):
        _write(os.path.join(work, "rc.tmp"), f"{code}\n")
        os.rename(os.path.join(work, "rc.tmp"), os.path.join(work, "rc"))


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
    """One newline-terminated message (without the newline); b'' at EOF before a full line.
    What came after it (a held attempt's ``go``, written right after its request) is kept for
    the next call."""
    while b"\n" not in _UNREAD:
        try:
            chunk = os.read(fd, 1 << 16)
        except OSError:  # e.g. reset by a server that died
            chunk = b""
        if not chunk:
            return b""
        _UNREAD.extend(chunk)
    end = _UNREAD.index(b"\n")
    line = bytes(_UNREAD[:end])
    del _UNREAD[:end + 1]
    return line


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
