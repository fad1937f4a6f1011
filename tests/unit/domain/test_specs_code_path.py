"""``kubernetes.codePath``: a pipeline folder baked into the image, named by an absolute path."""

import pathlib

import pydantic
import pytest

from kubeline.domain import errors, specs
from kubeline.pipelines import loader


def test_code_path_is_read_from_either_spelling() -> None:
    assert specs.KubernetesSpec.model_validate({"codePath": "/opt/app/sales"}).code_path == "/opt/app/sales"
    assert specs.KubernetesSpec.model_validate({"code_path": "/opt/app"}).code_path == "/opt/app"
    assert specs.KubernetesSpec().code_path is None


@pytest.mark.parametrize("value", ["opt/app", "./app", "", "~/app"])
def test_a_relative_code_path_is_refused_with_an_example(value: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=r"is not an absolute path.*codePath: /opt/app"):
        specs.KubernetesSpec.model_validate({"codePath": value})


def test_the_folder_loader_names_the_file_and_field(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "sales"
    folder.mkdir()
    (folder / "main.py").write_text("print(1)\n")
    (folder / "pipeline.yaml").write_text("kubernetes: {codePath: app/sales}\n")
    with pytest.raises(errors.SpecError) as caught:
        loader.load_folder(folder)
    text = str(caught.value)
    assert "sales/pipeline.yaml" in text and "kubernetes.codePath" in text
    assert "'app/sales' is not an absolute path" in text
