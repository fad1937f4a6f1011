import pytest

from kubeline.domain import errors, retries, specs, states


def test_allowed_and_refused_moves():
    states.check(states.RunState.QUEUED, states.RunState.RUNNING, what="run r")
    with pytest.raises(errors.TransitionError, match="run r: cannot go from succeeded to running"):
        states.check(states.RunState.SUCCEEDED, states.RunState.RUNNING, what="run r")
    assert not states.allowed(states.StageState.RUNNING, states.RunState.FAILED)  # type: ignore[arg-type]
    assert states.allowed(states.StageState.RETRYING, states.StageState.PENDING)


def test_final_states():
    assert all(states.is_final(s) for s in states.FINAL_RUN)
    assert not states.is_final(states.AttemptState.RUNNING)


def test_run_state_from_stages():
    S = states.StageState
    assert states.run_state_for([S.SUCCEEDED, S.SUCCEEDED]) is states.RunState.SUCCEEDED
    assert states.run_state_for([S.SUCCEEDED, S.FAILED, S.SKIPPED]) is states.RunState.FAILED
    assert states.run_state_for([S.TIMED_OUT, S.SKIPPED]) is states.RunState.TIMED_OUT
    assert states.run_state_for([S.CANCELLED, S.FAILED]) is states.RunState.CANCELLED


def test_delays():
    fixed = specs.RetryPolicy(attempts=3, strategy="fixed", delay=5)
    assert [retries.delay_before(fixed, retry_number=n) for n in (1, 2, 3)] == [5, 5, 5]
    expo = specs.RetryPolicy(attempts=5, strategy="exponential", delay=1, max_delay=5, multiplier=2)
    assert [retries.delay_before(expo, retry_number=n) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]
    custom = specs.RetryPolicy(attempts=4, strategy="custom", delays=[1, 10])
    assert [retries.delay_before(custom, retry_number=n) for n in (1, 2, 3)] == [1, 10, 10]


def test_should_retry():
    policy = specs.RetryPolicy(attempts=1, on=["failed"])
    K = states.FailureKind
    assert retries.should_retry(policy, attempt_number=1, kind=K.EXIT_CODE)
    assert not retries.should_retry(policy, attempt_number=2, kind=K.EXIT_CODE)
    assert not retries.should_retry(policy, attempt_number=1, kind=K.TIMEOUT)
    assert not retries.should_retry(policy, attempt_number=1, kind=K.CANCELLED)
