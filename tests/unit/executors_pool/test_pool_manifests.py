"""The pool's Deployment is a hardened pod running the shipped worker, with the token from a Secret."""

from __future__ import annotations

from kubeline.domain import pools
from kubeline.executors import kubernetes_pool_manifests as pm
from kubeline.executors.kubernetes import manifests
from kubeline.runtime import worker

DEFAULTS = manifests.Defaults(namespace="team", image="kubeline-worker:dev")


def spec(**fields: object) -> pools.PoolSpec:
    return pools.PoolSpec.model_validate({"name": "fast", "pipelines": ["etl"], **fields})


def test_deployment_pod_is_hardened_and_drains() -> None:
    files = pm.worker_files()
    body = pm.deployment(spec(replicas=3, drainSeconds=120, resources={"limits": {"memory": "1Gi"}}),
                         defaults=DEFAULTS, files=files)
    assert body["metadata"]["name"] == "kl-pool-fast" and body["metadata"]["namespace"] == "team"
    assert body["spec"]["replicas"] == 3
    pod = body["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "runAsUser": 1000, "runAsGroup": 1000, "capabilities": {"drop": ["ALL"]}, "privileged": False}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert container["resources"] == {"limits": {"memory": "1Gi"}}
    assert container["lifecycle"]["preStop"]["exec"]["command"][-2:] == ["drain", "120"]
    assert pod["terminationGracePeriodSeconds"] == 125
    token_env = next(e for e in container["env"] if e["name"] == worker.TOKEN_ENV)
    assert token_env == {"name": worker.TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": "kl-pool-fast", "key": "token"}}}
    assert {v["name"] for v in pod["volumes"]} == {"code", "work", "tmp"}
    assert set(files) == {"worker.py", "warm_worker.py", "kubeline_results.py"}


def test_a_change_of_worker_code_or_spec_changes_the_template_hash() -> None:
    files = pm.worker_files()
    first = pm.deployment(spec(), defaults=DEFAULTS, files=files)
    assert first == pm.deployment(spec(), defaults=DEFAULTS, files=files)
    changed_code = pm.deployment(spec(), defaults=DEFAULTS, files={**files, "worker.py": "# new"})
    changed_spec = pm.deployment(spec(image="other:1"), defaults=DEFAULTS, files=files)
    hashes = {d["spec"]["template"]["metadata"]["annotations"][pm.HASH_ANNOTATION]
              for d in (first, changed_code, changed_spec)}
    assert len(hashes) == 3
    # the replica count is not part of it: an HPA may own it
    assert pm.deployment(spec(replicas=5), defaults=DEFAULTS, files=files)["metadata"]["annotations"] == \
        first["metadata"]["annotations"]


def test_secret_round_trips_the_token_and_a_service_account_is_opt_in() -> None:
    assert pm.token_of(pm.secret(spec(), defaults=DEFAULTS, token="t0k")) == "t0k"
    pod = pm.deployment(spec(serviceAccountName="runner"), defaults=DEFAULTS, files={})["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "runner" and pod["automountServiceAccountToken"] is True
