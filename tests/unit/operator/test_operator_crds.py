"""The CRDs in deploy/ are the generated ones, and they are structural schemas Kubernetes accepts."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from kubeline.operator import convert, crds, resources

REPO = pathlib.Path(__file__).resolve().parents[3]
CRD_DIR = REPO / "deploy" / "base" / "crds"


def test_deploy_crds_match_the_models() -> None:
    for name, text in crds.render().items():
        path = CRD_DIR / name
        assert path.is_file(), f"{path} is missing: run python -m kubeline.operator.crds --write {CRD_DIR}"
        assert path.read_text() == text, (
            f"{path} drifted from the pydantic models: run python -m kubeline.operator.crds --write deploy/base/crds")


def _walk(node: Any, where: str = "") -> list[str]:
    bad: list[str] = []
    if isinstance(node, dict):
        if "$ref" in node or "anyOf" in node or "const" in node or "title" in node or "default" in node:
            bad.append(where)
        has_children = "properties" in node or "items" in node or "additionalProperties" in node
        if has_children and node.get("type") is None:
            bad.append(where + " (untyped with children)")
        for key in ("properties",):
            for name, child in (node.get(key) or {}).items():
                bad += _walk(child, f"{where}.{name}")
        if isinstance(node.get("items"), dict):
            bad += _walk(node["items"], where + "[]")
        if isinstance(node.get("additionalProperties"), dict):
            bad += _walk(node["additionalProperties"], where + "{}")
        if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            bad.append(where + " (no type)")
    return bad


def test_schemas_are_structural() -> None:
    for crd in (crds.pipeline_crd(), crds.pipelinerun_crd()):
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert _walk(schema) == []
        assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}
        assert crd["spec"]["names"]["shortNames"]


def test_camel_case_fields_and_required() -> None:
    spec = crds.pipeline_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    stage = spec["properties"]["stages"]["items"]
    assert {"id", "componentType", "dependsOn", "inputMapping", "config"} <= set(stage["properties"])
    assert stage["required"] == ["id"]
    assert "name" not in spec["properties"]  # metadata.name is the name
    assert spec["properties"]["env"] == {"x-kubernetes-preserve-unknown-fields": True,
                                         "description": crds._LOOSE["env"]}
    assert spec["properties"]["source"]["properties"]["configMap"]["required"] == ["name"]
    run = crds.pipelinerun_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert run["required"] == ["pipelineRef"]
    assert {"inputs", "inputsFrom", "timeout", "serviceAccountName", "nodeSelector", "tolerations", "cancel"} <= set(
        run["properties"])


def test_flowmason_example_fits_the_models(tmp_path: pathlib.Path) -> None:
    doc = yaml.safe_load("""
    stages:
      - {id: fetch, componentType: http_request, config: {url: "https://api.example.com/data"}}
      - {id: process, componentType: json_transform, dependsOn: [fetch]}
    schedule: "0 * * * *"
    resources: {requests: {memory: 256Mi, cpu: 100m}}
    env: [{name: KEY, valueFrom: {secretKeyRef: {name: llm-secrets, key: anthropic-key}}}]
    retries: 3
    parallelism: 2
    timeout: 600
    triggers: {webhook: {enabled: true, path: /webhooks/data-processor}}
    """)
    spec = resources.PipelineResourceSpec.model_validate(doc)
    assert spec.schedule == "0 * * * *"
    assert spec.retries.attempts == 3
    assert "KEY" in spec.env
    built = convert.build_pipeline(name="data-processor", namespace="ns", spec=spec, files={}, home=tmp_path)
    assert [stage.id for stage in built.spec.stages] == ["fetch", "process"]  # json_transform without config
