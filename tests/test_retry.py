"""The backoff schedule: exponential with full jitter, from 0.5 s, capped at 30 s."""

from __future__ import annotations

import random

import pytest

from dispatcher.run.retry import RetryPolicy


class Edge(random.Random):
    """A "random" source that always draws the top (or the bottom) of the range it is given."""

    def __init__(self, top: bool) -> None:
        super().__init__(0)
        self.top = top
        self.ranges: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.ranges.append((a, b))
        return b if self.top else a


def test_the_longest_backoff_doubles_from_half_a_second_to_the_cap() -> None:
    rng = Edge(top=True)
    schedule = [RetryPolicy().backoff(n, rng) for n in range(1, 10)]
    assert schedule == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_full_jitter_draws_from_zero() -> None:
    rng = Edge(top=False)
    assert [RetryPolicy().backoff(n, rng) for n in range(1, 4)] == [0.0, 0.0, 0.0]
    assert rng.ranges == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0)]


def test_a_huge_attempt_number_is_capped_not_an_overflow() -> None:
    assert RetryPolicy().backoff(5000, Edge(top=True)) == 30.0


def test_a_seeded_schedule() -> None:
    schedule = [RetryPolicy().backoff(n, random.Random(42)) for n in (1, 1, 1)]
    assert schedule == [pytest.approx(0.3197134)] * 3  # the same seed, the same draw
    rng = random.Random(42)
    assert [RetryPolicy().backoff(n, rng) for n in range(1, 8)] == pytest.approx(
        [0.3197134, 0.0250108, 0.5500586, 0.8928430, 5.8917697, 10.8271918, 26.7653870], abs=1e-6
    )


def test_jitter_spreads_over_the_whole_range() -> None:
    """Full jitter, not equal jitter: retries of many batches spread over [0, bound], so they do not
    come back together."""
    rng = random.Random(7)
    draws = [RetryPolicy().backoff(4, rng) for _ in range(2000)]
    assert all(0.0 <= d <= 4.0 for d in draws)
    assert min(draws) < 0.1 and max(draws) > 3.9
    assert 1.8 < sum(draws) / len(draws) < 2.2


def test_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        RetryPolicy(max_attempts=0)
