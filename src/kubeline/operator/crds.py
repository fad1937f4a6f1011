"""CustomResourceDefinitions generated from the pydantic models (``operator.resources``).

``deploy/base/crds/*.yaml`` are this module's output (``python -m kubeline.operator.crds --write
deploy/base/crds``); a unit test fails when they drift from the models, so the API server and the
operator never disagree on a field.

Pydantic emits JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema: every node typed,
no ``$ref``, ``nullable`` instead of ``null`` in ``anyOf``, no ``additionalProperties: false``
(unknown fields are pruned), no ``const``, boolean ``exclusiveMinimum``. Unions of different
types (``str | list``), ``Any`` and fields whose validators accept other shapes (``env`` as the
Kubernetes list, ``retries: 3``) become untyped nodes with ``x-kubernetes-preserve-unknown-fields``;
the operator validates them with the same models and reports problems in the status.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

import yaml

from kubeline.domain import pools
from kubeline.operator import resources

# Properties whose before-validators accept more shapes than the JSON Schema says.
_LOOSE = {"env": "A map NAME: value, or the Kubernetes list [{name, value | valueFrom}].",
          "retries": "Retries after the first failure (an integer), or a retry policy object."}
# Aliased fields also accepted under their field name, as in pipeline.yaml (stages: {type: python}).
_BOTH_NAMES = {"componentType": "type"}
_KEEP = ("description", "pattern", "minimum", "maximum", "minLength", "maxLength", "minItems",
         "maxItems", "format", "enum", "required")
_FORMATS = {"date-time"}


def _untyped(description: str | None = None) -> dict[str, Any]:
    node: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}
    if description:
        node["description"] = description
    return node


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:  # noqa: PLR0912
    """One JSON Schema node as a structural OpenAPI v3 node (``defs`` resolves ``$ref``)."""
    description = node.get("description")
    if "$ref" in node:
        target = dict(defs[node["$ref"].rsplit("/", 1)[-1]])
        if description:
            target["description"] = description
        return structural(target, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            merged = {**options[0], **({"description": description} if description else {})}
            return {**structural(merged, defs), "nullable": True}
        return _untyped(description)
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
    kind = node.get("type")
    if kind is None:
        return _untyped(description)
    out: dict[str, Any] = {"type": kind}
    for key in _KEEP:
        if key in node and not (key == "format" and node[key] not in _FORMATS):
            out[key] = node[key]
    if "exclusiveMinimum" in node:
        out["minimum"], out["exclusiveMinimum"] = node["exclusiveMinimum"], True
    if "exclusiveMaximum" in node:
        out["maximum"], out["exclusiveMaximum"] = node["exclusiveMaximum"], True
    if kind == "object":
        props = node.get("properties")
        extra = node.get("additionalProperties", False)
        if props:
            out["properties"] = {
                name: _untyped(_LOOSE[name]) if name in _LOOSE else structural(value, defs)
                for name, value in props.items()
            }
            for alias, field in _BOTH_NAMES.items():
                if alias in out["properties"] and field not in out["properties"]:
                    out["properties"][field] = out["properties"][alias]
        elif isinstance(extra, dict) and extra:
            out["additionalProperties"] = structural(extra, defs)
        elif extra is not False:
            out["x-kubernetes-preserve-unknown-fields"] = True
        if not props and not extra:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        out["items"] = structural(node.get("items") or {}, defs)
    return out


def _schema(model: type[Any], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})
    for name in drop:
        raw.get("properties", {}).pop(name, None)
    if "required" in raw:
        raw["required"] = [name for name in raw["required"] if name not in drop]
        if not raw["required"]:
            del raw["required"]
    return structural(raw, defs)


def _crd(*, kind: str, plural: str, short: list[str], spec: dict[str, Any], status: dict[str, Any],
         columns: list[dict[str, Any]], description: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{resources.GROUP}", "labels": {"app.kubernetes.io/name": "kubeline"}},
        "spec": {
            "group": resources.GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                      "shortNames": short, "categories": ["kubeline"]},
            "versions": [{
                "name": resources.VERSION, "served": True, "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object", "description": description, "required": ["spec"],
                    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                   "metadata": {"type": "object"}, "spec": spec, "status": status},
                }},
            }],
        },
    }


def pipeline_crd() -> dict[str, Any]:
    return _crd(
        kind="Pipeline", plural="pipelines", short=["klp"],
        spec=_schema(resources.PipelineResourceSpec, drop=("name",)),
        status=_schema(resources.PipelineStatus),
        description="A Kubeline pipeline: settings plus a DAG of stages (the pipeline.yaml schema).",
        columns=[
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Stages", "type": "integer", "jsonPath": ".status.stages"},
            {"name": "Last Run", "type": "string", "jsonPath": ".status.lastRun.phase"},
            {"name": "Last Run At", "type": "date", "jsonPath": ".status.lastRun.time"},
            {"name": "Next Schedule", "type": "string", "jsonPath": ".status.nextSchedule"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ])


def pipelinerun_crd() -> dict[str, Any]:
    return _crd(
        kind="PipelineRun", plural="pipelineruns", short=["klpr"],
        spec=_schema(resources.PipelineRunResourceSpec),
        status=_schema(resources.PipelineRunStatus),
        description="One run of a Pipeline; the operator writes its progress to the status.",
        columns=[
            {"name": "Pipeline", "type": "string", "jsonPath": ".spec.pipelineRef"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Started", "type": "date", "jsonPath": ".status.startTime"},
            {"name": "Duration", "type": "string", "jsonPath": ".status.duration"},
            {"name": "Run", "type": "string", "jsonPath": ".status.runId", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ])


def workerpool_crd() -> dict[str, Any]:
    """Worker pools of the kubernetes-pool executor (``domain.pools.PoolSpec``; the name is the
    resource's). The executor reads them in its namespace beside KUBELINE_KUBERNETES_POOLS."""
    return _crd(
        kind="WorkerPool", plural="workerpools", short=["klwp"],
        spec=_schema(pools.PoolSpec, drop=("name",)),
        status=_schema(pools.PoolStatus),
        description="Warm worker pods that run attempts of the pipelines it names (executor kubernetes-pool).",
        columns=[
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Pods", "type": "integer", "jsonPath": ".status.readyReplicas",
             "description": "Pods ready to take attempts."},
            {"name": "Want", "type": "integer", "jsonPath": ".status.replicas",
             "description": "Pods the pool's Deployment asks for."},
            {"name": "Slots", "type": "integer", "jsonPath": ".status.slots",
             "description": "Attempts the ready pods can run at once."},
            {"name": "Running", "type": "integer", "jsonPath": ".status.attempts.running"},
            {"name": "Waiting", "type": "integer", "jsonPath": ".status.attempts.waiting"},
            {"name": "Queued", "type": "integer", "jsonPath": ".status.attempts.queued"},
            {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
            {"name": "Pipelines", "type": "string", "jsonPath": ".spec.pipelines", "priority": 1},
            {"name": "Tags", "type": "string", "jsonPath": ".spec.tags", "priority": 1},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ])


HEADER = "# Generated by `python -m kubeline.operator.crds --write deploy/base/crds`; do not edit.\n"


def render() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    return {
        f"{crd['spec']['names']['plural']}.yaml": HEADER + yaml.safe_dump(crd, sort_keys=False, width=110)
        for crd in (pipeline_crd(), pipelinerun_crd(), workerpool_crd())
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=pathlib.Path, help="folder to write the CRD files to")
    args = parser.parse_args(argv)
    for name, text in render().items():
        if args.write is None:
            sys.stdout.write("---\n" + text)
        else:
            args.write.mkdir(parents=True, exist_ok=True)
            (args.write / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
