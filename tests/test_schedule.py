"""Poll timing: interval, server hints, exponential backoff with jitter and its caps."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from aggregator.models import SourceState
from aggregator.schedule import (
    MAX_BACKOFF,
    due_sources,
    next_poll_after_failure,
    next_poll_after_success,
)
from aggregator.settings import SourceSettings

NOW = datetime(2024, 5, 16, 6, 0, tzinfo=UTC)


def seconds_until(moment: datetime) -> float:
    return (moment - NOW).total_seconds()


def test_success_waits_the_interval_with_jitter() -> None:
    rng = random.Random(1)
    waits = [seconds_until(next_poll_after_success(NOW, 1800, rng=rng)) for _ in range(200)]
    assert all(1620 <= w <= 1980 for w in waits)
    assert max(waits) - min(waits) > 100  # really spread


def test_success_honours_a_longer_max_age_but_not_beyond_a_week() -> None:
    rng = random.Random(2)
    assert seconds_until(next_poll_after_success(NOW, 600, max_age=7200, rng=rng)) >= 7200 * 0.9
    assert seconds_until(next_poll_after_success(NOW, 600, max_age=60, rng=rng)) <= 660
    far = next_poll_after_success(NOW, 600, max_age=10**9, rng=rng)
    assert seconds_until(far) <= 7 * 86400 * 1.1


def test_failures_back_off_exponentially_up_to_a_day() -> None:
    rng = random.Random(3)
    waits = [seconds_until(next_poll_after_failure(NOW, 1800, n, rng=rng)) for n in range(1, 10)]
    assert 1620 <= waits[0] <= 1980
    assert 3240 <= waits[1] <= 3960
    assert 6480 <= waits[2] <= 7920
    assert all(w <= MAX_BACKOFF for w in waits)
    assert waits[-1] >= MAX_BACKOFF * 0.9


def test_retry_after_wins_when_longer_and_is_capped_at_seven_days() -> None:
    rng = random.Random(4)
    assert seconds_until(next_poll_after_failure(NOW, 60, 1, retry_after=3600, rng=rng)) == 3600
    capped = next_poll_after_failure(NOW, 60, 1, retry_after=30 * 86400, rng=rng)
    assert capped == NOW + timedelta(days=7)


def test_due_sources() -> None:
    a = SourceSettings(id="a", url="u", name="A")
    b = SourceSettings(id="b", url="u", name="B")
    off = SourceSettings(id="off", url="u", name="Off", enabled=False)
    states = {
        "a": SourceState("a", "u", next_poll_at=NOW - timedelta(seconds=1)),
        "b": SourceState("b", "u", next_poll_at=NOW + timedelta(minutes=5)),
    }
    sources = [a, b, off]
    assert due_sources(sources, states, NOW) == [a]
    assert due_sources(sources, {}, NOW) == [a, b]  # never polled: due
    assert due_sources(sources, states, NOW, force=True) == [a, b]
    assert due_sources(sources, states, NOW, only=["off"]) == [off]  # named: even if disabled
