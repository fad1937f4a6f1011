"""What the engine needs from the log store and the secret service (structural types)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from kubeline.executors import base


class Logs(Protocol):
    def sink(self, *, run_id: str, stage_id: str, attempt: int, secrets: Iterable[str]) -> base.LogSink: ...


class Secrets(Protocol):
    async def resolve(self, names: list[str]) -> dict[str, str]: ...
    def decrypt_env(self, encrypted_env: dict[str, str]) -> dict[str, str]: ...
