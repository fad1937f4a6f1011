"""Lease leader election: one leader, takeover only after expiry, step down before others may act."""

from __future__ import annotations

import pytest

from kubeline.operator import leader
from kubeline.testing import leases as leases_


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _candidate(leases: leases_.MemoryLeases, clock: Clock, name: str) -> leader.LeaderElection:
    return leader.LeaderElection(leases=leases, identity=name, lease_seconds=15, renew_deadline=10,
                                 retry_seconds=2, clock=clock)


async def test_only_one_leader_and_takeover_after_expiry() -> None:
    leases, clock = leases_.MemoryLeases(), Clock()
    a, b = _candidate(leases, clock, "a"), _candidate(leases, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    assert a.is_leader() and not b.is_leader()
    clock.now += 10
    assert await a.try_acquire_or_renew()  # renewing changes the record: b starts counting again
    assert not await b.try_acquire_or_renew()
    clock.now += 14
    assert not await b.try_acquire_or_renew()  # a stopped renewing 14 s ago (< 15): not yet
    assert not a.is_leader()  # but a stepped down at its 10 s renew deadline already
    clock.now += 2
    assert await b.try_acquire_or_renew()
    assert b.is_leader()
    assert leases.record is not None and leases.record.holder == "b" and leases.record.transitions == 1
    assert not await a.try_acquire_or_renew()


async def test_api_server_away_steps_down_then_recovers() -> None:
    leases, clock = leases_.MemoryLeases(), Clock()
    a = _candidate(leases, clock, "a")
    assert await a.try_acquire_or_renew()
    leases.failing = True
    clock.now += 5
    assert await a.try_acquire_or_renew()  # still within the renew deadline
    clock.now += 6
    assert not await a.try_acquire_or_renew()
    assert not a.is_leader()
    leases.failing = False
    clock.now += 30
    assert await a.try_acquire_or_renew()  # still the holder: renews at once


async def test_release_lets_another_take_over_at_once() -> None:
    leases, clock = leases_.MemoryLeases(), Clock()
    a, b = _candidate(leases, clock, "a"), _candidate(leases, clock, "b")
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await a.release()
    assert await b.try_acquire_or_renew()


async def test_conflicting_writes_have_one_winner() -> None:
    leases, clock = leases_.MemoryLeases(), Clock()
    a, b = _candidate(leases, clock, "a"), _candidate(leases, clock, "b")
    results = [await a.try_acquire_or_renew(), await b.try_acquire_or_renew()]
    assert results == [True, False]


def test_timings_must_nest() -> None:
    with pytest.raises(ValueError, match="retry_seconds < renew_deadline < lease_seconds"):
        leader.LeaderElection(leases=leases_.MemoryLeases(), identity="x", lease_seconds=10, renew_deadline=12)


def test_kopf_log_lines_do_not_carry_the_operator_settings() -> None:
    import json
    import logging

    import kopf

    from kubeline import server_logs

    record = logging.LogRecord("kopf.objects", logging.DEBUG, __file__, 1, "Handler 'sync' succeeded.", None, None)
    record.__dict__.update({"settings": kopf.OperatorSettings(), "k8s_ref": {"name": "p", "namespace": "ns"},
                            "k8s_skip": False})
    line = server_logs.JsonFormatter().format(record)
    assert "OperatorSettings" not in line and len(line) < 400
    assert json.loads(line)["k8s_ref"] == {"name": "p", "namespace": "ns"}
