import json
import pathlib

import pytest

from kubeline.domain import errors
from kubeline.pipelines import loader


def make(tmp_path: pathlib.Path, name: str, files: dict[str, str]) -> pathlib.Path:
    folder = tmp_path / name
    folder.mkdir()
    for rel, text in files.items():
        (folder / rel).write_text(text)
    return folder


def problems(folder: pathlib.Path) -> list[str]:
    with pytest.raises(errors.SpecError) as info:
        loader.load_folder(folder)
    return [str(p) for p in info.value.problems]


def test_main_py_alone_is_a_one_stage_pipeline(tmp_path):
    pipeline = loader.load_folder(make(tmp_path, "hello", {"main.py": "print(1)", "requirements.txt": "six"}))
    assert pipeline.name == "hello"
    assert [(s.id, s.type, s.file) for s in pipeline.spec.stages] == [("main", "python", "main.py")]
    assert pipeline.spec.requirements == "requirements.txt"


def test_notebook_folder_and_lock_file_wins(tmp_path):
    folder = make(tmp_path, "nb", {"main.ipynb": "{}", "requirements.txt": "a", "requirements.txt.lock": "a==1"})
    pipeline = loader.load_folder(folder)
    assert pipeline.spec.stages[0].type == "notebook"
    assert pipeline.spec.requirements == "requirements.txt.lock"


def test_every_problem_is_reported_at_once(tmp_path):
    folder = make(tmp_path, "bad", {"main.py": "", "pipeline.yaml": """
retires: 3
schedules: [{cron: "0 2 * *"}]
inputs: {day: {type: string}}
stages:
  - {id: load, file: main.py}
  - {id: b, type: pyton, dependsOn: [lode]}
  - {id: c, file: nope.py, dependsOn: [d], inputs: {x: "${inputs.dya}"}}
  - {id: d, dependsOn: [c], file: main.py}
  - {id: e, type: http_request, file: main.py, inputs: {y: "${stages.load.outputs.k}"}}
"""})
    found = "\n".join(problems(folder))
    assert "bad/pipeline.yaml: retires: unknown field 'retires' (did you mean 'retries'?)" in found
    assert "schedules[0].cron: cron '0 2 * *' has 4 fields" in found
    assert "stages[1].dependsOn[0]: 'lode' is not a stage (did you mean 'load'?)" in found
    assert "stages[1].type: unknown stage type 'pyton' (did you mean 'python'?)" in found
    assert "stages form a cycle: c -> d -> c" in found
    assert "stages[2].file: file 'nope.py' does not exist" in found
    assert "input 'dya', which is not declared (did you mean 'day'?)" in found
    assert "uses stage 'load', which 'e' does not depend on (add 'load' to dependsOn)" in found
    assert "stages[4].config.url: required field is missing" in found


@pytest.mark.parametrize(("files", "message"), [
    ({"pipeline.yaml": "stages: [\n  {id: a"}, "invalid YAML"),
    ({"pipeline.json": '{"timeout": 3,}'}, "invalid JSON"),
    ({"pipeline.yaml": "- 1\n- 2"}, "must be a mapping"),
    ({"pipeline.yaml": "{}", "pipeline.json": "{}"}, "both pipeline.yaml and pipeline.json"),
    ({"pipeline.yaml": "description: x"}, "no stages and no main.py or main.ipynb"),
    ({"pipeline.yaml": "stages: [{id: a, file: ../../etc/passwd}]"}, "outside the pipeline folder"),
    ({"pipeline.yaml": "requirements: reqs.txt", "main.py": ""}, "'reqs.txt' does not exist"),
    ({"pipeline.yaml": "stages: [{id: a, type: shell}]"}, "needs a command"),
    ({"pipeline.yaml": "stages: [{id: a, type: json_transform, config: {expression: 'a[['}}]"}, "does not parse"),
])
def test_broken_files_get_clear_errors(tmp_path, files, message):
    assert any(message in p for p in problems(make(tmp_path, "p", files)))


def test_line_numbers_for_yaml_errors(tmp_path):
    found = problems(make(tmp_path, "p", {"pipeline.yaml": "a: 1\nb: [\n"}))
    assert "line " in found[0]


def test_malicious_folder_name(tmp_path):
    folder = make(tmp_path, "bad name;rm -rf", {"main.py": ""})
    assert "not a valid pipeline name" in problems(folder)[0]


def test_expressions_in_config_are_not_type_checked_up_front(tmp_path):
    folder = make(tmp_path, "p", {"pipeline.yaml": json.dumps({
        "inputs": {"url": {"type": "string"}},
        "stages": [{"id": "f", "type": "http_request", "config": {"url": "${inputs.url}", "timeout": "${inputs.url}"}}],
    })})
    assert loader.load_folder(folder).spec.stages[0].id == "f"


def test_discover_reports_bad_folders_and_unknown_downstream(tmp_path):
    make(tmp_path, "good", {"main.py": "", "pipeline.yaml": "downstream: [{pipeline: reprot}]"})
    make(tmp_path, "report", {"main.py": ""})
    make(tmp_path, "broken", {"pipeline.yaml": "timeout: -1\n", "main.py": ""})
    (tmp_path / "not-a-pipeline").mkdir()
    found = loader.discover(tmp_path)
    assert sorted(p.name for p in found.pipelines) == ["good", "report"]
    text = "\n".join(map(str, found.problems))
    assert "broken/pipeline.yaml: timeout:" in text
    assert "pipeline 'reprot' does not exist (did you mean 'report'?)" in text


def test_binary_spec_file(tmp_path):
    folder = make(tmp_path, "p", {"main.py": ""})
    (folder / "pipeline.yaml").write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8 text" in problems(folder)[0]


def test_yaml_on_and_yes_stay_strings(tmp_path):
    from kubeline.pipelines import loader as loader_

    assert loader_.parse_yaml("on: success\nx: yes\ny: true\nz: off") == {"on": "success", "x": "yes", "y": True, "z": "off"}


def test_code_baked_into_the_image_is_not_looked_for_in_the_folder(tmp_path):
    only_spec = make(tmp_path, "baked", {"pipeline.yaml": "kubernetes: {codePath: /opt/app/sales}\n"})
    pipeline = loader.load_folder(only_spec)
    assert [(s.id, s.type, s.file) for s in pipeline.spec.stages] == [("main", "python", "main.py")]
    staged = make(tmp_path, "baked-stages", {"pipeline.yaml": """
stages:
  - {id: a, file: etl/a.py, requirements: etl/requirements.txt, kubernetes: {codePath: /opt/app}}
  - {id: b, file: b.py, dependsOn: [a]}
"""})
    found = problems(staged)
    assert found == [p for p in found if "'b.py' does not exist" in p], found  # b is not in the image
    assert found
