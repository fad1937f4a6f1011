"""Delays between attempts, as a pure function of the retry policy."""

from __future__ import annotations

from kubeline.domain import specs, states


def should_retry(policy: specs.RetryPolicy, *, attempt_number: int, kind: states.FailureKind) -> bool:
    """``attempt_number`` is 1 for the first attempt; retries are ``policy.attempts`` more."""
    if kind in (states.FailureKind.CANCELLED, states.FailureKind.START_FAILED):
        return False
    retried_kind = {states.FailureKind.TIMEOUT: "timed_out", states.FailureKind.OOM: "oom"}.get(kind, "failed")
    return attempt_number <= policy.attempts and retried_kind in policy.on


def delay_before(policy: specs.RetryPolicy, *, retry_number: int) -> float:
    """Seconds to wait before retry ``retry_number`` (1 = the first retry)."""
    if policy.strategy is specs.RetryStrategy.CUSTOM:
        if not policy.delays:
            return 0.0
        return float(policy.delays[min(retry_number, len(policy.delays)) - 1])
    if policy.strategy is specs.RetryStrategy.EXPONENTIAL:
        return float(min(policy.max_delay, policy.delay * policy.multiplier ** (retry_number - 1)))
    return float(policy.delay)
