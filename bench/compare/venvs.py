"""The peers' virtualenvs under a cache dir outside the repo, made with uv, recorded with ``pip freeze``.

Airflow: its constraints file lives on GitHub, which this machine cannot reach, so the install is the
PyPI-only ``apache-airflow==3.3.2`` (it resolves cleanly); the exact versions go to results/.
Prefect 3.8.8 declares fastapi>=0.139 and starlette>=1.0.1, but its server then fails to import
(``Body() got an unexpected keyword argument 'min_items'``): fastapi 0.115 and starlette 0.46 are
forced with an override (``uv pip install --override``), which is what makes ``prefect server`` start.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

SPECS: dict[str, tuple[list[str], list[str]]] = {
    "airflow": (["apache-airflow==3.3.2"], []),
    "prefect": (["prefect==3.8.8"], ["fastapi>=0.115,<0.116", "starlette>=0.40,<0.47"]),
    "plot": (["matplotlib"], []),
}


def uv() -> str:
    found = shutil.which("uv") or str(pathlib.Path(sys.executable).parent / "uv")
    if not pathlib.Path(found).exists():
        raise SystemExit("uv is needed to make the peers' virtualenvs: scripts/bootstrap installs it into .venv")
    return found


def ensure(name: str, *, cache: pathlib.Path, python: str) -> pathlib.Path:
    """Make (once) and return the virtualenv ``name``; a ``.complete`` marker says the install finished."""
    venv = cache / name
    marker = venv / ".complete"
    packages, overrides = SPECS[name]
    wanted = " ".join(packages + overrides)
    if marker.exists() and marker.read_text() == wanted:
        return venv
    subprocess.run([uv(), "venv", "-q", "--allow-existing", "--python", python, str(venv)], check=True, timeout=300)
    argv = [uv(), "pip", "install", "--python", str(venv / "bin" / "python"), *packages]
    if overrides:
        over = cache / f"{name}-overrides.txt"
        over.write_text("\n".join(overrides) + "\n")
        argv += ["--override", str(over)]
    print(f"installing {wanted} into {venv} ...", flush=True)
    subprocess.run(argv, check=True, timeout=1800)
    marker.write_text(wanted)
    return venv


def freeze(venv: pathlib.Path) -> str:
    return subprocess.run([uv(), "pip", "freeze", "--python", str(venv / "bin" / "python")], check=True,
                          capture_output=True, text=True, timeout=120).stdout
