"""The entrypoint of every Kubernetes attempt pod: unpack, prepare the runtime, run, upload.

The Kubernetes executor ships this file's source in the attempt's ConfigMap and runs it with
the image's ``python3`` (so a server and an older worker image never disagree about it); it is
also importable as ``kubeline.runtime.pod``. It uses only the standard library.

Steps: unpack ``code.tar.gz`` into the work dir (an emptyDir; the root filesystem is read-only),
make the pipeline's venv with uv when the stage has requirements or extra packages (cached in
``$UV_CACHE_DIR``, ``kubeline.task`` copied in; without them the image's Python runs it), run
the stage's argv in the code dir with its output going straight to the pod log, and on exit 0
PUT its outputs and route to ``$KUBELINE_URL/api/v1/attempts/<id>/io`` with the attempt token,
then print the end marker (``end_marker``) on stdout and stderr: the executor, seeing the upload,
reads the log up to both markers and finishes the attempt without waiting for the kubelet to
report the container's exit (which it notices only at its next relist, up to a second later).
The pod's exit code is the stage's. A failed upload is a failed attempt (exit 3), stated in the
log and in the termination message. The termination message (small JSON) also says whether
the container's cgroup saw an OOM kill, so the executor reports OOM even when only a child
process was killed.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from typing import Any

UPLOAD_FAILED = 3
SETUP_FAILED = 4
_SHIM_FILES = ("__init__.py", "task.py", "components/__init__.py", "components/notebook.py")
_RETRY_STATUSES = {409, 425, 429, 500, 502, 503, 504}


def say(text: str) -> None:
    print(f"[kubeline] {text}", file=sys.stderr, flush=True)


def terminate(message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        pathlib.Path("/dev/termination-log").write_text(json.dumps(message)[:3500])


def unpack(bundle: pathlib.Path, code: pathlib.Path) -> None:
    code.mkdir(parents=True, exist_ok=True)
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
    try:
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
    except OSError as exc:
        say(f"cannot run {argv[0]}: {exc.strerror}")
        return 127

    def forward(signum: int, _frame: Any) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = child.wait()
    return 128 - rc if rc < 0 else rc


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


def collect(work: pathlib.Path) -> dict[str, Any]:
    path = work / "io" / "outputs.json"
    outputs: Any = {}
    if path.is_file() and path.stat().st_size:
        try:
            outputs = json.loads(path.read_bytes())
        except ValueError as exc:
            raise ValueError(f"wrote invalid JSON to $KUBELINE_OUTPUTS: {exc}") from None
        if not isinstance(outputs, dict):
            raise ValueError("wrote JSON that is not an object to $KUBELINE_OUTPUTS "
                             f"(a {type(outputs).__name__}); write e.g. {{\"rows\": 3}}")
    route_file = work / "io" / "route"
    route = route_file.read_text(errors="replace").strip() if route_file.is_file() else ""
    return {"outputs": outputs, "route": route or None}


def upload(body: dict[str, Any], *, url: str, attempt_id: str, token: str,
           deadline: float = 120.0) -> None:
    data = gzip.compress(json.dumps(body).encode(), compresslevel=5)
    target = f"{url.rstrip('/')}/api/v1/attempts/{attempt_id}/io"
    give_up = time.monotonic() + deadline
    delay = 0.2
    while True:
        request = urllib.request.Request(target, data=data, method="PUT", headers={  # noqa: S310
            "Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Content-Encoding": "gzip"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                response.read()
                return
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode(errors="replace")
            if exc.code not in _RETRY_STATUSES or time.monotonic() > give_up:
                raise RuntimeError(f"{target} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > give_up:
                raise RuntimeError(f"cannot reach {target}: {exc}") from None
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def main() -> int:
    bundle = pathlib.Path(os.environ.get("KUBELINE_BUNDLE", "/kubeline/bundle"))
    work = pathlib.Path(os.environ.get("KUBELINE_WORK", "/kubeline/work"))
    plan = json.loads((bundle / "plan.json").read_text())
    for sub in ("io", "artifacts", "code"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("KUBELINE_ATTEMPT_TOKEN", "KUBELINE_URL")}
    argv = list(plan["argv"])
    try:
        if plan.get("has_code"):
            unpack(bundle, work / "code")
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
    except (OSError, RuntimeError, tarfile.TarError) as exc:
        say(f"could not prepare the attempt: {exc}")
        terminate({"setup_error": str(exc)[:1000]})
        return SETUP_FAILED
    rc = run_stage(argv, cwd=work / "code", env=env)
    if rc != 0:
        terminate({"exit_code": rc, "oom": oom_killed()})
        return rc
    try:
        body = collect(work)
    except ValueError as exc:
        say(str(exc))
        terminate({"error": str(exc)})
        return 1
    try:
        upload(body, url=os.environ["KUBELINE_URL"], attempt_id=os.environ["KUBELINE_ATTEMPT_ID"],
               token=os.environ["KUBELINE_ATTEMPT_TOKEN"])
    except (RuntimeError, KeyError) as exc:
        say(f"could not hand the outputs to Kubeline: {exc}")
        terminate({"upload_error": str(exc)[:1000]})
        return UPLOAD_FAILED
    marker = end_marker(os.environ["KUBELINE_ATTEMPT_TOKEN"])
    print(marker, flush=True)
    print(marker, file=sys.stderr, flush=True)
    return 0


def end_marker(token: str) -> str:
    """The line that tells the executor this attempt's log is complete (on each stream)."""
    return "[kubeline] end " + hashlib.sha256(b"end:" + token.encode()).hexdigest()[:32]


if __name__ == "__main__":
    sys.exit(main())
