"""Folders too large for a ConfigMap: from the code claim (a read-only subPath) or baked into the
image (``kubernetes.codePath``); golden volumes and plans, and where ``start`` puts the code."""

from __future__ import annotations

import base64
import gzip
import json
import os
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest
from kubernetes import client

from kubeline import settings
from kubeline.domain import errors, specs
from kubeline.executors import base
from kubeline.executors.kubernetes import bundles, kube, manifests
from kubeline.executors.kubernetes import executor as k8s_executor

SUB_PATH = "pipelines/sales/0123abcd"


def _spec(**overrides: object) -> base.AttemptSpec:
    values: dict[str, object] = {
        "attempt_id": "0190abcdef12aa11bb22cc", "run_id": "r1", "pipeline": "sales", "stage_id": "load",
        "number": 1, "stage_type": "python", "folder": pathlib.Path("/p/sales"), "argv": ("python", "-u", "main.py"),
        "runtime": base.Runtime.PIPELINE, "python_version": "3.11", "requirements": None}
    values.update(overrides)
    return base.AttemptSpec(**values)  # type: ignore[arg-type]


def _pod(job: manifests.Job) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    pod = job["spec"]["template"]["spec"]
    return pod["volumes"], pod["containers"][0]["volumeMounts"]


def _plan(inline: str | None) -> dict[str, Any]:
    assert inline is not None
    files = json.loads(gzip.decompress(base64.b64decode(inline)))
    plan: dict[str, Any] = json.loads(base64.b64decode(files["plan.json"]))
    assert "code.tar.gz" not in files
    return plan


def test_code_claim_fast_flow_layout_one_volume_two_sub_paths() -> None:
    spec = _spec()
    code_dir = manifests.code_dir_for(spec, code_sub_path=SUB_PATH)
    inline = manifests.inline_bundle(spec, entrypoint="print()", code=None, requirements=None, code_dir=code_dir)
    job = manifests.job(spec, defaults=manifests.Defaults(code_claim="shared"), inline=inline,
                        code_sub_path=SUB_PATH)
    volumes, mounts = _pod(job)
    assert volumes == [{"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                       {"name": "code", "persistentVolumeClaim": {"claimName": "shared"}}]
    assert mounts == [{"name": "work", "mountPath": "/kubeline/work"}, {"name": "tmp", "mountPath": "/tmp"},
                      {"name": "code", "mountPath": "/kubeline/uv-cache", "subPath": "uv-cache"},
                      {"name": "code", "mountPath": "/kubeline/code", "subPath": SUB_PATH, "readOnly": True}]
    plan = _plan(inline)
    assert plan["code_dir"] == "/kubeline/code" and plan["has_code"] is False


def test_code_claim_beside_a_uv_cache_claim_is_mounted_read_only() -> None:
    defaults = manifests.Defaults(code_claim="code", uv_cache_claim="uv")
    volumes, mounts = _pod(manifests.job(_spec(), defaults=defaults, inline="x", code_sub_path=SUB_PATH))
    assert volumes[2:] == [{"name": "uv-cache", "persistentVolumeClaim": {"claimName": "uv"}},
                           {"name": "code", "persistentVolumeClaim": {"claimName": "code", "readOnly": True}}]
    assert mounts[2:] == [{"name": "uv-cache", "mountPath": "/kubeline/uv-cache"},
                          {"name": "code", "mountPath": "/kubeline/code", "subPath": SUB_PATH, "readOnly": True}]


def test_a_small_folder_with_a_code_claim_still_keeps_the_uv_cache_there() -> None:
    volumes, mounts = _pod(manifests.job(_spec(), defaults=manifests.Defaults(code_claim="shared"), inline="x"))
    assert volumes[-1] == {"name": "code", "persistentVolumeClaim": {"claimName": "shared"}}
    assert [m["mountPath"] for m in mounts] == ["/kubeline/work", "/tmp", "/kubeline/uv-cache"]
    with_uv_claim = manifests.Defaults(code_claim="code", uv_cache_claim="uv")
    volumes, _ = _pod(manifests.job(_spec(), defaults=with_uv_claim, inline="x"))
    assert [v["name"] for v in volumes] == ["work", "tmp", "uv-cache"]  # no code volume to wait for


def test_code_path_sends_no_code_and_mounts_nothing() -> None:
    spec = _spec(kubernetes=specs.KubernetesSpec.model_validate({"image": "team/app:3", "codePath": "/opt/app"}))
    code_dir = manifests.code_dir_for(spec, code_sub_path=None)
    assert code_dir == "/opt/app"
    inline = manifests.inline_bundle(spec, entrypoint="", code=None, requirements=None, code_dir=code_dir)
    job = manifests.job(spec, defaults=manifests.Defaults(), inline=inline)
    volumes, mounts = _pod(job)
    assert [v["name"] for v in volumes] == ["work", "tmp", "uv-cache"]
    assert [m["name"] for m in mounts] == ["work", "tmp", "uv-cache"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "team/app:3"
    assert _plan(inline)["code_dir"] == "/opt/app"


def test_code_path_in_a_config_map_plan() -> None:
    spec = _spec(kubernetes=specs.KubernetesSpec(code_path="/opt/app"))
    cm = manifests.config_map(spec, defaults=manifests.Defaults(), entrypoint="", code=None, requirements=None,
                              code_dir="/opt/app")
    assert cm["binaryData"] == {}
    assert json.loads(cm["data"]["plan.json"])["code_dir"] == "/opt/app"


def test_a_sub_path_needs_a_code_claim() -> None:
    with pytest.raises(ValueError, match="code_claim"):
        manifests.job(_spec(), defaults=manifests.Defaults(), code_sub_path=SUB_PATH)


class _Sink:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def write(self, stream: str, text: str, *, at: float | None = None) -> None:
        self.lines.append((stream, text))

    def close(self) -> None:
        pass


@pytest.fixture
async def make_executor() -> AsyncIterator[Any]:
    made: list[k8s_executor.KubernetesExecutor] = []

    def make(*, code_claim: str | None = None, code_dir: pathlib.Path | None = None,
             uv_cache_claim: str | None = None) -> k8s_executor.KubernetesExecutor:
        defaults = manifests.Defaults(code_claim=code_claim, uv_cache_claim=uv_cache_claim)
        api = client.ApiClient(client.Configuration())  # never called: placing code needs no cluster
        made.append(k8s_executor.KubernetesExecutor(kube_=kube.Kube(api), defaults=defaults, attempts=None,
                                                    code_dir=code_dir))
        return made[-1]

    yield make
    for executor in made:
        await executor.close()


def _large_folder(tmp_path: pathlib.Path) -> pathlib.Path:
    folder = tmp_path / "sales"
    folder.mkdir()
    (folder / "main.py").write_text("print(1)\n")
    (folder / "data.bin").write_bytes(os.urandom(bundles.LIMIT + 100 * 1024))
    return folder


async def test_a_large_folder_without_a_code_claim_names_both_ways_out(tmp_path: pathlib.Path,
                                                                       make_executor: Any) -> None:
    executor = make_executor()
    with pytest.raises(errors.ExecutorError) as caught:
        await executor._place_code(_spec(folder=_large_folder(tmp_path)), _Sink())
    text = str(caught.value)
    assert "more than the 900 KiB" in text
    assert "KUBELINE_KUBERNETES_CODE_CLAIM" in text and "KUBELINE_KUBERNETES_CODE_DIR" in text
    assert "kubernetes.codePath" in text


async def test_a_large_folder_goes_to_the_code_dir(tmp_path: pathlib.Path, make_executor: Any) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    executor = make_executor(code_claim="shared", code_dir=shared)
    sink = _Sink()
    code, sub_path = await executor._place_code(_spec(folder=_large_folder(tmp_path)), sink)
    assert code is None and sub_path is not None and sub_path.startswith("pipelines/sales/")
    assert (shared / sub_path / "data.bin").stat().st_size == bundles.LIMIT + 100 * 1024
    assert (shared / "uv-cache").is_dir()
    assert sink.lines == [("system", "the pipeline folder is too large for a ConfigMap: mounted read-only from "
                                     f"PVC shared, {sub_path}")]
    small = tmp_path / "small"
    small.mkdir()
    (small / "main.py").write_text("print(1)\n")
    code, sub_path = await executor._place_code(_spec(folder=small), _Sink())
    assert code is not None and sub_path is None  # small folders still travel in the bundle


async def test_a_missing_code_dir_fails_the_start_with_its_path(tmp_path: pathlib.Path, make_executor: Any) -> None:
    executor = make_executor(code_claim="shared", code_dir=tmp_path / "not-mounted", uv_cache_claim="uv")
    with pytest.raises(errors.ExecutorError, match=f"the code dir {tmp_path / 'not-mounted'} "):
        await executor._place_code(_spec(folder=_large_folder(tmp_path)), _Sink())


async def test_code_path_packs_nothing(tmp_path: pathlib.Path, make_executor: Any) -> None:
    spec = _spec(folder=_large_folder(tmp_path), kubernetes=specs.KubernetesSpec(code_path="/opt/app"))
    assert await make_executor()._place_code(spec, _Sink()) == (None, None)


def test_code_claim_and_code_dir_are_set_together() -> None:
    with pytest.raises(pydantic.ValidationError, match="CODE_CLAIM and KUBELINE_KUBERNETES_CODE_DIR go"):
        settings.Settings(kubernetes_code_claim="shared")
    with pytest.raises(pydantic.ValidationError, match="set both, or neither"):
        settings.Settings(kubernetes_code_dir=pathlib.Path("/var/lib/kubeline/shared"))
    both = settings.Settings(kubernetes_code_claim="shared", kubernetes_code_dir=pathlib.Path("/srv"))
    assert (both.kubernetes_code_claim, both.kubernetes_code_dir) == ("shared", pathlib.Path("/srv"))
