"""``kubeline k8s ...`` (Pipeline/PipelineRun resources) and ``kubeline operator``.

``deploy`` turns a pipeline folder into a ``Pipeline`` resource: the spec (validated locally
first, written with the CRD's camelCase names) in the resource, the other files in a ConfigMap
``<name>-files`` that the resource's ``source.configMap`` names. ``secrets`` prints fresh keys
for the deploy Secret (an env file for kustomize's secretGenerator); nothing is stored.
"""

from __future__ import annotations

import asyncio
import base64
import pathlib
import secrets as secrets_
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from kubeline import k8s, server_logs
from kubeline import settings as settings_
from kubeline.cli import output, render
from kubeline.domain import errors
from kubeline.pipelines import loader

app = typer.Typer(no_args_is_help=True, help="Pipelines and runs as Kubernetes resources (kubeline.dev/v1).")
out = Console()
err = Console(stderr=True)
MAX_FILES_BYTES = 900 * 1024  # ConfigMaps hold at most 1 MiB
Namespace = Annotated[str | None, typer.Option("--namespace", "-n", help="Default: the kubeconfig's namespace.")]
Kubeconfig = Annotated[str | None, typer.Option("--kubeconfig", help="Default: $KUBECONFIG or ~/.kube/config.")]
Context = Annotated[str | None, typer.Option("--context", help="kubeconfig context.")]


def register(root: typer.Typer) -> None:
    """Add ``k8s`` and ``operator`` to the main CLI."""
    root.add_typer(app, name="k8s")
    root.command("operator")(operator)


def _client(namespace: str | None, kubeconfig: str | None, context: str | None) -> k8s.PipelineClient:
    try:
        return k8s.PipelineClient(namespace=namespace, kubeconfig=kubeconfig, context=context)
    except errors.KubelineError as exc:
        raise _fail(str(exc)) from None
    except Exception as exc:
        raise _fail(f"cannot load a Kubernetes config: {exc}") from None


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _guard(call: Any) -> Any:
    try:
        return call()
    except errors.SpecError as exc:
        err.print(render.problems_table(exc.problems))
        raise typer.Exit(1) from None
    except errors.KubelineError as exc:
        raise _fail(str(exc)) from None


def folder_resources(folder: pathlib.Path, *, name: str | None,
                     namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Pipeline body, ConfigMap body) for a pipeline folder, validated like ``kubeline validate``."""
    pipeline = loader.load_folder(folder, name=name)
    spec = pipeline.spec.model_dump(by_alias=True, exclude_defaults=True, mode="json", exclude={"name"})
    files: dict[str, str] = {}
    binary: dict[str, str] = {}
    size = 0
    root = folder.resolve()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or (rel.name in loader.SPEC_FILES and len(rel.parts) == 1):
            continue
        if any(part.startswith(".") or part in ("__pycache__", ".venv") for part in rel.parts):
            continue
        data = path.read_bytes()
        size += len(data)
        key = "__".join(rel.parts)
        try:
            files[key] = data.decode("utf-8")
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(data).decode()
    if size > MAX_FILES_BYTES:
        raise errors.InvalidInputError(f"{folder}: {size} bytes of files do not fit a ConfigMap (1 MiB); "
                                       "put large data in an image, a PVC or source.git")
    labels = {"app.kubernetes.io/managed-by": "kubeline", "kubeline.dev/pipeline": pipeline.name}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": f"{pipeline.name}-files", "namespace": namespace, "labels": labels},
                  "data": files, **({"binaryData": binary} if binary else {})}
    spec["source"] = {"configMap": {"name": f"{pipeline.name}-files"}}
    body = {"apiVersion": "kubeline.dev/v1", "kind": "Pipeline",
            "metadata": {"name": pipeline.name, "namespace": namespace, "labels": labels}, "spec": spec}
    return body, config_map


@app.command()
def deploy(folder: Annotated[pathlib.Path, typer.Argument(help="The pipeline folder.")],
           namespace: Namespace = None, name: Annotated[str | None, typer.Option(help="Default: folder name.")] = None,
           kubeconfig: Kubeconfig = None, context: Context = None) -> None:
    """Create or update the Pipeline resource (and its files ConfigMap) from a folder."""
    client = _client(namespace, kubeconfig, context)
    body, config_map = _guard(lambda: folder_resources(folder, name=name, namespace=client.namespace))

    def apply() -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        ns = client.namespace
        try:
            client.core.create_namespaced_config_map(ns, config_map)
        except ApiException as exc:
            if exc.status != 409:
                raise k8s.translate(exc, what=f"ConfigMap {ns}/{config_map['metadata']['name']}") from None
            client.core.replace_namespaced_config_map(config_map["metadata"]["name"], ns, config_map)
        return client.apply_pipeline(body)

    created = _guard(apply)
    out.print(f"pipeline.kubeline.dev/{created['metadata']['name']} applied in {client.namespace} "
              f"({len(body['spec'].get('stages', []))} stages)")


def _status(item: dict[str, Any]) -> dict[str, Any]:
    return item.get("status") or {}


PIPELINE_COLUMNS = (
    output.Column(header="NAME", value=lambda i: i["metadata"]["name"], key=True),
    output.Column(header="PHASE", value=lambda i: _status(i).get("phase", "-")),
    output.Column(header="STAGES", value=lambda i: str(_status(i).get("stages", "-"))),
    output.Column(header="LAST RUN", value=lambda i: (_status(i).get("lastRun") or {}).get("name", "-"), key=True),
    output.Column(header="LAST PHASE", value=lambda i: (_status(i).get("lastRun") or {}).get("phase", "-")),
    output.Column(header="NEXT SCHEDULE", value=lambda i: _status(i).get("nextSchedule") or "-"),
    output.Column(header="NAMESPACE", value=lambda i: i["metadata"].get("namespace", ""), wide=True),
    output.Column(header="CREATED", value=lambda i: i["metadata"].get("creationTimestamp", ""), wide=True),
)


@app.command("list")
def list_(namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None,
          fmt: output.Option = output.Format.TABLE) -> None:
    """Pipelines in the namespace, with their phase and last run (-o json|yaml: the resources)."""
    client = _client(namespace, kubeconfig, context)
    output.emit(_guard(client.list_pipelines), columns=PIPELINE_COLUMNS, fmt=fmt)


@app.command()
def status(name: str, namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None,
           fmt: output.Option = output.Format.TABLE) -> None:
    """A Pipeline's status (or a PipelineRun's, when NAME is one) with its conditions and runs."""
    client = _client(namespace, kubeconfig, context)
    try:
        body = client.get_pipeline(name)
    except errors.NotFoundError:
        body = _guard(lambda: client.get_run(name))
    if fmt in (output.Format.JSON, output.Format.YAML):
        output.write_data(body, fmt=fmt)
        return
    st = body.get("status") or {}
    out.print(f"{body['kind']} {client.namespace}/{name}: [bold]{st.get('phase', 'Unknown')}[/bold]")
    for key in ("runId", "pipeline", "startTime", "completionTime", "duration", "nextSchedule", "error"):
        if st.get(key):
            out.print(f"  {key}: {st[key]}")
    stages: dict[str, Any] = st["stages"] if isinstance(st.get("stages"), dict) else {}
    for stage, info in stages.items():
        out.print(f"  stage {stage}: {info.get('phase')} (attempts {info.get('attempts', 0)}) "
                  f"{info.get('message', '')}")
    for cond in st.get("conditions") or []:
        out.print(f"  {cond['type']}={cond['status']} {cond.get('reason', '')}: {cond.get('message', '')}")
    if body["kind"] == "Pipeline":
        for run in _guard(lambda: client.list_runs(pipeline=name))[-10:]:
            rs = run.get("status") or {}
            out.print(f"  run {run['metadata']['name']}: {rs.get('phase', 'Pending')} {rs.get('duration') or ''}")


def _inputs(pairs: list[str]) -> dict[str, Any]:
    import json

    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _fail(f"--input {pair!r} is not KEY=VALUE")
        try:
            result[key] = json.loads(value) if value[:1] in "[{" else value
        except ValueError:
            result[key] = value
    return result


@app.command()
def run(  # noqa: PLR0917 - Typer options
        name: str, input_: Annotated[list[str] | None, typer.Option("--input", "-i", help="KEY=VALUE")] = None,
        wait: Annotated[bool, typer.Option(help="Wait for the end; exit 1 unless Succeeded.")] = False,
        timeout: Annotated[float | None, typer.Option(help="With --wait: give up after this many seconds.")] = None,
        namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None) -> None:
    """Create a PipelineRun of NAME (in the namespace of its Pipeline: -n, else the kubeconfig's,
    else the one namespace that has a Pipeline NAME)."""
    client = _client(namespace, kubeconfig, context)
    _find_pipeline(client, name, explicit=namespace is not None)
    created = _guard(lambda: client.create_run(name, inputs=_inputs(input_ or [])))
    run_name = created["metadata"]["name"]
    out.print(f"pipelinerun.kubeline.dev/{run_name} created")
    if not wait:
        return
    try:
        for st in client.watch_run(run_name, timeout=timeout):
            stages = " ".join(f"{k}={v.phase}" for k, v in st.stages.items())
            said = k8s.problems(st)
            out.print(f"{st.phase} {stages}".strip() + (f" ({said})" if said else ""), markup=False, highlight=False)
    except TimeoutError as exc:
        raise _fail(str(exc)) from None
    except errors.KubelineError as exc:
        raise _fail(str(exc)) from None
    final = client.get_run_status(run_name)
    if final.error:
        err.print(final.error)
    raise typer.Exit(0 if final.phase == "Succeeded" else 1)


def _find_pipeline(client: k8s.PipelineClient, name: str, *, explicit: bool) -> None:
    """Make sure the PipelineRun goes where its Pipeline is (where an operator syncs it): without
    -n, move to the one namespace that has it; otherwise say what is missing and where it is."""
    try:
        client.get_pipeline(name)
        return
    except errors.NotFoundError:
        pass
    except errors.KubelineError as exc:
        raise _fail(str(exc)) from None
    try:
        found = client.namespaces_with_pipeline(name)
    except errors.KubelineError:  # no right to list across namespaces: say what is known
        found = []
    if len(found) == 1 and not explicit:
        err.print(f"Pipeline {name} is in namespace {found[0]} (not {client.namespace}): running it there")
        client.namespace = found[0]
        return
    where = f" (it is in: {', '.join(found)}; pass -n NAMESPACE)" if found else (
        f" nor in any namespace you may list; create it first (kubeline k8s deploy FOLDER -n {client.namespace})")
    raise _fail(f"no Pipeline {name!r} in namespace {client.namespace!r}{where}")


@app.command()
def logs(  # noqa: PLR0917 - Typer options
        run_name: Annotated[str, typer.Argument(metavar="RUN", help="PipelineRun name (or a Kubeline run id).")],
         follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
         service: Annotated[str, typer.Option(help="The Kubeline Service as NAME:PORT.")] = k8s.DEFAULT_SERVICE,
         namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None) -> None:
    """Stage logs of a run, from the Kubeline server (through the API server's Service proxy)."""
    client = _client(namespace, kubeconfig, context)
    is_resource = True
    try:
        run_id = client.get_run_status(run_name).run_id
    except errors.NotFoundError:
        run_id, is_resource = run_name, False
    except errors.KubelineError as exc:
        raise _fail(str(exc)) from None
    if not run_id:
        raise _fail(f"PipelineRun {run_name} has no run yet (see `kubeline k8s status {run_name}`)")
    try:
        for line in (client.run_logs(run_id, service=service, follow=follow)):
            sys.stdout.write(line + "\n")  # one line format, line-buffered (also when piped)
            sys.stdout.flush()
    except errors.NotFoundError as exc:
        if is_resource:
            raise _fail(str(exc)) from None
        raise _fail(f"no PipelineRun {run_name!r} in namespace {client.namespace!r} and no Kubeline run with "
                    f"that id (list them: kubectl get pipelineruns -n {client.namespace}; another "
                    "namespace: -n NAME)") from None
    except errors.KubelineError as exc:
        raise _fail(str(exc)) from None


@app.command()
def delete(name: str, namespace: Namespace = None, kubeconfig: Kubeconfig = None, context: Context = None) -> None:
    """Delete a Pipeline (the operator removes it from Kubeline) and its files ConfigMap."""
    client = _client(namespace, kubeconfig, context)
    _guard(lambda: client.delete_pipeline(name))
    from kubernetes.client.exceptions import ApiException

    try:
        client.core.delete_namespaced_config_map(f"{name}-files", client.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise _fail(str(k8s.translate(exc, what=f"ConfigMap {name}-files"))) from None
    out.print(f"pipeline.kubeline.dev/{name} deleted")


@app.command()
def secrets(db_password: Annotated[str | None, typer.Option(help="Default: a new random one.")] = None) -> None:
    """Print fresh deploy secrets as an env file (for deploy/overlays/*/secrets.env); nothing is stored.

    KUBELINE_ADMIN_PASSWORD is the first admin's password (changed at the first login)."""
    from cryptography import fernet

    out.print(f"KUBELINE_SECRET_KEY={fernet.Fernet.generate_key().decode()}", markup=False, highlight=False)
    out.print(f"POSTGRES_PASSWORD={db_password or secrets_.token_urlsafe(24)}", markup=False, highlight=False)
    out.print(f"KUBELINE_ADMIN_PASSWORD={secrets_.token_urlsafe(18)}", markup=False, highlight=False)


def operator(  # noqa: PLR0917 - Typer options
    namespace: Annotated[list[str] | None, typer.Option(
        "--namespace", "-n", help="Watch these namespaces (repeat); default: the kubeconfig's or pod's.")] = None,
    all_namespaces: Annotated[bool, typer.Option("--all-namespaces", "-A", help="Watch every namespace.")] = False,
    dispatch: Annotated[bool, typer.Option(help="Also drive runs and fire schedules (the server's job).")] = False,
    host: Annotated[str, typer.Option(help="HTTP listen address (health, metrics, API).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8080,
    upload_port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="With --dispatch: port of the attempt-upload listener, the only one stage pods "
                               "need (default KUBELINE_UPLOAD_PORT, 8081).")] = None,
    leader_election: Annotated[bool, typer.Option(help="One acting replica, by a Lease.")] = True,
    kubeconfig: Kubeconfig = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
    log_format: Annotated[str, typer.Option(help="auto (text on a terminal, else JSON) | text | json")] = "auto",
) -> None:
    """Run the Kubernetes operator (Pipeline/PipelineRun resources -> Kubeline) until SIGTERM."""
    from kubeline.operator import runner

    server_logs.configure(level=log_level, fmt=log_format)
    namespaces = None if all_namespaces else (
        namespace or [k8s._default_namespace(context=None, kubeconfig=kubeconfig)])
    overrides: dict[str, Any] = {"upload_port": upload_port} if upload_port is not None else {}
    asyncio.run(runner.serve(settings_.Settings(**overrides), host=host, port=port, namespaces=namespaces,
                             dispatch=dispatch, kubeconfig=kubeconfig, leader_election=leader_election))
