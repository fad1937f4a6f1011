"""The entrypoint of every Kubernetes attempt pod: unpack, prepare the runtime, run, hand back.

The Kubernetes executor ships this file's source (and ``results.py`` beside it, as
``kubeline_results.py``) in the attempt's bundle and runs it with the image's ``python3`` (so a
server and an older worker image never disagree about it); it is also importable as
``kubeline.runtime.pod``. It uses only the standard library.

Steps: unpack ``code.tar.gz`` into the work dir (an emptyDir; the root filesystem is read-only),
or, when the plan names a ``code_dir`` (a copy on the code PVC, or a folder baked into the
image), use the code where it is, read-only; make the pipeline's venv with uv when the stage
has requirements or extra packages (cached in ``$UV_CACHE_DIR``, ``kubeline.task`` copied in;
without them the image's Python runs it), run the stage's argv in the code dir with its output
going straight to the pod log, then hand the result back (``results``): PUT to
``$KUBELINE_URL/api/v1/attempts/<id>/io`` with the attempt token when the executor gave a URL
(in-cluster servers), else - or when that URL cannot be reached within seconds - as result lines
in the pod log after the end markers, which the executor reads anyway. So a laptop with only a
kubeconfig runs stages on a cluster, and the executor learns the end from the log without
waiting for the kubelet to report the container's exit (at its next relist, up to a second later).
The pod's exit code is the stage's. A result that cannot be delivered is a failed attempt
(exit 3), stated in the log and in the termination message. The termination message (small
JSON) also says whether the container's cgroup saw an OOM kill, so the executor reports OOM
even when only a child process was killed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import signal
import sys
import time

TYPE_CHECKING = False  # typing costs milliseconds of every attempt's start: only for mypy
if TYPE_CHECKING:
    from typing import Any

# Imported where needed (tarfile, gzip, subprocess, shutil, urllib): a trivial attempt's pod
# then starts in about half the time (every millisecond before the upload delays the run).
UPLOAD_FAILED = 3
SETUP_FAILED = 4
FAILED_SAID = "failed"  # after the end markers: no result follows (``results.FAILED``)
UNREACHABLE_SECONDS = 5.0  # an upload URL that cannot be reached this long: use the pod log
_SHIM_FILES = ("__init__.py", "task.py", "components/__init__.py", "components/notebook.py")
_RETRY_STATUSES = {409, 425, 429, 500, 502, 503, 504}


def say(text: str) -> None:
    print(f"[kubeline] {text}", file=sys.stderr, flush=True)


def terminate(message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        pathlib.Path("/dev/termination-log").write_text(json.dumps(message)[:3500])


def unpack(bundle: pathlib.Path, code: pathlib.Path) -> None:
    import tarfile

    code.mkdir(parents=True, exist_ok=True)
    try:
        _extract(tarfile, bundle, code)
    except tarfile.TarError as exc:
        raise RuntimeError(f"code bundle: {exc}") from None


def _extract(tarfile: Any, bundle: pathlib.Path, code: pathlib.Path) -> None:
    with tarfile.open(bundle / "code.tar.gz", "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(code, filter="data")
            return
        root = code.resolve()
        for member in tar.getmembers():  # Pythons without PEP 706 filters
            target = (code / member.name).resolve()
            if not target.is_relative_to(root) or member.isdev():
                raise RuntimeError(f"code bundle: refusing {member.name!r}")
        tar.extractall(code)  # noqa: S202 - members checked above


def run_uv(*args: str) -> None:
    import subprocess

    proc = subprocess.run(["uv", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"uv {' '.join(args[:2])} failed:\n{proc.stdout[-3000:]}")


def make_venv(plan: dict[str, Any], *, bundle: pathlib.Path, work: pathlib.Path) -> pathlib.Path:
    venv = work / "venv"
    started = time.monotonic()
    run_uv("venv", "-q", "--python", str(plan["python_version"]), str(venv))
    python = str(venv / "bin" / "python")
    packages = list(plan.get("extra_packages") or [])
    if plan.get("requirements"):
        say("installing requirements.txt with uv")
        run_uv("pip", "install", "-q", "--python", python, "-r", str(bundle / "requirements.txt"),
               *packages)
    elif packages:
        run_uv("pip", "install", "-q", "--python", python, *packages)
    install_shim(venv)
    if plan.get("requirements") or packages:
        say(f"environment ready in {time.monotonic() - started:.1f}s")
    return venv


def needs_venv(plan: dict[str, Any]) -> bool:
    """Stages without requirements run on the image's own Python when its version fits (no venv
    to build: this saves most of a trivial attempt's start-up)."""
    if plan.get("requirements") or plan.get("extra_packages"):
        return True
    wanted = str(plan.get("python_version", "")).split(".")
    have = [str(sys.version_info.major), str(sys.version_info.minor), str(sys.version_info.micro)]
    return wanted != have[:len(wanted)]


def install_shim(venv: pathlib.Path) -> None:
    """``from kubeline import task`` works in the pipeline's venv (stdlib-only modules)."""
    import shutil

    try:
        import kubeline
    except ImportError:
        return
    source = pathlib.Path(kubeline.__file__).parent
    site = next(venv.glob("lib/python*/site-packages"), None)
    if site is None:
        return
    for name in _SHIM_FILES:
        if (source / name).is_file():
            target = site / "kubeline" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, target)


def run_stage(argv: list[str], *, cwd: pathlib.Path, env: dict[str, str]) -> int:
    """Run the stage; its exit code (128+signal when killed). A python script on this very
    interpreter runs in a forked child of it (no second interpreter start), the rest is exec'd."""
    script = in_process_script(argv)
    if script is not None:
        pid = os.fork()
        if pid == 0:
            run_script_in_child(script, argv[argv.index(script):], cwd=cwd, env=env)
        return wait_child(pid)
    import subprocess

    try:
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
    except OSError as exc:
        say(f"cannot run {argv[0]}: {exc.strerror}")
        return 127
    return wait_child(child.pid)


def in_process_script(argv: list[str]) -> str | None:
    """The script of ``[this python, (-u), script.py, args...]``, else None (run as a process)."""
    if not argv or argv[0] != sys.executable:
        return None
    rest = argv[2:] if argv[1:2] == ["-u"] else argv[1:]
    if rest and rest[0].endswith(".py") and not rest[0].startswith("-"):
        return rest[0]
    return None


def wait_child(pid: int) -> int:
    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return 1
        except InterruptedError:
            continue
    rc = os.waitstatus_to_exitcode(status)
    return 128 - rc if rc < 0 else rc


def run_script_in_child(script: str, argv: list[str], *, cwd: pathlib.Path, env: dict[str, str]) -> None:
    """In the forked child: become ``python script args`` (fresh ``__main__``, its dir first on
    sys.path, the stage's env and cwd), then exit with what the script exits with."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = list(argv)
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[0:1] = [str(pathlib.Path(script).resolve().parent), *extra]
        code = exec_main(script)
    except SystemExit as exc:
        code = exit_code(exc)
    except BaseException:  # noqa: S110 - anything here must still end the child
        pass
    try:
        import atexit

        atexit._run_exitfuncs()
    except SystemExit as exc:
        code = exit_code(exc)
    except BaseException:  # noqa: S110 - Python prints atexit errors itself
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = code or 120
    os._exit(code)


def exec_main(script: str) -> int:
    import types

    path = str(pathlib.Path(script).absolute())
    try:
        source = pathlib.Path(path).read_bytes()
    except OSError as exc:
        sys.stderr.write(f"{sys.executable}: can't open file {path!r}: [Errno {exc.errno}] {exc.strerror}\n")
        return 2
    main = types.ModuleType("__main__")
    main.__dict__.update({"__file__": path, "__cached__": None, "__builtins__": __builtins__})
    sys.modules["__main__"] = main
    try:
        exec(compile(source, path, "exec", dont_inherit=True), main.__dict__)  # noqa: S102 - the stage
    except SystemExit:
        raise
    except BaseException as exc:  # printed as Python prints an uncaught exception
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    return 0


def exit_code(exc: SystemExit) -> int:
    """What Python makes of ``sys.exit(x)``: None -> 0, an int as is, anything else printed -> 1."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    with contextlib.suppress(Exception):  # nothing left to report it to
        sys.stderr.write(f"{exc.code}\n")
    return 1


def oom_killed() -> bool:
    for path in ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"):
        try:
            text = pathlib.Path(path).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit() and int(value) > 0:
                return True
    return False


def _results() -> Any:
    """The result protocol: shipped beside this file in a pod, else the installed package's."""
    bundle = pathlib.Path(os.environ.get("KUBELINE_BUNDLE", "/kubeline/bundle"))
    if (bundle / "kubeline_results.py").is_file():
        sys.path.insert(0, str(bundle))
        try:
            import kubeline_results  # type: ignore[import-not-found]
        finally:
            sys.path.remove(str(bundle))
        return kubeline_results
    from kubeline.runtime import results

    return results


def upload(body: dict[str, Any], *, url: str, attempt_id: str, token: str,
           deadline: float = 120.0, unreachable: float = UNREACHABLE_SECONDS) -> None:
    """PUT the body; ``RuntimeError`` when refused, or when the URL cannot be reached for
    ``unreachable`` s (name not found, connection refused: the caller falls back to the log)."""
    import gzip

    data = gzip.compress(json.dumps(body).encode(), compresslevel=5)
    target = f"{url.rstrip('/')}/api/v1/attempts/{attempt_id}/io"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Content-Encoding": "gzip"}
    started = time.monotonic()
    give_up = started + deadline
    delay = 0.2
    while True:
        try:
            status, detail = put(target, data, headers)
        except OSError as exc:
            if time.monotonic() > min(give_up, started + unreachable):
                raise RuntimeError(f"could not reach the Kubeline API at {url} from the pod: "
                                   f"{_reason(exc)}") from None
        else:
            if 200 <= status < 300:
                return
            if status not in _RETRY_STATUSES or time.monotonic() > give_up:
                raise RuntimeError(f"{target} answered {status}: {detail}") from None
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def _reason(exc: OSError) -> str:
    import socket

    if isinstance(exc, socket.gaierror):
        return f"name not found ({exc.strerror})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc.strerror or exc)


def put(target: str, data: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """One PUT: (status, start of the answer). Plain http over a socket (http.client and
    urllib take longer to import than the request takes); https through urllib."""
    from urllib.parse import urlsplit

    parts = urlsplit(target)
    if parts.scheme != "http":
        return put_urllib(target, data, headers)
    import socket

    path = parts.path + (f"?{parts.query}" if parts.query else "")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"PUT {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}Content-Length: {len(data)}\r\n"
               "Connection: close\r\n\r\n").encode() + data
    with socket.create_connection((parts.hostname or "localhost", parts.port or 80), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    status_line, _, rest = answer.partition(b"\r\n")
    fields = status_line.split(b" ", 2)
    if len(fields) < 2 or not fields[1].isdigit():
        raise OSError(f"not an HTTP answer: {status_line[:100]!r}")
    return int(fields[1]), rest.partition(b"\r\n\r\n")[2][:500].decode(errors="replace")


def put_urllib(target: str, data: bytes, headers: dict[str, str]) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(target, data=data, method="PUT", headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status), response.read()[:500].decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:500].decode(errors="replace")
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None


def main() -> int:
    bundle = pathlib.Path(os.environ.get("KUBELINE_BUNDLE", "/kubeline/bundle"))
    work = pathlib.Path(os.environ.get("KUBELINE_WORK", "/kubeline/work"))
    plan = json.loads((bundle / "plan.json").read_text())
    for sub in ("io", "artifacts", "code"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("KUBELINE_ATTEMPT_TOKEN", "KUBELINE_URL")}
    argv = list(plan["argv"])
    code = pathlib.Path(plan.get("code_dir") or work / "code")
    try:
        if plan.get("has_code"):
            unpack(bundle, code)
        elif not code.is_dir():
            raise RuntimeError(f"the code dir {code} is not in the pod (kubernetes.codePath must name "
                               "a folder of the image; a code claim's copy must be mounted there)")
        if plan["runtime"] == "pipeline" and not needs_venv(plan):
            if argv[0] == "python":
                argv[0] = sys.executable
        elif plan["runtime"] == "pipeline":
            venv = make_venv(plan, bundle=bundle, work=work)
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"
            if argv[0] == "python":
                argv[0] = str(venv / "bin" / "python")
        elif argv[0] == "python":
            argv[0] = sys.executable
    except (OSError, RuntimeError) as exc:
        say(f"could not prepare the attempt: {exc}")
        terminate({"setup_error": str(exc)[:1000]})
        end(FAILED_SAID)
        return SETUP_FAILED
    rc = run_stage(argv, cwd=code, env=env)
    if rc != 0:
        terminate({"exit_code": rc, "oom": oom_killed()})
        end(FAILED_SAID)
        return rc
    return hand_back(work)


def hand_back(work: pathlib.Path) -> int:
    """Deliver the stage's result (upload, else the pod log), then the end markers; the exit code."""
    results = _results()
    try:
        body = results.collect(work / "io")
    except ValueError as exc:
        say(str(exc))
        terminate({"error": str(exc)})
        end(results.FAILED)
        return 1
    token = os.environ.get("KUBELINE_ATTEMPT_TOKEN", "")
    problem = ""
    if os.environ.get("KUBELINE_URL"):
        try:
            upload(body, url=os.environ["KUBELINE_URL"], attempt_id=os.environ["KUBELINE_ATTEMPT_ID"],
                   token=token, unreachable=UNREACHABLE_SECONDS)
        except (RuntimeError, KeyError) as exc:
            problem = str(exc)
            say(f"{problem}; handing the result back through the pod log instead")
        else:
            end(results.UPLOADED)
            return 0
    payload = results.encode(body)
    if len(payload) > results.LOG_LIMIT:
        why = (f"the result is {len(payload) // 1024} KiB once encoded, more than the "
               f"{results.LOG_LIMIT // 1024} KiB a pod log carries"
               + (f", and {problem}" if problem else ", and no upload URL was given")
               + "; set KUBELINE_KUBERNETES_API_URL to an address of the Kubeline API that pods can "
               "reach, or keep outputs small (pass large data by reference)")
        say(f"could not hand the result back: {why}")
        terminate({"upload_error": why[:1000]})
        end(results.FAILED)
        return UPLOAD_FAILED
    lines = results.lines(token, payload)
    end(f"{results.RESULT} {len(lines)}", after=lines)
    return 0


def end(said: str, *, after: list[str] | None = None) -> None:
    """The end markers (stderr, then stdout followed by ``after``): each stream is complete."""
    token = os.environ.get("KUBELINE_ATTEMPT_TOKEN")
    if not token:
        return
    try:
        print(f"{end_marker(token, 'stderr')} {said}", file=sys.stderr, flush=True)
        sys.stdout.write("\n".join([f"{end_marker(token, 'stdout')} {said}", *(after or [])]) + "\n")
        sys.stdout.flush()
    except OSError:
        pass


def end_marker(token: str, stream: str) -> str:
    """The start of the line that says ``stream`` of this attempt's log is complete (the same
    as ``results.end_marker``, repeated here so the executor's side needs no bundle)."""
    return f"[kubeline] end of {stream} " + hashlib.sha256(f"end:{stream}:{token}".encode()).hexdigest()[:32]


if __name__ == "__main__":
    sys.exit(main())
