"""``PipelineClient``: the ``Pipeline`` and ``PipelineRun`` custom resources from Python (sync and async).

The Kubernetes counterpart of ``kubeline.client`` (the REST client): it talks only to the API
server, so it works wherever a kubeconfig (or the in-cluster ServiceAccount) does; the operator
turns what it writes into runs. ``AsyncPipelineClient`` runs the same calls in worker threads
(the official client is synchronous). API errors become Kubeline errors with the object's name
and what to do: 404 -> ``NotFoundError``, 409 -> ``ConflictError``, 422 -> ``InvalidInputError``
(the API server's message lists each invalid field), 403 -> ``KubelineError`` naming the verb.

Run logs stay in Kubeline's log store; ``run_logs`` reads them through the API server's Service
proxy (``/api/v1/namespaces/NS/services/kubeline:http/proxy/...``), so no port-forward is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from kubeline.domain import errors
from kubeline.operator import resources

FINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled", "TimedOut"})
PIPELINES = "pipelines"
PIPELINERUNS = "pipelineruns"
DEFAULT_SERVICE = "kubeline:http"
IN_CLUSTER_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
Body = dict[str, Any]


def _kinds(plural: str) -> str:
    return "Pipeline" if plural == PIPELINES else "PipelineRun"


def translate(exc: Exception, *, what: str) -> errors.KubelineError:  # noqa: PLR0911 - one per status
    """An ApiException (or a connection error) as the Kubeline error a user can act on."""
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    message = str(exc)
    if body:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            parsed = json.loads(body)
            message = parsed.get("message") or parsed.get("detail") or message
    if status == 410:
        return errors.GoneError(message)
    if status == 404:
        return errors.NotFoundError(f"{what} not found: {message}")
    if status == 409:
        return errors.ConflictError(f"{what}: {message}")
    if status in (400, 422):
        return errors.InvalidInputError(f"{what} is invalid: {message}")
    if status in (401, 403):
        return errors.KubelineError(f"{what}: forbidden ({message}); check your kubeconfig user or the "
                                    "ServiceAccount's RBAC (deploy/base/rbac)")
    if status is None or status == 0:
        return errors.KubelineError(f"{what}: cannot reach the Kubernetes API server ({message})")
    return errors.KubelineError(f"{what}: the API server answered {status}: {message}")


class PipelineClient:
    """Create, read, update and delete Pipelines and PipelineRuns in one namespace (by default)."""

    def __init__(self, *, namespace: str | None = None, kubeconfig: str | None = None,
                 context: str | None = None, api_client: Any = None, request_timeout: float = 30.0) -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                api_client = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
            except config.ConfigException as exc:
                try:
                    config.load_incluster_config()  # type: ignore[no-untyped-call]
                except config.ConfigException:
                    where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
                    raise errors.KubelineError(
                        f"no usable kubeconfig at {where} ({exc}) and not running in a pod; pass "
                        "--kubeconfig FILE or set KUBECONFIG (for the local cluster: "
                        'eval "$(scripts/local-cluster env)")') from None
                api_client = client.ApiClient()
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace or _default_namespace(context=context, kubeconfig=kubeconfig)
        self.timeout = request_timeout

    def close(self) -> None:
        self.api_client.close()

    def __enter__(self) -> PipelineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # plumbing --------------------------------------------------------------------------------
    def _ns(self, namespace: str | None) -> str:
        return namespace or self.namespace

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except (ApiException, HTTPError, OSError) as exc:
            raise translate(exc, what=what) from None

    def _get(self, plural: str, name: str, namespace: str | None) -> Body:
        ns = self._ns(namespace)
        return dict(self._call(f"{_kinds(plural)} {ns}/{name}", self.custom.get_namespaced_custom_object,
                               resources.GROUP, resources.VERSION, ns, plural, name))

    def _list(self, plural: str, namespace: str | None, label_selector: str | None) -> list[Body]:
        ns = self._ns(namespace)
        found = self._call(f"{_kinds(plural)}s in {ns}", self.custom.list_namespaced_custom_object,
                           resources.GROUP, resources.VERSION, ns, plural, label_selector=label_selector or "")
        return sorted(found.get("items", []), key=lambda b: b["metadata"]["name"])

    def _create(self, plural: str, body: Body) -> Body:
        ns = self._ns(body["metadata"].get("namespace"))
        name = body["metadata"].get("name") or body["metadata"].get("generateName", "") + "*"
        return dict(self._call(f"{_kinds(plural)} {ns}/{name}", self.custom.create_namespaced_custom_object,
                               resources.GROUP, resources.VERSION, ns, plural, body))

    def _delete(self, plural: str, name: str, namespace: str | None) -> None:
        ns = self._ns(namespace)
        self._call(f"{_kinds(plural)} {ns}/{name}", self.custom.delete_namespaced_custom_object,
                   resources.GROUP, resources.VERSION, ns, plural, name)

    def patch_status(self, plural: str, name: str, status: Body, *, namespace: str | None = None) -> Body:
        """Merge ``status`` into the object's status subresource (the operator's write path)."""
        ns = self._ns(namespace)
        return dict(self._call(f"{_kinds(plural)} {ns}/{name} status",
                               self.custom.patch_namespaced_custom_object_status,
                               resources.GROUP, resources.VERSION, ns, plural, name, {"status": status}))

    # pipelines -------------------------------------------------------------------------------
    def pipeline_body(self, name: str, spec: resources.PipelineResourceSpec | Body, *,
                      namespace: str | None = None, labels: dict[str, str] | None = None) -> Body:
        data = spec if isinstance(spec, dict) else spec.model_dump(by_alias=True, exclude_unset=True, mode="json")
        return {"apiVersion": resources.API_VERSION, "kind": "Pipeline",
                "metadata": {"name": name, "namespace": self._ns(namespace), "labels": labels or {}},
                "spec": data}

    def create_pipeline(self, body: Body) -> Body:
        return self._create(PIPELINES, body)

    def get_pipeline(self, name: str, *, namespace: str | None = None) -> Body:
        return self._get(PIPELINES, name, namespace)

    def list_pipelines(self, *, namespace: str | None = None, label_selector: str | None = None) -> list[Body]:
        return self._list(PIPELINES, namespace, label_selector)

    def update_pipeline(self, body: Body) -> Body:
        """Replace the spec (and labels) of an existing Pipeline; the latest resourceVersion is used."""
        meta = body["metadata"]
        ns = self._ns(meta.get("namespace"))
        current = self.get_pipeline(meta["name"], namespace=ns)
        current["spec"] = body["spec"]
        current["metadata"]["labels"] = {**current["metadata"].get("labels", {}), **meta.get("labels", {})}
        return dict(self._call(f"Pipeline {ns}/{meta['name']}", self.custom.replace_namespaced_custom_object,
                               resources.GROUP, resources.VERSION, ns, PIPELINES, meta["name"], current))

    def apply_pipeline(self, body: Body) -> Body:
        """Create the Pipeline, or update it when it exists."""
        try:
            return self.create_pipeline(body)
        except errors.ConflictError:
            return self.update_pipeline(body)

    def namespaces_with_pipeline(self, name: str) -> list[str]:
        """The namespaces that have a Pipeline ``name`` (needs the right to list them cluster-wide)."""
        found = self._call(f"Pipelines named {name}", self.custom.list_cluster_custom_object, resources.GROUP,
                           resources.VERSION, PIPELINES, field_selector=f"metadata.name={name}")
        return sorted({str(item["metadata"]["namespace"]) for item in found.get("items", [])})

    def delete_pipeline(self, name: str, *, namespace: str | None = None) -> None:
        self._delete(PIPELINES, name, namespace)

    # runs ------------------------------------------------------------------------------------
    def create_run(self, pipeline: str, *, inputs: dict[str, Any] | None = None, name: str | None = None,
                   namespace: str | None = None, **spec: Any) -> Body:
        """Create a PipelineRun of ``pipeline``; ``spec`` takes the other PipelineRun fields
        (``timeout``, ``inputsFrom``, ``serviceAccountName`` ... by alias or field name)."""
        checked = resources.PipelineRunResourceSpec.model_validate(
            {"pipelineRef": pipeline, "inputs": inputs or {}, **spec})
        meta: Body = {"namespace": self._ns(namespace), "labels": {"kubeline.dev/pipeline": pipeline}}
        if name:
            meta["name"] = name
        else:
            meta["generateName"] = f"{pipeline[:50]}-"
        spec_data = checked.model_dump(by_alias=True, exclude_defaults=True, mode="json")
        spec_data["pipelineRef"] = pipeline
        body: Body = {"apiVersion": resources.API_VERSION, "kind": "PipelineRun", "metadata": meta, "spec": spec_data}
        return self._create(PIPELINERUNS, body)

    def get_run(self, name: str, *, namespace: str | None = None) -> Body:
        return self._get(PIPELINERUNS, name, namespace)

    def list_runs(self, *, pipeline: str | None = None, namespace: str | None = None) -> list[Body]:
        items = self._list(PIPELINERUNS, namespace, None)
        return [i for i in items if pipeline is None or i.get("spec", {}).get("pipelineRef") == pipeline]

    def get_run_status(self, name: str, *, namespace: str | None = None) -> resources.PipelineRunStatus:
        return resources.PipelineRunStatus.model_validate(self.get_run(name, namespace=namespace).get("status") or {})

    def watch_run(self, name: str, *, namespace: str | None = None,
                  timeout: float | None = None) -> Iterator[resources.PipelineRunStatus]:
        """Yield the status at each change, ending after a final phase (or ``timeout`` seconds)."""
        from kubernetes import watch

        ns = self._ns(namespace)
        deadline = None if timeout is None else time.monotonic() + timeout
        last: resources.PipelineRunStatus | None = None
        while deadline is None or time.monotonic() < deadline:
            body = self.get_run(name, namespace=ns)
            status = resources.PipelineRunStatus.model_validate(body.get("status") or {})
            if status != last:
                last = status
                yield status
            if status.phase in FINAL_PHASES:
                return
            left = 30.0 if deadline is None else max(1.0, deadline - time.monotonic())
            stream = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in stream.stream(  # type: ignore[no-untyped-call]
                        self.custom.list_namespaced_custom_object, resources.GROUP, resources.VERSION, ns,
                        PIPELINERUNS, field_selector=f"metadata.name={name}",
                        resource_version=body["metadata"]["resourceVersion"], timeout_seconds=int(min(left, 30))):
                    if event["type"] == "DELETED":
                        raise errors.NotFoundError(f"PipelineRun {ns}/{name} was deleted")
                    status = resources.PipelineRunStatus.model_validate(event["object"].get("status") or {})
                    if status != last:
                        last = status
                        yield status
                    if status.phase in FINAL_PHASES:
                        return
            except errors.KubelineError:
                raise
            except Exception:
                time.sleep(0.5)
            finally:
                stream.stop()  # type: ignore[no-untyped-call]
        said = problems(last) if last is not None else ""
        raise TimeoutError(f"PipelineRun {ns}/{name} did not finish within {timeout}s (phase "
                           f"{last and last.phase}{': ' + said if said else ''})")

    def wait_for_run(self, name: str, *, namespace: str | None = None,
                     timeout: float | None = None) -> resources.PipelineRunStatus:
        """The final status (``TimeoutError`` after ``timeout`` seconds)."""
        status = resources.PipelineRunStatus()
        for status in self.watch_run(name, namespace=namespace, timeout=timeout):  # noqa: B007
            pass
        return status

    def cancel_run(self, name: str, *, namespace: str | None = None) -> Body:
        """Ask the operator to cancel the run (``spec.cancel: true``); the run itself is kept."""
        ns = self._ns(namespace)
        return dict(self._call(f"PipelineRun {ns}/{name}", self.custom.patch_namespaced_custom_object,
                               resources.GROUP, resources.VERSION, ns, PIPELINERUNS, name,
                               {"spec": {"cancel": True}}))

    def delete_run(self, name: str, *, namespace: str | None = None) -> None:
        self._delete(PIPELINERUNS, name, namespace)

    # data the operator and the CLI read ------------------------------------------------------
    def read_config_map(self, name: str, *, namespace: str | None = None) -> dict[str, bytes]:
        ns = self._ns(namespace)
        cm = self._call(f"ConfigMap {ns}/{name}", self.core.read_namespaced_config_map, name, ns)
        import base64

        data = {k: v.encode() for k, v in (cm.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.binary_data or {}).items()})
        return data

    def read_secret(self, name: str, *, namespace: str | None = None) -> dict[str, bytes]:
        import base64

        ns = self._ns(namespace)
        secret = self._call(f"Secret {ns}/{name}", self.core.read_namespaced_secret, name, ns)
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    def run_logs(self, run_id: str, *, namespace: str | None = None, service: str = DEFAULT_SERVICE,
                 follow: bool = False) -> Iterator[str]:
        """The run's log lines from the Kubeline server behind ``service`` (``name:port``), through
        the API server's Service proxy; ``follow`` streams until the run ends."""
        ns = self._ns(namespace)
        path = f"api/v1/runs/{run_id}/logs"
        what = f"logs of run {run_id} (Service {ns}/{service})"
        if not follow:
            text = self._proxy_get(service, ns, path, what=what).data.decode("utf-8", "replace")
            yield from text.splitlines()
            return
        response = self._proxy_get(service, ns, path + "/stream", what=what)
        from kubeline import client as rest

        parser = rest._SseParser()
        pending = ""
        for chunk in response.stream(4096, decode_content=True):
            pending += chunk.decode("utf-8", "replace")
            *complete, pending = pending.split("\n")
            for raw in complete:
                frame = parser.feed(raw.rstrip("\r"))
                if frame is None:
                    continue
                kind, _id, data = frame
                if kind == "end":
                    return
                if kind == "log":
                    yield follow_line(json.loads(data))

    def _proxy_get(self, service: str, namespace: str, path: str, *, what: str) -> Any:
        """GET ``path`` of ``service`` through the API server; the raw (streamable) response.

        The Kubeline API token (KUBELINE_TOKEN, or what ``kubeline login`` stored for
        ``k8s://NAMESPACE/SERVICE``) travels as ``X-Kubeline-Token``: the API server's proxy keeps
        ``Authorization`` for itself."""
        from kubeline import credentials

        token = credentials.token_for(f"k8s://{namespace}/{service}")
        headers = {"X-Kubeline-Token": token} if token else {}
        return self._call(what, self.core.connect_get_namespaced_service_proxy_with_path, service, namespace,
                          path, _preload_content=False, _headers=headers)


class AsyncPipelineClient:
    """``PipelineClient``'s calls for asyncio code (each one in a worker thread)."""

    def __init__(self, sync: PipelineClient | None = None, **kwargs: Any) -> None:
        self.sync = sync or PipelineClient(**kwargs)
        self.namespace = self.sync.namespace

    async def __aenter__(self) -> AsyncPipelineClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sync.close()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.sync, name)
        if name in ("watch_run", "run_logs") or not callable(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call

    async def awatch_run(self, name: str, **kwargs: Any) -> AsyncIterator[resources.PipelineRunStatus]:
        """``watch_run`` as an async iterator."""
        iterator = self.sync.watch_run(name, **kwargs)
        while True:
            item = await asyncio.to_thread(next, iterator, None)
            if item is None:
                return
            yield item

    async def wait_for_run(self, name: str, **kwargs: Any) -> resources.PipelineRunStatus:
        return await asyncio.to_thread(self.sync.wait_for_run, name, **kwargs)


def follow_line(line: dict[str, Any]) -> str:
    """A followed log line (the SSE ``log`` event's data) as the log download writes it:
    ``<ISO time> <stage>#<attempt> <stream> <text>``, so ``logs`` and ``logs -f`` print alike."""
    import datetime as dt

    from kubeline.logs import lines

    at = dt.datetime.fromisoformat(str(line["at"]).replace("Z", "+00:00"))
    return lines.display(at=at, stage_id=str(line.get("stage_id")), attempt=int(line.get("attempt") or 0),
                         stream=str(line.get("stream")), text=str(line["text"]))


def problems(status: resources.PipelineRunStatus) -> str:
    """The conditions that say why a run does not go on (``PipelineNotFound: Pipeline ns/x does not
    exist; waiting for it``), in words; empty when none does."""
    return "; ".join(f"{c.reason}: {c.message}" if c.message else c.reason
                     for c in status.conditions if c.status == "False" and c.reason)


def _default_namespace(*, context: str | None, kubeconfig: str | None) -> str:
    """The kubeconfig context's namespace, the in-cluster one, or ``default``."""
    from kubernetes import config

    try:
        _contexts, current = config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        if context:
            current = next(c for c in _contexts if c["name"] == context)
        namespace = current.get("context", {}).get("namespace")
        if namespace:
            return str(namespace)
    except (config.ConfigException, StopIteration, OSError, TypeError):
        pass
    with contextlib.suppress(OSError):
        return pathlib.Path(IN_CLUSTER_NAMESPACE).read_text(encoding="utf-8").strip()
    return "default"
