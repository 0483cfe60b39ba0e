"""The circuit breaker opens after consecutive failures, refuses at once, and lets one trial through."""

from __future__ import annotations

import pytest

from orchestrator.predict.breaker import CircuitBreaker, CircuitOpen
from tests.conftest import Clock


def test_opens_after_consecutive_failures_and_recovers_after_a_good_trial() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=3, open_s=5.0, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen) as refused:
        breaker.before_call()
    assert refused.value.retry_after_s == pytest.approx(5.0)
    clock.now += 5.0
    assert breaker.state == "half-open"
    breaker.before_call()  # the trial
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # only one trial at a time
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.before_call()


def test_failed_trial_reopens() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, open_s=2.0, clock=clock)
    breaker.record_failure()
    clock.now += 2.0
    breaker.before_call()
    breaker.record_failure()
    assert breaker.state == "open"


def test_success_resets_the_count() -> None:
    breaker = CircuitBreaker(failures=2, open_s=1.0, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.state == "closed"


def test_neutral_outcome_frees_the_trial_without_closing() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=1, open_s=1.0, clock=clock)
    breaker.record_failure()
    clock.now += 1.0
    breaker.before_call()
    breaker.record_neutral()
    assert breaker.state == "half-open"
    breaker.before_call()
