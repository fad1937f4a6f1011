"""Request dependencies: the ``Kubeline`` the app was made for, and shared per-app helpers."""

from __future__ import annotations

from typing import Annotated, Any

import fastapi

from kubeline import bootstrap
from kubeline.api import schemas


def get_kubeline(request: fastapi.Request) -> bootstrap.Kubeline:
    kl: bootstrap.Kubeline = request.app.state.kubeline
    return kl


KL = Annotated[bootstrap.Kubeline, fastapi.Depends(get_kubeline)]


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem+json errors a route may answer with."""
    return {status: {"model": schemas.ProblemOut, "content": {"application/problem+json": {}}}
            for status in statuses}
