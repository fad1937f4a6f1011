"""``kubeline server``: run the API, dispatcher and scheduler (see ``kubeline.server``)."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Annotated, Any

import typer

from kubeline import server as server_
from kubeline import server_logs
from kubeline import settings as settings_


def server(  # noqa: PLR0917 - Typer options
    host: Annotated[str, typer.Option(help="Listen address (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Listen port (0: any free port).")] = 8080,
    upload_port: Annotated[int | None, typer.Option(
        min=0, max=65535, help="Port of the attempt-upload listener, the only one stage pods need "
                               "(default KUBELINE_UPLOAD_PORT, 8081).")] = None,
    role: Annotated[str, typer.Option(help="all | api | scheduler | worker")] = "all",
    pipelines: Annotated[pathlib.Path | None, typer.Option(
        "--pipelines", help="Folder of pipelines (default KUBELINE_PIPELINES_DIR).")] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
    log_format: Annotated[str, typer.Option(
        help="auto (readable lines on a terminal, JSON lines otherwise) | text | json")] = "auto",
    insecure_no_auth: Annotated[bool, typer.Option(
        "--insecure-no-auth", help="No login at all: every caller is an admin. Local experiments only.")] = False,
) -> None:
    """Run the Kubeline server (API + dispatcher + scheduler) until SIGTERM or Ctrl-C."""
    if role not in server_.ROLES:
        raise typer.BadParameter(f"{role!r} is not one of {', '.join(server_.ROLES)}", param_hint="--role")
    overrides: dict[str, Any] = {"pipelines_dir": pipelines} if pipelines is not None else {}
    if upload_port is not None:
        overrides["upload_port"] = upload_port
    if log_format not in server_logs.FORMATS:
        raise typer.BadParameter(f"{log_format!r} is not one of {', '.join(server_logs.FORMATS)}",
                                 param_hint="--log-format")
    settings = settings_.Settings(**overrides)
    server_logs.configure(level=log_level, fmt=log_format)
    try:
        server_.check_bind(settings, host, insecure_no_auth=insecure_no_auth)
    except server_.InsecureBind as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    asyncio.run(server_.serve(settings, host=host, port=port, role=role, insecure_no_auth=insecure_no_auth))
