"""Kubernetes objects checked against the API schemas of the versions Kubeline supports.

Only Kubernetes 1.20 runs on the local test cluster; users run 1.29-1.34. ``problems`` validates
objects with ``kubernetes-validate`` (strict: an unknown field is an error) against each version
of ``VERSIONS``. The installed package carries the schemas of 1.25 and newer; 1.20's come from
kubernetes-validate 1.28.3, which ``scripts/bootstrap`` installs aside (``.venv/
kubernetes-validate-1.28``) and which runs in a subprocess (both are ``kubernetes_validate``).

Kinds that no schema of a version knows (custom resources such as ``ServiceMonitor``, or a
``Pipeline``) are reported as such, never passed silently: the caller says which it expects.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

VERSIONS = ("1.20.0", "1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0")
UNKNOWN = "no schema for"
_OLD = pathlib.Path(sys.prefix) / "kubernetes-validate-1.28"

_CHECK = """
import json, sys
import kubernetes_validate as kv
versions, objects = json.load(sys.stdin)
every = {}
for version in versions:
  found = every[version] = []
  for obj in objects:
      try:
          kv.validate(obj, version, strict=True)
      except kv.SchemaNotFoundError:
          found.append(f"{UNKNOWN} {obj.get('apiVersion')} {obj.get('kind')}")
      except Exception as exc:  # jsonschema's ValidationError (wrapped by some versions)
          exc = getattr(exc, "caught", exc)
          if not hasattr(exc, "absolute_path"):
              raise
          where = ".".join(str(p) for p in exc.absolute_path) or "(root)"
          name = (obj.get("metadata") or {}).get("name")
          found.append(f"{obj.get('kind')}/{name}: {where}: {exc.message}")
print(json.dumps(every))
"""


def problems(objects: list[dict[str, Any]], version: str) -> list[str]:
    """What is wrong with ``objects`` on Kubernetes ``version`` (empty: all valid)."""
    return problems_by_version(objects, [version])[version]


def problems_by_version(objects: list[dict[str, Any]], versions: list[str] | tuple[str, ...]) -> dict[str, list[str]]:
    """``problems`` for several versions (one process per package: loading is what costs)."""
    old = [v for v in versions if v.split(".")[:2] in (["1", "20"], ["1", "21"], ["1", "22"])]
    new = [v for v in versions if v not in old]
    found: dict[str, list[str]] = {}
    for group, path in ((old, str(_OLD)), (new, None)):
        if group:
            found.update(_run(objects, group, path=path))
    return found


def _run(objects: list[dict[str, Any]], versions: list[str], *, path: str | None) -> dict[str, list[str]]:
    code = f"UNKNOWN = {UNKNOWN!r}\n" + _CHECK
    env = dict(os.environ)
    if path is not None:
        if not (_OLD / "kubernetes_validate").is_dir():
            raise RuntimeError(f"the Kubernetes {versions} schemas are missing ({_OLD}); run scripts/bootstrap")
        env["PYTHONPATH"] = path
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps([versions, objects]), env=env,
                          capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"kubernetes-validate failed on {versions}: {proc.stderr[-2000:]}")
    every: dict[str, list[str]] = json.loads(proc.stdout)
    return every
