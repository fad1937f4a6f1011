"""Python client for the Kubeline REST API: ``Client`` (sync) and ``AsyncClient`` (asyncio), on httpx.

Both share one description of each call (``_Call``: method, path, parameters, response model),
so they cannot drift apart. Responses are the API's own schemas (``kubeline.api.schemas``);
problem+json errors become ``kubeline.domain.errors`` exceptions (404 ``NotFoundError``, 409
``ConflictError``, 422 ``InvalidInputError`` or ``SpecError`` with its problems, anything else
``ApiError``), each with ``status`` and ``problem`` attached.

Both send an API token (``token=``, else ``KUBELINE_TOKEN``, else the one ``kubeline login``
stored for the URL) as ``Authorization: Bearer``.

Following (``follow_logs``, ``follow_events``) reconnects after a dropped connection with
``Last-Event-ID``, so a caller sees each line exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, TypeVar

import httpx
import pydantic

from kubeline import credentials
from kubeline.api import environments, schemas
from kubeline.domain import errors

M = TypeVar("M", bound=pydantic.BaseModel)
API = "/api/v1"
_RECONNECTS = 20


class ApiError(errors.KubelineError):
    """An error answer the client has no closer class for (413, 429, 5xx, ...)."""

    def __init__(self, message: str, *, status: int = 0, problem: schemas.ProblemOut | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.problem = problem


@dataclasses.dataclass(frozen=True)
class _Call:
    method: str
    path: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    body: Any = None
    model: Any = None  # a pydantic model (or list[...] via TypeAdapter) for the JSON answer; None: raw


def raise_for_problem(response: httpx.Response) -> None:
    """Turn an error answer into the matching ``kubeline.domain.errors`` exception."""
    if response.status_code < 400:
        return
    try:
        problem = schemas.ProblemOut.model_validate_json(response.content)
    except pydantic.ValidationError:
        problem = schemas.ProblemOut(title=response.reason_phrase or "error", status=response.status_code,
                                     detail=response.text[:500])
    detail = problem.detail or problem.title
    exc: errors.KubelineError
    if response.status_code == 404:
        exc = errors.NotFoundError(detail)
    elif response.status_code == 410:
        exc = errors.GoneError(detail)
    elif response.status_code == 409:
        exc = errors.ConflictError(detail)
    elif response.status_code == 422 and problem.problems:
        exc = errors.SpecError([errors.Problem(file=p.file, location=p.location, message=p.message, hint=p.hint)
                                for p in problem.problems])
    elif response.status_code == 422:
        exc = errors.InvalidInputError(detail)
    else:
        exc = ApiError(f"{response.status_code} {problem.title}: {detail}", status=response.status_code,
                       problem=problem)
    setattr(exc, "status", response.status_code)  # noqa: B010 - domain errors carry no HTTP fields
    setattr(exc, "problem", problem)  # noqa: B010
    raise exc


def _decode(call: _Call, response: httpx.Response) -> Any:
    raise_for_problem(response)
    if call.model is None:
        return response
    return pydantic.TypeAdapter(call.model).validate_json(response.content)


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class _Calls:
    """The API, as calls; ``Client`` and ``AsyncClient`` execute them."""

    @staticmethod
    def pipelines() -> _Call:
        return _Call("GET", f"{API}/pipelines", model=schemas.PipelineList)

    @staticmethod
    def pipeline(name: str) -> _Call:
        return _Call("GET", f"{API}/pipelines/{name}", model=schemas.PipelineOut)

    @staticmethod
    def pipeline_environment(name: str) -> _Call:
        return _Call("GET", f"{API}/pipelines/{name}/environment", model=environments.EnvironmentOut)

    @staticmethod
    def pipeline_spec(name: str) -> _Call:
        return _Call("GET", f"{API}/pipelines/{name}/spec", model=dict[str, Any])

    @staticmethod
    def validate(spec: dict[str, Any] | None, files: dict[str, str] | None, name: str | None) -> _Call:
        return _Call("POST", f"{API}/pipelines/validate", body=_params(spec=spec, files=files, name=name),
                     model=schemas.ValidateOut)

    @staticmethod
    def reload() -> _Call:
        return _Call("POST", f"{API}/pipelines/reload", model=schemas.ReloadOut)

    @staticmethod
    def create_run(pipeline: str, inputs: dict[str, Any] | None, schedule_id: str | None) -> _Call:
        return _Call("POST", f"{API}/runs", body=_params(pipeline=pipeline, inputs=inputs or {},
                                                        schedule_id=schedule_id), model=schemas.RunOut)

    @staticmethod
    def runs(pipeline: str | None, state: Iterable[str] | None, trigger: str | None, limit: int,
             cursor: str | None) -> _Call:
        params = _params(pipeline=pipeline, trigger=trigger, limit=limit, cursor=cursor)
        if state:
            params["state"] = list(state)
        return _Call("GET", f"{API}/runs", params=params, model=schemas.RunList)

    @staticmethod
    def run(run_id: str) -> _Call:
        return _Call("GET", f"{API}/runs/{run_id}", model=schemas.RunOut)

    @staticmethod
    def cancel(run_id: str) -> _Call:
        return _Call("POST", f"{API}/runs/{run_id}/cancel", model=schemas.RunOut)

    @staticmethod
    def retry(run_id: str) -> _Call:
        return _Call("POST", f"{API}/runs/{run_id}/retry", model=schemas.RunOut)

    @staticmethod
    def attempts(run_id: str, stage: str | None) -> _Call:
        return _Call("GET", f"{API}/runs/{run_id}/attempts", params=_params(stage=stage),
                     model=schemas.AttemptList)

    @staticmethod
    def cells(run_id: str) -> _Call:
        return _Call("GET", f"{API}/runs/{run_id}/cells", model=schemas.RunCellsOut)

    @staticmethod
    def notebook(run_id: str, attempt_id: str) -> _Call:
        return _Call("GET", f"{API}/runs/{run_id}/attempts/{attempt_id}/notebook", model=schemas.NotebookOut)

    @staticmethod
    def attempt(run_id: str, attempt_id: str) -> _Call:
        return _Call("GET", f"{API}/runs/{run_id}/attempts/{attempt_id}", model=schemas.AttemptOut)

    @staticmethod
    def attempt_outputs(run_id: str, attempt_id: str) -> _Call:
        return _Call("GET", f"{API}/runs/{run_id}/attempts/{attempt_id}/outputs", model=schemas.OutputsOut)

    @staticmethod
    def logs(run_id: str, stage: str | None) -> _Call:
        return _Call("GET", f"{API}/runs/{run_id}/logs", params=_params(stage=stage))

    @staticmethod
    def events(run_id: str, after: int) -> _Call:
        return _Call("GET", f"{API}/runs/{run_id}/events", params={"after": after},
                     model=list[schemas.EventOut])

    @staticmethod
    def secrets() -> _Call:
        return _Call("GET", f"{API}/secrets", model=schemas.SecretList)

    @staticmethod
    def set_secret(name: str, value: str) -> _Call:
        return _Call("PUT", f"{API}/secrets/{name}", body={"value": value})

    @staticmethod
    def delete_secret(name: str) -> _Call:
        return _Call("DELETE", f"{API}/secrets/{name}")

    @staticmethod
    def run_script(code: str, inputs: dict[str, Any] | None, wait: bool, timeout: float | None,
                   wait_timeout: float) -> _Call:
        return _Call("POST", f"{API}/scripts", params={"wait": str(wait).lower(), "wait_timeout": wait_timeout},
                     body=_params(code=code, input=inputs or {}, timeout=timeout), model=schemas.ScriptOut)

    @staticmethod
    def health() -> _Call:
        return _Call("GET", "/healthz", model=schemas.HealthOut)

    @staticmethod
    def metrics() -> _Call:
        return _Call("GET", "/metrics")


@dataclasses.dataclass
class _SseParser:
    """Incremental ``text/event-stream`` parser: feed lines, get (event, id, data) at blank lines."""

    event: str = "message"
    id: str | None = None
    data: list[str] = dataclasses.field(default_factory=list)

    def feed(self, line: str) -> tuple[str, str | None, str] | None:
        if line == "":
            if not self.data:
                self.event = "message"
                return None
            frame = (self.event, self.id, "\n".join(self.data))
            self.event, self.data = "message", []
            return frame
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        elif name == "id":
            self.id = value
        return None


def _auth_headers(url: str, headers: dict[str, str] | None, token: str | None) -> dict[str, str]:
    """``Authorization: Bearer``: ``token``, else KUBELINE_TOKEN, else what ``kubeline login`` stored."""
    found = dict(headers or {})
    if not any(k.lower() == "authorization" for k in found):
        token = token or credentials.token_for(url)
        if token:
            found["Authorization"] = f"Bearer {token}"
    return found


class Client:
    """Sync client. ``Client("http://127.0.0.1:8080")``; use as a context manager or ``close()``."""

    def __init__(self, url: str, *, timeout: float = 30.0, headers: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=_auth_headers(self.url, headers, token),
                                 transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _do(self, call: _Call) -> Any:
        response = self.http.request(call.method, call.path, params=call.params, json=call.body)
        return _decode(call, response)

    # pipelines
    def pipelines(self) -> list[schemas.PipelineOut]:
        return list(self._do(_Calls.pipelines()).items)

    def pipeline(self, name: str) -> schemas.PipelineOut:
        result: schemas.PipelineOut = self._do(_Calls.pipeline(name))
        return result

    def pipeline_environment(self, name: str) -> environments.EnvironmentOut:
        """Its venvs: state, and the installed packages and versions of those built."""
        result: environments.EnvironmentOut = self._do(_Calls.pipeline_environment(name))
        return result

    def pipeline_spec(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._do(_Calls.pipeline_spec(name))
        return result

    def validate(self, *, spec: dict[str, Any] | None = None, files: dict[str, str] | None = None,
                 name: str | None = None) -> schemas.ValidateOut:
        result: schemas.ValidateOut = self._do(_Calls.validate(spec, files, name))
        return result

    def reload(self) -> schemas.ReloadOut:
        result: schemas.ReloadOut = self._do(_Calls.reload())
        return result

    # runs
    def create_run(self, pipeline: str, inputs: dict[str, Any] | None = None, *,
                   schedule_id: str | None = None) -> schemas.RunOut:
        result: schemas.RunOut = self._do(_Calls.create_run(pipeline, inputs, schedule_id))
        return result

    def runs(self, *, pipeline: str | None = None, state: Iterable[str] | None = None, trigger: str | None = None,
             limit: int = 50, cursor: str | None = None) -> schemas.RunList:
        result: schemas.RunList = self._do(_Calls.runs(pipeline, state, trigger, limit, cursor))
        return result

    def iter_runs(self, **filters: Any) -> Iterator[schemas.RunOut]:
        """Every matching run, following ``next`` cursors."""
        cursor = None
        while True:
            page = self.runs(cursor=cursor, **filters)
            yield from page.items
            if page.next is None:
                return
            cursor = page.next

    def run(self, run_id: str) -> schemas.RunOut:
        result: schemas.RunOut = self._do(_Calls.run(run_id))
        return result

    def cancel(self, run_id: str) -> schemas.RunOut:
        result: schemas.RunOut = self._do(_Calls.cancel(run_id))
        return result

    def retry(self, run_id: str) -> schemas.RunOut:
        result: schemas.RunOut = self._do(_Calls.retry(run_id))
        return result

    def attempts(self, run_id: str, *, stage: str | None = None) -> list[schemas.AttemptOut]:
        return list(self._do(_Calls.attempts(run_id, stage)).items)

    def cells(self, run_id: str) -> list[schemas.AttemptCellsOut]:
        """Per-cell status of the run's notebook stage attempts."""
        return list(self._do(_Calls.cells(run_id)).items)

    def attempt(self, run_id: str, attempt_id: str) -> schemas.AttemptOut:
        result: schemas.AttemptOut = self._do(_Calls.attempt(run_id, attempt_id))
        return result

    def notebook(self, run_id: str, attempt_id: str) -> schemas.NotebookOut:
        """The executed notebook of a notebook stage's attempt (outputs included)."""
        result: schemas.NotebookOut = self._do(_Calls.notebook(run_id, attempt_id))
        return result

    def attempt_outputs(self, run_id: str, attempt_id: str) -> dict[str, Any]:
        return dict(self._do(_Calls.attempt_outputs(run_id, attempt_id)).outputs)

    def wait(self, run_id: str, *, timeout: float = 600.0) -> schemas.RunOut:
        """The run once it is final (follows its events; ``TimeoutError`` after ``timeout``)."""
        deadline = time.monotonic() + timeout
        for _ in self.follow_events(run_id, timeout=timeout):
            if time.monotonic() > deadline:
                break
        run = self.run(run_id)
        if run.state.value in ("queued", "running"):
            raise TimeoutError(f"run {run_id} is still {run.state.value} after {timeout}s")
        return run

    # logs and events
    def logs(self, run_id: str, *, stage: str | None = None) -> str:
        return str(self._do(_Calls.logs(run_id, stage)).text)

    def events(self, run_id: str, *, after: int = 0) -> list[schemas.EventOut]:
        return list(self._do(_Calls.events(run_id, after)))

    def follow_logs(self, run_id: str, *, stage: str | None = None, after: str | None = None,
                    timeout: float | None = None) -> Iterator[schemas.LogLineOut]:
        params = _params(stage=stage)
        for data in self._follow(f"{API}/runs/{run_id}/logs/stream", params, after, timeout):
            yield schemas.LogLineOut.model_validate_json(data)

    def follow_events(self, run_id: str, *, after: int = 0,
                      timeout: float | None = None) -> Iterator[schemas.EventOut]:
        last = str(after) if after else None
        for data in self._follow(f"{API}/runs/{run_id}/events/stream", {}, last, timeout):
            yield schemas.EventOut.model_validate_json(data)

    def follow_runs(self, *, pipeline: str | None = None, state: Iterable[str] | None = None, limit: int = 50,
                    timeout: float | None = None) -> Iterator[schemas.RunList | schemas.RunOut]:
        """Every run's changes (``GET /runs/stream``): a ``RunList`` snapshot first (again after a
        reconnect), then each run that changed, as it now is; until ``timeout`` s (default: forever)."""
        heartbeat = 15.0 if timeout is None else min(15.0, max(1.0, timeout))
        params = _params(pipeline=pipeline, state=list(state) if state else None, limit=limit, heartbeat=heartbeat)
        for event, data in self._frames(f"{API}/runs/stream", params, None, timeout):
            if event == "snapshot":
                yield schemas.RunList.model_validate_json(data)
            elif event == "run":
                yield schemas.RunOut.model_validate_json(data)

    def _follow(self, path: str, params: dict[str, Any], last_id: str | None,
                timeout: float | None) -> Iterator[str]:
        for _event, data in self._frames(path, params, last_id, timeout):
            yield data

    def _frames(self, path: str, params: dict[str, Any], last_id: str | None,
                timeout: float | None) -> Iterator[tuple[str, str]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in range(_RECONNECTS):
            headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_id} if last_id else {})
            parser = _SseParser(id=last_id)
            try:
                with self.http.stream("GET", path, params=params, headers=headers,
                                      timeout=httpx.Timeout(30.0, read=None)) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise_for_problem(response)
                    for line in response.iter_lines():
                        frame = parser.feed(line)
                        if frame is None:
                            continue
                        event, last_id, data = frame
                        if event == "end":
                            return
                        yield event, data
                        if deadline is not None and time.monotonic() > deadline:
                            return
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
                time.sleep(0.2)
                continue
        raise ApiError(f"gave up following {path} after {_RECONNECTS} reconnects")

    # secrets
    def secrets(self) -> list[str]:
        return list(self._do(_Calls.secrets()).names)

    def set_secret(self, name: str, value: str) -> None:
        self._do(_Calls.set_secret(name, value))

    def delete_secret(self, name: str) -> None:
        self._do(_Calls.delete_secret(name))

    # scripts, health
    def run_script(self, code: str, inputs: dict[str, Any] | None = None, *, wait: bool = False,
                   timeout: float | None = None, wait_timeout: float = 300.0) -> schemas.ScriptOut:
        call = _Calls.run_script(code, inputs, wait, timeout, wait_timeout)
        response = self.http.request(call.method, call.path, params=call.params, json=call.body,
                                     timeout=wait_timeout + 30 if wait else None)
        result: schemas.ScriptOut = _decode(call, response)
        return result

    def health(self) -> schemas.HealthOut:
        result: schemas.HealthOut = self._do(_Calls.health())
        return result

    def ready(self) -> bool:
        return self.http.get("/readyz").status_code == 200

    def metrics(self) -> str:
        return str(self._do(_Calls.metrics()).text)


class AsyncClient:
    """Asyncio client with the same methods as ``Client`` (awaitable; followers are async iterators)."""

    def __init__(self, url: str, *, timeout: float = 30.0, headers: dict[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.url, timeout=timeout,
                                      headers=_auth_headers(self.url, headers, token), transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _do(self, call: _Call) -> Any:
        response = await self.http.request(call.method, call.path, params=call.params, json=call.body)
        return _decode(call, response)

    async def pipelines(self) -> list[schemas.PipelineOut]:
        return list((await self._do(_Calls.pipelines())).items)

    async def pipeline(self, name: str) -> schemas.PipelineOut:
        result: schemas.PipelineOut = await self._do(_Calls.pipeline(name))
        return result

    async def pipeline_environment(self, name: str) -> environments.EnvironmentOut:
        result: environments.EnvironmentOut = await self._do(_Calls.pipeline_environment(name))
        return result

    async def pipeline_spec(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._do(_Calls.pipeline_spec(name))
        return result

    async def validate(self, *, spec: dict[str, Any] | None = None, files: dict[str, str] | None = None,
                       name: str | None = None) -> schemas.ValidateOut:
        result: schemas.ValidateOut = await self._do(_Calls.validate(spec, files, name))
        return result

    async def reload(self) -> schemas.ReloadOut:
        result: schemas.ReloadOut = await self._do(_Calls.reload())
        return result

    async def create_run(self, pipeline: str, inputs: dict[str, Any] | None = None, *,
                         schedule_id: str | None = None) -> schemas.RunOut:
        result: schemas.RunOut = await self._do(_Calls.create_run(pipeline, inputs, schedule_id))
        return result

    async def runs(self, *, pipeline: str | None = None, state: Iterable[str] | None = None,
                   trigger: str | None = None, limit: int = 50, cursor: str | None = None) -> schemas.RunList:
        result: schemas.RunList = await self._do(_Calls.runs(pipeline, state, trigger, limit, cursor))
        return result

    async def run(self, run_id: str) -> schemas.RunOut:
        result: schemas.RunOut = await self._do(_Calls.run(run_id))
        return result

    async def cancel(self, run_id: str) -> schemas.RunOut:
        result: schemas.RunOut = await self._do(_Calls.cancel(run_id))
        return result

    async def retry(self, run_id: str) -> schemas.RunOut:
        result: schemas.RunOut = await self._do(_Calls.retry(run_id))
        return result

    async def attempts(self, run_id: str, *, stage: str | None = None) -> list[schemas.AttemptOut]:
        return list((await self._do(_Calls.attempts(run_id, stage))).items)

    async def cells(self, run_id: str) -> list[schemas.AttemptCellsOut]:
        """Per-cell status of the run's notebook stage attempts."""
        return list((await self._do(_Calls.cells(run_id))).items)

    async def attempt(self, run_id: str, attempt_id: str) -> schemas.AttemptOut:
        result: schemas.AttemptOut = await self._do(_Calls.attempt(run_id, attempt_id))
        return result

    async def attempt_outputs(self, run_id: str, attempt_id: str) -> dict[str, Any]:
        return dict((await self._do(_Calls.attempt_outputs(run_id, attempt_id))).outputs)

    async def wait(self, run_id: str, *, timeout: float = 600.0) -> schemas.RunOut:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            async for _ in self.follow_events(run_id):
                pass
        return await self.run(run_id)

    async def logs(self, run_id: str, *, stage: str | None = None) -> str:
        return str((await self._do(_Calls.logs(run_id, stage))).text)

    async def events(self, run_id: str, *, after: int = 0) -> list[schemas.EventOut]:
        return list(await self._do(_Calls.events(run_id, after)))

    async def follow_logs(self, run_id: str, *, stage: str | None = None,
                          after: str | None = None) -> AsyncIterator[schemas.LogLineOut]:
        async for data in self._follow(f"{API}/runs/{run_id}/logs/stream", _params(stage=stage), after):
            yield schemas.LogLineOut.model_validate_json(data)

    async def follow_events(self, run_id: str, *, after: int = 0) -> AsyncIterator[schemas.EventOut]:
        async for data in self._follow(f"{API}/runs/{run_id}/events/stream", {}, str(after) if after else None):
            yield schemas.EventOut.model_validate_json(data)

    async def _follow(self, path: str, params: dict[str, Any], last_id: str | None) -> AsyncIterator[str]:
        for _ in range(_RECONNECTS):
            headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_id} if last_id else {})
            parser = _SseParser(id=last_id)
            try:
                async with self.http.stream("GET", path, params=params, headers=headers,
                                            timeout=httpx.Timeout(30.0, read=None)) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise_for_problem(response)
                    async for line in response.aiter_lines():
                        frame = parser.feed(line)
                        if frame is None:
                            continue
                        event, last_id, data = frame
                        if event == "end":
                            return
                        yield data
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError):
                await asyncio.sleep(0.2)
                continue
        raise ApiError(f"gave up following {path} after {_RECONNECTS} reconnects")

    async def secrets(self) -> list[str]:
        return list((await self._do(_Calls.secrets())).names)

    async def set_secret(self, name: str, value: str) -> None:
        await self._do(_Calls.set_secret(name, value))

    async def delete_secret(self, name: str) -> None:
        await self._do(_Calls.delete_secret(name))

    async def run_script(self, code: str, inputs: dict[str, Any] | None = None, *, wait: bool = False,
                         timeout: float | None = None,  # noqa: ASYNC109 - the script's own time limit
                         wait_timeout: float = 300.0) -> schemas.ScriptOut:
        call = _Calls.run_script(code, inputs, wait, timeout, wait_timeout)
        response = await self.http.request(call.method, call.path, params=call.params, json=call.body,
                                           timeout=wait_timeout + 30 if wait else None)
        result: schemas.ScriptOut = _decode(call, response)
        return result

    async def health(self) -> schemas.HealthOut:
        result: schemas.HealthOut = await self._do(_Calls.health())
        return result

    async def ready(self) -> bool:
        return (await self.http.get("/readyz")).status_code == 200

    async def metrics(self) -> str:
        return str((await self._do(_Calls.metrics())).text)
