"""Why an attempt's Job ended, or why it cannot start: a pure function of the Job and Pod status.

``judge`` looks at what the watches last saw and says one of: still going, finished (with an
``AttemptResult`` whose error a user understands), or stuck (fail it and delete the Job). Pods
that can never start fail at once (image missing, container config broken); a pod the scheduler
cannot place fails when the pending timeout runs out, with the scheduler's message, because a
busy cluster may still make room for it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from kubeline.domain import states
from kubeline.executors import base
from kubeline.executors.kubernetes import manifests

F = states.FailureKind
FATAL_WAITING = frozenset({"ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"})
# Fatal only when the message names something missing; else the kubelet may still recover (e.g.
# "failed to sync secret cache: timed out" under load): then the pending timeout decides.
CONFIG_WAITING = frozenset({"CreateContainerConfigError", "CreateContainerError"})
_MISSING = ("not found", "couldn't find key", "no such", "invalid")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Verdict:
    result: base.AttemptResult | None = None  # None: not finished yet
    delete: bool = False  # the Job would linger (stuck or replaced pod): delete it
    started: bool = False  # the container has run (so the pending timeout no longer applies)
    waiting_for_job: bool = False  # the pod was killed by someone: the Job's condition says why


@dataclasses.dataclass(frozen=True, kw_only=True)
class Seen:
    """What the watches last saw of one attempt."""

    job: dict[str, Any] | None = None
    job_gone: bool = False
    pod: dict[str, Any] | None = None
    pod_gone: bool = False


def container_status(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    if not pod:
        return None
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == manifests.CONTAINER:
            return dict(status)
    return None


def exited_by_itself(pod: dict[str, Any] | None) -> bool:
    """The container's entrypoint ended on its own (so it printed the end markers first), not by
    a signal (the OOM killer, a kill): an exit code below 128 and no OOMKilled."""
    terminated = ((container_status(pod) or {}).get("state") or {}).get("terminated") or {}
    code = terminated.get("exitCode")
    return isinstance(code, int) and 0 <= code < 128 and terminated.get("reason") != "OOMKilled"


def has_started(pod: dict[str, Any] | None) -> bool:
    status = container_status(pod)
    if status is None:
        return False
    state = status.get("state") or {}
    return "running" in state or "terminated" in state or bool(status.get("lastState", {}).get("terminated"))


def job_completed(job: dict[str, Any] | None) -> bool:
    """The Job says its pod succeeded: its log is there to read even when the pod event that
    says so has not arrived yet (the Job's event can come first)."""
    condition = _job_condition(job)
    return condition is not None and condition[0] == "Complete"


def _job_condition(job: dict[str, Any] | None) -> tuple[str, str, str] | None:
    for condition in (job or {}).get("status", {}).get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return condition["type"], condition.get("reason", ""), condition.get("message", "")
    return None


def _message(terminated: dict[str, Any]) -> dict[str, Any]:
    try:
        value = json.loads(terminated.get("message") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _fail(kind: states.FailureKind, error: str, *, exit_code: int | None = None,
          delete: bool = False, started: bool = True) -> Verdict:
    return Verdict(result=base.AttemptResult(exit_code=exit_code, failure=kind, error=error),
                   delete=delete, started=started)


def terminated_result(  # noqa: PLR0911 - one return per way a container ends
    terminated: dict[str, Any], *, memory_limit: str | None) -> base.AttemptResult:
    """The result of a container that ended (success carries no outputs: they come by API)."""
    code = int(terminated.get("exitCode", 1))
    note = _message(terminated)
    if terminated.get("reason") == "OOMKilled" or note.get("oom"):
        limit = f" of {memory_limit}" if memory_limit else ""
        return base.AttemptResult(exit_code=code, failure=F.OOM, error=f"exceeded its memory limit{limit}")
    if code == 0:
        return base.AttemptResult(exit_code=0)
    if "upload_error" in note:
        return base.AttemptResult(exit_code=code, failure=F.EXIT_CODE,
                                  error=f"could not hand its outputs to Kubeline: {note['upload_error']}")
    if "setup_error" in note:
        return base.AttemptResult(exit_code=code, failure=F.START_FAILED,
                                  error=f"could not prepare the attempt: {note['setup_error']}")
    if "error" in note:
        return base.AttemptResult(exit_code=code, failure=F.EXIT_CODE, error=str(note["error"]))
    if code > 128:
        return base.AttemptResult(exit_code=code, failure=F.EXIT_CODE,
                                  error=f"exited with code {code} (killed by signal {code - 128})")
    return base.AttemptResult(exit_code=code, failure=F.EXIT_CODE, error=f"exited with code {code}")


def judge(  # noqa: PLR0911, PLR0912 - a decision table, read top to bottom
    seen: Seen, *, now: float, pending_deadline: float | None, pending_timeout: float,
          timeout: float | None, memory_limit: str | None) -> Verdict:
    condition = _job_condition(seen.job)
    started = has_started(seen.pod)
    if condition is not None and condition[1] == "DeadlineExceeded":
        return _fail(F.TIMEOUT, f"exceeded its timeout of {timeout:g}s" if timeout
                     else "exceeded the Job's active deadline", started=started)
    status = container_status(seen.pod) or {}
    terminated = (status.get("state") or {}).get("terminated")
    pod = seen.pod or {}
    being_deleted = bool(pod.get("metadata", {}).get("deletionTimestamp"))
    if terminated:
        result = terminated_result(terminated, memory_limit=memory_limit)
        if not result.succeeded and being_deleted and condition is None and result.failure is not F.OOM:
            return Verdict(started=True, waiting_for_job=True)  # killed: by a deadline or a drain?
        return Verdict(result=result, started=True)
    phase = pod.get("status", {}).get("phase")
    reason = pod.get("status", {}).get("reason", "")
    detail = pod.get("status", {}).get("message", "")
    if reason == "Evicted":
        return _fail(F.EXIT_CODE, f"the pod was evicted: {detail}".rstrip(": "), delete=True)
    if phase == "Unknown" or reason == "NodeLost":
        return _fail(F.LOST, "the node running the pod was lost", delete=True, started=started)
    if phase == "Failed":
        return _fail(F.EXIT_CODE, f"the pod failed: {reason} {detail}".strip(), delete=True,
                     started=started)
    if seen.job_gone:
        return _fail(F.LOST, "its Job was deleted outside Kubeline", started=started)
    if seen.pod_gone:
        return _fail(F.LOST, "its pod was deleted before it finished (node drained or lost, "
                     "or deleted by hand)", delete=True, started=started)
    if condition is not None:
        kind, why, text = condition
        if kind == "Complete":
            return Verdict(result=base.AttemptResult(exit_code=0), started=True)
        if why == "BackoffLimitExceeded" and "running" in (status.get("state") or {}) and not being_deleted:
            # the Job controller saw the pod end before our pod watch did: its terminated state
            # (OOMKilled, exit code, note) is on the way and says more than the Job's condition
            return Verdict(started=True)
        return _fail(F.EXIT_CODE, f"the Job failed: {why} {text}".strip(), started=started)
    waiting = (status.get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in FATAL_WAITING or (waiting.get("reason") in CONFIG_WAITING and _names_missing(waiting)):
        return _fail(F.START_FAILED, f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": "),
                     delete=True, started=False)
    if started:
        return Verdict(started=True)
    if pending_deadline is not None and now >= pending_deadline:
        return _fail(F.START_FAILED, f"did not start within {pending_timeout:g}s: {pending_note(seen)}",
                     delete=True, started=False)
    return Verdict()


@dataclasses.dataclass(frozen=True)
class Reference:
    """A Secret or ConfigMap the pod needs before its container can be created."""

    kind: str  # "secrets" | "configmaps"
    name: str
    key: str | None  # None: the whole object (envFrom, a volume without items)
    where: str  # what refers to it, in the pod's words: "env TOKEN", "envFrom", "volume certs"


def _waiting(seen: Seen) -> dict[str, Any]:
    """The container's waiting state as last seen ({} when it is not waiting)."""
    return ((container_status(seen.pod) or {}).get("state") or {}).get("waiting") or {}


def _names_missing(waiting: dict[str, Any]) -> bool:
    """The kubelet's message names something missing (a Secret, a key, an image)."""
    return any(word in str(waiting.get("message", "")).lower() for word in _MISSING)


def config_waiting(seen: Seen) -> bool:
    """The kubelet cannot create the container for a reason it may recover from (no missing
    object named, e.g. "failed to sync secret cache: timed out waiting for the condition")."""
    waiting = _waiting(seen)
    return waiting.get("reason") in CONFIG_WAITING and not _names_missing(waiting)


def references(pod: dict[str, Any] | None, *, skip: str = "") -> list[Reference]:
    """The Secrets and ConfigMaps the pod's container must have (``optional`` ones left out),
    but ``skip`` (the attempt's own Secret, made before its Job)."""
    spec = (pod or {}).get("spec", {})
    refs: list[Reference] = []
    for container in spec.get("containers") or []:
        if container.get("name") != manifests.CONTAINER:
            continue
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            for field, kind in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
                ref = source.get(field)
                if ref and not ref.get("optional"):
                    refs.append(Reference(kind, ref.get("name", ""), ref.get("key"), f"env {env.get('name')}"))
        for env_from in container.get("envFrom") or []:
            for field, kind in (("secretRef", "secrets"), ("configMapRef", "configmaps")):
                ref = env_from.get(field)
                if ref and not ref.get("optional"):
                    refs.append(Reference(kind, ref.get("name", ""), None, "envFrom"))
    for volume in spec.get("volumes") or []:
        for field, kind, name_field in (("secret", "secrets", "secretName"), ("configMap", "configmaps", "name")):
            source = volume.get(field)
            if source and not source.get("optional"):
                keys = [item.get("key") for item in source.get("items") or []] or [None]
                refs.extend(Reference(kind, source.get(name_field, ""), key, f"volume {volume.get('name')}")
                            for key in keys)
    return [ref for ref in refs if not (ref.kind == "secrets" and ref.name == skip)]


def reference_problem(ref: Reference, obj: dict[str, Any] | None, *, namespace: str) -> str | None:
    """Why ``ref`` cannot be met by ``obj`` (the object as read, None: not found), or None."""
    noun = "secret" if ref.kind == "secrets" else "configmap"
    if obj is None:
        return f'{ref.where}: {noun} "{ref.name}" not found in namespace "{namespace}"'
    keys = set(obj.get("data") or {}) | set(obj.get("binaryData") or {})
    if ref.key is not None and ref.key not in keys:
        return f'{ref.where}: {noun} "{ref.name}" has no key "{ref.key}"'
    return None


def cannot_start(seen: Seen, problem: str) -> Verdict:
    """The config error the kubelet may wait out is final: something it needs is missing."""
    waiting = _waiting(seen)
    return _fail(F.START_FAILED, f"{waiting.get('reason', 'CreateContainerConfigError')}: {problem}",
                 delete=True, started=False)


def pending_note(seen: Seen) -> str:
    """What keeps a pod from starting, in the cluster's words."""
    if seen.job is None:
        return "its Job was not seen yet"
    if seen.pod is None:
        return "the Job has not created its pod (quota or admission? see `kubectl describe job`)"
    for condition in seen.pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason', 'Unschedulable')}: {condition.get('message', '')}".rstrip(": ")
    waiting = _waiting(seen)
    if waiting:
        return f"{waiting.get('reason', '')}: {waiting.get('message', '')}".strip(": ")
    return f"pod phase {seen.pod.get('status', {}).get('phase', 'Pending')}"
