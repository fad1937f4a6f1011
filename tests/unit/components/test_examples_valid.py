"""Every folder in examples/pipelines is a valid pipeline; docs/pipeline.schema.json is current."""

from __future__ import annotations

import json
import pathlib
import subprocess

import pytest
import yaml

from kubeline.domain import components, expressions, specs

ROOT = pathlib.Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "pipelines"
FOLDERS = sorted(p for p in EXAMPLES.iterdir() if p.is_dir())


def read_spec(folder: pathlib.Path) -> dict[str, object]:
    if (folder / "pipeline.yaml").exists():
        return yaml.safe_load((folder / "pipeline.yaml").read_text()) or {}
    if (folder / "pipeline.json").exists():
        return json.loads((folder / "pipeline.json").read_text())
    return {}


def test_the_promised_examples_exist() -> None:
    names = {p.name for p in FOLDERS}
    assert {
        "hello",
        "notebook-params",
        "multi-stage",
        "with-requirements",
        "flaky-retry",
        "fastflow-compat",
    } <= names


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_example_validates(folder: pathlib.Path) -> None:
    spec = specs.PipelineSpec.model_validate(read_spec(folder))
    if not spec.stages:
        assert (folder / "main.py").is_file() or (folder / "main.ipynb").is_file()
    for stage in spec.stages:
        kind = components.BUILTIN[components.ALIASES.get(stage.type, stage.type)]
        if kind.needs_file:
            assert (folder / (stage.file or str(kind.default_file))).is_file(), stage.id
        for ref in expressions.references([stage.inputs, stage.config]):
            if ref.root == "inputs":
                assert ref.path[0] in spec.inputs, f"{stage.id}: {ref.text} is not declared"
            if ref.root == "stages":
                assert ref.stage in stage.depends_on, f"{stage.id}: {ref.text} needs dependsOn"
        if not specs.has_expression(stage.config):
            kind.config.model_validate(stage.config)


def test_fastflow_example_maps_onto_native_settings() -> None:
    spec = specs.PipelineSpec.model_validate(read_spec(EXAMPLES / "fastflow-compat"))
    assert spec.resources.limits.memory_bytes == 256 * 1024 * 1024
    assert spec.retries.attempts == 2 and spec.retries.strategy is specs.RetryStrategy.FIXED
    assert spec.env["GREETING"] == "hello from default_env"
    assert spec.schedules[0].cron == "0 2 * * *"
    assert spec.timeout == 300


def test_multi_stage_needs_a_url_input() -> None:
    spec = specs.PipelineSpec.model_validate(read_spec(EXAMPLES / "multi-stage"))
    assert spec.inputs["url"].is_required


def test_schema_doc_is_current() -> None:
    result = subprocess.run(
        [str(ROOT / "scripts" / "gen-schema"), "--check"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + " (specs.py changed: run scripts/gen-schema)"
