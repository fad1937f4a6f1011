"""Built-in stage types and the schema of each one's ``config`` (validated up front)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import pydantic


class _Config(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class PythonConfig(_Config):
    args: list[str] = pydantic.Field(default_factory=list, description="Command-line arguments.")


class NotebookConfig(_Config):
    parameters: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="Injected into the cell tagged 'parameters' (papermill)."
    )
    kernel: str | None = None


class ShellConfig(_Config):
    command: str | list[str] | None = None
    shell: str = "/bin/sh"


class HttpRequestConfig(_Config):
    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    headers: dict[str, str] = pydantic.Field(default_factory=dict)
    params: dict[str, str] = pydantic.Field(default_factory=dict)
    json_body: Any = pydantic.Field(None, alias="json")
    body: str | None = None
    timeout: float = pydantic.Field(30, gt=0)
    expect_status: list[int] = pydantic.Field(
        default_factory=list, description="Accepted status codes; default any 2xx."
    )
    follow_redirects: bool = True

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class JsonTransformConfig(_Config):
    expression: str | None = pydantic.Field(
        None, description="JMESPath expression applied to 'data'; without one, 'data' passes through unchanged.")
    data: Any = pydantic.Field(
        None, description="What to transform, usually '${stages.x.outputs.body}'; default: the stage inputs."
    )

    @pydantic.field_validator("expression")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is None:
            return value
        import jmespath  # not I/O: a pure parser, used only to validate up front
        import jmespath.exceptions

        try:
            jmespath.compile(value)
        except jmespath.exceptions.ParseError as exc:
            raise ValueError(f"JMESPath expression {value!r} does not parse: {exc}") from None
        return value


@dataclasses.dataclass(frozen=True)
class StageType:
    name: str
    config: type[_Config]
    needs_file: bool  # the stage runs a file of the folder
    default_file: str | None
    runs_user_code: bool  # needs the pipeline's own virtualenv


BUILTIN: dict[str, StageType] = {
    t.name: t
    for t in (
        StageType("python", PythonConfig, needs_file=True, default_file="main.py", runs_user_code=True),
        StageType("notebook", NotebookConfig, needs_file=True, default_file="main.ipynb", runs_user_code=True),
        StageType("shell", ShellConfig, needs_file=False, default_file=None, runs_user_code=True),
        StageType("http_request", HttpRequestConfig, needs_file=False, default_file=None, runs_user_code=False),
        StageType("json_transform", JsonTransformConfig, needs_file=False, default_file=None, runs_user_code=False),
    )
}
ALIASES = {"script": "python"}
