"""The pieces that let a short attempt finish without waiting for the kubelet's pod status."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

from kubeline.executors import base
from kubeline.executors.kubernetes import manifests
from kubeline.runtime import pod


def test_end_markers_are_per_attempt_and_stream_and_do_not_reveal_the_token() -> None:
    token = "tok-" + "x" * 40
    out, err = pod.end_marker(token, "stdout"), pod.end_marker(token, "stderr")
    assert out == pod.end_marker(token, "stdout")
    assert len({out, err, pod.end_marker(token + "y", "stdout")}) == 3
    assert out.startswith("[kubeline] end of stdout ") and err.startswith("[kubeline] end of stderr ")
    assert token not in out + err


def _spec(**overrides: object) -> base.AttemptSpec:
    values: dict[str, object] = {
        "attempt_id": "0190abcdef12aa11bb22cc", "run_id": "r1", "pipeline": "p", "stage_id": "s",
        "number": 1, "stage_type": "python", "folder": None, "argv": ("python", "main.py"),
        "runtime": base.Runtime.PIPELINE, "python_version": "3.11", "requirements": None,
        "inputs": {"day": "today"}}
    values.update(overrides)
    return base.AttemptSpec(**values)  # type: ignore[arg-type]


def test_a_small_bundle_travels_in_the_job_without_a_configmap_volume() -> None:
    spec = _spec()
    inline = manifests.inline_bundle(spec, entrypoint="print('hi')", code=b"\x1f\x8b", requirements=None)
    assert inline is not None
    job = manifests.job(spec, defaults=manifests.Defaults(), inline=inline)
    pod_spec = job["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert [v["name"] for v in pod_spec["volumes"]] == ["work", "tmp", "uv-cache"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/kubeline/work", "/tmp", "/kubeline/uv-cache"]
    assert container["command"] == ["python3", "-c", manifests.BOOT]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["KUBELINE_BUNDLE_DATA"] == inline
    assert env["KUBELINE_BUNDLE"] == "/kubeline/work/bundle"
    assert env["KUBELINE_INPUTS"] == "/kubeline/work/bundle/inputs.json"
    assert env["KUBELINE_ATTEMPT_TOKEN"] is None  # from the Secret, never inline


def test_a_large_bundle_does_not_go_inline() -> None:
    noise = os.urandom(200 * 1024)  # incompressible
    assert manifests.inline_bundle(_spec(), entrypoint="", code=noise, requirements=None) is None


def test_boot_unpacks_the_bundle_and_hides_it_from_the_entrypoint(tmp_path: pathlib.Path) -> None:
    entrypoint = textwrap.dedent("""
        import json, os, pathlib, sys
        bundle = pathlib.Path(os.environ["KUBELINE_BUNDLE"])
        print(json.dumps({"name": __name__, "inputs": json.loads((bundle / "inputs.json").read_text()),
                          "code": (bundle / "code.tar.gz").read_bytes().hex(),
                          "leaked": "KUBELINE_BUNDLE_DATA" in os.environ}))
        sys.exit(7)
    """)
    inline = manifests.inline_bundle(_spec(), entrypoint=entrypoint, code=b"\x01\x02", requirements="x==1\n")
    assert inline is not None
    env = {"PATH": os.environ["PATH"], "KUBELINE_BUNDLE": str(tmp_path / "b"), "KUBELINE_BUNDLE_DATA": inline}
    proc = subprocess.run([sys.executable, "-c", manifests.BOOT], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 7, proc.stderr
    assert json.loads(proc.stdout) == {"name": "__main__", "inputs": {"day": "today"}, "code": "0102",
                                       "leaked": False}
    assert (tmp_path / "b" / "requirements.txt").read_text() == "x==1\n"
