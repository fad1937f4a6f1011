"""``/api/v1/attempts/{id}/io``: a running attempt's pod hands its outputs and route back.

The Kubernetes executor gives each attempt a random token (in the attempt's K8s Secret) and
keeps only its SHA-256 in the attempt's handle; this route compares digests in constant time,
accepts uploads only while the attempt runs, and stores the outputs with the attempt, the run's
secrets masked as in logs (the route
goes into the handle's ``io`` entry, which also tells the executor an upload happened). Any
replica can take the upload: the executor that waits reads it from the store. Bodies may be
gzip-compressed (``Content-Encoding: gzip``), so large outputs fit the request size limit.

A short stage's log may come along (``"log": [[unix time, "stdout"|"stderr", text], ...]``, at
most ``MAX_LOG_CHARS`` of text): it goes into the ``io`` entry too, and the executor writes it
to the attempt's log instead of waiting for the kubelet to serve the pod's log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import zlib
from typing import Annotated, Any

import fastapi

from kubeline import bootstrap
from kubeline.api import access, deps
from kubeline.domain import errors, runs, states
from kubeline.logs import masking

router = fastapi.APIRouter(prefix="/attempts", tags=["attempts"])
MAX_OUTPUTS_BYTES = 64 * 1024 * 1024  # decompressed
MAX_LOG_CHARS = 256 * 1024  # of an uploaded log's text (the pod sends at most 64 KiB)
_STREAMS = ("stdout", "stderr")
_UNAUTHORIZED = "invalid or missing attempt token (pods send $KUBELINE_ATTEMPT_TOKEN as a Bearer token)"


async def _masker(kl: bootstrap.Kubeline, attempt: runs.Attempt) -> masking.Masker:
    run = await kl.store.get_run(attempt.run_id)
    stage = next((s for s in run.spec.stages if s.id == attempt.stage_id), None)
    if stage is None:
        return masking.Masker(())
    return masking.Masker((await kl.engine.secret_values(run, stage)).values())


def _unauthorized() -> fastapi.HTTPException:
    return fastapi.HTTPException(401, detail=_UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def _decode(raw: bytes, encoding: str | None) -> Any:
    if encoding and encoding.lower() == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw, MAX_OUTPUTS_BYTES)
        except zlib.error as exc:
            raise fastapi.HTTPException(400, detail=f"body is not valid gzip: {exc}") from None
        if inflater.unconsumed_tail:
            raise fastapi.HTTPException(413, detail=f"outputs are larger than {MAX_OUTPUTS_BYTES} bytes")
    elif encoding and encoding.lower() != "identity":
        raise fastapi.HTTPException(415, detail=f"Content-Encoding {encoding!r}: send gzip or identity")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise fastapi.HTTPException(400, detail=f"body is not JSON: {exc}") from None


def _log_lines(log: Any) -> list[list[Any]]:
    """The uploaded log, checked: a list of [time, stream, text] of bounded total size."""
    shape = 'send "log" as [[unix time, "stdout" or "stderr", "text"], ...]'
    if not isinstance(log, list):
        raise fastapi.HTTPException(400, detail=shape)
    size = 0
    for line in log:
        if not (isinstance(line, list) and len(line) == 3 and isinstance(line[0], int | float)
                and not isinstance(line[0], bool) and line[1] in _STREAMS and isinstance(line[2], str)):
            raise fastapi.HTTPException(400, detail=f"{shape}; got {str(line)[:100]}")
        size += len(line[2])
        if size > MAX_LOG_CHARS:
            raise fastapi.HTTPException(413, detail=f"the uploaded log is longer than {MAX_LOG_CHARS} "
                                                    "characters (longer logs are read from the pod)")
    return log


@router.put("/{attempt_id}/io", status_code=204, responses=deps.problem_responses(400, 401, 409, 413),
            dependencies=[access.public("the pod proves itself with its per-attempt token", audit=False)])
async def put_attempt_io(
    attempt_id: Annotated[str, fastapi.Path(max_length=64)],
    request: fastapi.Request,
    kl: deps.KL,
    authorization: Annotated[str | None, fastapi.Header()] = None,
    content_encoding: Annotated[str | None, fastapi.Header()] = None,
) -> fastapi.Response:
    """Store a running attempt's outputs (a JSON object) and route: ``{"outputs": {...}, "route": null}``."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized()
    try:
        attempt = await kl.store.get_attempt(attempt_id)
    except errors.NotFoundError:
        raise _unauthorized() from None
    if attempt.state is states.AttemptState.PENDING and "token_sha256" not in attempt.handle:
        raise fastapi.HTTPException(409, detail=f"attempt {attempt_id} is still starting; retry")
    expected = str(attempt.handle.get("token_sha256", ""))
    given = hashlib.sha256(token.strip().encode()).hexdigest()
    if not expected or not hmac.compare_digest(expected, given):
        raise _unauthorized()
    if attempt.state is not states.AttemptState.RUNNING:
        raise fastapi.HTTPException(409, detail=f"attempt {attempt_id} is {attempt.state.value}; "
                                                "outputs are accepted while it runs")
    body = _decode(await request.body(), content_encoding)
    outputs = body.get("outputs") if isinstance(body, dict) else None
    route = body.get("route") if isinstance(body, dict) else None
    if not isinstance(outputs, dict) or not (route is None or isinstance(route, str)):
        raise fastapi.HTTPException(400, detail='send {"outputs": {...}, "route": "name" or null}')
    log = _log_lines(body["log"]) if body.get("log") is not None else None
    mask = await _masker(kl, attempt)  # secrets are masked before anything is stored, as in logs
    upload: dict[str, Any] = {"route": mask(route) if route else route, "at": dt.datetime.now(dt.UTC).isoformat()}
    if log is not None:
        upload["log"] = [[at, stream, mask(text)] for at, stream, text in log]
    await kl.store.update_attempt(attempt_id, outputs=mask.data(outputs), handle={**attempt.handle, "io": upload})
    return fastapi.Response(status_code=204)
