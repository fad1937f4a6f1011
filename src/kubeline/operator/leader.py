"""Leader election by a ``coordination.k8s.io/v1`` Lease: of several operator replicas, one acts.

The rules are client-go's, so the guarantee holds without synchronised clocks: a candidate takes
the Lease only after it has seen the same record unchanged for ``lease_seconds`` of its *own*
clock (the holder stopped renewing), and writes with the record's ``resourceVersion`` (two
candidates cannot both win: one gets 409). The holder renews every ``retry_seconds`` and steps
down when it has not renewed for ``renew_deadline`` (< ``lease_seconds``), i.e. before anyone else
may take over. kopf's own peering is not used: equal-priority peers would both keep acting.

``Leases`` is the small port (read/create/replace); ``KubernetesLeases`` is the adapter; the unit
tests use ``kubeline.testing.leases.MemoryLeases`` with a fake clock (test doubles stay out of
product code), the e2e test two operator replicas on a real cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Record:
    holder: str | None
    lease_seconds: int
    renew_time: str | None
    transitions: int = 0
    version: str = ""  # resourceVersion


class LeaseConflict(Exception):
    """Someone else wrote the Lease first."""


class Leases(Protocol):
    async def read(self) -> Record | None: ...
    async def create(self, record: Record) -> Record: ...
    async def replace(self, record: Record) -> Record: ...


class KubernetesLeases:
    """The Lease ``name`` in ``namespace`` through the official client (calls in threads)."""

    def __init__(self, *, api_client: Any, namespace: str, name: str, timeout: float = 5.0) -> None:
        from kubernetes import client

        self.api = client.CoordinationV1Api(api_client)
        self.client = client
        self.namespace, self.name, self.timeout = namespace, name, timeout

    def _body(self, record: Record) -> Any:
        c = self.client
        return c.V1Lease(
            metadata=c.V1ObjectMeta(name=self.name, namespace=self.namespace,
                                    resource_version=record.version or None),
            spec=c.V1LeaseSpec(holder_identity=record.holder, lease_duration_seconds=record.lease_seconds,
                               renew_time=_parse(record.renew_time), lease_transitions=record.transitions))

    @staticmethod
    def _record(lease: Any) -> Record:
        spec = lease.spec
        renew = spec.renew_time.isoformat() if spec.renew_time else None
        return Record(holder=spec.holder_identity, lease_seconds=spec.lease_duration_seconds or 15,
                      renew_time=renew, transitions=spec.lease_transitions or 0,
                      version=lease.metadata.resource_version)

    async def read(self) -> Record | None:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = await asyncio.to_thread(self.api.read_namespaced_lease, self.name, self.namespace,
                                            _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._record(lease)

    async def create(self, record: Record) -> Record:
        return await self._write(self.api.create_namespaced_lease, self.namespace, self._body(record))

    async def replace(self, record: Record) -> Record:
        return await self._write(self.api.replace_namespaced_lease, self.name, self.namespace, self._body(record))

    async def _write(self, fn: Any, *args: Any) -> Record:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = await asyncio.to_thread(fn, *args, _request_timeout=self.timeout)
        except ApiException as exc:
            if exc.status == 409:
                raise LeaseConflict(str(exc.reason)) from None
            raise
        return self._record(lease)


def _parse(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


class LeaderElection:
    def __init__(self, *, leases: Leases, identity: str, lease_seconds: float = 15.0,
                 renew_deadline: float = 10.0, retry_seconds: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not retry_seconds < renew_deadline < lease_seconds:
            raise ValueError("need retry_seconds < renew_deadline < lease_seconds")
        self.leases, self.identity = leases, identity
        self.lease_seconds, self.renew_deadline, self.retry_seconds = lease_seconds, renew_deadline, retry_seconds
        self.clock = clock
        self._observed: tuple[str, float] | None = None  # (resourceVersion, when first seen)
        self._renewed_at: float | None = None

    def is_leader(self) -> bool:
        """True while this process holds a Lease it renewed within ``renew_deadline``."""
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.renew_deadline

    async def try_acquire_or_renew(self) -> bool:
        """One round: take a free/expired Lease or renew ours; False when another holds it (or on errors)."""
        now = self.clock()
        try:
            current = await self.leases.read()
            stamp = dt.datetime.now(dt.UTC).isoformat()
            if current is None:
                await self.leases.create(Record(holder=self.identity, lease_seconds=int(self.lease_seconds),
                                                renew_time=stamp))
            else:
                if self._observed is None or self._observed[0] != current.version:
                    self._observed = (current.version, now)
                mine = current.holder == self.identity
                expired = not current.holder or now - self._observed[1] >= current.lease_seconds
                if not mine and not expired:
                    self._renewed_at = None
                    return False
                transitions = current.transitions + (0 if mine else 1)
                await self.leases.replace(dataclasses.replace(
                    current, holder=self.identity, lease_seconds=int(self.lease_seconds), renew_time=stamp,
                    transitions=transitions))
        except LeaseConflict:
            self._renewed_at = None
            return False
        except Exception as exc:
            log.warning("leader election: cannot read or write the Lease: %s", exc)
            return self.is_leader()
        if self._renewed_at is None:
            log.info("leader election: %s is now the leader", self.identity)
        self._renewed_at = now
        return True

    async def acquire(self) -> None:
        """Return once this process is the leader."""
        while not await self.try_acquire_or_renew():  # noqa: ASYNC110 - polling the Lease is the protocol
            await asyncio.sleep(self.retry_seconds)

    async def hold(self) -> None:
        """Renew until leadership is lost (then return: the caller stops acting)."""
        while True:
            await asyncio.sleep(self.retry_seconds)
            await self.try_acquire_or_renew()
            if not self.is_leader():
                log.warning("leader election: %s lost the lease; stepping down", self.identity)
                self._renewed_at = None
                return

    async def release(self) -> None:
        """Give the Lease up at once (a clean shutdown), so another replica need not wait."""
        if not self.is_leader():
            return
        self._renewed_at = None
        try:
            current = await self.leases.read()
            if current is not None and current.holder == self.identity:
                await self.leases.replace(dataclasses.replace(current, holder=None))
        except Exception as exc:
            log.warning("leader election: could not release the Lease: %s", exc)
