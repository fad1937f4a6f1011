"""Logs and run events: download, and follow by SSE with ``Last-Event-ID`` resume.

Log frames carry ``id: <LogLine.cursor>``; a reconnecting client sends it back as
``Last-Event-ID`` (browsers do that themselves) and gets exactly the lines after it. Event frames
carry the event's id. Both streams end with an ``end`` event once the run is final and every
line/event written before that has been sent. Each follower reads the files/table itself, so any
number of viewers each get every line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import fastapi
import pydantic
from fastapi import responses

from kubeline.api import access, deps, openapi, schemas, services, sse
from kubeline.auth import roles
from kubeline.domain import errors, states
from kubeline.logs import lines
from kubeline.storage import wakeups

router = fastapi.APIRouter(prefix="/runs/{run_id}", tags=["logs and events"], dependencies=[
    access.requires(roles.Role.viewer, pipeline=access.run_path())])
DELAYED_HEADER = "Kubeline-Log-Delayed"
_SAFETY_POLL = 5.0  # seconds between store reads when no wake-up came (one may have been lost)
_CURSOR = r"^.{0,260}/[0-9]{1,18}/[0-9]{1,18}$"  # the length is in the pattern: one rule, not two
LastLogId = Annotated[str | None, fastapi.Header(alias="Last-Event-ID", pattern=_CURSOR,
                                                 description="The id of the last log event seen")]
LastEventId = Annotated[str | None, fastapi.Header(alias="Last-Event-ID", pattern=r"^[0-9]{1,18}$",
                                                   description="The id of the last change event seen")]
LogCursor = Annotated[str, fastapi.Query(pattern=_CURSOR, description="A cursor; as Last-Event-ID")]
# A log line's JSON as ``schemas.LogLineOut`` documents it (the same fields; a test holds them
# equal), written by pydantic-core from the line itself: a model per line cost ~6 us of ~8.
_LOG_LINE = pydantic.TypeAdapter(lines.LogLine)
_END = ("end", {"type": "object", "required": ["state"], "properties": {"state": {"type": "string"}},
                "description": "The run is final and everything before it was sent."})
_LOG_EVENTS = openapi.sse_events(("log", schemas.LogLineOut.model_json_schema()), _END)
_CHANGE_EVENTS = openapi.sse_events(("change", schemas.EventOut.model_json_schema()), _END)


def _watch(request: fastapi.Request) -> sse.RunWatch:
    watch: sse.RunWatch = request.app.state.run_watch
    return watch


@router.get("/logs", response_class=responses.PlainTextResponse,
            responses={**deps.problem_responses(404, 410), 200: {"content": {"text/plain": {}}}})
async def download_logs(run_id: str, kl: deps.KL,
                        stage: Annotated[str | None, fastapi.Query(max_length=128)] = None) -> responses.Response:
    """Every stored line of the run (or one stage) in time order, as text.

    410 when the log of every ended attempt is gone (the problem's detail says why); a
    ``Kubeline-Log-Delayed`` header when lines wait on a replica's disk for the object store."""
    await _check_stage(kl, run_id, stage)
    found = await services.log_availability(kl, run_id, stage_id=stage)
    text = await services.log_text(kl, run_id, stage_id=stage)
    headers = {"Content-Disposition": f'attachment; filename="{run_id}.log"'}
    if found.delayed:
        headers[DELAYED_HEADER] = found.delayed
    return responses.PlainTextResponse(text, headers=headers)


@router.get("/logs/status", response_model=schemas.LogStatusOut, responses=deps.problem_responses(404))
async def log_status(run_id: str, kl: deps.KL,
                     stage: Annotated[str | None, fastapi.Query(max_length=128)] = None) -> schemas.LogStatusOut:
    """Whether the run's log is complete, delayed (lines wait for the object store) or gone."""
    await _check_stage(kl, run_id, stage)
    try:
        found = await services.log_availability(kl, run_id, stage_id=stage)
    except errors.GoneError as exc:
        return schemas.LogStatusOut(state="gone", detail=str(exc))
    if found.delayed:
        return schemas.LogStatusOut(state="delayed", detail=found.delayed)
    if found.missing:
        return schemas.LogStatusOut(state="partial", detail=found.gone_reason)
    return schemas.LogStatusOut(state="available", detail="")


@router.get("/logs/stream", response_class=responses.StreamingResponse,
            responses={**deps.problem_responses(404, 410, 422), **_LOG_EVENTS})
async def follow_logs(
    run_id: str, *, kl: deps.KL, request: fastapi.Request, last_event_id: LastLogId = None,
    stage: Annotated[str | None, fastapi.Query(max_length=128)] = None,
    after: LogCursor | None = None,
) -> responses.StreamingResponse:
    """Follow the log as server-sent events (``event: log``, JSON ``data``, ``id`` = cursor)."""
    await _check_stage(kl, run_id, stage)
    cursor = last_event_id or after
    if cursor is not None:
        try:
            lines.parse_cursor(cursor)
        except ValueError as exc:
            raise errors.InvalidInputError(f"Last-Event-ID: {exc}") from None
    found = await services.log_availability(kl, run_id, stage_id=stage)
    watch = _watch(request)

    async def finished() -> bool:
        return await watch.is_final(run_id)

    async def frames() -> AsyncIterator[bytes]:
        yield sse.retry_hint()
        if found.delayed:
            yield sse.event(data={"detail": found.delayed}, event_type="delayed")
        async for batch in kl.logs.follow(run_id, stage_id=stage, after=cursor, until=finished):
            # One write per batch read, not per line: a 200,000-line log was 200,000 sends.
            yield b"".join(sse.frame(data_json=_LOG_LINE.dump_json(line), event_type="log", event_id=line.cursor)
                           for line in batch)
        yield sse.event(data={"state": (await watch.state(run_id)).value}, event_type="end")

    return responses.StreamingResponse(frames(), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


@router.get("/events", response_model=list[schemas.EventOut], responses=deps.problem_responses(404))
async def list_events(run_id: str, kl: deps.KL,
                      after: Annotated[int, fastapi.Query(ge=0, le=2**62)] = 0) -> list[schemas.EventOut]:
    """The run's state changes (run, stages, attempts), oldest first, after an event id."""
    await kl.store.get_run(run_id)
    return [schemas.EventOut.of(e) for e in await kl.store.list_events(run_id, after=after)]


@router.get("/events/stream", response_class=responses.StreamingResponse,
            responses={**deps.problem_responses(404, 422), **_CHANGE_EVENTS})
async def follow_events(run_id: str, kl: deps.KL, last_event_id: LastEventId = None,
                        after: Annotated[int, fastapi.Query(ge=0, le=2**62)] = 0) -> responses.StreamingResponse:
    """Follow the run's state changes as server-sent events (``event: change``, ``id`` = event id)."""
    await kl.store.get_run(run_id)
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise errors.InvalidInputError(f"Last-Event-ID {last_event_id!r} is not an event id (a number)")
        after = int(last_event_id)

    async def frames() -> AsyncIterator[bytes]:
        seen = after
        yield sse.retry_hint()
        # Woken by the EVENTS wake-up of the run (recorded by any replica); a slow poll as the net.
        async with kl.store.wakeups.subscribe(wakeups.Channel.EVENTS, key=run_id) as changes:
            while True:
                final = states.is_final((await kl.store.get_run(run_id)).state)
                found = await kl.store.list_events(run_id, after=seen)
                for item in found:
                    seen = item.id
                    yield sse.event(data=schemas.EventOut.of(item).model_dump(mode="json"),
                                    event_type="change", event_id=str(item.id))
                if final and not found:
                    run = await kl.store.get_run(run_id)
                    yield sse.event(data={"state": run.state.value}, event_type="end")
                    return
                if not found:  # after new events, look again at once (the run may be final now)
                    await changes.wait(within=_SAFETY_POLL)

    return responses.StreamingResponse(frames(), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)


async def _check_stage(kl: deps.KL, run_id: str, stage: str | None) -> None:
    run = await kl.store.get_run(run_id)
    if stage is not None and stage not in {s.id for s in run.spec.stages}:
        raise errors.NotFoundError(f"run {run_id} has no stage {stage!r} "
                                   f"(its stages: {', '.join(s.id for s in run.spec.stages)})")
