"""The ``http_request`` stage: one HTTP call whose response becomes the stage's outputs.

Outputs are ``{status, headers, body}``; ``body`` is the parsed JSON when the response says it is
JSON, else text, so the next stage can map ``${stages.fetch.outputs.body.items}`` directly.
Bodies are streamed and refused beyond ``MAX_BODY_BYTES``: outputs are stored in the database
and passed to every later stage, which is the wrong place for large downloads.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

import httpx

from kubeline.components import base
from kubeline.domain import components

MAX_BODY_BYTES: Final = 10 * 1024 * 1024
_EXCERPT: Final = 200


def run(
    *, config: components.HttpRequestConfig, inputs: dict[str, Any], log: base.Log
) -> dict[str, Any]:
    """Send the request; return the outputs or raise ``ComponentError`` with the reason."""
    del inputs  # the request is fully described by the rendered config
    if config.json_body is not None and config.body is not None:
        raise base.ComponentError("http_request: give 'json' or 'body', not both")
    label = f"{config.method} {config.url}"
    log(f"{label} (timeout {config.timeout:g}s)")
    started = time.monotonic()
    try:
        with httpx.Client(
            timeout=config.timeout, follow_redirects=config.follow_redirects
        ) as client:
            request = client.build_request(
                config.method,
                config.url,
                headers=config.headers,
                params=config.params,
                json=config.json_body,
                content=config.body,
            )
            response = client.send(request, stream=True)
            try:
                raw = _read_capped(response, label=label)
            finally:
                response.close()
    except httpx.TimeoutException as exc:
        raise base.ComponentError(
            f"{label} timed out after {config.timeout:g}s ({type(exc).__name__});"
            " raise 'timeout' in the stage config if the server is slow"
        ) from None
    except httpx.ConnectError as exc:
        raise base.ComponentError(f"{label}: could not connect: {exc}") from None
    except httpx.UnsupportedProtocol:
        raise base.ComponentError(f"{label}: the URL needs an http:// or https:// scheme") from None
    except httpx.InvalidURL as exc:
        raise base.ComponentError(f"{label}: invalid URL: {exc}") from None
    except httpx.HTTPError as exc:
        raise base.ComponentError(f"{label} failed: {type(exc).__name__}: {exc}") from None

    elapsed = time.monotonic() - started
    content_type = response.headers.get("content-type", "")
    log(
        f"{label} -> {response.status_code} {response.reason_phrase}, {len(raw)} bytes"
        f"{', ' + content_type if content_type else ''}, {elapsed:.2f}s"
    )
    body = _decode(raw, response=response, log=log)
    if not _accepted(response.status_code, config.expect_status):
        expected = ", ".join(map(str, config.expect_status)) or "2xx"
        excerpt = (body if isinstance(body, str) else json.dumps(body))[:_EXCERPT]
        raise base.ComponentError(
            f"{label} returned {response.status_code} {response.reason_phrase}"
            f" (expected {expected})"
            + (f": {' '.join(excerpt.split())}" if excerpt.strip() else "")
        )
    return {
        "status": response.status_code,
        "headers": {key.lower(): value for key, value in response.headers.items()},
        "body": body,
    }


def _read_capped(response: httpx.Response, *, label: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise base.ComponentError(_too_big(label, f"{int(declared)} bytes declared"))
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise base.ComponentError(_too_big(label, f"more than {MAX_BODY_BYTES} bytes received"))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_big(label: str, detail: str) -> str:
    return (
        f"{label}: the response body is larger than the {MAX_BODY_BYTES // (1024 * 1024)} MB limit"
        f" ({detail}); download large files in a python stage and save them to the artifacts dir"
    )


def _decode(raw: bytes, *, response: httpx.Response, log: base.Log) -> Any:
    encoding = response.charset_encoding or "utf-8"
    text = raw.decode(encoding, errors="replace")
    if not _is_json(response.headers.get("content-type", "")) or not text.strip():
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        log(f"warning: the response says it is JSON but does not parse ({exc}); body kept as text")
        return text


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _accepted(status: int, expected: list[int]) -> bool:
    return status in expected if expected else 200 <= status < 300
