"""The Helm chart, checked without helm (not installable here): its CRDs are the generated ones,
its templates are balanced, every ``.Values`` path they use exists, and it makes the same kinds of
objects as the kustomize base. Rendering is not done here; see the e2e dry-run for the manifests."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import yaml

from kubeline.operator import crds

REPO = pathlib.Path(__file__).resolve().parents[3]
CHART = REPO / "deploy" / "helm" / "kubeline"
BASE = REPO / "deploy" / "base"
_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_VALUES = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def test_chart_metadata_and_values_parse() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "kubeline" and chart["kubeVersion"].startswith(">=1.20")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["secrets"]["postgresPassword"] == "" and values["secrets"]["secretKey"] == ""  # never real values


def test_chart_crds_are_the_generated_ones() -> None:
    for name, text in crds.render().items():
        assert (CHART / "crds" / name).read_text() == text, f"copy deploy/base/crds/{name} to {CHART / 'crds'}"


def _lookup(values: dict[str, Any], path: str) -> bool:
    node: Any = values
    for part in path.strip(".").split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_templates_are_balanced_and_use_known_values() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for template in sorted((CHART / "templates").iterdir()):
        text = template.read_text()
        depth = 0
        for action in _ACTION.findall(text):
            word = action.split()[0] if action.split() else ""
            if word in ("if", "range", "with", "define"):
                depth += 1
            elif word == "end":
                depth -= 1
            assert depth >= 0, f"{template.name}: 'end' without an opening action"
        assert depth == 0, f"{template.name}: {depth} unclosed if/range/with/define"
        for path in _VALUES.findall(text):
            assert _lookup(values, path), f"{template.name}: .Values{path} is not in values.yaml"


def _kinds(text: str) -> set[str]:
    return set(re.findall(r"^kind:\s*(\w+)", text, re.M))


def test_chart_makes_the_same_kinds_as_the_kustomize_base() -> None:
    base = set()
    for name in yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]:
        base |= _kinds((BASE / name).read_text())
    base.add("ConfigMap")  # the base makes it with configMapGenerator
    chart = set()
    for path in [*(CHART / "templates").glob("*.yaml"), *(CHART / "crds").glob("*.yaml")]:
        chart |= _kinds(path.read_text())
    assert base <= chart, base - chart
    assert chart - base <= {"Secret", "ServiceMonitor"}  # the overlays make these


def test_the_chart_has_the_code_claim_option_of_the_kustomize_component() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["codeClaim"]["enabled"] is False and values["codeClaim"]["accessModes"] == ["ReadWriteMany"]
    component = (REPO / "deploy" / "components" / "code-claim" / "kustomization.yaml").read_text()
    config = (CHART / "templates" / "configmap.yaml").read_text()
    server = (CHART / "templates" / "server.yaml").read_text()
    pvc = (CHART / "templates" / "pvc.yaml").read_text()
    assert "KUBELINE_KUBERNETES_CODE_CLAIM=kubeline-code" in component
    assert 'KUBELINE_KUBERNETES_CODE_CLAIM: {{ .Values.codeClaim.existingClaim | default "kubeline-code"' in config
    assert "KUBELINE_KUBERNETES_CODE_DIR=/var/lib/kubeline-code" in component
    assert "KUBELINE_KUBERNETES_CODE_DIR: /var/lib/kubeline-code" in config
    assert "{name: code, mountPath: /var/lib/kubeline-code}" in server
    assert "mountPath: /var/lib/kubeline-code" in component
    assert "name: kubeline-code" in pvc and ".Values.codeClaim.existingClaim" in pvc
