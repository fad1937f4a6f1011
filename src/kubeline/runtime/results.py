"""An attempt's result, one protocol for every entrypoint: what a stage leaves, how it travels.

What: a stage writes a JSON object to ``$KUBELINE_OUTPUTS`` (``io/outputs.json``) and may name
the next stages in ``io/route``; ``collect`` reads both into the *body* ``{"outputs", "route"}``
or says what is wrong in words. The local and Docker executors read the io dir on the host after
the exit; a Kubernetes pod sends the body back.

How (Kubernetes): after the stage exits, the entrypoint prints an end marker on stderr and on
stdout (``end_marker``: derived from the attempt token, which the stage never sees), each
followed by what the executor must still expect:

- ``... result N``: N result lines follow on stdout, ``[kubeline] result <tag> <i>/<N> <base64>``
  (the gzipped JSON body in ``LINE_CHARS`` pieces; ``tag`` comes from the token too, so a stage
  cannot forge a line);
- ``... uploaded``: the body went to the Kubeline API over HTTP (in-cluster, faster for large
  outputs);
- ``... failed``: the stage failed (or its result could not be delivered); nothing follows.

So the pod needs no network path back to the caller: the executor already reads the pod log,
and once both markers and every result line are read, the log is complete and the result known,
without waiting for the kubelet to report the container's exit. A pod log carries at most
``LOG_LIMIT`` characters of result (the kubelet rotates a container log at 10 MiB and serves
only the current file); a larger body needs the upload.

Standard library only: the Kubernetes executor ships this file beside the pod entrypoint.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import pathlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PREFIX = "[kubeline] "
LINE_CHARS = 8192  # base64 characters per result line (containerd splits lines at 16 KiB)
LOG_LIMIT = 4 * 1024 * 1024  # base64 characters of result a pod log carries
RESULT = "result"
UPLOADED = "uploaded"
FAILED = "failed"


class ResultError(ValueError):
    """A result that cannot be used; the message says why in words."""


def collect(io_dir: pathlib.Path) -> dict[str, Any]:
    """The body ``{"outputs": {...}, "route": str | None}`` a stage left in ``io_dir``."""
    path = io_dir / "outputs.json"
    outputs: Any = {}
    if path.is_file() and path.stat().st_size:
        try:
            outputs = json.loads(path.read_bytes())
        except ValueError as exc:
            raise ResultError(f"wrote invalid JSON to $KUBELINE_OUTPUTS: {exc}") from None
        if not isinstance(outputs, dict):
            raise ResultError("wrote JSON that is not an object to $KUBELINE_OUTPUTS "
                              f"(a {type(outputs).__name__}); write e.g. {{\"rows\": 3}}")
    route_file = io_dir / "route"
    route = route_file.read_text(errors="replace").strip() if route_file.is_file() else ""
    return {"outputs": outputs, "route": route or None}


def end_marker(token: str, stream: str) -> str:
    """The start of the line that tells the executor ``stream`` of this attempt's log is
    complete (one per stream: the log API merges them, and either may be copied to the log file
    ahead of the other); the rest of the line says what follows."""
    return f"{PREFIX}end of {stream} " + hashlib.sha256(f"end:{stream}:{token}".encode()).hexdigest()[:32]


def line_tag(token: str) -> str:
    return f"{PREFIX}{RESULT} " + hashlib.sha256(f"result:{token}".encode()).hexdigest()[:16] + " "


def encode(body: dict[str, Any]) -> str:
    return base64.b64encode(gzip.compress(json.dumps(body).encode(), compresslevel=6, mtime=0)).decode()


def lines(token: str, payload: str) -> list[str]:
    """The result lines of ``payload`` (from ``encode``)."""
    tag = line_tag(token)
    pieces = [payload[start:start + LINE_CHARS] for start in range(0, len(payload), LINE_CHARS)] or [""]
    return [f"{tag}{number}/{len(pieces)} {piece}" for number, piece in enumerate(pieces, 1)]


class Reader:
    """Collects one attempt's markers and result lines from its log, in any order, replays
    included; ``complete`` once both markers and every announced result line were read."""

    def __init__(self, markers: list[str] | tuple[str, ...] | frozenset[str], tag: str | None) -> None:
        self.markers = frozenset(markers)
        self.tag = tag
        self.seen: dict[str, str] = {}  # marker -> what follows it
        self.expected: int | None = None
        self.pieces: dict[int, str] = {}

    def take(self, text: str) -> bool:
        """True when ``text`` belongs to the protocol (and is not a line of the stage's log)."""
        if not text.startswith(PREFIX):
            return False
        if self.tag is not None and text.startswith(self.tag):
            number, _, piece = text[len(self.tag):].partition(" ")
            index, _, total = number.partition("/")
            if index.isdigit() and total.isdigit():
                self.pieces[int(index)] = piece
                return True
            return False
        for marker in self.markers:
            if text.startswith(marker) and (len(text) == len(marker) or text[len(marker)] == " "):
                said = text[len(marker):].strip()
                self.seen[marker] = said
                kind, _, count = said.partition(" ")
                if kind == RESULT and count.isdigit():
                    self.expected = int(count)
                return True
        return False

    @property
    def delivery(self) -> str | None:
        """What the stdout marker said: ``result``, ``uploaded``, ``failed`` (or "" for an
        entrypoint that says nothing after it: the upload); None before it was read."""
        for marker, said in self.seen.items():
            if " end of stdout " in marker:
                return said.partition(" ")[0] or UPLOADED
        return None

    @property
    def complete(self) -> bool:
        if len(self.seen) < len(self.markers) or not self.markers:
            return False
        return self.expected is None or len(self.pieces) >= self.expected

    def body(self) -> dict[str, Any]:
        """The decoded body; ``ResultError`` when lines are missing or the data is damaged."""
        expected = self.expected or 0
        missing = [n for n in range(1, expected + 1) if n not in self.pieces]
        if missing:
            raise ResultError(
                f"its result was cut: {expected - len(missing)} of {expected} result lines reached the "
                f"pod log (missing from line {missing[0]}); the log may have been rotated (a stage log "
                "larger than the kubelet's containerLogMaxSize) - keep outputs and log smaller, or set "
                "KUBELINE_KUBERNETES_API_URL so pods upload their result")
        payload = "".join(self.pieces[n] for n in range(1, expected + 1))
        try:
            body = json.loads(gzip.decompress(base64.b64decode(payload, validate=True)))
        except (ValueError, OSError, EOFError) as exc:
            raise ResultError(f"its result in the pod log is damaged ({exc.__class__.__name__}: {exc})") from None
        if not isinstance(body, dict) or not isinstance(body.get("outputs", {}), dict):
            raise ResultError("its result in the pod log is not an object with outputs")
        return body
