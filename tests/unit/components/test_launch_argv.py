"""components.launch.argv_for: which process each stage type starts, and in which runtime."""

from __future__ import annotations

import pytest

from kubeline.components import launch
from kubeline.domain import errors
from kubeline.executors import base


def test_python_passes_args_in_the_pipeline_runtime() -> None:
    result = launch.argv_for("python", file="clean.py", config={"args": ["--day", "today"]})
    assert result == (("python", "-u", "clean.py", "--day", "today"), base.Runtime.PIPELINE, ())
    argv, runtime, extra = launch.argv_for("script", file=None, config={})
    assert (argv, runtime, extra) == (("python", "-u", "main.py"), base.Runtime.PIPELINE, ())


def test_notebook_runs_the_runner_with_papermill_and_ipykernel() -> None:
    config = {"parameters": {"a": 1}, "cells": {"2": {"retries": 1, "delay_seconds": 0}}}
    argv, runtime, extra = launch.argv_for("notebook", file="report.ipynb", config=config)
    assert argv == ("python", "-m", "kubeline.components.notebook", "report.ipynb")
    assert runtime is base.Runtime.PIPELINE
    assert extra == ("papermill>=2.6", "ipykernel>=6.29")


def test_shell_string_uses_the_shell_and_a_list_is_the_argv() -> None:
    assert launch.argv_for("shell", file=None, config={"command": "echo hi | wc -c"}).argv == (
        "/bin/sh",
        "-c",
        "echo hi | wc -c",
    )
    assert launch.argv_for(
        "shell", file=None, config={"command": "ls", "shell": "/bin/bash"}
    ).argv == ("/bin/bash", "-c", "ls")
    assert launch.argv_for("shell", file=None, config={"command": ["echo", "a b"]}).argv == (
        "echo",
        "a b",
    )


@pytest.mark.parametrize("name", ["http_request", "json_transform"])
def test_builtin_components_run_with_kubeline_installed(name: str) -> None:
    config = {"url": "http://127.0.0.1:1/"} if name == "http_request" else {"expression": "a"}
    argv, runtime, extra = launch.argv_for(name, file=None, config=config)
    assert argv == ("python", "-m", "kubeline.components", name)
    assert runtime is base.Runtime.KUBELINE
    assert extra == ()


@pytest.mark.parametrize(
    ("stage_type", "config", "message"),
    [
        ("pyhton", {}, "unknown stage type 'pyhton'"),
        ("shell", {}, "a shell stage needs a command"),
        ("shell", {"command": []}, "command list is empty"),
        ("python", {"args": "x"}, "config.args"),
        ("notebook", {"parameters": {}, "bogus": 1}, "config.bogus"),
        ("http_request", {}, "config.url"),
        ("json_transform", {"expression": "a[", "data": {}}, "does not parse"),
    ],
)
def test_bad_stages_raise_spec_errors(
    stage_type: str, config: dict[str, object], message: str
) -> None:
    with pytest.raises(errors.SpecError) as caught:
        launch.argv_for(stage_type, file=None, config=config)
    assert message in str(caught.value)
