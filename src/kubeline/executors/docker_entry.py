"""The entry script of every Docker attempt container: secret env, runtime, then the stage.

The Docker executor copies this file's source into the attempt's bundle (mounted read-only at
``/kubeline/bundle``) and runs it with the image's ``python3``, so a server and an older worker
image never disagree about it. Standard library only.

It reads ``plan.json`` and ``env.json`` (secret env: kept out of the container's config, which
``docker inspect`` shows), makes the pipeline's venv with uv in the work dir when the stage has
requirements or extra packages (or wants another Python than the image's), and then *execs* the
stage: the container's exit code, OOM kill and signals are the stage's own. Outputs and the
route are files in the work dir, which the executor reads on the host after the exit.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

SETUP_FAILED = 4
SETUP_MARKER = "setup-failed"  # in the work dir: exit 4 came from here, not from the stage
BUNDLE = pathlib.Path("/kubeline/bundle")
WORK = pathlib.Path("/kubeline/work")


def say(text: str) -> None:
    print(f"[kubeline] {text}", file=sys.stderr, flush=True)


def needs_venv(plan: dict[str, object]) -> bool:
    if plan.get("requirements") or plan.get("extra_packages"):
        return True
    wanted = str(plan.get("python_version", "")).split(".")
    have = [str(sys.version_info.major), str(sys.version_info.minor), str(sys.version_info.micro)]
    return wanted != have[:len(wanted)]


def run_uv(*args: str) -> None:
    proc = subprocess.run(["uv", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"uv {' '.join(args[:2])} failed:\n{proc.stdout[-3000:]}")


def make_venv(plan: dict[str, object]) -> pathlib.Path:
    venv = WORK / "venv"
    run_uv("venv", "-q", "--python", str(plan["python_version"]), str(venv))
    python = str(venv / "bin" / "python")
    packages = [str(p) for p in plan.get("extra_packages") or []]  # type: ignore[attr-defined]
    if plan.get("requirements"):
        say("installing requirements.txt with uv")
        run_uv("pip", "install", "-q", "--python", python, "-r", str(BUNDLE / "requirements.txt"),
               *packages)
    elif packages:
        run_uv("pip", "install", "-q", "--python", python, *packages)
    return venv


def main() -> int:
    plan = json.loads((BUNDLE / "plan.json").read_text())
    env = dict(os.environ)
    env_file = BUNDLE / "env.json"
    if env_file.is_file():
        env.update(json.loads(env_file.read_text()))
    argv = [str(a) for a in plan["argv"]]
    if plan["runtime"] == "pipeline":
        env["PYTHONPATH"] = str(BUNDLE / "shim")  # ``from kubeline import task``
        if needs_venv(plan):
            try:
                venv = make_venv(plan)
            except (RuntimeError, OSError) as exc:
                say(f"preparing the environment failed: {exc}")
                (WORK / SETUP_MARKER).write_text(str(exc)[-3000:])
                return SETUP_FAILED
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
            if argv[0] == "python":
                argv[0] = str(venv / "bin" / "python")
    if argv[0] == "python":
        argv[0] = sys.executable
    os.chdir(str(plan["cwd"]))
    try:
        os.execvpe(argv[0], argv, env)  # noqa: S606 - the stage's own command
    except OSError as exc:
        say(f"cannot run {argv[0]}: {exc.strerror}")
        return 127
    return 0  # pragma: no cover - exec does not return


if __name__ == "__main__":
    sys.exit(main())
