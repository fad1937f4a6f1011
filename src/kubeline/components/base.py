"""What the Kubeline-runtime components share: their failure type and their log line writer."""

from __future__ import annotations

import sys
from typing import Protocol

from kubeline.domain import errors


class ComponentError(errors.KubelineError):
    """A component failed for a reason the user can act on; the message is the error line."""


class Log(Protocol):
    def __call__(self, message: str) -> None: ...


def log_to_stdout(message: str) -> None:
    """One log line on stdout, flushed at once so the executor streams it as it happens."""
    print(message, file=sys.stdout, flush=True)
