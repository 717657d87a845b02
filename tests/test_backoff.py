"""The one retry schedule: declared delays, doubling with a cap, jitter, and the failure counter."""

from __future__ import annotations

import pytest

from sidecar.backoff import Backoff, Retries


def test_declared_delays_are_used_in_order_and_the_last_repeats() -> None:
    backoff = Backoff((1, 5, 30))
    assert [backoff.delay(n) for n in range(1, 6)] == [1, 5, 30, 30, 30]


@pytest.mark.parametrize(("first", "cap", "delays"), [
    (1.0, 30.0, (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)),
    (1.0, 8.0, (1.0, 2.0, 4.0, 8.0)),
    (0.1, 0.4, (0.1, 0.2, 0.4)),
    (10.0, 4.0, (4.0,)),  # a cap below the first delay wins, as min(cap, ...) did
])
def test_doubling_up_to_a_cap(first: float, cap: float, delays: tuple[float, ...]) -> None:
    assert Backoff.doubling(first, cap).delays == pytest.approx(delays)


def test_jitter_stays_within_its_fraction_and_varies() -> None:
    backoff = Backoff((10.0,), jitter=0.2)
    waits = {backoff.delay(1) for _ in range(200)}
    assert all(8.0 <= w <= 12.0 for w in waits)
    assert len(waits) > 1


@pytest.mark.parametrize("make", [
    lambda: Backoff(()),
    lambda: Backoff((1.0, -1.0)),
    lambda: Backoff((float("inf"),)),
    lambda: Backoff((float("nan"),)),
    lambda: Backoff((1.0,), jitter=1.0),
    lambda: Backoff((1.0,), jitter=-0.1),
    lambda: Backoff.doubling(0.0, 10.0),
    lambda: Backoff.doubling(1.0, float("inf")),
])
def test_schedules_that_could_not_work_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_delay_counts_from_the_first_failure() -> None:
    with pytest.raises(ValueError):
        Backoff((1.0,)).delay(0)


def test_retries_count_failures_and_start_over_after_a_success() -> None:
    retries = Retries(Backoff((1, 2, 4)))
    assert [retries.failed() for _ in range(4)] == [1, 2, 4, 4]
    assert retries.failures == 4
    retries.reset()
    assert retries.failed() == 1
