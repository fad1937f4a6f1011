"""The WorkerPool CRD: its status schema is the status model the server writes, and every printer
column (``kubectl get workerpools``) reads a field that schema or the spec's declares."""

from __future__ import annotations

import re
from typing import Any

from kubeline.domain import pools
from kubeline.operator import crds


def _walk(node: Any, where: str = "") -> list[str]:
    """Structural-schema violations under ``node`` (every node typed, no $ref/anyOf/default)."""
    bad: list[str] = []
    if "$ref" in node or "anyOf" in node or "const" in node or "default" in node:
        bad.append(where)
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        bad.append(where + " (no type)")
    for name, child in (node.get("properties") or {}).items():
        bad += _walk(child, f"{where}.{name}")
    if isinstance(node.get("items"), dict):
        bad += _walk(node["items"], where + "[]")
    return bad


def _resolve(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in re.sub(r"\[[^\]]*\]", "[]", path).strip(".").split("."):
        name = part.removesuffix("[]")
        if node is None:
            return None
        props = node.get("properties") or {}
        if name not in props:
            return None
        node = props[name]
        if part.endswith("]"):  # a filter on a list: the item
            node = node.get("items")
    return node


def test_the_status_schema_is_the_status_model_and_structural() -> None:
    crd = crds.workerpool_crd()
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []
    assert version["subresources"] == {"status": {}}
    status = schema["properties"]["status"]
    assert set(status["properties"]) == {f.alias or name for name, f in pools.PoolStatus.model_fields.items()}
    assert set(status["properties"]["attempts"]["properties"]) == {"running", "waiting", "queued"}


def test_every_printer_column_reads_a_declared_field() -> None:
    version = crds.workerpool_crd()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns if "priority" not in c] == [
        "Ready", "Pods", "Want", "Slots", "Running", "Waiting", "Queued", "Reason", "Age"]
    for column in columns:
        if column["jsonPath"].startswith(".metadata."):
            continue
        assert _resolve(schema, column["jsonPath"]) is not None, column
