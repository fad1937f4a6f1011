"""Pools with requirements: their hash is part of the Deployment's identity, the pods install them
once at start (an init container, uv, an emptyDir on PYTHONPATH), and a stage runs on a pool only
when its requirements are the pool's (else it fails at its start naming both hashes and the fix)."""

from __future__ import annotations

import pathlib

import pytest

from kubeline.domain import errors, pools
from kubeline.executors import base, kubernetes_pool
from kubeline.executors import kubernetes_pool_manifests as pool_manifests
from kubeline.executors.kubernetes import manifests

DEFAULTS = manifests.Defaults(namespace="team", image="kubeline-worker:dev")
FILES = {"worker.py": "# the worker\n"}


def pool(**fields: object) -> pools.PoolSpec:
    return pools.PoolSpec.model_validate({"name": "deps", "tags": ["deps"], **fields})


def test_the_hash_ignores_comments_blanks_and_order() -> None:
    assert pools.requirements_hash("six==1.16.0\n# pinned\n\nattrs==23.1.0  # why\n") == \
        pools.requirements_hash("attrs==23.1.0\nsix==1.16.0") == \
        pool(requirements=["six==1.16.0", "attrs==23.1.0"]).requirements_hash
    assert pools.requirements_hash("six==1.16.0") != pools.requirements_hash("six==1.15.0")
    assert pool().requirements_hash is None


def test_options_and_files_are_refused_in_a_pools_list() -> None:
    with pytest.raises(ValueError, match=r"'--index-url http://x' is not a package requirement.*e.g. 'six==1.16.0'"):
        pool(requirements=["--index-url http://x"])


def test_the_pods_install_the_requirements_once_into_an_emptydir_on_the_pythonpath() -> None:
    found = pool_manifests.deployment(pool(requirements=["six==1.16.0"]), defaults=DEFAULTS, files=FILES)
    pod = found["spec"]["template"]["spec"]
    (installer,) = pod["initContainers"]
    assert installer["command"][:3] == ["uv", "pip", "install"]
    assert installer["command"][-2:] == ["-r", "/kubeline/pool/requirements.txt"]
    assert pool_manifests.PACKAGES_DIR in installer["command"]
    assert installer["securityContext"]["readOnlyRootFilesystem"] is True
    assert installer["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    (worker,) = pod["containers"]
    assert {"name": "PYTHONPATH", "value": pool_manifests.PACKAGES_DIR} in worker["env"]
    assert {"name": "packages", "emptyDir": {}} in pod["volumes"]
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert found["metadata"]["annotations"][pool_manifests.REQUIREMENTS_ANNOTATION] == \
        pools.requirements_hash("six==1.16.0")
    config = pool_manifests.config_map(pool(requirements=["six==1.16.0"]), defaults=DEFAULTS, files=FILES)
    assert config["data"]["requirements.txt"] == "six==1.16.0\n"


def test_other_requirements_make_another_deployment_template() -> None:
    def digest(**fields: object) -> str:
        made = pool_manifests.deployment(pool(**fields), defaults=DEFAULTS, files=FILES)
        return str(made["spec"]["template"]["metadata"]["annotations"][pool_manifests.HASH_ANNOTATION])

    assert len({digest(), digest(requirements=["six==1.16.0"]), digest(requirements=["six==1.15.0"])}) == 3
    plain = pool_manifests.deployment(pool(), defaults=DEFAULTS, files=FILES)["spec"]["template"]["spec"]
    assert "initContainers" not in plain


def attempt(folder: pathlib.Path, requirements: str | None) -> base.AttemptSpec:
    path = None
    if requirements is not None:
        path = folder / "requirements.txt"
        path.write_text(requirements)
    return base.AttemptSpec(attempt_id="a1", run_id="r1", pipeline="p", stage_id="main", number=1,
                            stage_type="python", folder=folder, argv=("python", "main.py"),
                            runtime=base.Runtime.PIPELINE, python_version="3.11", requirements=path, tags=("deps",))


def test_a_stage_runs_on_a_pool_only_with_the_same_requirements(tmp_path: pathlib.Path) -> None:
    with_six = pool(requirements=["six==1.16.0"])
    assert kubernetes_pool._script_argv(attempt(tmp_path, "six==1.16.0\n"), pool=with_six) == ["main.py"]
    assert kubernetes_pool._script_argv(attempt(tmp_path, None), pool=with_six) == ["main.py"]
    with pytest.raises(errors.ExecutorError) as caught:
        kubernetes_pool._script_argv(attempt(tmp_path, "six==1.15.0\n"), pool=with_six)
    wanted, has = pools.requirements_hash("six==1.15.0"), with_six.requirements_hash
    assert str(caught.value) == (
        f"stage main: its requirements (requirements.txt, hash {wanted}) are not those of worker pool 'deps', "
        f"which installs requirements with hash {has}: give the pool the same requirements (requirements: [...] "
        "in its spec, the lines of the file), use a pool that has them, or run it with executor: kubernetes")
    with pytest.raises(errors.ExecutorError, match="which installs none: give the pool the same requirements"):
        kubernetes_pool._script_argv(attempt(tmp_path, "six==1.16.0\n"), pool=pool())


def test_choose_prefers_the_serving_pool_with_the_same_requirements() -> None:
    plain, with_six = pool(name="plain"), pool(name="six", requirements=["six==1.16.0"])
    six = with_six.requirements_hash
    assert pools.choose([plain, with_six], pipeline="p", tags=("deps",), asked=None, requirements=six) is with_six
    assert pools.choose([plain, with_six], pipeline="p", tags=("deps",), asked=None) is plain
    assert pools.choose([plain, with_six], pipeline="p", tags=("deps",), asked=None, requirements="other") is plain
