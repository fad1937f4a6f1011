"""A spec posted to the API is refused what the same spec in a folder is refused, with the same problems."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from kubeline.api import services
from kubeline.domain import errors
from kubeline.pipelines import loader

MALICIOUS: list[dict[str, Any]] = [
    {"stages": [{"id": "a", "file": "../../../etc/passwd"}]},
    {"stages": [{"id": "a", "file": "/etc/passwd"}]},
    {"stages": [{"id": "a", "file": "sub/../../x.py"}]},
    {"stages": [{"id": "a", "type": "notebook", "file": "../../home/user/secret.ipynb"}]},
    {"requirements": "../../etc/passwd", "stages": [{"id": "a", "type": "shell", "command": "true"}]},
    {"stages": [{"id": "a", "file": "main.py", "requirements": "/etc/shadow"}]},
    {"name": "../etc", "stages": [{"id": "a", "type": "shell", "command": "true"}]},
    {"name": "x;rm -rf /", "stages": [{"id": "a", "type": "shell", "command": "true"}]},
    {"stages": [{"id": "../a", "type": "shell", "command": "true"}]},
    {"secrets": ["A=B"], "stages": [{"id": "a", "type": "shell", "command": "true"}]},
    {"env": {"X;Y": "1"}, "stages": [{"id": "a", "type": "shell", "command": "true"}]},
]


def folder_problems(tmp_path: pathlib.Path, spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    (folder / "main.py").write_text("")
    with pytest.raises(errors.SpecError) as info:
        loader.load_folder(folder)
    return [(p.location, p.message, p.hint) for p in info.value.problems]


def posted_problems(spec: dict[str, Any]) -> list[tuple[str, str, str]]:
    with pytest.raises(errors.SpecError) as info:
        services.validate_spec(spec=spec, files=None, name=None)
    return [(p.location, p.message, p.hint) for p in info.value.problems]


@pytest.mark.parametrize("spec", MALICIOUS, ids=lambda s: str(s)[:60])
def test_a_posted_spec_is_refused_what_a_folder_is(tmp_path: pathlib.Path, spec: dict[str, Any]) -> None:
    assert posted_problems(spec) == folder_problems(tmp_path, spec)


def test_the_problem_names_the_field_and_the_path() -> None:
    assert posted_problems({"stages": [{"id": "a", "file": "../../../etc/passwd"}]}) == [
        ("stages[0].file", "'../../../etc/passwd' is outside the pipeline folder", "")]


@pytest.mark.parametrize("relative", ["main.py", "sub/x.py", "./a/../b.py", "a/b/../../c.py"])
def test_paths_inside_are_accepted(relative: str) -> None:
    assert loader.inside(None, relative)


@pytest.mark.parametrize("relative", ["..", "../x", "/x", "a/../../x", "a\0b"])
def test_paths_leaving_are_refused(relative: str, tmp_path: pathlib.Path) -> None:
    assert not loader.inside(None, relative)
    assert not loader.inside(tmp_path, relative)
