"""json_transform: JMESPath over 'data', or over the inputs when 'data' is absent."""

from __future__ import annotations

import pytest

from kubeline.components import base, json_transform
from kubeline.domain import components


def transform(config: dict[str, object], inputs: dict[str, object] | None = None) -> object:
    lines: list[str] = []
    outputs = json_transform.run(
        config=components.JsonTransformConfig.model_validate(config),
        inputs=inputs or {},
        log=lines.append,
    )
    assert lines  # it says what it does
    return outputs["result"]


def test_applies_the_expression_to_data() -> None:
    data = {"items": [{"name": "a", "n": 2}, {"name": "b", "n": 5}]}
    assert transform({"expression": "items[?n > `3`].name", "data": data}) == ["b"]
    assert transform({"expression": "sum(items[].n)", "data": data}) == 7


def test_uses_the_inputs_without_data_and_null_data_when_given() -> None:
    assert transform({"expression": "raw.count"}, {"raw": {"count": 3}}) == 3
    assert transform({"expression": "@", "data": None}, {"raw": 1}) is None


def test_a_type_error_at_run_time_fails_clearly() -> None:
    with pytest.raises(base.ComponentError, match=r"'sum\(@\)' failed: .*invalid type"):
        transform({"expression": "sum(@)", "data": "text"})


def test_without_an_expression_the_input_passes_through_unchanged() -> None:
    assert transform({}, {"raw": {"count": 3}}) == {"raw": {"count": 3}}
    assert transform({"data": [1, 2]}) == [1, 2]
