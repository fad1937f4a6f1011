"""Request dependencies: the ``Kubeline`` the app was made for, and shared per-app helpers."""

from __future__ import annotations

from typing import Annotated, Any

import fastapi

from kubeline import bootstrap
from kubeline.api import schemas


async def get_kubeline(request: fastapi.Request) -> bootstrap.Kubeline:
    """``async``: FastAPI runs a plain ``def`` dependency in its thread pool, one thread hop per
    request (and GIL contention with the loop) for an attribute read."""
    kl: bootstrap.Kubeline = request.app.state.kubeline
    return kl


KL = Annotated[bootstrap.Kubeline, fastapi.Depends(get_kubeline)]


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem+json errors a route may answer with."""
    return {status: {"model": schemas.ProblemOut, "content": {"application/problem+json": {}}}
            for status in statuses}
