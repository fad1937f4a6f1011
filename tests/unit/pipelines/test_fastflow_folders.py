"""Fast-Flow folders read unmodified: every key its loader and notebook runner read, as it reads
them (``docs/fastflow.md`` has the table), and clear words for what Kubeline does not act on."""

import json
import pathlib

import nbformat
import pytest

from kubeline.domain import cells, errors, specs
from kubeline.pipelines import loader


def folder_with(tmp_path: pathlib.Path, meta: dict[str, object], *, name: str = "ff",
                meta_file: str = "pipeline.json", notebook: nbformat.NotebookNode | None = None) -> pathlib.Path:
    folder = tmp_path / name
    folder.mkdir()
    if notebook is None:
        (folder / "main.py").write_text("print('hi')\n")
    else:
        nbformat.write(notebook, folder / "main.ipynb")
    (folder / meta_file).write_text(json.dumps(meta))
    return folder


def notebook_of(*kinds: str, metadata: dict[int, dict[str, object]] | None = None) -> nbformat.NotebookNode:
    book = nbformat.v4.new_notebook()
    code = 0
    for kind in kinds:
        if kind == "md":
            book.cells.append(nbformat.v4.new_markdown_cell("text"))
        else:
            book.cells.append(nbformat.v4.new_code_cell("1", metadata=(metadata or {}).get(code, {})))
            code += 1
    return book


def test_cells_as_a_list_is_indexed_by_code_cell_and_the_mapping_form_is_kept():
    listed = specs.PipelineSpec.model_validate({"cells": [{"retries": 2, "delay_seconds": 1}, {"retries": 0}]})
    assert listed.cells == {0: specs.CellPolicy(retries=2, delay_seconds=1), 1: specs.CellPolicy(retries=0)}
    mapped = specs.PipelineSpec.model_validate({"cells": {"1": {"retries": 3}}})
    assert mapped.cells == {1: specs.CellPolicy(retries=3, delay_seconds=1)}  # Fast-Flow's default delay
    stage = specs.StageSpec.model_validate({"id": "nb", "type": "notebook", "cells": [None, {"retries": 1}]})
    assert list(stage.cells) == [1]


@pytest.mark.parametrize(("value", "where", "message"), [
    ({"cells": [{"retries": 1, "timeout": 3}]}, "cells[0].timeout", "unknown field 'timeout'"),
    ({"cells": {"-1": {"retries": 1}}}, "cells", "cells key '-1' is not a code-cell index"),
    ({"cells": [{"retries": -1}]}, "cells[0].retries", "greater than or equal to 0"),
    ({"cells": "all"}, "cells", "cells must be a list (item i applies to the i-th code cell) or a mapping"),
])
def test_bad_cells_name_the_entry(tmp_path, value, where, message):
    with pytest.raises(errors.SpecError) as info:
        loader.load_folder(folder_with(tmp_path, value, notebook=notebook_of("code")))
    assert any(p.location == where and message in p.message for p in info.value.problems), info.value


def test_values_fastflow_normalises_are_read_the_same_way(tmp_path):
    pipeline = loader.load_folder(folder_with(tmp_path, {
        "webhook_key": "", "python_version": "", "type": " Script ", "max_instances": 0,
        "schedule_cron": "0 9 * * *", "schedule_interval_seconds": 60, "schedule_start": "",
        "timeout": 0, "restart_interval": "",
        "schedules": [{"id": "hourly", "schedule_cron": "0 * * * *", "schedule_interval_seconds": 30,
                       "webhook_key": "", "timeout": 0}],
    }))
    spec = pipeline.spec
    assert spec.triggers.webhook is None  # "" = webhooks off
    assert spec.python_version == "3.11" and spec.max_instances is None and spec.timeout is None
    assert [(s.id, s.cron, s.interval, s.webhook_key, s.timeout) for s in spec.schedules] == [
        ("hourly", "0 * * * *", None, None, None)]  # schedules win; cron wins over the interval
    top = specs.PipelineSpec.model_validate({"schedule_cron": "0 9 * * *", "schedule_interval_seconds": 60})
    assert [(s.cron, s.interval) for s in top.schedules] == [("0 9 * * *", None)]
    assert specs.PipelineSpec.model_validate({"python_version": 3.12}).python_version == "3.12"


def test_a_webhook_key_used_twice_is_an_error_as_in_fastflow(tmp_path):
    with pytest.raises(errors.SpecError) as info:
        loader.load_folder(folder_with(tmp_path, {
            "webhook_key": "go", "schedules": [{"id": "a", "schedule_cron": "0 1 * * *", "webhook_key": "go"}]}))
    assert "webhook_key 'go' is used twice" in str(info.value)


def test_pipeline_name_json_is_read_when_there_is_no_pipeline_json(tmp_path):
    folder = folder_with(tmp_path, {"description": "from sales.json", "retry_attempts": 1}, name="sales",
                         meta_file="sales.json")
    pipeline = loader.load_folder(folder)
    assert pipeline.spec.description == "from sales.json" and pipeline.spec.retries.attempts == 1
    (folder / "sales.json").write_text("{bad")
    with pytest.raises(errors.SpecError) as info:
        loader.load_folder(folder)
    assert info.value.problems[0].file == "sales/sales.json"
    (folder / "pipeline.json").write_text(json.dumps({"description": "pipeline.json wins"}))
    assert loader.load_folder(folder).spec.description == "pipeline.json wins"


def test_restart_interval_takes_seconds_or_cron_and_restarts_are_reported_as_not_acted_on(tmp_path):
    assert specs.PipelineSpec.model_validate({"restart_interval": "3600"}).restart.interval == 3600
    assert specs.PipelineSpec.model_validate({"restart_interval": "0 3 * * *"}).restart.interval == "0 3 * * *"
    with pytest.raises(ValueError, match="cron"):
        specs.PipelineSpec.model_validate({"restart_interval": "daily"})
    found = loader.discover(folder_with(tmp_path, {"restart_on_crash": True, "restart_cooldown": 5}))
    assert not found.problems
    assert [(n.file, n.location) for n in found.notices] == [("ff/pipeline.json", "restart_on_crash")]
    assert "not acted on" in found.notices[0].message


def test_notices_for_cell_policies_without_a_cell_and_unknown_cell_metadata(tmp_path):
    book = notebook_of("md", "code", "md", "code", metadata={1: {"fastflow": {"retries": 1, "timeout": 9}}})
    found = loader.discover(folder_with(tmp_path, {"type": "notebook", "cells": [{}, {}, {"retries": 1}]},
                                        notebook=book))
    assert not found.problems
    assert [(n.file, n.location) for n in found.notices] == [
        ("ff/pipeline.json", "cells[2]"), ("ff/main.ipynb", "code cell 1 metadata.fastflow")]
    assert "main.ipynb has 2 code cells" in found.notices[0].message
    assert "timeout not read" in found.notices[1].message


def test_cell_log_lines_give_each_cells_state():
    log = [
        "cell 1/3 (cells[0]) started", "cell 1/3 (cells[0]) done in 0.1s",
        "cell 2/3 (cells[1]) started", "some output of the cell",
        "cell 2/3 (cells[1]) failed in 0.2s: ValueError: x; retrying in 1s",
        "cell 2/3 (cells[1]) started (retry 1/2)",
    ]
    running = cells.parse(log, finished=False)
    assert [(c.state, c.tries, c.error) for c in running] == [
        ("succeeded", 1, ""), ("running", 2, "ValueError: x"), ("pending", 0, "")]
    assert running[0].duration == 0.1
    killed = cells.parse(log, finished=True)
    assert [c.state for c in killed] == ["succeeded", "interrupted", "skipped"]
    assert cells.parse(["cell 1/1 (cells[0]) failed in 2.0s: KeyError: 'a'"], finished=True)[0].error == "KeyError: 'a'"
    assert cells.parse(["nothing here"], finished=True) == []
    assert cells.label(index=1, total=3) == "cell 2/3 (cells[1])"
