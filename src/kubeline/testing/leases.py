"""``MemoryLeases``: a ``coordination.k8s.io`` Lease in memory, for the leader-election unit tests
(with a fake clock); it checks resourceVersions as the API server does, so two candidates
cannot both win. ``failing`` makes every call fail as an unreachable API server does."""

from __future__ import annotations

import dataclasses

from kubeline.operator import leader


class MemoryLeases:
    """An in-memory Lease with resourceVersion checks (shared by the candidates of a test)."""

    def __init__(self) -> None:
        self.record: leader.Record | None = None
        self._version = 0
        self.failing = False

    def _check(self) -> None:
        if self.failing:
            raise ConnectionError("API server unreachable (MemoryLeases.failing)")

    async def read(self) -> leader.Record | None:
        self._check()
        return self.record

    async def create(self, record: leader.Record) -> leader.Record:
        self._check()
        if self.record is not None:
            raise leader.LeaseConflict("exists")
        return self._store(record)

    async def replace(self, record: leader.Record) -> leader.Record:
        self._check()
        if self.record is None or self.record.version != record.version:
            raise leader.LeaseConflict("changed")
        return self._store(record)

    def _store(self, record: leader.Record) -> leader.Record:
        self._version += 1
        self.record = dataclasses.replace(record, version=str(self._version))
        return self.record
